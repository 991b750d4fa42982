"""Benchmarks behind `slimpipe bench …`: each prints a table and can emit JSON."""
