"""Test-set evaluation: predictions, classification metrics (the paper's Figures 4-5), confusion matrices.

Precision, recall and F1 follow the usual classification-report definitions: per class, precision = TP / (TP + FP),
recall = TP / (TP + FN), F1 their harmonic mean (0 where undefined); the macro average is the plain mean over
classes, the weighted average weights classes by their support.

References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (Figures 4-5).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.backend.device import predict_batches
from helpers.common import config
from helpers.common.checks import check_int, to_unit_range

__all__ = [
    "MEASURES",
    "MEASURE_LABELS",
    "predict_probabilities",
    "confusion_matrix",
    "classification_metrics",
    "report_frame",
    "pick_common_example",
    "gallery_indices",
    "gallery_columns",
    "classes_without_errors",
]

#: The three scores of a classification report.
MEASURES: tuple[str, ...] = ("precision", "recall", "f1")

#: How scores are labelled in figures and tables.
MEASURE_LABELS: dict[str, str] = {"precision": "precision", "recall": "recall", "f1": "F1", "support": "support"}


def predict_probabilities(model, images, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Class probabilities (N, C) float32 of uint8 images (N, H, W, 1), scaled to [0, 1] batch by batch."""
    images = np.asarray(images) if not hasattr(images, "shape") else images
    expected = tuple(model.input_shape[1:])
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}), got {images.shape}")
    batch_size = check_int("batch_size", batch_size, 1)
    return predict_batches(model, images, batch_size, to_unit_range, desc="predicting" if progress else None)


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
    """Counts (C, C): rows are true classes, columns predicted classes (:func:`sklearn.metrics.confusion_matrix`)."""
    from sklearn.metrics import confusion_matrix as counts

    return counts(np.asarray(labels, np.int64), np.asarray(predicted, np.int64), labels=np.arange(num_classes))


def classification_metrics(labels, probabilities, class_names: Sequence[str] = config.CLASS_NAMES) -> dict:
    """Per-class precision/recall/F1/support (scikit-learn's), accuracy, macro and weighted averages and the confusion matrix.

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
        raise ValueError(
            f"labels ({len(labels)}) and probabilities ({len(predicted)}) must be non-empty and of equal length"
        )
    for name, values in (("labels", labels), ("predictions", predicted)):
        if values.min() < 0 or values.max() >= n_classes:
            raise ValueError(f"{name} must be class indices in [0, {n_classes}), got {np.unique(values)[:10]}")

    from sklearn.metrics import precision_recall_fscore_support

    matrix = confusion_matrix(labels, predicted, n_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(n_classes), average=None, zero_division=0
    )
    per_class = {
        name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
               "support": int(support[c])}
        for c, name in enumerate(class_names)
    }  # fmt: skip
    support = np.array([per_class[n]["support"] for n in class_names], dtype=float)
    total = int(support.sum())
    macro = {s: float(np.mean([per_class[n][s] for n in class_names])) for s in MEASURES}
    weighted = {
        s: float(np.sum([per_class[n][s] * per_class[n]["support"] for n in class_names]) / total) for s in MEASURES
    }

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
    frame = pd.DataFrame.from_dict(rows, orient="index")[[*MEASURES, "support"]]
    frame["support"] = frame["support"].astype(int)
    return frame


# --------------------------------------------------------------------------------------------------
# Which test images: correct and wrong predictions per class
# --------------------------------------------------------------------------------------------------


def pick_common_example(labels, predictions: dict, target: int = 0, seed: int = 0):
    """Index of a test image of class ``target`` that every model predicts as ``target`` (seeded choice).

    Falls back to an image every model predicts as ``target`` whatever its label, then to one of class
    ``target``; returns ``(index, how)`` with ``how`` in {"correct", "predicted", "label"}; raises if none.
    """
    labels = np.asarray(labels)
    agree = np.ones(labels.shape, bool)
    for pred in predictions.values():
        agree &= np.asarray(pred) == target
    rng = np.random.default_rng(seed)
    for how, candidates in (("correct", agree & (labels == target)), ("predicted", agree), ("label", labels == target)):
        idx = np.flatnonzero(candidates)
        if idx.size:
            return int(rng.choice(idx)), how
    raise ValueError(f"no test image has class {target} or is predicted as class {target} by every model")


def gallery_indices(labels, predicted, per_class: int, seed: int = 0, num_classes: int | None = None) -> dict:
    """Per class: up to ``per_class`` correct and wrong test indices, drawn with ``seed``: {c: (correct, wrong)}."""
    labels = np.asarray(labels)
    predicted = np.asarray(predicted)
    rng = np.random.default_rng(seed)
    num_classes = int(num_classes if num_classes is not None else labels.max() + 1)
    out = {}
    for c in range(num_classes):
        picks = []
        for hit in (True, False):
            idx = np.flatnonzero((labels == c) & ((predicted == labels) == hit))
            picks.append(np.sort(rng.choice(idx, size=min(per_class, idx.size), replace=False)) if idx.size else idx)
        out[c] = tuple(picks)
    return out


def gallery_columns(picks: dict) -> tuple[int, int]:
    """Columns the gallery needs: (most correct picks, most wrong picks) over every model and class.

    ``picks``: {model: :func:`gallery_indices` result}. Wrong-prediction columns that would stay empty in
    every row are dropped: 0 wrong columns when no model misclassified any image.
    """
    rows = [pair for per_model in picks.values() for pair in per_model.values()]
    return (max((len(correct) for correct, _ in rows), default=0), max((len(wrong) for _, wrong in rows), default=0))


def classes_without_errors(labels, predictions: dict, class_names=config.CLASS_NAMES) -> dict:
    """Per model, the classes (names) with test images none of which it misclassified: {model: [class, ...]}."""
    labels = np.asarray(labels)
    out = {}
    for name, pred in predictions.items():
        pred = np.asarray(pred)
        out[name] = [
            class_names[c]
            for c in range(len(class_names))
            if (labels == c).any() and not (pred[labels == c] != c).any()
        ]
    return out
