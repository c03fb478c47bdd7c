"""Insertion and deletion curves and their areas (AUC by the trapezoid rule), on the study's batched curve engine.

* Deletion: the regions are perturbed in the heatmap's order, most relevant first (the study's MoRF curve, by
  default with its perturbation, additive N(0, 0.1) noise); a good heatmap makes f fall fast: low AUC.
* Insertion: the curve starts from a fully perturbed image (by default a strong Gaussian blur) and restores the
  regions most relevant first; a good heatmap makes f rise fast: high AUC.

Both curves have L + 1 points (k = 0..L regions) on the abscissa k / L, so the AUC lies in [0, 1] for probabilities.

References: Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC
(insertion and deletion); Samek et al. 2017, IEEE TNNLS (MoRF).
"""

from __future__ import annotations

import numpy as np

from helpers.common.checks import check_pair
from helpers.metrics.intervals import bootstrap_ci
from helpers.metrics.perturbation import perturbation_curves

__all__ = ["insertion_blur_sigma", "deletion_curves", "insertion_curves", "curve_auc", "insertion_deletion"]


def insertion_blur_sigma(region_size) -> float:
    """The insertion curve's default blur (px): half the region side, at least 1 (17 px for the paper's 34 px regions)."""
    return max(1.0, min(check_pair(region_size, "region_size")) / 2.0)


def deletion_curves(model, images, heatmaps, classes, region_size, perturbation="gaussian", order="morf", **options):
    """Deletion curves f(x^k), k = 0..L, (N, L+1): regions perturbed in ``order`` (default MoRF), cumulatively.

    ``options`` go to :func:`helpers.metrics.perturbation.perturbation_curves` (sigma, seed, batch_size, image_ids, ...).
    References: Petsiuk et al. 2018 (BMVC), deletion; Samek et al. 2017 (IEEE TNNLS), MoRF.
    """
    return perturbation_curves(
        model, images, heatmaps, classes, region_size, perturbation, order=order, direction="deletion", **options
    )


def insertion_curves(
    model, images, heatmaps, classes, region_size, perturbation="blur", order="morf", blur_sigma=None, **options
):
    """Insertion curves (N, L+1): step 0 is the perturbed image (a blur of ``blur_sigma`` px), step k restores k regions.

    ``blur_sigma`` None: :func:`insertion_blur_sigma`. ``options`` go to :func:`helpers.metrics.perturbation.perturbation_curves`.
    References: Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC.
    """
    if blur_sigma is None:
        blur_sigma = insertion_blur_sigma(region_size)
    return perturbation_curves(
        model,
        images,
        heatmaps,
        classes,
        region_size,
        perturbation,
        order=order,
        blur_sigma=blur_sigma,
        direction="insertion",
        **options,
    )


def curve_auc(curves) -> np.ndarray:
    """Per-image area under curves (N, L+1) sampled at k / L, k = 0..L, by the trapezoid rule: (N,) float64.

    References: Petsiuk et al. 2018 (BMVC), insertion and deletion AUC.
    """
    arr = np.asarray(curves, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"curves must have shape (N, L+1) with L >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("curves contain NaN or infinite values")
    steps = arr.shape[1] - 1
    return (arr[:, 1:] + arr[:, :-1]).sum(axis=1) / (2.0 * steps)


def insertion_deletion(
    model,
    images,
    heatmaps,
    classes,
    region_size,
    mask=None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    deletion_perturbation="gaussian",
    insertion_perturbation="blur",
    order: str = "morf",
    **options,
) -> dict:
    """Deletion and insertion curves of one model's heatmaps and their AUCs with bootstrap intervals, in one call.

    Returns ``deletion`` and ``insertion`` (N, L+1) curves, ``per_image_deletion`` / ``per_image_insertion`` AUCs, and
    ``deletion_auc``, ``insertion_auc``, ``difference`` (insertion - deletion, higher is better) as
    :func:`helpers.metrics.intervals.bootstrap_ci` entries over the images of ``mask`` (default all), plus ``n_images``.
    ``options`` go to both curve functions (sigma, blur_sigma, batch_size, image_ids, progress, ...).
    References: Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC.
    """
    deletion = deletion_curves(
        model, images, heatmaps, classes, region_size, deletion_perturbation, order, seed=seed, **options
    )
    insertion = insertion_curves(
        model, images, heatmaps, classes, region_size, insertion_perturbation, order, seed=seed, **options
    )
    keep = np.ones(len(deletion), bool) if mask is None else np.asarray(mask)
    if keep.shape != (len(deletion),) or keep.dtype != bool or not keep.any():
        raise ValueError(f"mask must be a boolean array of shape ({len(deletion)},) selecting some image")
    auc = {"deletion": curve_auc(deletion)[keep], "insertion": curve_auc(insertion)[keep]}
    return {
        "deletion": deletion,
        "insertion": insertion,
        "per_image_deletion": auc["deletion"],
        "per_image_insertion": auc["insertion"],
        "deletion_auc": bootstrap_ci(auc["deletion"], n_boot, seed, level),
        "insertion_auc": bootstrap_ci(auc["insertion"], n_boot, seed, level),
        "difference": bootstrap_ci(auc["insertion"] - auc["deletion"], n_boot, seed, level),
        "n_images": int(keep.sum()),
    }
