"""One module per dashboard page: ``render()`` draws it. The files in ``dashboard/pages/`` only call these."""
