"""Tests of helpers.parallel: phantoms and decoded images are the same whatever the number of workers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from helpers import dataset, parallel, phantoms


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_phantoms_and_decoding_are_identical_with_one_or_two_workers(tmp_path):
    per_class = parallel.MIN_PARALLEL_ITEMS // 4 + 1  # enough items to use the process pool
    roots = {
        w: phantoms.synthesize_dataset(
            tmp_path / f"w{w}", per_class, image_size=24, seed=2, mask_size=24, progress=False, workers=w
        )
        for w in (1, 2)
    }
    assert _digest(roots[1]) == _digest(roots[2])
    frame = dataset.scan_dataset(roots[1])
    one = dataset.load_images(frame, 16, cache_dir=False, progress=False, workers=1)
    two = dataset.load_images(frame, 16, cache_dir=False, progress=False, workers=2)
    np.testing.assert_array_equal(one, two)


def test_parallel_map_keeps_order_and_checks_workers(monkeypatch):
    items = [(i,) for i in range(parallel.MIN_PARALLEL_ITEMS + 10)]
    assert parallel.parallel_map(abs, [(-i,) for (i,) in items], workers=2, threads=True) == [i for (i,) in items]
    monkeypatch.setenv(parallel.WORKERS_ENV, "3")
    assert parallel.worker_count() == 3
    with pytest.raises(ValueError, match="workers"):
        parallel.worker_count(0)
