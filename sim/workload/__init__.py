"""Traffic: arrival processes and trace files, turned into arrival times."""
