"""Timing and work folders shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path


def best_time(fn, repeats: int) -> tuple[float, object]:
    """The best of ``repeats`` wall-clock timings of ``fn()`` (seconds) and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


@contextlib.contextmanager
def work_folder(given: str | None, prefix: str):
    """``given`` as a Path, else a temporary folder removed after a block that finishes (kept, and named, after a failure)."""
    if given:
        yield Path(given).resolve()
        return
    work = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    try:
        yield work
    except BaseException:
        print(f"work folder kept for inspection: {work}", flush=True)
        raise
    shutil.rmtree(work, ignore_errors=True)  # phantoms, caches and models: gigabytes at the paper's sizes
