"""The pointing game: does the heatmap's maximum fall inside the mask (a phantom's lesion, the lungs)?

Each heatmap is upsampled bilinearly to the mask's size (as :func:`helpers.metrics.energy.mask_energy` does) and its
maximal pixel is checked against the mask. When several pixels share the maximum (plateaus of an upsampled map,
a constant map), the score is the share of them inside the mask: the chance of a hit for a maximum picked at
random among them. An all-zero heatmap or an empty mask scores NaN (nothing to point with, nothing to hit).
The chance level of a uniformly random point is the mask's share of the image.

References: Zhang et al. 2018, "Top-down Neural Attention by Excitation Backprop", IJCV (the pointing game).
"""

from __future__ import annotations

import numpy as np

from helpers.common.checks import check_pair
from helpers.explain.maps import upsample
from helpers.metrics.intervals import bootstrap_ci

__all__ = ["pointing_game", "pointing_game_summary"]


def _mask_stack(masks, n: int) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim == 4 and m.shape[-1] in (1, 3):
        m = m.max(axis=-1)
    if m.ndim == 2:
        m = np.broadcast_to(m, (n, *m.shape))
    if m.ndim != 3 or m.shape[0] != n:
        raise ValueError(f"masks must have shape (N, H, W) or (H, W) with N = {n} heatmaps, got {np.shape(masks)}")
    return m != 0


def _resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of one boolean mask (pixel centres), as cv2.INTER_NEAREST."""
    height, width = size
    rows = np.minimum((np.arange(height) * mask.shape[0] / height).astype(int), mask.shape[0] - 1)
    cols = np.minimum((np.arange(width) * mask.shape[1] / width).astype(int), mask.shape[1] - 1)
    return mask[rows][:, cols]


def pointing_game(heatmaps, masks, size=None) -> np.ndarray:
    """Per image (N,) float: 1 when the heatmap's maximum lies inside the mask, 0 outside (share of tied maxima inside).

    ``heatmaps`` (N, h, w) raw maps; ``masks`` (N, H, W[, 1]) or one (H, W) mask for all, nonzero = inside. Maps are
    upsampled bilinearly to ``size`` (default the masks' size; masks are resized by nearest neighbour when it
    differs). NaN for an all-zero heatmap or an empty mask.
    References: Zhang et al. 2018, "Top-down Neural Attention by Excitation Backprop", IJCV.
    """
    heat = np.asarray(heatmaps, dtype=np.float32)
    if heat.ndim == 2:
        heat = heat[None]
    if heat.ndim != 3:
        raise ValueError(f"heatmaps must have shape (N, h, w), got {np.shape(heatmaps)}")
    m = _mask_stack(masks, len(heat))
    target = check_pair(size, "size") if size is not None else tuple(m.shape[1:])
    up = upsample(heat, target)
    hits = np.full(len(heat), np.nan)
    for i in range(len(heat)):
        inside = m[i] if m[i].shape == target else _resize_nearest(m[i], target)
        peak = up[i].max()
        if not inside.any() or not peak > 0:
            continue
        maxima = up[i] == peak
        hits[i] = float((maxima & inside).sum()) / float(maxima.sum())
    return hits


def pointing_game_summary(hits, masks=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Hit rate with a bootstrap interval over the images with a score, and (given the masks) the chance level.

    Returns :func:`helpers.metrics.intervals.bootstrap_ci`'s entry (``mean`` = hit rate, ``low``, ``high``, ``n``) plus
    ``n_nan`` and, with ``masks``, ``chance``: the mean share of the image covered by the mask (a random point).
    References: Zhang et al. 2018 (IJCV), the pointing game; Efron & Tibshirani 1993 (percentile bootstrap).
    """
    hits = np.asarray(hits, dtype=np.float64)
    valid = np.isfinite(hits)
    if not valid.any():
        raise ValueError("no image has a pointing-game score (all heatmaps zero or all masks empty)")
    out = bootstrap_ci(hits[valid], n_boot, seed, level)
    out["n_nan"] = int((~valid).sum())
    if masks is not None:
        m = _mask_stack(masks, len(hits))
        out["chance"] = float(m.reshape(len(m), -1).mean(axis=1)[valid].mean())
    return out
