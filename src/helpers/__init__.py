"""Grad-CAM heatmaps of chest X-ray classifiers, scored by AOPC: the study's helper package.

The metrics work on any Keras classifier with a ``logits`` layer and any heatmaps::

    from helpers import gradcam, perturbation_curves, aopc_summary

Names are loaded on first use (PEP 562), so ``import helpers.runner.pipeline`` does not import Keras.
Subpackages, from the bottom layer up (a module imports its own layer and those below it only):

* ``common``: constants, validators, files, text, seeds, the choices' vocabularies, progress bars, worker pools;
* ``backend``: compiled functions per model, graph splitting, device transfer, batched forwards;
* ``data``: the dataset's layout, the download, the phantoms, scanning, the split, decoded images and masks;
* ``explain``: the heatmap methods (Grad-CAM in ``explain.grad_cam``) and their table, heatmaps as arrays;
* ``metrics``: perturbations and MoRF curves, AOPC (``metrics.aopc``), mask energy, intervals, ROAD, insertion ...;
* ``models``: the classifiers, their training, the lung U-Net, classification metrics;
* ``study``: the study's files with their lineage; ``report``: figures, tables, verdicts, HTML, the explorer;
* ``steps``: a notebook's work in one call; ``runner``: profiles, parameter checks, the pipeline, sweeps.
"""

from __future__ import annotations

from helpers.common.config import pin_threads as _pin_threads
from helpers.common.lazy import lazy_exports

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("gradcam", "gradcam_plus_plus"), "explain.grad_cam"),
    **dict.fromkeys(("upsample", "normalize", "overlay"), "explain.maps"),
    **dict.fromkeys(("heatmap", "method_heatmaps"), "explain.registry"),
    **dict.fromkeys(("hirescam", "xgradcam", "layercam"), "explain.gradient_variants"),
    **dict.fromkeys(("scorecam",), "explain.score_cam"),
    **dict.fromkeys(("eigencam",), "explain.eigen_cam"),
    **dict.fromkeys(("edge_map",), "explain.baselines"),
    **dict.fromkeys(
        ("perturbation_curves", "morf_curves", "region_grid", "region_scores", "region_order", "perturbed_images"),
        "metrics.perturbation",
    ),
    **dict.fromkeys(
        ("aopc", "per_image_aopc", "aopc_summary", "paired_difference", "paired_contrast_difference", "correct_mask",
         "common_mask", "aopc_report", "perturbation_ablation"),
        "metrics.aopc",
    ),
    **dict.fromkeys(("bootstrap_ci",), "metrics.intervals"),
    **dict.fromkeys(("mask_energy", "mask_energies", "mask_energy_summary"), "metrics.energy"),
    **dict.fromkeys(("road_evaluation", "road_curves", "road_scores"), "metrics.road"),
    **dict.fromkeys(("road_impute",), "metrics.imputation"),
    **dict.fromkeys(("insertion_deletion", "curve_auc"), "metrics.insertion"),
    **dict.fromkeys(("pointing_game", "pointing_game_summary"), "metrics.pointing"),
    **dict.fromkeys(("randomisation_test",), "metrics.randomisation"),
    **dict.fromkeys(("spearman", "ssim"), "metrics.similarity"),
    **dict.fromkeys(("build_classifier", "load_classifier", "split_classifier"), "models.classifiers"),
    **dict.fromkeys(("train_classifier",), "models.training"),
    **dict.fromkeys(
        ("build_unet", "train_segmentation", "predict_masks", "dice", "iou", "apply_input_mask"), "models.segmentation"
    ),
    **dict.fromkeys(("classification_metrics", "predict_probabilities"), "models.classification"),
    **dict.fromkeys(("scan_dataset", "balance_and_split", "load_images", "load_masks"), "data.dataset"),
    **dict.fromkeys(("render_phantom", "synthesize_dataset"), "data.phantoms"),
    **dict.fromkeys(("study_paths",), "study.files"),
    **dict.fromkeys(("explore",), "report.explorer_widget"),
}  # fmt: skip

__all__ = sorted(_EXPORTS)

# The same thread split on every machine, before Keras starts TensorFlow (see helpers.common.config.pin_threads).
_pin_threads()

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
