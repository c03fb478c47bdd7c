"""AOPC statistics: per-image AOPC, AOPC curves, bootstrap and paired intervals, the study's AOPC report, the ablation.

With ``f_i(x^k)`` the model's probability of the explained class after k perturbation steps
(:func:`helpers.metrics.perturbation.perturbation_curves`), ``AOPC(L) = 1/(L+1) * mean_i sum_{k=1..L} [f_i(x^0) - f_i(x^k)]``.
Intervals are percentile-bootstrap intervals over images; paired differences resample the per-image
differences together (the same images, the same noise).

References: Samek et al., "Evaluating the visualization of what a deep neural network has learned",
IEEE TNNLS 2017 (AOPC); Efron & Tibshirani, "An Introduction to the Bootstrap", 1993.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from helpers.common.checks import check_seed
from helpers.metrics.intervals import bootstrap_ci, comparison_pair
from helpers.metrics.perturbation import check_perturbation, default_blur_sigma, perturbation_curves

__all__ = [
    "per_image_aopc",
    "aopc",
    "correct_mask",
    "common_mask",
    "aopc_summary",
    "paired_difference",
    "paired_contrast_difference",
    "selection_mask",
    "aopc_report",
    "sample_indices",
    "setting_label",
    "perturbation_ablation",
]


def curves_array(curves, name: str = "curves") -> np.ndarray:
    arr = np.asarray(curves, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, L+1), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return arr


def _mask_array(mask, n: int, name: str = "mask") -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != (n,) or mask.dtype != bool:
        raise ValueError(f"{name} must be a boolean array of shape ({n},), got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise ValueError(f"{name} selects no image")
    return mask


def per_image_aopc(curves) -> np.ndarray:
    """Per-image AOPC after every step, (N, L+1): (1/(L+1)) * sum_{k=1..L} [f(x^0) - f(x^k)], 0 at L = 0.

    References: Samek et al., IEEE TNNLS 2017.
    """
    arr = curves_array(curves)
    drops = np.cumsum(arr[:, :1] - arr, axis=1)  # column 0 is f0 - f0 = 0
    return drops / np.arange(1, arr.shape[1] + 1)[None, :]


def aopc(curves, mask=None) -> dict:
    """AOPC after each step L = 0..L_max (mean of :func:`per_image_aopc` over ``mask``'s images) and per-image values.

    ``mask`` (boolean (N,), e.g. :func:`correct_mask`) selects the images; ``None`` takes all. Returns
    ``aopc`` (L_max+1,), ``final`` (AOPC at L_max), ``per_image`` (n, L_max+1), ``per_image_final`` (n,),
    ``indices`` (the selected images) and ``n_images``.
    References: Samek et al., IEEE TNNLS 2017.
    """
    arr = curves_array(curves)
    mask = _mask_array(mask, len(arr))
    per_image = per_image_aopc(arr[mask])
    curve = per_image.mean(axis=0)
    return {
        "aopc": curve,
        "final": float(curve[-1]),
        "per_image": per_image,
        "per_image_final": per_image[:, -1],
        "indices": np.flatnonzero(mask),
        "n_images": int(mask.sum()),
    }


def correct_mask(predicted, labels) -> np.ndarray:
    """Boolean (N,) mask of the correctly classified images."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or predicted.ndim != 1:
        raise ValueError(f"predicted and labels must be 1-D of one shape, got {predicted.shape} and {labels.shape}")
    return predicted == labels


def common_mask(*masks) -> np.ndarray:
    """Images selected by every mask (e.g. classified correctly by both models), for a paired comparison."""
    if not masks:
        raise ValueError("common_mask needs at least one mask")
    arrays = [np.asarray(m, dtype=bool) for m in masks]
    if any(a.shape != arrays[0].shape or a.ndim != 1 for a in arrays):
        raise ValueError(f"masks must be 1-D of one shape, got {[a.shape for a in arrays]}")
    return np.logical_and.reduce(arrays)


def aopc_summary(curves, mask=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """AOPC curve and final value with bootstrap intervals (per-step band and final), plus per-image final values."""
    result = aopc(curves, mask)
    band = bootstrap_ci(result["per_image"], n_boot, seed, level)
    return {
        "aopc": result["aopc"],
        "aopc_low": band["low"],
        "aopc_high": band["high"],
        "final": result["final"],
        "final_low": float(band["low"][-1]),
        "final_high": float(band["high"][-1]),
        "per_image_final": result["per_image_final"],
        "indices": result["indices"],
        "n_images": result["n_images"],
        "level": level,
    }


def paired_difference(curves_a, curves_b, mask=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """AOPC(a) - AOPC(b) on the same images (per-image differences resampled together): curve, final, intervals.

    Used for model vs model on the images both classify correctly, and for MoRF - LeRF or MoRF - random of one model.
    """
    a, b = curves_array(curves_a, "curves_a"), curves_array(curves_b, "curves_b")
    if a.shape != b.shape:
        raise ValueError(f"curves_a and curves_b must have one shape, got {a.shape} and {b.shape}")
    mask = _mask_array(mask, len(a))
    return _difference_summary(per_image_aopc(a[mask]) - per_image_aopc(b[mask]), n_boot, seed, level)


def _difference_summary(diff: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    """Mean curve, final value and bootstrap intervals of per-image AOPC differences (n, L+1)."""
    band = bootstrap_ci(diff, n_boot, seed, level)
    return {
        "difference": band["mean"],
        "difference_low": band["low"],
        "difference_high": band["high"],
        "final": float(band["mean"][-1]),
        "final_low": float(band["low"][-1]),
        "final_high": float(band["high"][-1]),
        "share_positive": float(np.mean(diff[:, -1] > 0)),
        "n_images": int(len(diff)),
        "level": level,
    }


def paired_contrast_difference(
    curves_a, baseline_a, curves_b, baseline_b, mask=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """[AOPC(a) - AOPC(baseline_a)] - [AOPC(b) - AOPC(baseline_b)] on the same images, per-image values resampled together.

    With a = model 1 MoRF, baseline_a = model 1 random order (and b, baseline_b the same for model 2) this
    compares the heatmaps' advantage over a random order between two models, which removes each model's
    own sensitivity to the perturbation. Same keys as :func:`paired_difference`.
    """
    arrays = [
        curves_array(c, name)
        for c, name in (
            (curves_a, "curves_a"),
            (baseline_a, "baseline_a"),
            (curves_b, "curves_b"),
            (baseline_b, "baseline_b"),
        )
    ]
    if any(arr.shape != arrays[0].shape for arr in arrays):
        raise ValueError(f"all curves must have one shape, got {[arr.shape for arr in arrays]}")
    mask = _mask_array(mask, len(arrays[0]))
    pa, ba, pb, bb = (per_image_aopc(arr[mask]) for arr in arrays)
    return _difference_summary((pa - ba) - (pb - bb), n_boot, seed, level)


def selection_mask(mask) -> tuple[np.ndarray, str]:
    """The images AOPC is computed on: ``mask`` (the correctly classified ones), or all images when it selects none (tiny runs)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 1:
        raise ValueError(f"mask must be 1-D, got shape {mask.shape}")
    if mask.any():
        return mask, "correctly classified"
    return np.ones_like(mask), "all images (none classified correctly)"


def aopc_report(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    masks: Mapping[str, np.ndarray],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    compare: Sequence[str] | None = None,
) -> dict:
    """Every AOPC number of the study from ``curves[model][order]`` (N, L+1) and ``masks[model]`` (correctly classified).

    Per model and order: :func:`aopc_summary` on that model's correct images (all images if it has none,
    see :func:`selection_mask`; ``selection`` says which); MoRF - random and MoRF - LeRF (paired, same images).
    For the two models (``compare`` names them when there are more than two: a ValueError otherwise), on the
    images both classify correctly (when there are such images; ``paired["models"]`` names them): each
    model's AOPC per order and its MoRF - random / MoRF - LeRF (``orders``), the paired difference per order
    (first minus second, ``order_differences``; MoRF also as ``difference``) and the paired difference of MoRF - random (``morf_minus_random_difference``:
    the heatmap comparison, free of each model's sensitivity to the perturbation) and of MoRF - LeRF.
    """
    names = list(curves)
    if not names:
        raise ValueError("curves is empty")
    pair = comparison_pair(names, compare, "AOPC comparison") if len(names) > 1 or compare is not None else None
    report: dict = {"models": {}, "n_boot": n_boot, "seed": seed, "level": level}
    for name in names:
        if name not in masks:
            raise ValueError(f"masks has no entry for model {name!r}")
        if "morf" not in curves[name]:
            raise ValueError(f"curves[{name!r}] has no 'morf' curves")
        mask, selection = selection_mask(masks[name])
        entry = {o: aopc_summary(c, mask, n_boot, seed, level) for o, c in curves[name].items()}
        for other in ("random", "lerf"):
            if other in curves[name]:
                entry[f"morf_minus_{other}"] = paired_difference(
                    curves[name]["morf"], curves[name][other], mask, n_boot, seed, level
                )
        entry["selection"] = selection
        report["models"][name] = entry
    if pair is not None:
        a, b = pair
        both = common_mask(masks[a], masks[b])
        if both.any():
            orders = {
                name: {o: aopc_summary(c, both, n_boot, seed, level) for o, c in curves[name].items()}
                for name in (a, b)
            }
            order_differences = {
                o: paired_difference(curves[a][o], curves[b][o], both, n_boot, seed, level)
                for o in curves[a]
                if o in curves[b]
            }
            paired = {
                "models": [a, b],
                "n_images": int(both.sum()),
                a: orders[a]["morf"],  # the same seeded bootstrap as below: computed once
                b: orders[b]["morf"],
                "difference": order_differences["morf"],
                "orders": orders,
                "order_differences": order_differences,
            }
            for other in ("random", "lerf"):
                if other in curves[a] and other in curves[b]:
                    for name in (a, b):
                        paired["orders"][name][f"morf_minus_{other}"] = paired_difference(
                            curves[name]["morf"], curves[name][other], both, n_boot, seed, level
                        )
                    paired[f"morf_minus_{other}_difference"] = paired_contrast_difference(
                        curves[a]["morf"],
                        curves[a][other],
                        curves[b]["morf"],
                        curves[b][other],
                        both,
                        n_boot,
                        seed,
                        level,
                    )
            report["paired"] = paired
    return report


def sample_indices(mask, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices of ``mask``'s selected images, drawn with the seed and sorted (``n`` <= 0: all of them)."""
    chosen = np.flatnonzero(np.asarray(mask, dtype=bool))
    if n <= 0 or n >= len(chosen):
        return chosen
    rng = np.random.default_rng(np.random.SeedSequence([check_seed(seed), 0x5AB5]))
    return np.sort(rng.choice(chosen, size=int(n), replace=False))


# ----------------------------------------------------------------------------------------------------
# Ablation over perturbation functions
# ----------------------------------------------------------------------------------------------------


def setting_label(perturbation: str, sigma: float | None = None, blur_sigma: float | None = None) -> str:
    """Short label of a perturbation setting, e.g. ``gaussian σ=0.1``, ``blur σ=4 px``, ``uniform``."""
    if perturbation == "gaussian":
        return f"gaussian σ={sigma:g}"
    if perturbation == "blur":
        return f"blur σ={blur_sigma:g} px"
    return perturbation


def perturbation_ablation(
    model,
    images,
    heatmaps,
    classes,
    region_size,
    settings: Sequence[tuple[str, float]],
    mask=None,
    seed: int = 0,
    batch_size: int = 128,
    image_ids=None,
    n_boot: int = 1000,
    level: float = 0.95,
    blur_sigma: float | None = None,
    progress: bool = True,
    precomputed: Mapping[tuple, Mapping[str, np.ndarray]] | None = None,
    region_scores: str = "grid",
) -> list[dict]:
    """AOPC of MoRF and random orders for each (perturbation, sigma) in ``settings``: one row per distinct setting.

    ``sigma`` matters for ``"gaussian"`` only (settings differing only in an unused sigma are run once).
    ``precomputed`` maps a setting ``(perturbation, sigma)`` to its ``{"morf": curves, "random": curves}`` of these
    same images and ids (e.g. the main run's, computed with the same ``region_scores``), which are used instead of
    scoring that setting again. ``region_scores``: ``"grid"`` or ``"upsample"`` (:func:`helpers.metrics.perturbation.region_scores`).
    Rows: ``setting`` (label), ``perturbation``, ``sigma`` (None unless Gaussian), ``aopc_morf`` with interval,
    ``aopc_random``, ``morf_minus_random`` with interval, ``n_images``.

    References: Samek et al., IEEE TNNLS 2017 (uniform replacement); Fong & Vedaldi, "Interpretable
    explanations of black boxes by meaningful perturbation", ICCV 2017 (blur).
    """
    if blur_sigma is None:
        blur_sigma = default_blur_sigma(region_size)
    unique = []
    for p, s in settings:
        check_perturbation(str(p), float(s), None, blur_sigma)
        key = (str(p), float(s) if p == "gaussian" else None)
        if key not in unique:
            unique.append(key)
    known = {}
    for (p, s), given in (precomputed or {}).items():
        key = (str(p), float(s) if p == "gaussian" else None)
        if not {"morf", "random"} <= set(given) or any(len(given[o]) != len(images) for o in ("morf", "random")):
            raise ValueError(
                f"precomputed curves for {key} need 'morf' and 'random' curves of all {len(images)} images, got {sorted(given)}"
            )
        known[key] = given
    rows = []
    if progress:
        from helpers.common.progress import tqdm

        unique_iter = tqdm(unique, desc="perturbation ablation", unit="setting")
    else:
        unique_iter = unique
    for p, s in unique_iter:
        common = dict(
            perturbation=p,
            sigma=0.0 if s is None else s,
            seed=seed,
            batch_size=batch_size,
            image_ids=image_ids,
            progress=False,
            blur_sigma=blur_sigma,
            region_scores=region_scores,
        )
        if (p, s) in known:
            morf, rand = known[(p, s)]["morf"], known[(p, s)]["random"]
        else:
            morf = perturbation_curves(model, images, heatmaps, classes, region_size, order="morf", **common)
            rand = perturbation_curves(model, images, None, classes, region_size, order="random", **common)
        m = aopc_summary(morf, mask, n_boot, seed, level)
        r = aopc_summary(rand, mask, n_boot, seed, level)
        d = paired_difference(morf, rand, mask, n_boot, seed, level)
        rows.append(
            {
                "setting": setting_label(p, s, blur_sigma),
                "perturbation": p,
                "sigma": s,
                "aopc_morf": m["final"],
                "aopc_morf_low": m["final_low"],
                "aopc_morf_high": m["final_high"],
                "aopc_random": r["final"],
                "morf_minus_random": d["final"],
                "morf_minus_random_low": d["final_low"],
                "morf_minus_random_high": d["final_high"],
                "n_images": m["n_images"],
                "level": level,
            }
        )
    return rows
