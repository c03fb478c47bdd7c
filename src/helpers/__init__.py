"""Grad-CAM heatmaps of chest X-ray classifiers, scored by AOPC: the study's helper package.

The metrics work on any Keras classifier with a ``logits`` layer and any heatmaps::

    from helpers import gradcam, perturbation_curves, aopc_summary

Names are loaded on first use (PEP 562), so ``import helpers.pipeline`` does not import Keras.
Modules, computation first: ``dataset``, ``phantoms``, ``models``, ``training``, ``evaluation``, ``heatmaps``
(Grad-CAM), ``segmentation`` (lung U-Net, Dice, input masking), ``perturbation`` (curves), ``scores`` (AOPC statistics), ``localization`` (mask energy); then
``study`` (the study's files), ``reporting`` and ``figures``; the runner ``pipeline``, ``nbtools``, ``progress``.
"""

from __future__ import annotations

import importlib

from .config import pin_threads as _pin_threads

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("gradcam", "gradcam_plus_plus", "upsample", "normalize", "overlay"), "heatmaps"),
    **dict.fromkeys(
        ("perturbation_curves", "morf_curves", "region_grid", "region_scores", "region_order", "perturbed_images"),
        "perturbation",
    ),
    **dict.fromkeys(
        (
            "aopc",
            "per_image_aopc",
            "aopc_summary",
            "bootstrap_ci",
            "paired_difference",
            "paired_contrast_difference",
            "correct_mask",
            "common_mask",
            "aopc_report",
            "perturbation_ablation",
        ),
        "scores",
    ),
    **dict.fromkeys(
        ("heatmap", "method_heatmaps", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam", "edge_map"),
        "explain",
    ),
    **dict.fromkeys(
        (
            "road_evaluation",
            "road_curves",
            "road_scores",
            "road_impute",
            "insertion_deletion",
            "curve_auc",
            "pointing_game",
            "pointing_game_summary",
            "randomisation_test",
            "spearman",
            "ssim",
        ),
        "metrics",
    ),
    **dict.fromkeys(("explore",), "explorer_widget"),
    **dict.fromkeys(("mask_energy", "mask_energies", "mask_energy_summary"), "localization"),
    **dict.fromkeys(("build_classifier", "load_classifier", "split_classifier"), "models"),
    **dict.fromkeys(("train_classifier",), "training"),
    **dict.fromkeys(
        ("build_unet", "train_segmentation", "predict_masks", "dice", "iou", "apply_input_mask"), "segmentation"
    ),
    **dict.fromkeys(("classification_metrics", "predict_probabilities"), "evaluation"),
    **dict.fromkeys(("scan_dataset", "balance_and_split", "load_images", "load_masks"), "dataset"),
    **dict.fromkeys(("render_phantom", "synthesize_dataset"), "phantoms"),
    **dict.fromkeys(("study_paths",), "study"),
}

__all__ = sorted(_EXPORTS)

# The same thread split on every machine, before Keras starts TensorFlow (see helpers.config.pin_threads).
_pin_threads()


def __getattr__(name: str):
    """Load a public name from its module on first use (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Module attributes and the lazily loaded public names."""
    return sorted(set(globals()) | set(__all__))
