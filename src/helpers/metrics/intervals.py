"""Percentile-bootstrap intervals (:func:`bootstrap_ci` of any per-image statistic; paired, class-stratified ones of
recall and F1) and the interval rule every stated comparison follows.

Test images are resampled with replacement *within each true class* (a stratified bootstrap: the test split is
balanced by design, so class supports stay fixed and no resample lacks a class), and the same resampled images
are scored for every model, so the difference between two models is paired over the same test images. A
comparison names a winner only when its percentile interval excludes 0 (:func:`interval_sign`).

References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile interval, stratified
resampling, ch. 13 and 16).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from helpers.common import config
from helpers.common.checks import check_int, check_seed

__all__ = [
    "MIN_IMAGES",
    "stratified_bootstrap_indices",
    "interval_sign",
    "comparison_pair",
    "classification_intervals",
    "format_interval",
]


def stratified_bootstrap_indices(labels, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot, N) indices of test images drawn with replacement within each true class (class counts kept).

    References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (stratified bootstrap).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    n_boot = check_int("n_boot", n_boot, 1)
    rng = np.random.default_rng(np.random.SeedSequence([check_seed(seed), 0xC1A5]))
    out = np.empty((n_boot, labels.size), dtype=np.int64)
    for c in np.unique(labels):  # sorted: the draws depend on the seed and the labels only
        members = np.flatnonzero(labels == c)
        out[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return out


#: Fewer images than this decide no comparison: a bootstrap over so few values is too coarse to be an interval.
MIN_IMAGES = 10


def interval_sign(low: float, high: float, n: int | None = None) -> int:
    """+1 when an interval lies above 0, -1 when below 0, 0 when it contains 0 or rests on fewer than :data:`MIN_IMAGES` images."""
    if n is not None and n < MIN_IMAGES:
        return 0
    return 1 if low > 0 else (-1 if high < 0 else 0)


def comparison_pair(names: Sequence[str], compare: Sequence[str] | None = None, what: str = "comparison") -> tuple:
    """The two models a paired comparison compares: ``compare`` when given, else ``names`` when there are exactly two.

    Raises ValueError for more than two models without ``compare`` (no silent choice of the first two).
    """
    names = list(names)
    if compare is None:
        if len(names) != 2:
            raise ValueError(
                f"the paired {what} compares two models, got {len(names)}: {names}; name the two with compare=(a, b)"
            )
        return names[0], names[1]
    compare = list(compare)
    if len(compare) != 2 or compare[0] == compare[1]:
        raise ValueError(f"compare must name two different models, got {compare}")
    missing = [name for name in compare if name not in names]
    if missing:
        raise ValueError(f"compare names {missing}, which are not among the models {names}")
    return compare[0], compare[1]


def format_interval(entry: Mapping, digits: int = 3) -> str:
    """'estimate [low, high]' of an ``{estimate, low, high}`` entry."""
    return f"{entry['estimate']:.{digits}f} [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"


def _recall_f1(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per-class recall and F1 and macro recall/F1 of each row of (B, N) labels and predictions (classification-report definitions, 0 where undefined)."""
    rows = labels.shape[0]
    codes = labels * n_classes + predicted + (np.arange(rows) * n_classes * n_classes)[:, None]
    matrix = np.bincount(codes.ravel(), minlength=rows * n_classes * n_classes).reshape(rows, n_classes, n_classes)
    tp = np.diagonal(matrix, axis1=1, axis2=2).astype(np.float64)
    support, predicted_count = matrix.sum(axis=2), matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        precision = np.where(predicted_count > 0, tp / np.maximum(predicted_count, 1), 0.0)
        total = precision + recall
        f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1.0), 0.0)
    return {"recall": recall, "f1": f1, "macro_recall": recall.mean(axis=1), "macro_f1": f1.mean(axis=1)}


