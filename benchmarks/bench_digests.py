"""Benchmark: what verifying a study file's SHA-256 costs next to loading it, on files of the paper's sizes.

Every file a notebook reads under ``data/`` is hashed once as it is read (:func:`helpers.study.lineage.read_verified`,
:func:`helpers.study.lineage.array_digest` for the cached images) and compared with the digest its lineage record holds.
This script writes stand-ins of the paper's files in the study's formats into a temporary folder and times, per
file, loading it as the study does and hashing it, best of ``--repeats``:

- the image cache of the test split, 540 x 299 x 299 uint8 (``.npy``), and of the training split, 4,304 images;
- ``lung_masks.npz``: 0/1 masks of 4,304 + 536 + 540 images at 299 px (compressed; the test split is loaded);
- ``heatmaps_<model>.npz``: 540 Grad-CAM maps of 9 x 9 (float32), ``predictions_<model>.npz``: 540 x 4;
- ``split.csv`` of 5,380 rows, and a model file of DenseNet201's size (80 MB; loading it with Keras takes longer
  than the read timed here).

Usage::

    python benchmarks/bench_digests.py [--test 540] [--train 4304] [--size 299] [--model-mb 80] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import best_time, work_folder  # noqa: E402

from helpers.study import lineage


def _lung_masks(rng, n: int, size: int) -> np.ndarray:
    """n masks (N, size, size) uint8 0/1: two filled ellipses each, like a pair of lungs."""
    yy, xx = np.mgrid[:size, :size] / size
    masks = np.zeros((n, size, size), np.uint8)
    for mask, (dx, dy) in zip(masks, rng.uniform(-0.04, 0.04, (n, 2))):
        for side in (0.3, 0.7):
            mask |= (((xx - side - dx) / 0.14) ** 2 + ((yy - 0.5 - dy) / 0.3) ** 2 <= 1).astype(np.uint8)
    return masks


def _npz(path: Path, keys=None) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files if keys is None or key in keys}


def _files(folder: Path, args) -> dict[str, tuple[Path, object]]:
    """Write the stand-ins; ``{name: (path, load)}`` where ``load()`` reads the file as the study does."""
    rng = np.random.default_rng(0)
    size, n_test = args.size, args.test
    files = {}
    for split, n in (("test", n_test), ("train", args.train)):
        if n:
            path = folder / f"cache-{split}.npy"
            np.save(path, rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8))
            files[f"image cache, {n} x {size}^2 uint8"] = (path, lambda p=path: np.load(p))
    n_val = max(1, n_test - 4)
    path = folder / "lung_masks.npz"
    np.savez_compressed(
        path, train=_lung_masks(rng, args.train or n_test, size), val=_lung_masks(rng, n_val, size),
        test=_lung_masks(rng, n_test, size),
    )  # fmt: skip
    files["lung_masks.npz (test split loaded)"] = (path, lambda p=path: _npz(p, ("test",)))
    path = folder / "heatmaps_densenet201.npz"
    classes = rng.integers(0, 4, n_test)
    np.savez_compressed(path, heatmaps=rng.random((n_test, 9, 9), np.float32), classes=classes, method="gradcam")
    files[f"heatmaps, {n_test} x 9 x 9 float32"] = (path, lambda p=path: _npz(p))
    path = folder / "predictions_densenet201.npz"
    probabilities = rng.dirichlet(np.ones(4), n_test).astype(np.float32)
    np.savez_compressed(path, probabilities=probabilities, labels=classes, predicted=probabilities.argmax(1))
    files[f"predictions, {n_test} x 4"] = (path, lambda p=path: _npz(p))
    path = folder / "split.csv"
    rows = [f"/data/COVID-19_Radiography_Dataset/COVID/images/COVID-{i}.png,COVID,0,,,train" for i in range(5380)]
    path.write_text("path,label,label_index,mask_path,lesion_mask_path,split\n" + "\n".join(rows) + "\n")
    files["split.csv, 5,380 rows"] = (path, lambda p=path: np.genfromtxt(p, dtype=str, delimiter=","))
    path = folder / "densenet201.keras"
    path.write_bytes(rng.bytes(int(args.model_mb * (1 << 20))))
    files[f"model file, {args.model_mb:g} MB (read only)"] = (path, lambda p=path: p.read_bytes())
    return files


def main(argv=None) -> dict:
    """Run the benchmark, print one row per file and return the timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=int, default=540, help="test images (the paper's test split: 540)")
    parser.add_argument("--train", type=int, default=4304, help="training images (0: leave the training cache out)")
    parser.add_argument("--size", type=int, default=299, help="image side in pixels")
    parser.add_argument("--model-mb", type=float, default=80, help="size of the stand-in model file (DenseNet201: 80)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", default=None, help="folder for the stand-in files (default: a temporary one)")
    args = parser.parse_args(argv)
    results = {}
    with work_folder(args.work_dir, "bench_digests_") as folder:
        files = _files(folder, args)
        print(f"best of {args.repeats}; hash: SHA-256 of the bytes read (the cache: lineage.array_digest of the array)")
        print(f"{'file':<40} {'MB':>8} {'load':>9} {'hash':>9} {'hash/load':>10}")
        for name, (path, load) in files.items():
            t_load, loaded = best_time(load, args.repeats)
            if path.suffix == ".npy":
                t_hash, _ = best_time(lambda a=loaded: lineage.array_digest(a), args.repeats)
            else:
                data = path.read_bytes()
                t_hash, _ = best_time(lambda d=data: hashlib.sha256(d).hexdigest(), args.repeats)
                parsed = _npz(io.BytesIO(data)) if path.suffix == ".npz" else None  # the study parses these bytes
                assert parsed is None or set(parsed) >= set(_npz(path))
            megabytes = path.stat().st_size / 1e6
            results[name] = {"megabytes": megabytes, "load_s": t_load, "hash_s": t_hash, "ratio": t_hash / t_load}
            print(f"{name:<40} {megabytes:>8.1f} {t_load:>7.3f} s {t_hash:>7.3f} s {t_hash / t_load:>9.2f}x")
    total_load = sum(r["load_s"] for r in results.values())
    total_hash = sum(r["hash_s"] for r in results.values())
    print(f"{'all files':<40} {'':>8} {total_load:>7.3f} s {total_hash:>7.3f} s {total_hash / total_load:>9.2f}x")
    return {"files": results, "load_s": total_load, "hash_s": total_hash}


if __name__ == "__main__":
    main()
