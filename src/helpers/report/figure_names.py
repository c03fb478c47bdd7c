"""The study's figure files by name, with the caption and order ``index.html`` gives them (no plotting imports).

:mod:`helpers.report.figures` draws and saves the figures under these names; the HTML report reads only this module, so
exporting a report loads neither matplotlib nor Keras.
"""

from __future__ import annotations

__all__ = [
    "FIGURE_CAPTIONS",
    "SLOT_FIGURES",
    "SLOT_LABELS",
    "recall_history_figure",
    "classification_report_figure",
    "figure_title",
]

SEGMENTATION_EXAMPLES = "segmentation_examples"
SEGMENTATION_WORST = "segmentation_worst"
SEGMENTATION_HISTORY = "segmentation_history"
MASKED_INPUTS = "masked_inputs"
FIG1_EXAMPLES = "fig1_examples"
MASKS_OVERLAY = "masks_overlay"
CONFUSION_MATRICES = "confusion_matrices"
FIG6_GRADCAM = "fig6_gradcam_covid"
FIG7_OVERLAYS = "fig7_overlays"
GRADCAM_GALLERY = "gradcam_gallery"
MASK_ENERGY = "gradcam_mask_energy"
MORF_CURVES = "morf_curves"
FIG8_AOPC = "fig8_aopc"
AOPC_ABLATION = "aopc_ablation"
METHODS_METRICS = "methods_metrics"
METHODS_RANDOMISATION = "methods_randomisation"

#: The paper's figure numbers of each model slot: (recall history, classification report).
SLOT_FIGURES: dict[str, tuple[int, int]] = {"vgg16": (2, 4), "densenet201": (3, 5)}
#: How figure titles name the paper's two models.
SLOT_LABELS: dict[str, str] = {"vgg16": "VGG16", "densenet201": "DenseNet201"}


def recall_history_figure(model_name: str) -> tuple[int | None, str]:
    """(paper figure number or None, file name) of a model slot's recall history: ``fig2_recall_history_vgg16``, ..."""
    number = SLOT_FIGURES.get(model_name, (None, None))[0]
    return number, (f"fig{number}_" if number else "") + f"recall_history_{model_name}"


def classification_report_figure(model_name: str) -> tuple[int | None, str]:
    """(paper figure number or None, file name) of a model slot's classification report: ``fig4_classification_report_vgg16``, ..."""
    number = SLOT_FIGURES.get(model_name, (None, None))[1]
    return number, (f"fig{number}_" if number else "") + f"classification_report_{model_name}"


#: Known figures in study order, with the caption shown in ``index.html``.
FIGURE_CAPTIONS: dict[str, str] = {
    FIG1_EXAMPLES: "Figure 1: one example image per class (01)",
    MASKS_OVERLAY: "An example image with its lung and lesion masks (01)",
    SEGMENTATION_HISTORY: "Lung U-Net: validation Dice per epoch, the kept epoch marked (02)",
    SEGMENTATION_EXAMPLES: "Predicted vs true lung masks on test images, with each image's Dice (02)",
    SEGMENTATION_WORST: "The test images the lung U-Net segments worst (02)",
    MASKED_INPUTS: "What the classifiers see with input_mask='lung' (02)",
    recall_history_figure("vgg16")[
        1
    ]: "Figure 2: per-class recall per epoch of the vgg16 slot, the kept epoch marked (03)",
    recall_history_figure("densenet201")[1]: "Figure 3: per-class recall per epoch of the densenet201 slot (04)",
    classification_report_figure("vgg16")[1]: "Figure 4: test-set classification report of the vgg16 slot (05)",
    classification_report_figure("densenet201")[
        1
    ]: "Figure 5: test-set classification report of the densenet201 slot (05)",
    CONFUSION_MATRICES: "Test-set confusion matrices of both models (05)",
    FIG6_GRADCAM: "Figure 6: Grad-CAM of one test image both models classify as COVID, at the feature grid (06)",
    FIG7_OVERLAYS: "Figure 7: Grad-CAM overlays at several opacities (06)",
    GRADCAM_GALLERY: "Correct and wrong predictions per class with their heatmaps (06)",
    MASK_ENERGY: "Share of heatmap mass inside the lesion and lung masks, per model and class (06)",
    MORF_CURVES: "Mean probability of the explained class along the perturbation steps (07)",
    FIG8_AOPC: "Figure 8: AOPC against the perturbation step, with random-order baselines and 95% bands (07)",
    AOPC_ABLATION: "Ablation over perturbation functions and noise levels (07)",
    METHODS_METRICS: "Every heatmap method scored by every metric, per model, with 95% intervals (08)",
    METHODS_RANDOMISATION: "Model-parameter randomisation: one image's maps as layers are re-drawn, and the similarity curves (08)",
}


def figure_title(title: str, figure: int | None = None) -> str:
    """``"Figure N: title"`` for the paper's figures (``figure`` given), else ``title`` unchanged."""
    return f"Figure {int(figure)}: {title}" if figure is not None else title
