"""Tests of helpers.common.parallel: phantoms and decoded images are the same whatever the number of workers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers.common import parallel
from helpers.data import dataset, phantoms
from helpers.models import segmentation


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


def test_each_index_covers_every_index_once_in_order():
    for n, workers in ((0, 2), (1, 2), (10, 1), (10, 3), (200, 2)):
        seen = np.zeros(n, dtype=int)

        def mark(i, seen=seen):
            seen[i] += 1
            return 2 * i

        assert parallel.each_index(mark, n, workers=workers) == [2 * i for i in range(n)]
        assert (seen == 1).all(), (n, workers)


def test_a_failure_on_threads_is_the_first_in_input_order_and_stops_the_rest():
    """With several failing items, the error raised is the first one's, whatever the threads' timing."""
    import threading
    import time

    started = []
    lock = threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        if i in (3, 40, 41):
            time.sleep(0.05 if i == 3 else 0.0)  # the later failures finish first
            raise ValueError(f"item {i} failed")
        return i

    with pytest.raises(ValueError, match="item 3 failed"):
        parallel.each_index(work, 2000, workers=2)
    assert len(started) < 2000  # the items not yet started when it failed were dropped


def test_study_workers_must_be_a_positive_int(monkeypatch):
    for value in ("0", "abc", "-2"):
        monkeypatch.setenv(parallel.WORKERS_ENV, value)
        with pytest.raises(ValueError, match=f"STUDY_WORKERS must be a positive int, got '{value}'"):
            parallel.worker_count()


def test_io_threads_follow_study_workers_else_a_few_more_than_cores(monkeypatch):
    monkeypatch.setenv(parallel.WORKERS_ENV, "3")
    assert parallel.io_thread_count() == 3  # the variable caps every pool, this one too
    monkeypatch.delenv(parallel.WORKERS_ENV)
    assert parallel.io_thread_count() == min(32, parallel.worker_count() + 4)


def test_mask_work_on_threads_equals_a_one_image_loop(monkeypatch, tmp_path):
    """Resizing, dilating and decoding masks on threads: the same arrays as one image at a time, for any thread count."""
    rng = np.random.default_rng(5)
    masks = (rng.random((150, 37, 37)) > 0.6).astype(np.uint8)
    images = rng.integers(0, 256, (150, 37, 37), dtype=np.uint8)
    reference = {
        "down": np.stack(
            [cv2.resize(m.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA) >= 0.5 for m in masks]
        ),
        "up": np.stack([cv2.resize(m, (50, 50), interpolation=cv2.INTER_NEAREST) for m in masks]),
        "images": np.stack([cv2.resize(x, (16, 16), interpolation=cv2.INTER_AREA) for x in images])[..., None],
        "dilated": np.stack([cv2.dilate(m, segmentation.disk(3), borderType=cv2.BORDER_CONSTANT) for m in masks]),
    }
    for i, m in enumerate(masks[:70]):
        cv2.imwrite(str(tmp_path / f"m{i}.png"), m * 255 if i % 7 else cv2.resize(m * 255, (37, 30)))
    frame = pd.DataFrame(
        {
            "path": [f"x{i}.png" for i in range(72)],
            "mask_path": [str(tmp_path / f"m{i}.png") for i in range(70)] + ["", ""],
        }
    )
    expected_masks = np.zeros((72, 20, 20), np.uint8)
    for i in range(70):
        expected_masks[i] = (
            cv2.resize(
                cv2.imread(str(tmp_path / f"m{i}.png"), cv2.IMREAD_GRAYSCALE), (20, 20), interpolation=cv2.INTER_NEAREST
            )
            > 127
        )
    for workers in ("1", "3"):
        monkeypatch.setenv(parallel.WORKERS_ENV, workers)
        np.testing.assert_array_equal(segmentation.resize_masks(masks, 16), reference["down"])
        np.testing.assert_array_equal(segmentation.resize_masks(masks, 50), reference["up"])
        np.testing.assert_array_equal(segmentation.resize_images(images, 16), reference["images"])
        np.testing.assert_array_equal(segmentation.dilate_masks(masks, 3), reference["dilated"])
        with pytest.warns(UserWarning, match="10 lung mask\\(s\\) are not square"):
            np.testing.assert_array_equal(dataset.load_masks(frame, 20, kind="lung"), expected_masks)
