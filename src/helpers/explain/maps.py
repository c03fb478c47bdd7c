"""Heatmaps as arrays: stacks, bilinear resizing, upsampling, normalisation, the jet colour map and overlays."""

from __future__ import annotations

from typing import Callable

import numpy as np

from helpers.common.checks import check_pair

#: OpenCV resizes at most this many channels at once.
_CV2_CHANNELS = 128


def as_stack(heatmaps):
    arr = np.asarray(heatmaps, dtype=np.float32)
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"heatmaps must have shape (N, h, w) or (h, w), got {np.shape(heatmaps)}")
    return arr, False


def resize_stack(stack, size, interpolation):
    """Resize (N, h, w) to (N, H, W) with cv2, up to 128 images per call (the channel limit of OpenCV 5)."""
    import cv2

    height, width = size
    if stack.shape[1:] == (height, width):
        return stack.copy()
    out = np.empty((stack.shape[0], height, width), dtype=stack.dtype)
    for start in range(0, stack.shape[0], _CV2_CHANNELS):
        part = np.ascontiguousarray(np.moveaxis(stack[start : start + _CV2_CHANNELS], 0, -1))
        resized = cv2.resize(part, (width, height), interpolation=interpolation)
        if resized.ndim == 2:
            resized = resized[..., None]
        out[start : start + _CV2_CHANNELS] = np.moveaxis(resized, -1, 0)
    return out


def upsample(heatmaps, size):
    """Bilinear resize (half-pixel centres, edge clamped; cv2.INTER_LINEAR) of (N, h, w) or (h, w) to ``size``."""
    import cv2

    stack, single = as_stack(heatmaps)
    out = resize_stack(stack, check_pair(size, "size"), cv2.INTER_LINEAR)
    return out[0] if single else out


def normalize(heatmaps):
    """Scale each heatmap to [0, 1] by its maximum after clipping negatives (display only; all-zero maps stay zero)."""
    stack, single = as_stack(heatmaps)
    stack = np.maximum(stack, 0.0)
    peak = stack.reshape(stack.shape[0], -1).max(axis=1) if stack.size else np.zeros(0, np.float32)
    out = np.zeros_like(stack)
    ok = peak > 0
    out[ok] = stack[ok] / peak[ok, None, None]
    return out[0] if single else out


def gray_to_rgb(image):
    """An image (H, W), (H, W, 1) or (H, W, 3), uint8 or float, as RGB float32 in [0, 1]."""
    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W), (H, W, 1) or (H, W, 3), got {np.shape(image)}")
    return np.clip(img, 0.0, 1.0)


# matplotlib's "jet" colour map: (x, value below, value above) per channel, sampled at 256 levels.
_JET = {
    "red": ((0.0, 0, 0), (0.35, 0, 0), (0.66, 1, 1), (0.89, 1, 1), (1, 0.5, 0.5)),
    "green": ((0.0, 0, 0), (0.125, 0, 0), (0.375, 1, 1), (0.64, 1, 1), (0.91, 0, 0), (1, 0, 0)),
    "blue": ((0.0, 0.5, 0.5), (0.11, 1, 1), (0.34, 1, 1), (0.65, 0, 0), (1, 0, 0)),
}


_JET_LEVELS = 256


def _segment_table(segments, n: int) -> np.ndarray:
    """A piecewise-linear colour channel sampled at ``n`` levels (as matplotlib's LinearSegmentedColormap)."""
    table = np.asarray(segments, dtype=float)
    x, below, above = table[:, 0] * (n - 1), table[:, 1], table[:, 2]
    levels = (n - 1) * np.linspace(0, 1, n)
    ind = np.searchsorted(x, levels)[1:-1]
    distance = (levels[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
    inner = distance * (below[ind] - above[ind - 1]) + above[ind - 1]
    return np.clip(np.concatenate([[above[0]], inner, [below[-1]]]), 0.0, 1.0)


_JET_TABLE = np.stack([_segment_table(_JET[c], _JET_LEVELS) for c in ("red", "green", "blue")], axis=-1)


def jet(values) -> np.ndarray:
    """RGB colours (..., 3) float64 of values in [0, 1] under matplotlib's ``jet`` map (256 levels), without matplotlib."""
    index = np.asarray(values, dtype=float) * _JET_LEVELS
    index = np.clip(np.where(index == _JET_LEVELS, _JET_LEVELS - 1, index), -1, _JET_LEVELS)
    index = np.nan_to_num(index, nan=0).astype(int)
    return _JET_TABLE[np.clip(index, 0, _JET_LEVELS - 1)]


def overlay(image, heatmap, alpha: float = 0.4, cmap: str | Callable = "jet"):
    """RGB float image ``(1 - alpha) * image + alpha * cmap(normalize(upsample(heatmap)))`` in [0, 1].

    ``cmap``: ``"jet"`` or a callable mapping values in [0, 1] to RGB(A) colours (e.g. ``matplotlib.colormaps[name]``).
    """
    if not callable(cmap) and cmap != "jet":
        raise ValueError(f"cmap must be 'jet' or a callable colour map (e.g. matplotlib.colormaps[name]), got {cmap!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    base = gray_to_rgb(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must have shape (h, w), got {heat.shape}")
    heat = normalize(upsample(heat, base.shape[:2]))
    colours = (jet if cmap == "jet" else cmap)(heat)[..., :3].astype(np.float32)
    return np.clip((1.0 - alpha) * base + alpha * colours, 0.0, 1.0)


def bilinear_matrix(out_len: int, in_len: int) -> np.ndarray:
    """(out_len, in_len) matrix of 1-D bilinear resizing with half-pixel centres (as cv2 / tf.image.resize)."""
    src = (np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5
    src = np.clip(src, 0.0, in_len - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, in_len - 1)
    frac = src - lo
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.arange(out_len), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_len), hi), frac)
    return matrix
