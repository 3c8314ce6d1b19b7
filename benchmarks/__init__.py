"""Scripts a user runs (`python benchmarks/<name>.py`); a package so tests can import them."""
