"""Benchmarks behind `cutstream bench ...` and `make bench`: each prints one JSON line."""
