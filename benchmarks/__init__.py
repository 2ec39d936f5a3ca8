"""Benchmarks behind ``kibotos bench``: ratios measured in one run, JSON results."""
