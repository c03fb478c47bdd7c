"""Do the metrics agree? Per-method summaries with bootstrap intervals, paired comparisons with a reference method,
and Kendall's tau-b between the metrics' rankings of the methods with a bootstrap interval over images.

References: Kendall 1945, "The treatment of ties in ranking problems", Biometrika (tau-b); Tomsett et al. 2020,
"Sanity checks for saliency metrics", AAAI (agreement between saliency metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpers.common.checks import check_int, check_seed
from helpers.metrics.intervals import interval_sign


@dataclass(frozen=True)
class Metric:
    """One column of the methods × metrics table: its key, label, family and which direction is better."""

    key: str
    label: str
    group: str
    higher_is_better: bool


#: Every column of the table, in order.
METRICS: tuple[Metric, ...] = (
    Metric("morf_minus_random", "AOPC MoRF − random", "aopc", True),
    Metric("road_combined", "ROAD (LeRF − MoRF)/2", "road", True),
    Metric("insertion_auc", "insertion AUC", "insertion_deletion", True),
    Metric("deletion_auc", "deletion AUC", "insertion_deletion", False),
    Metric("energy_lesion", "mask energy, lesion", "mask_energy", True),
    Metric("energy_lung", "mask energy, lungs", "mask_energy", True),
    Metric("pointing_lesion", "pointing game, lesion", "pointing_game", True),
    Metric("pointing_lung", "pointing game, lungs", "pointing_game", True),
    Metric("randomisation_spearman", "Spearman to trained, top backbone layer re-drawn", "randomisation", False),
    Metric("randomisation_ssim", "SSIM to trained, top backbone layer re-drawn", "randomisation", False),
)
#: The columns by key.
METRIC_BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}


def kendall_tau(x, y) -> np.ndarray | float:
    """Kendall's τ-b of two rankings along the last axis (ties allowed; items with NaN in either left out); NaN when undefined.

    ``x`` and ``y`` (..., K): τ-b = (concordant − discordant pairs) / sqrt(pairs untied in x · pairs untied in y),
    as ``scipy.stats.kendalltau(x, y, nan_policy="omit")``, for a whole stack of rankings at once.
    References: Kendall 1938, "A new measure of rank correlation", Biometrika; Kendall 1945 (τ-b, ties).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim < 1:
        raise ValueError(f"x and y must be rankings of one shape (..., K), got {x.shape} and {y.shape}")
    first, second = np.triu_indices(x.shape[-1], 1)
    dx, dy = x[..., first] - x[..., second], y[..., first] - y[..., second]
    valid = np.isfinite(dx) & np.isfinite(dy)
    sx, sy = np.where(valid, np.sign(dx), 0.0), np.where(valid, np.sign(dy), 0.0)
    untied = np.count_nonzero(sx, axis=-1) * np.count_nonzero(sy, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(untied > 0, (sx * sy).sum(axis=-1) / np.sqrt(np.maximum(untied, 1)), np.nan)
    return float(tau) if tau.ndim == 0 else tau


def summarise(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict | None:
    """Mean of the finite per-image ``values`` with its percentile-bootstrap interval (``mean, low, high, n``); None when none is finite."""
    from helpers.metrics.intervals import bootstrap_ci

    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    entry = bootstrap_ci(finite, n_boot, seed, level)
    return {"mean": entry["mean"], "low": entry["low"], "high": entry["high"], "n": int(finite.size)}


def paired_comparisons(per_method, reference: str, higher_is_better=True, n_boot=2000, seed=0, level=0.95) -> list:
    """``reference`` − each other method, paired over the images finite for both, with bootstrap intervals.

    Rows: ``method``, ``estimate``, ``low``, ``high``, ``n`` and ``better``: +1 when the reference is better (the
    interval excludes 0 on the better side, on at least :data:`helpers.metrics.intervals.MIN_IMAGES` images), -1 when worse,
    0 when it cannot be told (:func:`helpers.metrics.intervals.interval_sign`).
    """
    if reference not in per_method:
        return []
    ref = np.asarray(per_method[reference], np.float64)
    rows = []
    for method, values in per_method.items():
        entry = None if method == reference else summarise(ref - np.asarray(values, np.float64), n_boot, seed, level)
        if entry is None:
            continue
        sign = interval_sign(entry["low"], entry["high"], entry["n"])
        rows.append({"method": method, "estimate": entry["mean"], "low": entry["low"], "high": entry["high"],
                     "n": entry["n"], "better": sign if higher_is_better else -sign})  # fmt: skip
    return rows


def _boot_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, K) means over the finite entries of ``values`` (K, n) under resample counts (B, n)."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(finite, values, 0.0).T) / (counts @ finite.T.astype(np.float64))


def rank_agreement(values, higher_is_better=None, image_sets=None, n_boot=2000, seed=0, level=0.95) -> dict:
    """Kendall's τ between the methods' rankings by every two metrics, with percentile-bootstrap intervals over images.

    ``values``: {metric: {method: per-image values (n,)}} (NaN: no value for that image); a metric ranks the methods
    by their mean over its finite values, oriented by ``higher_is_better`` (default True), so that τ > 0 means the
    two metrics agree on which methods are better. Metrics of one ``image_sets`` name (default: all one set) were
    computed on the same images and are resampled together; different sets are resampled independently. Returns
    ``metrics``, ``methods`` and ``pairs``: one row per two metrics (``first``, ``second``, ``tau``, ``low``, ``high``,
    NaN where undefined, ``n_images``, ``n_methods``: the methods both rank).
    References: Kendall 1938 (Biometrika), rank correlation; Efron & Tibshirani 1993 (percentile bootstrap).
    """
    metrics = list(values)
    methods = list(dict.fromkeys(m for metric in metrics for m in values[metric]))
    n_boot, seed = check_int("n_boot", n_boot, 1), check_seed(seed)
    sets = {metric: (image_sets or {}).get(metric, "") for metric in metrics}
    arrays, counts = {}, {}
    for metric in metrics:
        n = max(len(np.atleast_1d(v)) for v in values[metric].values())
        rows = [np.asarray(values[metric].get(m, np.full(n, np.nan)), np.float64) for m in methods]
        arrays[metric] = np.stack(rows)
        if sets[metric] not in counts:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A0, len(counts)]))
            counts[sets[metric]] = np.stack([np.bincount(r, minlength=n) for r in rng.integers(0, n, (n_boot, n))])
        if counts[sets[metric]].shape[1] != n:
            raise ValueError(f"metric {metric!r} has {n} images, unlike the other metrics of its image set")
    sign = {m: 1.0 if (higher_is_better or {}).get(m, True) else -1.0 for m in metrics}
    point = {m: sign[m] * _boot_means(arrays[m], np.ones((1, arrays[m].shape[1])))[0] for m in metrics}
    boot = {m: sign[m] * _boot_means(arrays[m], counts[sets[m]].astype(np.float64)) for m in metrics}
    pairs, alpha = [], (1.0 - level) / 2.0
    for i, a in enumerate(metrics):
        for b in metrics[i + 1 :]:
            samples = kendall_tau(boot[a], boot[b])
            samples = samples[np.isfinite(samples)]
            low, high = np.quantile(samples, [alpha, 1 - alpha]) if samples.size else (np.nan, np.nan)
            pairs.append({"first": a, "second": b, "tau": kendall_tau(point[a], point[b]), "low": float(low),
                          "high": float(high), "n_images": int(min(arrays[a].shape[1], arrays[b].shape[1])),
                          "n_methods": int((np.isfinite(point[a]) & np.isfinite(point[b])).sum())})  # fmt: skip
    return {"metrics": metrics, "methods": methods, "pairs": pairs, "n_boot": n_boot, "level": level}
