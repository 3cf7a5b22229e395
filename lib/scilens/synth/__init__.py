"""Generators of realistic data with known truth, for tests, demos and benchmarks."""
