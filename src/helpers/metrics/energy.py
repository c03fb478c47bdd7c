"""Localization: the share of each heatmap's mass inside a binary mask (lesion, lungs), per image and per class.

A heatmap that points at the finding puts most of its mass inside the lesion mask; one that leans on markers or
borders puts little inside the lung mask. :data:`UNIFORM` (a constant heatmap) gives the chance level: the
mask's share of the image.

References: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
CVPR Workshops 2020 (the energy-based pointing game).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.common import config
from helpers.common.checks import check_pair
from helpers.explain.maps import as_stack, resize_stack, upsample
from helpers.metrics.intervals import comparison_pair, interval_sign

__all__ = [
    "UNIFORM",
    "mask_energy",
    "mask_energy_summary",
    "mask_energies",
    "mask_energy_report",
    "mask_energy_frame",
    "mask_energy_comparisons",
]


#: Images whose float64 heatmaps :func:`mask_energy` holds at once (about 11 MB at 299 px, and a temporary as large).
_ENERGY_CHUNK = 16


def mask_energy(heatmaps, masks, size=None):
    """Share of each heatmap's mass inside its binary mask, (N,) float; NaN where a heatmap is all zero.

    Heatmaps (N, h, w) are upsampled bilinearly to ``size`` (default: the masks' size) and clipped at
    0; masks (N, H, W[, 1]) or one (H, W) mask for all, nonzero = inside, resampled (nearest) when
    their size differs from ``size``. An all-zero mask with a nonzero heatmap gives 0.
    References: Wang et al., "Score-CAM", CVPR Workshops 2020 (the energy-based pointing game).
    """
    import cv2

    stack, _ = as_stack(heatmaps)
    m = np.asarray(masks)
    if m.ndim == 4 and m.shape[-1] in (1, 3):
        m = m.max(axis=-1)
    if m.ndim == 2:
        m = np.broadcast_to(m, (stack.shape[0], *m.shape))
    if m.ndim != 3 or m.shape[0] != stack.shape[0]:
        raise ValueError(
            f"masks must have shape (N, H, W) or (H, W) with N = {stack.shape[0]} heatmaps, got {np.shape(masks)}"
        )
    target = check_pair(size, "size") if size is not None else tuple(m.shape[1:])
    inside = resize_stack((m != 0).astype(np.uint8), target, cv2.INTER_NEAREST)
    heat_maps = upsample(stack, target)
    share = np.empty(stack.shape[0], dtype=np.float64)
    # the float64 arithmetic a few images at a time, while they are in cache (each image's sums are unchanged)
    for start in range(0, len(share), _ENERGY_CHUNK):
        rows = slice(start, start + _ENERGY_CHUNK)
        heat = np.maximum(heat_maps[rows], 0.0).astype(np.float64)
        total = heat.sum(axis=(1, 2))
        within = (heat * inside[rows].astype(bool)).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            share[rows] = np.where(total > 0, within / np.where(total > 0, total, 1.0), np.nan)
    return share


def mask_energy_summary(energy, labels, class_names=config.CLASS_NAMES) -> dict:
    """Per-class statistics of mask energies: n, n_valid (non-NaN), mean, median, q25, q75, share above 0.5."""
    energy = np.asarray(energy, dtype=np.float64)
    labels = np.asarray(labels)
    if energy.shape != labels.shape:
        raise ValueError(f"energy {energy.shape} and labels {labels.shape} must have the same shape")
    out = {}
    for index, name in enumerate(class_names):
        values = energy[labels == index]
        valid = values[np.isfinite(values)]
        stats = {"n": int(values.size), "n_valid": int(valid.size)}
        if valid.size:
            stats.update(
                mean=float(valid.mean()),
                median=float(np.median(valid)),
                q25=float(np.quantile(valid, 0.25)),
                q75=float(np.quantile(valid, 0.75)),
                share_above_half=float(np.mean(valid > 0.5)),
            )
        else:
            stats.update(mean=None, median=None, q25=None, q75=None, share_above_half=None)
        out[name] = stats
    valid = energy[np.isfinite(energy)]
    out["all"] = {
        "n": int(energy.size),
        "n_valid": int(valid.size),
        "mean": float(valid.mean()) if valid.size else None,
        "median": float(np.median(valid)) if valid.size else None,
    }
    return out


#: Name of the chance-level entry of :func:`mask_energies`: a uniform heatmap, whose mask energy is the mask's area share.
UNIFORM = "uniform map"


def mask_energies(heatmaps: dict, masks: dict, size=None, baseline: bool = True, select: dict | None = None) -> dict:
    """Mask energy of every model's heatmaps for every mask kind: ``{kind: {model: (N,)}}``.

    ``heatmaps``: {model: (N, h, w)}; ``masks``: {kind: (N, H, W)}, e.g. {"lesion": ..., "lung": ...}.
    Rows whose mask is empty (no lesion, no lung mask) get NaN: there is nothing to compare with. A kind
    whose masks are all empty (e.g. lesion masks of real images) is left out. ``baseline`` adds the
    entry :data:`UNIFORM` (a constant heatmap: the mask's share of the image, the chance level).
    ``select``: {model: boolean (N,)} keeps only those images of a model (e.g. the correctly classified ones,
    the images AOPC uses), NaN elsewhere.
    """
    out = {}
    for kind, mask in masks.items():
        mask = np.asarray(mask)
        empty = ~(mask.reshape(mask.shape[0], -1) != 0).any(axis=1)
        if empty.all():
            continue
        out[kind] = {}
        items = list(heatmaps.items())
        if baseline and items:
            items.append((UNIFORM, np.ones_like(np.asarray(items[0][1], dtype=np.float32))))
        for name, heat in items:
            energy = mask_energy(heat, mask, size=size)
            energy[empty] = np.nan
            if select is not None and name in select:
                keep = np.asarray(select[name], dtype=bool)
                if keep.shape != energy.shape:
                    raise ValueError(f"select[{name!r}] must be a boolean array of shape {energy.shape}")
                energy[~keep] = np.nan
            out[kind][name] = energy
    return out


def mask_energy_report(energies: dict, labels, class_names=config.CLASS_NAMES) -> dict:
    """Per-class statistics (:func:`mask_energy_summary`) of :func:`mask_energies`: ``{model: {kind: {class: stats}}}``."""
    report: dict = {}
    for kind, per_model in energies.items():
        for name, energy in per_model.items():
            report.setdefault(name, {})[kind] = mask_energy_summary(energy, labels, class_names)
    return report


def mask_energy_frame(report: dict):
    """The report of :func:`mask_energy_report` as a long pandas DataFrame (model, mask, class, n_valid, mean, median, q25, q75)."""
    rows = []
    for name, kinds in report.items():
        for kind, classes in kinds.items():
            for class_name, stats in classes.items():
                rows.append(
                    {
                        "model": name,
                        "mask": kind,
                        "class": class_name,
                        "n": stats["n"],
                        "n_valid": stats["n_valid"],
                        "mean": stats["mean"],
                        "median": stats["median"],
                        "q25": stats.get("q25"),
                        "q75": stats.get("q75"),
                    }
                )
    return pd.DataFrame(rows)


def mask_energy_comparisons(
    energies: dict,
    labels,
    class_names=config.CLASS_NAMES,
    compare=None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[dict]:
    """Paired comparisons of mean mask energy with bootstrap intervals, per mask kind and class (and ``all``).

    For every kind of :func:`mask_energies` (with its :data:`UNIFORM` entry): each model against the uniform map,
    and the two models (``compare`` names them when there are more) against each other, each on the images valid
    for both. Rows: ``mask``, ``class``, ``first``, ``second``, ``first_mean``, ``second_mean``, ``estimate``,
    ``low``, ``high`` (mean difference first − second), ``n`` and ``reading``: "more inside" / "less inside"
    when the interval excludes 0 and rests on at least :data:`helpers.metrics.intervals.MIN_IMAGES` images, else "not
    distinguishable". Groups with fewer than 2 valid images are skipped.
    References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile interval).
    """
    from helpers.metrics.intervals import bootstrap_ci

    labels = np.asarray(labels)
    rows = []
    for kind, per_model in energies.items():
        models = [name for name in per_model if name != UNIFORM]
        pairs = [(name, UNIFORM) for name in models if UNIFORM in per_model]
        if len(models) >= 2 or compare is not None:
            pairs.append(comparison_pair(models, compare, "mask-energy comparison"))
        groups = [(c, labels == i) for i, c in enumerate(class_names)] + [("all", np.ones(labels.shape, bool))]
        for first, second in pairs:
            a, b = np.asarray(per_model[first], np.float64), np.asarray(per_model[second], np.float64)
            for class_name, in_class in groups:
                valid = in_class & np.isfinite(a) & np.isfinite(b)
                if valid.sum() < 2:
                    continue
                ci = bootstrap_ci(a[valid] - b[valid], n_boot, seed, level)
                sign = interval_sign(ci["low"], ci["high"], int(valid.sum()))
                rows.append(
                    {
                        "mask": kind,
                        "class": class_name,
                        "first": first,
                        "second": second,
                        "first_mean": float(a[valid].mean()),
                        "second_mean": float(b[valid].mean()),
                        "estimate": ci["mean"],
                        "low": ci["low"],
                        "high": ci["high"],
                        "n": int(valid.sum()),
                        "reading": {1: "more inside", -1: "less inside", 0: "not distinguishable"}[sign],
                    }
                )
    return rows
