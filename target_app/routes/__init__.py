"""One module per route family; each route's docstring names its execution model."""
