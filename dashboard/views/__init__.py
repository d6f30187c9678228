"""One module per dashboard page: ``render()`` draws it; ``dashboard/app.py`` names them in the navigation."""
