"""Benchmarks behind ``make bench-*``: each prints one JSON line per figure."""
