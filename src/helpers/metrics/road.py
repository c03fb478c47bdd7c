"""ROAD: RemOve And Debias. MoRF and LeRF curves under noisy linear imputation, and the combined score.

At each removal fraction f (default 10 %, 20 %, ..., 90 %) the first ``round(f * R)`` of the image's R regions in
the heatmap's order (MoRF: most relevant first; LeRF: least relevant first; ties broken by a seeded random priority,
:func:`helpers.metrics.perturbation.region_order`) are removed and imputed from the kept pixels
(:mod:`helpers.metrics.imputation`), plus N(0, 0.01^2) noise; f(x) is the model's probability of the explained
class. Imputation instead of noise keeps the perturbed images close to the data, so a drop in f measures the
removed information rather than the artefacts of the perturbation. A good heatmap gives a low MoRF and a high
LeRF curve: the per-image score is the mean over fractions of ``(LeRF - MoRF) / 2``.

The (image, fraction) pairs are built, imputed and scored on the device: the removed pixels of a batch of pairs
come from the per-region steps of its images and the pixel-to-region map, the imputation is one compiled batched
solve, and the batch goes through the model's one compiled forward (:func:`helpers.backend.device.forward`).

References: Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML.
"""

from __future__ import annotations

import math

import numpy as np

from helpers.backend.compilation import compiled_function
from helpers.backend.transfer import pad_rows, to_device, to_unit
from helpers.common.checks import check_int, check_seed, image_array
from helpers.common.choices import ORDERS, REGION_SCORES
from helpers.metrics.imputation import ROAD_NOISE, default_iterations, impute_batch, road_noise, use_multigrid, with_xla
from helpers.metrics.intervals import bootstrap_ci
from helpers.metrics.perturbation import region_grid, region_order, step_of_region
from helpers.metrics.perturbation import region_scores as score_regions

__all__ = ["FRACTIONS", "removed_regions", "road_curves", "road_scores", "road_evaluation"]

#: The default removal fractions: 10 %, 20 %, ..., 90 %.
FRACTIONS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))


