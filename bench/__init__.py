"""Benchmarks: `python -m bench [NAME ...]` (or `make bench`). Each prints a table and writes JSON
to bench/results/NAME.json."""
