"""Analysis: pure functions over stored run data."""