def removed_regions(fractions, n_regions: int) -> np.ndarray:
    """(F,) number of regions removed at each fraction: ``floor(f * R + 1/2)``, at least one region always kept."""
    values = np.asarray(fractions, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all((values >= 0) & (values < 1)):
        raise ValueError(f"fractions must be a non-empty list of values in [0, 1), got {fractions!r}")
    counts = np.floor(values * n_regions + 0.5).astype(np.int32)
    if counts.max() >= n_regions:
        raise ValueError(
            f"fraction {values[counts.argmax()]:g} of {n_regions} regions removes them all: ROAD's imputation "
            "needs kept pixels (use smaller fractions or smaller regions)"
        )
    return counts


def _inputs_function(batch_size: int, image_shape: tuple, n_fractions: int, tol: float, max_iter: int, multigrid: bool):
    """Compiled ``(x, noise, region_steps, region_map, counts, start) -> (imputed inputs, residual)`` of one batch of pairs.

    Pairs are image-major (pair p = image p // F, fraction p % F); pairs past the group repeat its last image.
    """
    from keras import ops

    def build(x, noise, region_steps, region_map, counts, start):
        pair = start + ops.arange(batch_size, dtype="int32")
        img = ops.minimum(pair // n_fractions, ops.shape(x)[0] - 1)
        removed_count = ops.take(counts, pair % n_fractions, axis=0)
        steps = ops.take(ops.take(region_steps, img, axis=0), region_map, axis=1)  # (B, H, W)
        removed = steps <= removed_count[:, None, None]
        images = to_unit(ops.take(x, img, axis=0))
        return impute_batch(images, removed, ops.take(noise, img, axis=0), tol, max_iter, multigrid)

    key = ("road inputs", int(batch_size), *map(int, image_shape), int(n_fractions), float(tol), max_iter, multigrid)
    return compiled_function(key, with_xla(build))


def road_curves(
    model,
    images,
    heatmaps,
    classes,
    region_size,
    order: str = "morf",
    fractions=FRACTIONS,
    sigma: float = ROAD_NOISE,
    seed: int = 0,
    batch_size: int = 64,
    image_ids=None,
    region_scores: str = "grid",
    tol: float = 1e-5,
    max_iter: int | None = None,
    solver: str = "auto",
    progress: bool = False,
    return_residual: bool = False,
):
    """ROAD curves f(x_f) at each removal fraction, float64 (N, F): f the model's probability of ``classes[i]``.

    ``images`` uint8 or float in [0, 1], (N, H, W[, C]); ``heatmaps`` (N, h, w) raw relevance (None for
    ``order="random"``); regions of ``region_size`` scored as :func:`helpers.metrics.perturbation.region_scores` with
    ``region_scores`` ("grid" or "upsample"). ``order``: "morf", "lerf" or "random". Noise and tie-breaking are
    seeded by (seed, image id) only (``image_ids`` default 0..N-1): both orders and every model see the same noise
    for the same image.
    ``solver``/``tol``/``max_iter``: the imputation's (:func:`helpers.metrics.imputation.impute_function`). With
    ``return_residual`` also the (N, F) relative residuals of the solves.
    References: Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML.
    """
    from keras import ops

    from helpers.backend.device import forward

    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if region_scores not in REGION_SCORES:
        raise ValueError(f"region_scores must be one of {REGION_SCORES}, got {region_scores!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    seed = check_seed(seed)
    batch_size = check_int("batch_size", batch_size, 1)
    x = image_array(images)
    raw = np.asarray(images)
    raw = raw[..., None] if raw.ndim == 3 else raw
    n, height, width, channels = x.shape
    if n == 0:
        raise ValueError("images is empty")
    expected = getattr(model, "input_shape", None)
    if isinstance(expected, tuple) and len(expected) == 4 and None not in expected[1:]:
        if tuple(expected[1:]) != (height, width, channels):
            raise ValueError(f"images have shape {(height, width, channels)} but the model expects {expected[1:]}")
    grid = region_grid((height, width), region_size)
    counts = removed_regions(fractions, grid.n_regions)
    if heatmaps is None:
        if order != "random":
            raise ValueError(f"heatmaps are required for order={order!r} (only 'random' ignores them)")
        scores = np.zeros((n, grid.n_regions))
    else:
        scores = score_regions(heatmaps, (height, width), grid.region_size, mode=region_scores)
        if len(scores) != n:
            raise ValueError(f"heatmaps has {len(scores)} maps for {n} images")
    classes = np.asarray(classes)
    if classes.shape != (n,) or not np.issubdtype(classes.dtype, np.integer) or classes.min() < 0:
        raise ValueError(f"classes must be {n} non-negative class indices, got {classes.dtype} {classes.shape}")
    ids = np.arange(n, dtype=np.int64) if image_ids is None else np.asarray(image_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"image_ids must have one id per image ({n}), got shape {ids.shape}")

    steps = step_of_region(region_order(scores, order, seed, ids)).astype(np.int32)
    multigrid = use_multigrid(solver, height, width)
    build = _inputs_function(
        batch_size,
        (height, width, channels),
        len(counts),
        tol,
        default_iterations(max_iter, multigrid, height, width),
        multigrid,
    )
    model_forward = forward(model, batch_size, "float32")
    region_map = to_device(grid.region_map.astype(np.int32))
    counts_dev = to_device(counts)
    n_fractions = len(counts)
    curves = np.empty((n, n_fractions), np.float64)
    residual = np.empty((n, n_fractions), np.float64)
    bar = None
    if progress:
        from helpers.common.progress import tqdm

        bar = tqdm(total=n, desc=f"{model.name}: ROAD {order}", unit="img")
    pending = []
    for first in range(0, n, batch_size):
        last = min(n, first + batch_size)
        real = last - first
        x_host = raw[first:last] if raw.dtype == np.uint8 else x[first:last]
        noise = road_noise((height, width, channels), seed, ids[first:last], float(sigma))
        group = [to_device(pad_rows(a, batch_size)) for a in (x_host, noise, steps[first:last])]
        outputs = []
        for start in range(0, real * n_fractions, batch_size):
            inputs, res = build(*group, region_map, counts_dev, to_device(np.int32(start)))
            outputs.append((model_forward(inputs), res))
        pending.append((first, last, outputs))
        if bar is not None:
            bar.update(real)
    for first, last, outputs in pending:
        pairs = (last - first) * n_fractions
        probs = np.concatenate([np.asarray(ops.convert_to_numpy(o), np.float32) for o, _ in outputs])[:pairs]
        res = np.concatenate([np.asarray(ops.convert_to_numpy(r), np.float64) for _, r in outputs])[:pairs]
        explained = np.repeat(classes[first:last], n_fractions)
        curves[first:last] = probs[np.arange(pairs), explained].reshape(last - first, n_fractions)
        residual[first:last] = res.reshape(last - first, n_fractions)
    if bar is not None:
        bar.close()
    return (curves, residual) if return_residual else curves


def road_scores(morf, lerf, mask=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """ROAD statistics of MoRF and LeRF curves (N, F): means over fractions and the combined score, with intervals.

    Per image: ``morf`` and ``lerf`` = the curve's mean over fractions, ``combined`` = mean of (LeRF - MoRF) / 2
    (higher is better). Returns ``{morf, lerf, combined}`` as :func:`helpers.metrics.intervals.bootstrap_ci` entries (mean, low,
    high), the per-image values (``per_image_*``), the mean curves with their per-fraction bands (``morf_curve``,
    ``lerf_curve``) and ``n_images``. ``mask`` (boolean (N,)) selects images, e.g. the correctly classified ones.
    References: Rong et al. 2022 (ICML), ROAD; Efron & Tibshirani 1993 (percentile bootstrap).
    """
    morf = np.asarray(morf, np.float64)
    lerf = np.asarray(lerf, np.float64)
    if morf.ndim != 2 or morf.shape != lerf.shape:
        raise ValueError(f"morf and lerf must be (N, F) curves of one shape, got {morf.shape} and {lerf.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (len(morf),) or mask.dtype != bool or not mask.any():
            raise ValueError(f"mask must be a boolean array of shape ({len(morf)},) selecting some image")
        morf, lerf = morf[mask], lerf[mask]
    per_image = {"morf": morf.mean(axis=1), "lerf": lerf.mean(axis=1), "combined": ((lerf - morf) / 2).mean(axis=1)}
    out = {name: bootstrap_ci(values, n_boot, seed, level) for name, values in per_image.items()}
    out.update({f"per_image_{name}": values for name, values in per_image.items()})
    out["morf_curve"] = bootstrap_ci(morf, n_boot, seed, level)
    out["lerf_curve"] = bootstrap_ci(lerf, n_boot, seed, level)
    out["n_images"] = int(len(morf))
    return out


def road_evaluation(
    model,
    images,
    heatmaps,
    classes,
    region_size,
    fractions=FRACTIONS,
    mask=None,
    n_boot: int = 2000,
    seed: int = 0,
    **options,
) -> dict:
    """ROAD MoRF and LeRF curves of one model's heatmaps and their scores (:func:`road_scores`), in one call.

    ``options`` go to :func:`road_curves` (sigma, batch_size, image_ids, solver, ...). Returns ``fractions``,
    ``morf`` and ``lerf`` (N, F), ``residual`` (the largest relative residual of any solve) and ``scores``.
    References: Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML.
    """
    curves, residual = {}, 0.0
    for order in ("morf", "lerf"):
        curves[order], res = road_curves(
            model, images, heatmaps, classes, region_size, order, fractions, seed=seed, return_residual=True, **options
        )
        residual = max(residual, float(res.max()))
    return {
        "fractions": [float(f) for f in fractions],
        "morf": curves["morf"],
        "lerf": curves["lerf"],
        "residual": residual,
        "scores": road_scores(curves["morf"], curves["lerf"], mask, n_boot, seed),
    }
