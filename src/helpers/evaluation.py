"""Test-set evaluation: predictions, classification reports (the paper's Figures 4-5), confusion matrices.

Precision, recall and F1 follow the usual classification-report definitions: per class, precision = TP / (TP + FP),
recall = TP / (TP + FN), F1 their harmonic mean (0 where undefined); the macro average is the plain mean over
classes, the weighted average weights classes by their support.

References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (Figures 4-5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import config
from .training import predict_batches, to_unit_range

#: The three scores of a classification report.
SCORES: tuple[str, ...] = ("precision", "recall", "f1")

#: How scores are labelled in figures and tables.
SCORE_LABELS: dict[str, str] = {"precision": "precision", "recall": "recall", "f1": "F1", "support": "support"}

#: The paper's test results on the real data (macro averages), per model slot.
PAPER_RESULTS: dict[str, dict[str, float]] = {"vgg16": {"recall": 0.86, "f1": 0.86},
                                              "densenet201": {"recall": 0.88, "f1": 0.88}}

#: The profile whose numbers can be compared with the paper's (real data, ImageNet backbones, 299 px).
PAPER_PROFILE = "paper"


def predict_probabilities(model, images, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Class probabilities (N, C) float32 of uint8 images (N, H, W, 1), scaled to [0, 1] batch by batch."""
    images = np.asarray(images) if not hasattr(images, "shape") else images
    expected = tuple(model.input_shape[1:])
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}), got {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return predict_batches(model, images, int(batch_size), to_unit_range, desc="predicting" if progress else None)


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
    """Counts (C, C): rows are true classes, columns predicted classes."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def classification_metrics(labels, probabilities, class_names: Sequence[str] = config.CLASS_NAMES) -> dict:
    """Per-class precision/recall/F1/support, accuracy, macro and weighted averages and the confusion matrix.

    ``probabilities``: (N, C) scores (the arg-max is the prediction) or (N,) predicted class indices.
    Keys: ``per_class[name]`` and ``macro_avg``/``weighted_avg`` hold ``precision``, ``recall``, ``f1``,
    ``support``; ``"macro avg"`` and ``"weighted avg"`` repeat the averages in scikit-learn's report layout
    (``f1-score``) for readers of that layout.
    """
    class_names = list(class_names)
    n_classes = len(class_names)
    labels = np.asarray(labels)
    scores = np.asarray(probabilities)
    if labels.ndim != 1:
        raise ValueError(f"labels must be class indices (N,), got shape {labels.shape}")
    if scores.ndim == 2:
        if scores.shape[1] != n_classes:
            raise ValueError(f"probabilities have {scores.shape[1]} columns but there are {n_classes} class names")
        predicted = scores.argmax(axis=1)
    elif scores.ndim == 1:
        predicted = scores.astype(np.int64)
    else:
        raise ValueError(f"probabilities must be (N, C) scores or (N,) predictions, got shape {scores.shape}")
    if len(predicted) != len(labels) or len(labels) == 0:
        raise ValueError(f"labels ({len(labels)}) and probabilities ({len(predicted)}) must be non-empty and of equal length")
    for name, values in (("labels", labels), ("predictions", predicted)):
        if values.min() < 0 or values.max() >= n_classes:
            raise ValueError(f"{name} must be class indices in [0, {n_classes}), got {np.unique(values)[:10]}")

    matrix = confusion_matrix(labels, predicted, n_classes)
    per_class = {}
    for c, name in enumerate(class_names):
        tp = matrix[c, c]
        precision = _ratio(tp, matrix[:, c].sum())
        recall = _ratio(tp, matrix[c, :].sum())
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(matrix[c, :].sum())}
    support = np.array([per_class[n]["support"] for n in class_names], dtype=float)
    total = int(support.sum())
    macro = {s: float(np.mean([per_class[n][s] for n in class_names])) for s in SCORES}
    weighted = {s: float(np.sum([per_class[n][s] * per_class[n]["support"] for n in class_names]) / total) for s in SCORES}
    def sklearn_layout(avg):
        return {"precision": avg["precision"], "recall": avg["recall"], "f1-score": avg["f1"], "support": total}

    return {
        "class_names": class_names,
        "per_class": per_class,
        "accuracy": float(np.trace(matrix) / total),
        "macro_avg": {**macro, "support": total},
        "weighted_avg": {**weighted, "support": total},
        "macro avg": sklearn_layout(macro),
        "weighted avg": sklearn_layout(weighted),
        "confusion_matrix": matrix.tolist(),
        "n": total,
    }


def report_frame(metrics: Mapping) -> pd.DataFrame:
    """A classification report as a table: rows classes, accuracy, macro avg, weighted avg; columns precision, recall, f1, support."""
    rows = {name: metrics["per_class"][name] for name in metrics["class_names"]}
    n = metrics["n"]
    rows["accuracy"] = {"precision": np.nan, "recall": np.nan, "f1": metrics["accuracy"], "support": n}
    rows["macro avg"] = metrics["macro_avg"]
    rows["weighted avg"] = metrics["weighted_avg"]
    frame = pd.DataFrame.from_dict(rows, orient="index")[[*SCORES, "support"]]
    frame["support"] = frame["support"].astype(int)
    return frame


def compact_comparison(metrics_by_model: Mapping[str, Mapping], paper: Mapping[str, Mapping] | None = None) -> pd.DataFrame:
    """Side-by-side recall and F1 of several models: rows the classes, "macro avg" and "accuracy".

    Columns are (model, "recall"/"F1"). The accuracy row holds the accuracy in the F1 column (NaN under
    recall), as in a classification report. ``paper``: {model: {"recall": r, "f1": f}} adds a row
    "macro avg, paper" (e.g. :data:`PAPER_RESULTS`); models it lacks get NaN there.
    """
    if not metrics_by_model:
        raise ValueError("metrics_by_model is empty")
    names = list(metrics_by_model)
    class_names = list(metrics_by_model[names[0]]["class_names"])
    for name in names[1:]:
        if list(metrics_by_model[name]["class_names"]) != class_names:
            raise ValueError(f"models {names[0]!r} and {name!r} have different class names")
    rows = [*class_names, "macro avg"] + (["macro avg, paper"] if paper else []) + ["accuracy"]
    columns = pd.MultiIndex.from_product([names, [SCORE_LABELS["recall"], SCORE_LABELS["f1"]]], names=["model", "score"])
    table = pd.DataFrame(np.nan, index=pd.Index(rows, name="class"), columns=columns)
    for name in names:
        m = metrics_by_model[name]
        for row in class_names:
            table.loc[row, (name, "recall")] = m["per_class"][row]["recall"]
            table.loc[row, (name, "F1")] = m["per_class"][row]["f1"]
        table.loc["macro avg", (name, "recall")] = m["macro_avg"]["recall"]
        table.loc["macro avg", (name, "F1")] = m["macro_avg"]["f1"]
        table.loc["accuracy", (name, "F1")] = m["accuracy"]
        if paper and name in paper:
            table.loc["macro avg, paper", (name, "recall")] = paper[name]["recall"]
            table.loc["macro avg, paper", (name, "F1")] = paper[name]["f1"]
    return table


def paper_comparison_caveat(profile: str) -> str:
    """A caveat for putting the paper's values beside this run's: "" only for the ``paper`` profile.

    Other profiles (``demo``, ``smoke``, ...) run on synthetic phantoms with small from-scratch backbones, so
    their numbers say nothing about how close the reproduction comes to the paper.
    """
    if not isinstance(profile, str) or not profile:
        raise ValueError(f"profile must be a non-empty string, got {profile!r}")
    if profile == PAPER_PROFILE:
        return ""
    return (f"Caveat: profile {profile!r} runs on synthetic phantoms with small from-scratch backbones, not on "
            "the COVID-19 Radiography Database with ImageNet VGG16/DenseNet201; its numbers are not comparable "
            f"to the paper's (only the {PAPER_PROFILE!r} profile reproduces the paper's setting).")


def summary_row(model_name: str, metrics: Mapping) -> dict:
    """The headline numbers of one model: accuracy and macro precision, recall and F1 (the paper's 'recall' and 'F1')."""
    return {
        "model": model_name,
        "accuracy": metrics["accuracy"],
        "macro_precision": metrics["macro_avg"]["precision"],
        "macro_recall": metrics["macro_avg"]["recall"],
        "macro_f1": metrics["macro_avg"]["f1"],
        "test_images": metrics["n"],
    }


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def plot_classification_report(metrics: Mapping, title: str | None = None, cmap: str = "RdYlGn",
                               figure: int | None = None):
    """A classification report as an annotated heatmap (precision, recall, F1 per class and averages; support as text): Figures 4-5.

    ``figure``: the paper's figure number (4 or 5), which prefixes the title as "Figure N: ".
    """
    import matplotlib.pyplot as plt

    frame = report_frame(metrics)
    values = frame[list(SCORES)].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(frame) + 1.4))
    shown = np.ma.masked_invalid(values)
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=10,
                        color="black" if 0.25 < values[i, j] < 0.85 else "white")
        ax.text(values.shape[1] - 0.4, i, f"{int(frame['support'].iloc[i])}", ha="left", va="center", fontsize=10)
    ax.set_xticks(range(len(SCORES)), [SCORE_LABELS[score] for score in SCORES])
    ax.set_yticks(range(len(frame)), list(frame.index))
    ax.text(values.shape[1] - 0.4, -0.75, "support", ha="left", va="center", fontsize=10)
    ax.axhline(len(metrics["class_names"]) - 0.5, color="white", lw=3)
    ax.set_xlim(-0.5, values.shape[1] + 0.4)
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="score")
    title = title or "classification report on the test set"
    ax.set_title(f"Figure {int(figure)}: {title}" if figure is not None else title, pad=28)
    fig.tight_layout()
    return fig


