"""What a run produces: the flat record layout, metrics, time series, terminal tables, plots and output files."""
