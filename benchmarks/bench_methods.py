"""Batched heatmap methods and metrics against one-at-a-time references, side by side in one run: times, ratios, agreement.

Usage::

    python benchmarks/bench_methods.py                       # demo sizes: 96 px, 16 px regions
    KERAS_BACKEND=jax python benchmarks/bench_methods.py --image-size 299 --region-size 34 --n 32

* Score-CAM: :func:`helpers.explain.scorecam_weights` with the whole batch of (image, channel) pairs per forward,
  against the same compiled code at batch size 1 (one forward per channel, as a per-channel loop runs).
* ROAD's imputation: the batched device solve (:func:`helpers.metrics.road_impute`, each solver) against a direct
  sparse solve (``scipy.sparse.linalg.spsolve``) of the same system, one image and channel at a time; the systems
  are those of the ROAD curves (removal fractions 10 % .. 90 % of seeded random region orders).

Each path is warmed up (compiled) before it is timed, and timed ``--repeats`` times (the best run is reported).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import best_time  # noqa: E402

from helpers.explain.score_cam import scorecam_weights
from helpers.metrics import imputation, road
from helpers.metrics import perturbation as pt
from helpers.models import classifiers as models


def _spsolve_all(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The linear imputation of every image by scipy's direct sparse solve, one image and channel at a time."""
    import scipy.sparse.linalg as spl

    out = x.astype(np.float64).copy()
    for i in range(len(x)):
        for c in range(x.shape[-1]):
            matrix, b, rows, cols = imputation.imputation_system(x[i, ..., c], removed[i])
            out[i, rows, cols, c] = spl.spsolve(matrix.tocsc(), b)
    return out


def road_systems(n: int, size: int, region: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth images with texture and the removed pixels of ROAD's fractions under seeded random region orders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    grid = pt.region_grid(size, region)
    counts = road.removed_regions(road.FRACTIONS, grid.n_regions)
    images, masks = [], []
    for i in range(n):
        base = 0.5 + 0.25 * np.sin(6 * xx + i) * np.cos(4 * yy - i) + 0.05 * rng.standard_normal((size, size))
        order = pt.region_order(np.zeros((1, grid.n_regions)), "random", seed, [i])[0]
        k = counts[i % len(counts)]
        images.append(np.clip(base, 0, 1)[..., None])
        masks.append(np.isin(grid.region_map, order[:k]))
    return np.stack(images).astype(np.float32), np.stack(masks)


def bench_scorecam(args) -> dict:
    """Score-CAM batched against one forward per (image, channel)."""
    rng = np.random.default_rng(args.seed)
    images = rng.integers(0, 256, (args.n, args.image_size, args.image_size, 1), dtype=np.uint8)
    model = models.build_classifier(args.backbone, image_size=args.image_size, weights=None, seed=args.seed)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    start = time.perf_counter()
    scorecam_weights(model, images[: args.batch_size], batch_size=args.batch_size)
    scorecam_weights(model, images[:1], batch_size=1)
    warm = time.perf_counter() - start
    t_batch, batched = best_time(lambda: scorecam_weights(model, images, batch_size=args.batch_size), args.repeats)
    t_loop, looped = best_time(lambda: scorecam_weights(model, images, batch_size=1), args.repeats)
    channels = batched["weights"].shape[1]
    diff = float(np.abs(batched["maps"] - looped["maps"]).max()) / max(float(batched["maps"].max()), 1e-12)
    print(
        f"Score-CAM ({args.backbone}, {args.n} images x {channels} channels = {args.n * channels} masked forwards): "
        f"batched {t_batch:.2f} s, per-channel loop {t_loop:.2f} s, ratio {t_loop / t_batch:.1f}x; "
        f"max |diff| / max = {diff:.1e}; warm-up {warm:.1f} s"
    )
    return {"batched_s": t_batch, "loop_s": t_loop, "ratio": t_loop / t_batch, "max_rel_diff": diff}


def bench_road(args) -> dict:
    """ROAD's batched device solve (each solver) against scipy's direct sparse solve per image."""
    x, removed = road_systems(args.road_n, args.image_size, args.region_size, args.seed)
    t_direct, exact = best_time(lambda: _spsolve_all(x, removed), 1)
    print(
        f"ROAD imputation ({args.road_n} systems of {args.image_size} px, {removed.mean():.0%} of pixels removed): "
        f"per-image spsolve {t_direct:.2f} s ({args.road_n / t_direct:.1f} systems/s)"
    )
    out = {"spsolve_s": t_direct}
    for solver in ("cg", "multigrid"):

        def batched(solver=solver):
            return imputation.road_impute(x, removed, sigma=0.0, batch_size=args.batch_size, solver=solver)

        start = time.perf_counter()
        imputation.road_impute(
            x[: args.batch_size], removed[: args.batch_size], 0.0, batch_size=args.batch_size, solver=solver
        )
        warm = time.perf_counter() - start
        t_batch, (imputed, residual) = best_time(batched, args.repeats)
        error = float(np.abs(imputed - exact).max())
        print(
            f"  batched {solver:>9}: {t_batch:.2f} s ({args.road_n / t_batch:.1f} systems/s), "
            f"ratio to spsolve {t_direct / t_batch:.1f}x; max |device - spsolve| = {error:.1e}, "
            f"largest relative residual {residual.max():.1e}; warm-up {warm:.1f} s"
        )
        out[solver] = {"batched_s": t_batch, "ratio": t_direct / t_batch, "max_error": error}
    auto = "multigrid" if imputation.use_multigrid("auto", args.image_size, args.image_size) else "cg"
    print(f"  (solver='auto' takes {auto} at {args.image_size} px)")
    return out


def main(argv=None) -> dict:
    """Run both benchmarks and print their lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="images for Score-CAM")
    parser.add_argument("--road-n", type=int, default=36, help="imputation systems for ROAD")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--region-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="small_vgg")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", choices=("scorecam", "road"), default=None, help="leave one benchmark out")
    args = parser.parse_args(argv)
    print(f"backend {keras.backend.backend()}, batch size {args.batch_size}, best of {args.repeats}")
    results = {}
    if args.skip != "scorecam":
        results["scorecam"] = bench_scorecam(args)
    if args.skip != "road":
        results["road"] = bench_road(args)
    return results


if __name__ == "__main__":
    main()
