"""Similarity of two stacks of heatmaps, image by image: Spearman rank correlation and SSIM.

* :func:`spearman`: Pearson correlation of the pixels' ranks (ties share their average rank); NaN when a map is
  constant (no ranking to correlate).
* :func:`ssim`: the mean structural similarity of Wang et al. (2004): local means, variances and covariance under a
  Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11 x 11), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with L the
  data range, averaged over the positions where the window lies inside the image. This is
  ``skimage.metrics.structural_similarity(a, b, data_range=L, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``, computed here for whole stacks at once.

References: Spearman 1904, "The proof and measurement of association between two things"; Wang et al. 2004,
"Image quality assessment: from error visibility to structural similarity", IEEE TIP.
"""

from __future__ import annotations

import numpy as np

__all__ = ["spearman", "ssim", "gaussian_window"]

#: SSIM's constants and window (Wang et al. 2004).
K1, K2, SIGMA, TRUNCATE = 0.01, 0.03, 1.5, 3.5


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim == 2 and b.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"maps must be two stacks (N, H, W) of one shape, got {np.shape(a)} and {np.shape(b)}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("maps contain NaN or infinite values")
    return a, b


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (N,) over their pixels; NaN where a map is constant.

    References: Spearman 1904, "The proof and measurement of association between two things".
    """
    from scipy.stats import rankdata

    a, b = _pair(a, b)
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / np.where(denominator > 0, denominator, 1.0), np.nan)


def gaussian_window(sigma: float = SIGMA, truncate: float = TRUNCATE) -> np.ndarray:
    """The normalised 1-D Gaussian of radius ``int(truncate * sigma + 0.5)`` (as scipy.ndimage.gaussian_filter)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    window = np.exp(-0.5 * (offsets / sigma) ** 2)
    return window / window.sum()


def _filter(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a stack (N, H, W) with ``window`` along both image axes."""
    from numpy.lib.stride_tricks import sliding_window_view

    size = len(window)
    rows = sliding_window_view(x, size, axis=1) @ window  # (N, H - size + 1, W)
    return sliding_window_view(rows, size, axis=2) @ window


def ssim(a, b, data_range: float = 1.0, sigma: float = SIGMA) -> np.ndarray:
    """Mean SSIM of each pair of maps (N,) with a Gaussian window (Wang et al. 2004); maps must exceed the window.

    References: Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity", IEEE TIP.
    """
    a, b = _pair(a, b)
    if not float(data_range) > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")
    window = gaussian_window(sigma)
    if min(a.shape[1:]) < len(window):
        raise ValueError(f"maps of {a.shape[1:]} pixels are smaller than SSIM's {len(window)}-pixel window")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _filter(a, window), _filter(b, window)
    var_a = _filter(a * a, window) - mu_a * mu_a
    var_b = _filter(b * b, window) - mu_b * mu_b
    cov = _filter(a * b, window) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.mean(axis=(1, 2))
