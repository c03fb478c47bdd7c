"""Tests of helpers.report.figures: every figure draws the numbers it is given, with the study's titles and names."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_evaluation import one_hot_scores
from test_training import CLASSES

from helpers.common import config
from helpers.common.config import CLASS_NAMES
from helpers.data import dataset
from helpers.metrics import aopc as scores
from helpers.metrics import energy as localization
from helpers.models import classification as evaluation
from helpers.models import training
from helpers.report import figures, heatmap_figures, segmentation_figures
from helpers.report import tables as reporting

matplotlib.use("Agg")


def test_figures(phantom_dataset):
    import matplotlib.pyplot as plt

    frame = dataset.scan_dataset(phantom_dataset)
    fig = figures.plot_examples(frame, image_size=32, seed=0)
    assert [ax.get_title() for ax in fig.axes] == list(CLASS_NAMES)
    plt.close(fig)
    fig = figures.plot_masks_overlay(frame, image_size=48, seed=0)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "lesion mask (overlay)"
    assert fig.axes[0].get_title().split(":")[0] != "Normal"
    plt.close(fig)
    fig = figures.plot_masks_overlay(frame[frame["label"] == "Normal"])
    assert fig.axes[2].get_title() == "no lesion mask" and fig.axes[1].get_title() == "lung mask (outline)"
    plt.close(fig)


def test_tables_and_figures():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 60)
    a = evaluation.classification_metrics(labels, rng.random((60, 4)), config.CLASS_NAMES)
    b = evaluation.classification_metrics(labels, one_hot_scores(labels), config.CLASS_NAMES)
    frame = evaluation.report_frame(a)
    assert list(frame.index) == [*config.CLASS_NAMES, "accuracy", "macro avg", "weighted avg"]
    assert frame.loc["accuracy", "f1"] == pytest.approx(a["accuracy"])
    assert reporting.summary_row("vgg16", a)["macro_recall"] == pytest.approx(a["macro_avg"]["recall"])
    fig = figures.plot_classification_report(a, title="VGG16")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["precision", "recall", "F1"]
    assert "support" in [t.get_text() for t in fig.axes[0].texts]  # the support column's header, beside the scores
    assert fig.axes[0].get_title() == "VGG16"
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"{a['per_class']['COVID']['recall']:.2f}" in texts and str(a["n"]) in texts
    matplotlib.pyplot.close(fig)
    fig = figures.plot_confusion_matrices({"vgg16": a, "densenet201": b})
    assert len([ax for ax in fig.axes if ax.collections]) == 2  # one seaborn heatmap (a QuadMesh) per model
    count = a["confusion_matrix"][0][0]
    share = count / sum(a["confusion_matrix"][0])
    assert f"{count}\n{share:.0%}" in {t.get_text() for t in fig.axes[0].texts}  # counts and row shares annotated
    matplotlib.pyplot.close(fig)


def test_report_figure_numbers():
    m = evaluation.classification_metrics(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 2]), config.CLASS_NAMES)
    fig = figures.plot_classification_report(m, title="vgg16 on the test set", figure=4)
    assert fig.axes[0].get_title() == "Figure 4: vgg16 on the test set"
    matplotlib.pyplot.close(fig)


def test_gallery_indices_and_plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    predicted = np.array([0, 1, 0, 1, 0, 2, 2, 0])
    picks = evaluation.gallery_indices(labels, predicted, per_class=1, seed=0, num_classes=4)
    assert picks[0][0].tolist() in ([0], [2]) and picks[0][1].tolist() == [1]
    assert picks[2][1].size == 0 and picks[3][0].size == 0 and picks[3][1].tolist() == [7]
    again = evaluation.gallery_indices(labels, predicted, per_class=1, seed=0, num_classes=4)
    assert all(np.array_equal(a, b) for c in picks for a, b in zip(picks[c], again[c]))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(8, 8, 8, 1)).astype("float32")
    heat = {"vgg16": rng.uniform(size=(8, 2, 2)), "densenet201": rng.uniform(size=(8, 4, 4))}
    fig = heatmap_figures.plot_gradcam_pair(
        images[0], {k: v[0] for k, v in heat.items()}, title="t", class_name="COVID"
    )
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "test image (COVID)",
        "vgg16: Grad-CAM 2x2",
        "densenet201: Grad-CAM 4x4",
    ]
    fig2 = heatmap_figures.plot_overlays(
        images[0], {k: v[0] for k, v in heat.items()}, alphas=[0.2, 0.8], title="test image #0, true class COVID"
    )
    assert len(fig2.axes) == 5  # 2 models x 2 alphas + the colour bar
    colourbar = [ax for ax in fig2.axes if not ax.images]
    assert len(colourbar) == 1 and "normalized" in colourbar[0].get_ylabel()
    assert fig2._suptitle.get_text().startswith("Figure 7: Grad-CAM overlays of test image #0, true class COVID")
    fig3 = heatmap_figures.plot_gallery(images, heat, labels, {"vgg16": predicted, "densenet201": labels}, per_class=1)
    assert len(fig3.axes) == 2 * 4 * 2
    fig4 = heatmap_figures.plot_mask_energy({"vgg16": rng.uniform(size=8), "densenet201": np.full(8, np.nan)}, labels)
    assert fig4.axes[0].get_ylabel().startswith("share of heatmap mass")
    for f in (fig, fig2, fig3, fig4):
        plt.close(f)


def test_describe_example_and_figure_titles():
    names = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    assert (
        heatmap_figures.describe_example(42, 0, {"vgg16": 0, "densenet201": 0}, names)
        == "test image #42, true class COVID, predicted COVID by both models"
    )
    assert (
        heatmap_figures.describe_example(3, 2, {"vgg16": 0, "densenet201": 2}, names)
        == "test image #3, true class Normal, predicted COVID by vgg16, Normal by densenet201"
    )
    assert (
        heatmap_figures.describe_example(3, 2, {"vgg16": 1}, names)
        == "test image #3, true class Normal, predicted Lung_Opacity by vgg16"
    )
    assert (
        heatmap_figures.figure_title("overlays", 7) == "Figure 7: overlays"
        and heatmap_figures.figure_title("gallery") == "gallery"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = heatmap_figures.plot_gradcam_pair(np.zeros((8, 8, 1)), {"vgg16": np.ones((2, 2))}, title="Grad-CAM of x")
    assert fig._suptitle.get_text() == "Figure 6: Grad-CAM of x"
    plt.close(fig)


def _gallery_case():
    """Hand-made labels and predictions: vgg16 errs on class 0 (two images) and class 3, densenet201 only on class 0."""
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    vgg = np.array([0, 1, 2, 0, 1, 1, 2, 2, 3, 0])
    dense = np.array([0, 0, 3, 0, 1, 1, 2, 2, 3, 3])
    return labels, {"vgg16": vgg, "densenet201": dense}


def test_gallery_columns_and_error_free_classes():
    names = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    labels, preds = _gallery_case()
    # Slow reference: count wrong images per (model, class) by a loop.
    wrong = {
        m: [sum(1 for y, p in zip(labels, pred) if y == c and p != c) for c in range(4)] for m, pred in preds.items()
    }
    assert wrong == {"vgg16": [2, 0, 0, 1], "densenet201": [1, 0, 0, 0]}
    for per_class, expected in ((1, (1, 1)), (2, (2, 2)), (3, (3, 2))):
        picks = {m: evaluation.gallery_indices(labels, p, per_class, seed=0, num_classes=4) for m, p in preds.items()}
        assert evaluation.gallery_columns(picks) == expected
    assert evaluation.classes_without_errors(labels, preds, names) == {
        "vgg16": ["Lung_Opacity", "Normal"],
        "densenet201": ["Lung_Opacity", "Normal", "Viral Pneumonia"],
    }
    assert heatmap_figures.no_error_note(labels, preds, names) == (
        "No misclassified test images for Lung_Opacity, Normal (both models); Viral Pneumonia (densenet201)."
    )
    perfect = {m: labels for m in preds}
    picks = {m: evaluation.gallery_indices(labels, p, 2, seed=0, num_classes=4) for m, p in perfect.items()}
    assert evaluation.gallery_columns(picks) == (2, 0)  # no wrong column at all
    assert (
        heatmap_figures.no_error_note(labels, perfect, names)
        == "No misclassified test images: every prediction is correct for both models."
    )
    assert heatmap_figures.no_error_note(labels, {"vgg16": (labels + 1) % 4}, names) == ""


def test_gallery_drops_empty_wrong_columns():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    labels, preds = _gallery_case()
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(10, 8, 8, 1)).astype("float32")
    heat = {m: rng.uniform(size=(10, 2, 2)) for m in preds}
    # 4 classes x 2 models rows; 2 correct + 2 wrong columns (vgg16 has two COVID errors).
    fig = heatmap_figures.plot_gallery(images, heat, labels, preds, class_names=names, per_class=2)
    assert len(fig.axes) == 8 * 4
    shown = sum(1 for ax in fig.axes if ax.images)
    correct = {m: [min(2, int(((labels == c) & (p == c)).sum())) for c in range(4)] for m, p in preds.items()}
    errors = {m: [min(2, int(((labels == c) & (p != c)).sum())) for c in range(4)] for m, p in preds.items()}
    assert shown == sum(map(sum, correct.values())) + sum(map(sum, errors.values()))
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert (
        notes.count("no misclassified\nNormal image") == 2
        and notes.count("no misclassified\nViral Pneumonia image") == 1
    )
    assert "Lung_Opacity, Normal (both models)" in fig._suptitle.get_text()
    plt.close(fig)
    # Every prediction right: the wrong half disappears and the title says so.
    fig = heatmap_figures.plot_gallery(images, heat, labels, {m: labels for m in preds}, class_names=names, per_class=2)
    assert len(fig.axes) == 8 * 2 and all(ax.images for ax in fig.axes)
    assert "every prediction is correct" in fig._suptitle.get_text()
    plt.close(fig)


def test_mask_energy_ylim_and_layout():
    assert heatmap_figures.mask_energy_ylim({"a": [0.1, np.nan, 0.4], "uniform map": [0.05, 0.2]}) == pytest.approx(
        (0.0, 0.45)
    )
    assert heatmap_figures.mask_energy_ylim([0.0, 1.0]) == pytest.approx((-0.02, 1.02))
    assert heatmap_figures.mask_energy_ylim({"a": [np.nan]}) == (-0.02, 1.02)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array([0, 0, 1, 1, 2, 2])
    lesion = {
        "vgg16": np.array([0.3, 0.5, 0.2, 0.1, np.nan, np.nan]),
        localization.UNIFORM: np.array([0.04, 0.06, 0.05, 0.05, np.nan, np.nan]),
    }
    lung = {"vgg16": np.array([0.3, 0.5, 0.2, 0.1, 0.4, 0.45]), localization.UNIFORM: np.full(6, 0.35)}
    fig = heatmap_figures.plot_mask_energy({"lesion": lesion, "lung": lung}, labels, ("a", "b", "c"))
    top, bottom = fig.axes[:2]
    assert top.get_position().y0 > bottom.get_position().y1  # stacked in rows
    assert top.get_ylim() == pytest.approx((0.04 - 0.05, 0.5 + 0.05))
    assert bottom.get_ylim()[0] <= 0.1 and bottom.get_ylim()[1] >= 0.5
    texts = {t.get_text(): t.get_position()[0] for t in top.texts}
    assert texts == {"no lesion mask": 2}  # class "c" (index 2) has no lesion mask
    assert not bottom.texts
    plt.close(fig)


def test_figures_draw_the_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    curves = {"a": np.sort(rng.random((12, 6)), axis=1)[:, ::-1], "b": rng.random((12, 6))}
    summaries = {k: scores.aopc_summary(c, n_boot=100) for k, c in curves.items()}
    fig = figures.plot_aopc(summaries, baselines={"a": summaries["b"]})
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), summaries["a"]["aopc"])
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel() and fig.axes[0].get_legend() is not None
    fig2 = figures.plot_curves(curves, n_boot=100)
    np.testing.assert_allclose(fig2.axes[0].get_lines()[1].get_ydata(), curves["b"].mean(axis=0))
    rows = [
        {
            "model": m,
            "setting": s,
            "perturbation": s,
            "sigma": None,
            "morf_minus_random": v,
            "morf_minus_random_low": v - 0.1,
            "morf_minus_random_high": v + 0.1,
            "n_images": 48,
        }
        for m, s, v in [("a", "mean", 0.2), ("a", "blur", 0.0), ("b", "mean", -0.05), ("b", "blur", -1e-5)]
    ]
    fig3 = figures.plot_ablation(rows)
    ax3 = fig3.axes[0]
    assert [p.get_height() for p in ax3.patches] == pytest.approx([0.2, 0.0, -0.05, -1e-5])
    assert sorted(t.get_text() for t in ax3.texts) == sorted(["0.200", "0.000", "-0.050", "0.000"])  # 0 is labelled
    zero_marks = [
        line
        for line in ax3.get_lines()
        if np.allclose(line.get_ydata(), 0) and len(line.get_xdata()) == 2 and line.get_linewidth() == 3
    ]
    assert len(zero_marks) == 2  # the two invisible bars are marked on the zero line
    assert "n = 48" in ax3.get_title()
    plt.close("all")


def test_recall_history_figure_marks_the_chosen_epoch():
    epochs = np.arange(1, 6)
    history = pd.DataFrame({"epoch": epochs})
    for i, c in enumerate(CLASSES):
        history[training.recall_column("train", c)] = np.linspace(0.2, 0.9, 5)
        history[training.recall_column("val", c)] = np.linspace(0.1, 0.8, 5) + 0.01 * i
    fig = figures.plot_recall_history(history, CLASSES, chosen_epoch=3, title="demo")
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 4
    for ax, c in zip(axes, CLASSES):
        assert ax.get_title() == c
        xs = [tuple(line.get_xdata()) for line in ax.lines]
        assert (3, 3) in xs  # the vertical chosen-epoch line
        np.testing.assert_allclose(ax.lines[0].get_ydata(), history[training.recall_column("val", c)])
    matplotlib.pyplot.close(fig)


def _segmentation_case():
    """Six 16 px images: true masks a 6x6 square, predictions shifted by 0..5 columns (Dice falls with the shift)."""
    true = np.zeros((6, 16, 16), np.uint8)
    true[:, 5:11, 5:11] = 1
    pred = np.stack([np.roll(true[0], shift, axis=1) for shift in (0, 3, 1, 5, 2, 4)])
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
    return images, true, pred, np.array([0, 1, 2, 3, 0, 1])


def test_segmentation_figures_show_each_images_dice_and_the_worst_cases():
    import matplotlib.pyplot as plt

    images, true, pred, labels = _segmentation_case()
    # a shift by s columns of a 6x6 square: overlap 6 (6 - s), Dice (6 - s) / 6
    fig = segmentation_figures.plot_segmentation_examples(images, true, pred, labels, indices=[0, 1, 3])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["#0 COVID\nDice 1.000", "#1 Lung_Opacity\nDice 0.500", "#3 Viral Pneumonia\nDice 0.167"]
    assert len(fig.axes[1].collections) == 2  # the true and the predicted outline
    plt.close(fig)
    fig = segmentation_figures.plot_worst_segmentations(images, true, pred, labels, n=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["#3 Viral Pneumonia\nDice 0.167", "#5 Lung_Opacity\nDice 0.333"]
    assert fig._suptitle.get_text() == "The 2 test images with the lowest Dice"
    plt.close(fig)
    fig = segmentation_figures.plot_segmentation_examples(images, true, pred, n=4, seed=3)
    again = segmentation_figures.plot_segmentation_examples(images, true, pred, n=4, seed=3)
    assert [a.get_title() for a in fig.axes] == [a.get_title() for a in again.axes]
    assert len([a for a in fig.axes if a.get_title()]) == 4
    plt.close("all")
    with pytest.raises(ValueError, match="differ"):
        segmentation_figures.plot_segmentation_examples(images, true[:3], pred)


def test_segmentation_history_figure_marks_the_kept_epoch():
    import matplotlib.pyplot as plt

    history = pd.DataFrame(
        {"epoch": [1, 2, 3], "loss": [0.5, 0.2, 0.1], "val_dice": [0.90, 0.97, 0.96], "val_iou": [0.8, 0.9, 0.9]}
    )
    fig = segmentation_figures.plot_segmentation_history(history, best_epoch=2)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.90, 0.97, 0.96])
    assert any("kept: epoch 2\nDice 0.970" == t.get_text() for t in ax.texts)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["validation Dice", "validation IoU", "training loss"]
    plt.close(fig)
    with pytest.raises(ValueError, match="val_dice"):
        segmentation_figures.plot_segmentation_history(history.drop(columns="val_dice"))


def test_masked_inputs_figure_pairs_each_image_with_its_masked_copy():
    import matplotlib.pyplot as plt

    images, true, _, labels = _segmentation_case()
    masked = images.copy()
    masked[..., 0][true == 0] = 128
    fig = segmentation_figures.plot_masked_inputs(images, masked, labels, per_class=2, seed=0)
    axes = np.array(fig.axes).reshape(2, -1)
    assert axes.shape == (2, 6)  # up to two images per class (Normal and Viral Pneumonia have one), above their copies
    order = [0, 4, 1, 5, 2, 3]
    assert [ax.get_title().split()[0] for ax in axes[0]] == [f"#{i}" for i in order]
    for column, index in enumerate(order):
        np.testing.assert_array_equal(axes[0, column].images[0].get_array(), images[index, ..., 0])
        np.testing.assert_array_equal(axes[1, column].images[0].get_array(), masked[index, ..., 0])
    plt.close(fig)
    with pytest.raises(ValueError, match="must match"):
        segmentation_figures.plot_masked_inputs(images, masked[:3], labels)