def plot_confusion_matrices(metrics_by_model: Mapping[str, Mapping], normalize: bool = True, cmap: str = "Blues"):
    """One confusion matrix per model, side by side: counts annotated, colour = share of the true class when ``normalize``."""
    import matplotlib.pyplot as plt

    names = list(metrics_by_model)
    if not names:
        raise ValueError("metrics_by_model is empty")
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        metrics = metrics_by_model[name]
        matrix = np.asarray(metrics["confusion_matrix"], dtype=float)
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
        ax.imshow(shares, cmap=cmap, vmin=0, vmax=1 if normalize else max(matrix.max(), 1))
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                text = f"{int(matrix[i, j])}" + (f"\n{shares[i, j]:.0%}" if normalize else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="white" if shares[i, j] > (0.5 if normalize else matrix.max() / 2) else "black")
        ticks = range(len(metrics["class_names"]))
        ax.set_xticks(ticks, metrics["class_names"], rotation=30, ha="right")
        ax.set_yticks(ticks, metrics["class_names"])
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{name} (accuracy {metrics['accuracy']:.2f})")
    fig.suptitle("Confusion matrices on the test set" + (" (colour: share of the true class)" if normalize else ""))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def predictions_path(paths, model_name: str) -> Path:
    """``paths.processed / predictions_<model_name>.npz``."""
    return Path(paths.processed) / f"predictions_{model_name}.npz"


