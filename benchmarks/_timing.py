"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time


def best_time(fn, repeats: int) -> tuple[float, object]:
    """The best of ``repeats`` wall-clock timings of ``fn()`` (seconds) and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
