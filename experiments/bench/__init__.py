"""Benchmarks: contenders side by side in one process, printing ratios."""
