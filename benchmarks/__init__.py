"""Benchmarks: ``python -m benchmarks.run NAME [--json]`` (NAME = a module here, or all)."""
