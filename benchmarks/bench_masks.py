"""Benchmark: the host-side mask work of notebooks 02-07 at the paper's sizes, one image at a time vs on threads.

Notebook 02 checks that masks are binary, resizes the images and masks between the classifier's 299 px and the
U-Net's 256 px (down by area, masks back up by nearest neighbour), decodes the lung masks, and the classifier
notebooks with ``input_mask="lung"`` dilate the predicted masks. This script times each of those steps on random
data of the paper's sizes both ways, side by side in one run, and checks that both give the same array:

- "one at a time": the reference, a per-image OpenCV loop (and ``np.isin`` for the binary check);
- "study": :mod:`helpers.models.segmentation` and :func:`helpers.data.dataset.load_masks` (a vectorised min/max check; the
  per-image OpenCV calls spread over threads, ``STUDY_WORKERS`` caps them).

Then notebook 06's mask energy (each heatmap's share inside its mask) of 540 test heatmaps: the whole stack at once
vs a few images at a time (bitwise the same). The last row is an epoch of the U-Net's training data on JAX: the whole training set permuted as float32 images
and masks before the epoch (the reference, as ``fit`` took it before) vs each batch gathered from the uint8 arrays and scaled as training takes it.

Usage::

    python benchmarks/bench_masks.py [--n 4304] [--size 299] [--segmentation-size 256] [--margin 8] [--decode 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _timing import best_time  # noqa: E402

from helpers.common import parallel
from helpers.data import dataset
from helpers.explain.maps import upsample
from helpers.metrics import energy as localization
from helpers.models import segmentation


def _blobs(rng, n: int, size: int) -> np.ndarray:
    """n masks (N, size, size) uint8 0/1: two filled ellipses of random size and place, like a pair of lungs."""
    masks = np.zeros((n, size, size), np.uint8)
    for mask in masks:
        for side in (0.3, 0.7):
            centre = (int(size * (side + rng.uniform(-0.05, 0.05))), int(size * rng.uniform(0.4, 0.6)))
            axes = (int(size * rng.uniform(0.1, 0.2)), int(size * rng.uniform(0.2, 0.35)))
            cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return masks


def main(argv=None) -> dict:
    """Run the benchmark, print one row per step and return the timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4304, help="images and masks (the paper's training split: 4,304)")
    parser.add_argument("--size", type=int, default=299, help="the classifier's image size")
    parser.add_argument("--segmentation-size", type=int, default=256)
    parser.add_argument("--margin", type=int, default=8, help="dilation of the masks (paper: 8 px at 299)")
    parser.add_argument("--decode", type=int, default=1000, help="mask PNGs to decode")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    masks = _blobs(rng, args.n, args.size)
    images = rng.integers(0, 256, (args.n, args.size, args.size, 1), dtype=np.uint8)
    small = segmentation.resize_masks(masks, args.segmentation_size)
    seg, size, kernel = args.segmentation_size, args.size, segmentation.disk(args.margin)
    workdir = tempfile.TemporaryDirectory(prefix="bench_masks_")  # removed at exit, also after a failed check
    folder = Path(workdir.name)
    paths = []
    for i in range(min(args.decode, args.n)):
        paths.append(str(folder / f"{i}.png"))
        cv2.imwrite(paths[-1], cv2.resize(masks[i] * 255, (256, 256), interpolation=cv2.INTER_NEAREST))
    frame = pd.DataFrame({"path": paths, "mask_path": paths})

    def decode_one_at_a_time():
        out = np.zeros((len(paths), size, size), np.uint8)
        for i, path in enumerate(paths):
            out[i] = cv2.resize(cv2.imread(path, cv2.IMREAD_UNCHANGED), (size, size), interpolation=cv2.INTER_NEAREST)
        return out > 127

    steps = {  # name: (one image at a time, study)
        f"binary check of {args.n} masks": (
            lambda: bool(np.isin(masks, (0, 1)).all()),
            lambda: segmentation._zeros_and_ones(masks),
        ),
        f"masks {size} -> {seg} px (area >= 0.5)": (
            lambda: np.stack(
                [cv2.resize(m.astype(np.float32), (seg, seg), interpolation=cv2.INTER_AREA) >= 0.5 for m in masks]
            ).astype(np.uint8),
            lambda: segmentation.resize_masks(masks, seg),
        ),
        f"images {size} -> {seg} px (area)": (
            lambda: np.stack([cv2.resize(x[:, :, 0], (seg, seg), interpolation=cv2.INTER_AREA) for x in images])[
                ..., None
            ],
            lambda: segmentation.resize_images(images, seg),
        ),
        f"masks {seg} -> {size} px (nearest)": (
            lambda: np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) for m in small]),
            lambda: segmentation.resize_masks(small, size),
        ),
        f"dilate {args.n} masks by {args.margin} px": (
            lambda: np.stack([cv2.dilate(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) for m in masks]),
            lambda: segmentation.dilate_masks(masks, args.margin),
        ),
        f"decode {len(paths)} mask PNGs at {size} px": (
            decode_one_at_a_time,
            lambda: dataset.load_masks(frame, size, kind="lung"),
        ),
    }
    # Notebook 06's mask energy of 540 test heatmaps (9x9, upsampled to the image size): the whole stack at once
    # (the reference) vs the study's chunks of a few images; bitwise the same shares.
    n_test = min(540, args.n)
    heat = rng.normal(size=(n_test, 9, 9)).astype(np.float32)

    def energy_at_once():
        inside = masks[:n_test] != 0
        whole = np.maximum(upsample(heat, (size, size)), 0.0).astype(np.float64)
        total, within = whole.sum(axis=(1, 2)), (whole * inside).sum(axis=(1, 2))
        return np.where(total > 0, within / np.where(total > 0, total, 1.0), np.nan)

    steps[f"mask energy of {n_test} heatmaps at {size} px"] = (
        energy_at_once,
        lambda: localization.mask_energy(heat, masks[:n_test]),
    )

    # An epoch of U-Net training data: the permuted training set as float32 (images and masks) before the epoch,
    # vs each batch gathered from the uint8 arrays and scaled as fit takes it (:class:`segmentation._Batches`).
    x_small = segmentation.resize_images(images, seg)
    x_float, y_float = x_small.astype(np.float32) / np.float32(255.0), small[..., None].astype(np.float32)
    order = np.random.default_rng(1).permutation(args.n)
    order = order[: (args.n // 32) * 32]
    batches = segmentation._Batches(x_small, small, order, 32)
    for k in (0, len(batches) // 2, len(batches) - 1):
        rows = order[k * 32 : (k + 1) * 32]
        np.testing.assert_array_equal(batches[k][0], x_float[rows])
        np.testing.assert_array_equal(batches[k][1], y_float[rows])
    steps[f"an epoch's {len(batches)} batches at {seg} px"] = (  # both give the last batch's masks
        lambda: (x_float[order], y_float[order])[1][-32:],
        lambda: [batches[k] for k in range(len(batches))][-1][1],
    )

    print(f"{parallel.worker_count()} threads; best of {args.repeats}")
    print(f"{'step':<40} {'one at a time':>14} {'study':>9} {'ratio':>7}")
    results = {}
    for name, (reference, study) in steps.items():
        t_ref, expected = best_time(reference, args.repeats)
        t_new, got = best_time(study, args.repeats)
        if np.asarray(expected).dtype == np.float64:
            np.testing.assert_array_equal(got, expected)  # mask energies: bitwise
        else:
            np.testing.assert_array_equal(np.asarray(got, dtype=np.uint8), np.asarray(expected, dtype=np.uint8))
        results[name] = {"one_at_a_time_s": t_ref, "study_s": t_new, "ratio": t_ref / t_new}
        print(f"{name:<40} {t_ref:>12.3f} s {t_new:>7.3f} s {t_ref / t_new:>6.1f}x")
    total_ref = sum(r["one_at_a_time_s"] for r in results.values())
    total_new = sum(r["study_s"] for r in results.values())
    print(f"{'all steps':<40} {total_ref:>12.3f} s {total_new:>7.3f} s {total_ref / total_new:>6.1f}x")
    workdir.cleanup()
    return {"threads": parallel.worker_count(), "steps": results}


if __name__ == "__main__":
    main()
