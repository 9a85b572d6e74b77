"""Benchmarks that print JSON: speed and memory goals are checked here, not by timed tests."""
