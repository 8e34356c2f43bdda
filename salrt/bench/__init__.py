"""End-to-end benchmarks: ``harness`` times every backend against the naive recipe, ``report`` shows it."""
from .harness import benchmark
from .report import plot, save, table

__all__ = ["benchmark", "plot", "save", "table"]