def _entry(estimate: float, samples: np.ndarray, level: float) -> dict:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def classification_intervals(
    labels,
    predictions: Mapping[str, np.ndarray],
    class_names: Sequence[str] = config.CLASS_NAMES,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    compare: Sequence[str] | None = None,
) -> dict:
    """Bootstrap intervals of macro recall, macro F1 and per-class recall per model, and the paired macro-recall difference.

    ``predictions``: {model: (N,) predicted class indices} of the same test images, labels (N,). Every model is
    scored on the same stratified resamples (:func:`stratified_bootstrap_indices`). Returns ``models`` {name:
    {"macro_recall", "macro_f1": {estimate, low, high}, "per_class_recall": {class: {estimate, low, high}}}} and,
    for two models (or the two named by ``compare``), ``recall_difference`` and ``f1_difference`` {estimate, low,
    high} of macro recall and macro F1, first − second, with ``compared`` naming them; plus ``n_images``, ``n_boot``, ``seed``, ``level``, ``method``.
    References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (stratified percentile bootstrap).
    """
    labels = np.asarray(labels, dtype=np.int64)
    class_names = list(class_names)
    n_classes = len(class_names)
    if not predictions:
        raise ValueError("predictions is empty")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be class indices in [0, {n_classes}) of shape (N,), got {labels.shape}")
    predicted = {}
    for name, values in predictions.items():
        values = np.asarray(values, dtype=np.int64)
        if values.shape != labels.shape or values.min() < 0 or values.max() >= n_classes:
            raise ValueError(f"predictions of {name!r} must be class indices of shape {labels.shape}")
        predicted[name] = values
    pair = comparison_pair(list(predicted), compare, "recall comparison") if len(predicted) > 1 else None
    draws = stratified_bootstrap_indices(labels, n_boot, seed)
    resampled_labels = labels[draws]
    out: dict = {
        "n_images": int(labels.size),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": level,
        "method": "percentile bootstrap, resampling test images within each true class, the same resamples for every model",
        "models": {},
    }
    boot_recall, boot_f1 = {}, {}
    for name, values in predicted.items():
        point = _recall_f1(labels[None, :], values[None, :], n_classes)
        boot = _recall_f1(resampled_labels, values[draws], n_classes)
        boot_recall[name] = (point["macro_recall"][0], boot["macro_recall"])
        boot_f1[name] = (point["macro_f1"][0], boot["macro_f1"])
        out["models"][name] = {
            "macro_recall": _entry(point["macro_recall"][0], boot["macro_recall"], level),
            "macro_f1": _entry(point["macro_f1"][0], boot["macro_f1"], level),
            "per_class_recall": {
                c: _entry(point["recall"][0, k], boot["recall"][:, k], level) for k, c in enumerate(class_names)
            },
        }
    if pair is not None:
        a, b = pair
        out["compared"] = [a, b]
        out["recall_difference"] = _entry(
            boot_recall[a][0] - boot_recall[b][0], boot_recall[a][1] - boot_recall[b][1], level
        )
        out["f1_difference"] = _entry(boot_f1[a][0] - boot_f1[b][0], boot_f1[a][1] - boot_f1[b][1], level)
    return out


def bootstrap_ci(per_image_values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap interval of the mean over images (axis 0): ``mean``, ``low``, ``high`` (per column for 2-D input).

    Resampling is vectorized as a (n_boot, n) matrix of draw counts, so a whole curve shares one set of resamples.
    References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile interval).
    """
    values = np.asarray(per_image_values, dtype=np.float64)
    if values.ndim not in (1, 2) or len(values) == 0:
        raise ValueError(f"per_image_values must be a non-empty (n,) or (n, T) array, got {values.shape}")
    n_boot = check_int("n_boot", n_boot, 1)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    rng = np.random.default_rng(np.random.SeedSequence([check_seed(seed), 0xB007]))
    n = len(values)
    flat = values.reshape(n, -1)
    means = np.empty((n_boot, flat.shape[1]))
    block = max(1, min(n_boot, 2**22 // n))
    for b0 in range(0, n_boot, block):
        b1 = min(n_boot, b0 + block)
        draws = rng.integers(0, n, size=(b1 - b0, n))
        counts = np.bincount((draws + n * np.arange(b1 - b0)[:, None]).ravel(), minlength=(b1 - b0) * n)
        means[b0:b1] = counts.reshape(b1 - b0, n) @ flat / n
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    shape = values.shape[1:]
    mean = flat.mean(axis=0)
    squeeze = (lambda a: float(a[0])) if not shape else (lambda a: a.reshape(shape))
    return {
        "mean": squeeze(mean),
        "low": squeeze(low),
        "high": squeeze(high),
        "n": n,
        "n_boot": int(n_boot),
        "level": level,
    }
