"""Benchmark: building the per-image explorer (explorer.html) for the paper's 540 test images at 299 px.

The study's own files are replaced by synthetic arrays of the paper's sizes: phantom X-rays (:mod:`helpers.data.phantoms`)
with their lung and lesion masks, two models' predictions, 9x9 heatmaps and MoRF / random / LeRF curves over 81 steps
of 34 px regions. The script times each part of building the page (the perturbed copies g(x), the per-image numbers,
the region orders, the encoding and the writing) and prints the total seconds and the page's size, with the bytes per
image of each part.

Usage::

    python benchmarks/bench_explorer.py [--n 540] [--size 299] [--region 34] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _timing import best_time  # noqa: E402

from helpers.common.config import CLASS_NAMES
from helpers.data import phantoms
from helpers.metrics.perturbation import region_grid
from helpers.report import explorer

MODELS = ("vgg16", "densenet201")


def synthetic_data(n: int, size: int, region: int, seed: int = 0) -> explorer.ExplorerData:
    """Explorer data of ``n`` phantom test images with synthetic predictions, heatmaps and curves."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASS_NAMES)
    images = np.empty((n, size, size), np.uint8)
    lungs, lesions = np.zeros_like(images), np.zeros_like(images)
    for i, label in enumerate(labels):
        p = phantoms.render_phantom(CLASS_NAMES[label], seed, i + 1, image_size=size)
        images[i], lesions[i] = p["image"], p["lesion_mask"] > 0
        lungs[i] = cv2.resize(p["lung_mask"].max(axis=-1), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    grid = region_grid(size, region)
    steps = grid.n_regions
    outputs, heatmaps, curves = {}, {}, {}
    for m in MODELS:
        logits = rng.normal(0, 1.5, (n, len(CLASS_NAMES))) + 2.5 * np.eye(len(CLASS_NAMES))[labels]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        predicted = probs.argmax(axis=1)
        outputs[m] = {"probabilities": probs.astype(np.float32), "predicted": predicted, "classes": predicted,
                      "correct": predicted == labels}  # fmt: skip
        heatmaps[m] = {"gradcam": np.maximum(rng.normal(0, 1, (n, *grid.grid_shape)), 0).astype(np.float32)}
        f0 = probs[np.arange(n), predicted][:, None]
        k = np.arange(steps + 1)[None, :] / steps
        curves[m] = {
            order: np.clip(f0 * np.exp(-rate * k) + rng.normal(0, 0.01, (n, steps + 1)), 0, 1)
            for order, rate in (("morf", rng.uniform(1, 4, (n, 1))), ("random", 1.0), ("lerf", 0.3))
        }
    settings = {"image_size": size, "region_size": region, "region_scores": "grid", "perturbation": "gaussian",
                "sigma": 0.1, "seed": seed, "orders": ["morf", "random", "lerf"]}  # fmt: skip
    return explorer.ExplorerData(
        images=images, labels=labels, names=[f"{CLASS_NAMES[c]}-{i + 1}" for i, c in enumerate(labels)],
        outputs=outputs, heatmaps=heatmaps, curves=curves, masks={"lung": lungs, "lesion": lesions}, settings=settings,
    )  # fmt: skip


class _Report:
    """Where :func:`helpers.report.explorer.write_explorer` writes (a study's ``paths`` has more; the page needs these)."""

    def __init__(self, folder: Path):
        self.report, self.profile = folder, "benchmark"


def main(argv=None) -> dict:
    """Time building the page and print the seconds and its size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=540, help="test images (the paper: 540)")
    parser.add_argument("--size", type=int, default=299, help="image side in px (the paper: 299)")
    parser.add_argument("--region", type=int, default=34, help="region side in px (the paper: 34)")
    parser.add_argument("--repeats", type=int, default=1, help="timings per part; the best is printed")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = synthetic_data(args.n, args.size, args.region)
    print(f"{args.n} synthetic test images at {args.size} px, {data.steps} steps: made in "
          f"{time.perf_counter() - start:.1f} s (not part of the page's build)")  # fmt: skip

    def fresh() -> explorer.ExplorerData:
        data._cache.clear()  # nothing computed before: each part (and the page) from the arrays alone
        return data

    def orders() -> list:
        return [fresh().region_steps(m, o) for m in MODELS for o in data.orders]

    parts = {
        "perturbed copies g(x)": lambda: fresh().perturbed_copies(),
        "per-image numbers (AOPC, mask energy)": lambda: fresh().metrics(),
        "region orders (2 models x 3 orders)": orders,
    }
    seconds = {name: best_time(fn, args.repeats)[0] for name, fn in parts.items()}
    with tempfile.TemporaryDirectory() as folder:
        total, page = best_time(lambda: explorer.write_explorer(_Report(Path(folder)), fresh()), args.repeats)
        size = page.stat().st_size
    seconds["thumbnails, JPEGs, outlines, JSON, writing"] = total - sum(seconds.values())
    for name, value in seconds.items():
        print(f"  {name:<45} {value:6.2f} s")
    payload = explorer.page_data(data)
    per_image = {key: np.mean([len(it[key]) for it in payload["items"]]) / 1024 for key in ("thumb", "x", "g")}
    print(f"build explorer.html for {args.n} images: {total:.2f} s; page {size / 2**20:.1f} MiB "
          f"({size / args.n / 1024:.0f} KiB per image, of which base64 JPEGs: thumbnail {per_image['thumb']:.1f}, "
          f"x {per_image['x']:.1f}, g(x) {per_image['g']:.1f} KiB)")  # fmt: skip
    return {"seconds": total, "bytes": size, "n": args.n}


if __name__ == "__main__":
    main()