def metrics_path(paths, model_name: str) -> Path:
    """``paths.metrics / classification_<model_name>.json``."""
    return Path(paths.metrics) / f"classification_{model_name}.json"


def save_predictions(paths, model_name: str, probabilities, labels) -> Path:
    """Write ``probabilities`` (N, C) float32, ``labels`` (N,) and ``predicted`` (N,) of the test split, manifest order."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(f"probabilities must be (N, C) matching labels (N,), got {probabilities.shape} and {labels.shape}")
    return config.save_npz(
        predictions_path(paths, model_name),
        probabilities=probabilities,
        labels=labels,
        predicted=probabilities.argmax(axis=1).astype(np.int64),
    )


def load_predictions(paths, model_name: str) -> dict:
    """Read ``predictions_<model_name>.npz``: ``probabilities``, ``labels``, ``predicted``."""
    path = predictions_path(paths, model_name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run notebook 04_report first")
    arrays = config.load_npz(path)
    missing = {"probabilities", "labels", "predicted"} - set(arrays)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}")
    return arrays


def save_metrics(paths, model_name: str, metrics: Mapping) -> Path:
    """Write one model's classification metrics to ``paths.metrics / classification_<model_name>.json``."""
    return config.save_json({"model_name": model_name, **metrics}, metrics_path(paths, model_name))


def load_metrics(paths, model_name: str) -> dict:
    """Read ``classification_<model_name>.json``."""
    return config.load_json(metrics_path(paths, model_name))
