"""End-to-end benchmarks: ``harness`` times every backend against the naive recipe, ``report`` shows it."""
from .harness import FORWARD, NAIVE, benchmark
from .report import plot, replace_readme_block, save, table

__all__ = ["FORWARD", "NAIVE", "benchmark", "plot", "replace_readme_block", "save", "table"]
