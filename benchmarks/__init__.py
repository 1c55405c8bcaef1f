"""Benchmarks: each module has main(json: bool) and prints its figure next to a baseline."""
