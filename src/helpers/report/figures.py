"""Every figure of the study: the plot functions, :func:`save_figure` and the figure file names.

Figure names are spelled here only (the ``FIG_*`` constants, :func:`recall_history_figure`,
:func:`classification_report_figure`); :data:`FIGURE_CAPTIONS` orders and captions them in ``index.html``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from helpers.common import config
from helpers.common.config import CLASS_NAMES
from helpers.common.files import atomic_path
from helpers.common.text import format_value
from helpers.data.dataset import decode_gray, load_masks, resize_square
from helpers.data.layout import DatasetError
from helpers.metrics.aopc import curves_array
from helpers.metrics.intervals import bootstrap_ci
from helpers.models.classification import MEASURE_LABELS, MEASURES, report_frame
from helpers.report.figure_names import (
    AOPC_ABLATION,
    CONFUSION_MATRICES,
    FIG1_EXAMPLES,
    FIG6_GRADCAM,
    FIG7_OVERLAYS,
    FIG8_AOPC,
    FIGURE_CAPTIONS,
    GRADCAM_GALLERY,
    MASK_ENERGY,
    MASKED_INPUTS,
    MASKS_OVERLAY,
    MORF_CURVES,
    SEGMENTATION_EXAMPLES,
    SEGMENTATION_HISTORY,
    SEGMENTATION_WORST,
    SLOT_FIGURES,
    SLOT_LABELS,
    classification_report_figure,
    figure_title,
    recall_history_figure,
)

#: Resolution of saved figures.
FIGURE_DPI = 150


__all__ = [
    "FIGURE_DPI",
    "FIGURE_CAPTIONS",
    "SLOT_FIGURES",
    "SLOT_LABELS",
    "save_figure",
    "closed",
    "recall_history_figure",
    "classification_report_figure",
    "FIG1_EXAMPLES",
    "MASKS_OVERLAY",
    "CONFUSION_MATRICES",
    "FIG6_GRADCAM",
    "FIG7_OVERLAYS",
    "GRADCAM_GALLERY",
    "MASK_ENERGY",
    "MORF_CURVES",
    "FIG8_AOPC",
    "AOPC_ABLATION",
    "plot_examples",
    "plot_masks_overlay",
    "plot_recall_history",
    "plot_classification_report",
    "plot_confusion_matrices",
    "plot_curves",
    "plot_aopc",
    "plot_ablation",
    "SEGMENTATION_EXAMPLES",
    "SEGMENTATION_WORST",
    "SEGMENTATION_HISTORY",
    "MASKED_INPUTS",
]


def closed(fig):
    """``fig``, closed so that a notebook shows it once, where a step returns it (``display(fig)``)."""
    plt.close(fig)
    return fig


def save_figure(fig, folder: str | os.PathLike, name: str, dpi: int = FIGURE_DPI) -> Path:
    """Save a matplotlib figure as ``<folder>/<name>.png`` atomically and return the path."""
    path = Path(folder) / (name if name.endswith(".png") else f"{name}.png")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


# --------------------------------------------------------------------------------------------------
# Data (notebook 01): Figure 1 and the masks
# --------------------------------------------------------------------------------------------------


def plot_examples(frame: pd.DataFrame, image_size: int | None = None, seed: int | None = None, cmap: str = "gray"):
    """The paper's Figure 1: one example image per class (class names as titles); ``seed`` picks random examples, else the first."""
    present = [name for name in CLASS_NAMES if (frame["label"] == name).any()]
    if not present:
        raise DatasetError("the frame has no rows to plot")
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.6), squeeze=False)
    for ax, name in zip(axes[0], present):
        rows = frame[frame["label"] == name]
        row = (
            rows.iloc[0]
            if seed is None
            else rows.iloc[int(np.random.default_rng([seed, CLASS_NAMES.index(name)]).integers(len(rows)))]
        )
        image = decode_gray(row["path"])
        if image_size:
            image = resize_square(image, image_size, cv2.INTER_AREA)
        ax.imshow(image, cmap=cmap, vmin=0, vmax=255)
        ax.set_title(name)
        ax.set_xlabel(f"{Path(row['path']).name} ({image.shape[1]}x{image.shape[0]})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("One example per class")
    fig.tight_layout()
    return fig


def plot_masks_overlay(
    frame: pd.DataFrame, image_size: int | None = None, seed: int | None = None, index: int | None = None
):
    """An image, its lung-mask outline and its lesion mask overlaid.

    ``index`` picks the row; otherwise a row whose lesion mask is not empty (the first, or a seeded random
    one when ``seed`` is given), falling back to a row with a lung mask, then to the first row.
    """
    if frame.empty:
        raise DatasetError("the frame has no rows to plot")
    if index is None:
        order = np.arange(len(frame)) if seed is None else np.random.default_rng([seed, 1]).permutation(len(frame))
        lesion_col = frame["lesion_mask_path"].fillna("").astype(str) if "lesion_mask_path" in frame else None
        lung_col = frame["mask_path"].fillna("").astype(str) if "mask_path" in frame else None
        index = next(
            (
                int(i)
                for i in order
                if lesion_col is not None
                and lesion_col.iloc[i]
                and load_masks(frame.iloc[[int(i)]], 32, "lesion").any()
            ),
            None,
        )
        if index is None:
            index = next((int(i) for i in order if lung_col is not None and lung_col.iloc[i]), int(order[0]))
    row = frame.iloc[[index]]
    image = decode_gray(row["path"].iloc[0])
    size = image_size or image.shape[0]
    image = resize_square(image, size, cv2.INTER_AREA)
    lung = load_masks(row, size, "lung")[0]
    lesion = load_masks(row, size, "lesion")[0]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title(f"{row['label'].iloc[0]}: {Path(row['path'].iloc[0]).name}")
    if lung.any():
        axes[1].contour(lung, levels=[0.5], colors=["tab:cyan"], linewidths=1.2)
    axes[1].set_title("lung mask (outline)" if lung.any() else "no lung mask")
    if lesion.any():
        axes[2].imshow(np.ma.masked_where(lesion == 0, lesion), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
        axes[2].contour(lesion, levels=[0.5], colors=["tab:red"], linewidths=1.0)
    axes[2].set_title("lesion mask (overlay)" if lesion.any() else "no lesion mask")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Training (notebooks 03, 04): Figures 2-3
# --------------------------------------------------------------------------------------------------


def plot_recall_history(
    history: pd.DataFrame,
    class_names: Sequence[str] = config.CLASS_NAMES,
    chosen_epoch: int | None = None,
    title: str | None = None,
    show_train: bool = True,
):
    """Per-class recall per epoch (validation solid, training dashed), the chosen epoch marked: the paper's Figures 2-3."""
    from helpers.models.training import recall_column

    class_names = list(class_names)
    cols = 2 if len(class_names) > 1 else 1
    rows = int(np.ceil(len(class_names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), sharex=True, sharey=True, squeeze=False)
    epochs = history["epoch"].to_numpy()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(class_names):
        ax = axes.flat[i]
        color = colors[i % len(colors)]
        ax.plot(epochs, history[recall_column("val", name)], "-o", ms=3, color=color, label="validation")
        if show_train and recall_column("train", name) in history:
            ax.plot(epochs, history[recall_column("train", name)], "--", color=color, alpha=0.7, label="training")
        if chosen_epoch is not None:
            ax.axvline(chosen_epoch, color="0.3", lw=1, ls=":", label=f"chosen epoch {chosen_epoch}")
            value = history.loc[history["epoch"] == chosen_epoch, recall_column("val", name)]
            if len(value):
                ax.annotate(
                    f"{float(value.iloc[0]):.2f}",
                    (chosen_epoch, float(value.iloc[0])),
                    textcoords="offset points",
                    xytext=(-4, -12) if chosen_epoch == max(epochs) else (4, -12),  # inside the axes
                    ha="right" if chosen_epoch == max(epochs) else "left",
                    fontsize=8,
                )
        ax.set_title(name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("recall")
        if i >= len(class_names) - cols:
            ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(class_names) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title or "Per-class recall per epoch")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# Evaluation (notebook 05): Figures 4-5 and confusion matrices
# --------------------------------------------------------------------------------------------------


def plot_classification_report(
    metrics: Mapping, title: str | None = None, cmap: str = "RdYlGn", figure: int | None = None
):
    """A classification report as an annotated heatmap (precision, recall, F1 per class and averages; support as text): Figures 4-5.

    ``figure``: the paper's figure number (4 or 5), which prefixes the title as "Figure N: ". Drawn with
    :func:`seaborn.heatmap`; the support column is text beside the coloured scores.
    """
    import seaborn as sns

    frame = report_frame(metrics)
    scores = frame[list(MEASURES)].rename(columns=MEASURE_LABELS)
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(frame) + 1.4))
    sns.heatmap(
        scores, ax=ax, cmap=cmap, vmin=0.0, vmax=1.0, annot=True, fmt=".2f", annot_kws={"fontsize": 10},
        cbar_kws={"label": "score", "fraction": 0.05, "pad": 0.2}, linewidths=0,
    )  # fmt: skip
    support_x = len(MEASURES) + 0.35  # right of the scores, under its own header
    for i, support in enumerate(frame["support"]):
        ax.text(support_x, i + 0.5, f"{int(support)}", ha="center", va="center", fontsize=10)
    ax.text(support_x, -0.15, "support", ha="center", va="bottom", fontsize=10)
    ax.axhline(len(metrics["class_names"]), color="white", lw=3)
    ax.xaxis.tick_top()
    ax.set_xlabel("")
    ax.tick_params(axis="y", rotation=0)
    title = title or "classification report on the test set"
    ax.set_title(figure_title(title, figure), pad=28)
    fig.tight_layout()
    return fig


def plot_confusion_matrices(metrics_by_model: Mapping[str, Mapping], normalize: bool = True, cmap: str = "Blues"):
    """One confusion matrix per model, side by side (:func:`seaborn.heatmap`): counts annotated, colour = share of the
    true class when ``normalize``."""
    import seaborn as sns

    names = list(metrics_by_model)
    if not names:
        raise ValueError("metrics_by_model is empty")
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        metrics = metrics_by_model[name]
        matrix = np.asarray(metrics["confusion_matrix"], dtype=float)
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
        labels = [[f"{int(n)}" + (f"\n{share:.0%}" if normalize else "") for n, share in zip(row, srow)]
                  for row, srow in zip(matrix, shares)]  # fmt: skip
        classes = metrics["class_names"]
        sns.heatmap(
            pd.DataFrame(shares, index=classes, columns=classes), ax=ax, cmap=cmap, vmin=0,
            vmax=1 if normalize else max(matrix.max(), 1), annot=np.array(labels), fmt="", annot_kws={"fontsize": 9},
            cbar=False, square=True,
        )  # fmt: skip
        ax.tick_params(axis="x", rotation=30)
        ax.tick_params(axis="y", rotation=0)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{name} (accuracy {metrics['accuracy']:.2f})")
    fig.suptitle("Confusion matrices on the test set" + (" (colour: share of the true class)" if normalize else ""))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# AOPC (notebook 07): perturbation curves, Figure 8, ablation
# --------------------------------------------------------------------------------------------------


def _ax(ax, figsize=(7, 4.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def plot_aopc(
    summaries: Mapping[str, dict], baselines: Mapping[str, dict] | None = None, ax=None, title: str | None = None
):
    """The paper's Figure 8: AOPC against the perturbation step for each model (solid) and its random-order baseline (dashed), with interval bands."""
    fig, ax = _ax(ax)
    colors = {}
    for i, (label, s) in enumerate(summaries.items()):
        steps = np.arange(len(s["aopc"]))
        (line,) = ax.plot(steps, s["aopc"], lw=2, label=f"{label} MoRF (AOPC {s['final']:.3f})", color=f"C{i}")
        ax.fill_between(steps, s["aopc_low"], s["aopc_high"], alpha=0.2, color=line.get_color(), lw=0)
        colors[label] = line.get_color()
    for label, s in (baselines or {}).items():
        steps = np.arange(len(s["aopc"]))
        color = colors.get(label, "grey")
        ax.plot(steps, s["aopc"], ls="--", lw=1.5, color=color, label=f"{label} random order ({s['final']:.3f})")
        ax.fill_between(steps, s["aopc_low"], s["aopc_high"], alpha=0.1, color=color, lw=0)
    level = next(iter(summaries.values()))["level"] if summaries else 0.95
    ax.set_xlabel("perturbation step L")
    ax.set_ylabel("AOPC(L)")
    ax.set_title(title or f"AOPC vs perturbation step ({level:.0%} bootstrap bands)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_curves(
    curves: Mapping[str, np.ndarray],
    ax=None,
    title: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
):
    """Mean perturbation curves f(x^k) against the step k with bootstrap bands, one line per entry of ``curves`` ((n, L+1) each)."""
    fig, ax = _ax(ax)
    for label, c in curves.items():
        c = curves_array(c, f"curves[{label!r}]")
        band = bootstrap_ci(c, n_boot, seed, level)
        steps = np.arange(c.shape[1])
        (line,) = ax.plot(steps, band["mean"], lw=2, label=f"{label} (n={len(c)})")
        ax.fill_between(steps, band["low"], band["high"], alpha=0.2, color=line.get_color(), lw=0)
    ax.set_xlabel("perturbation step k")
    ax.set_ylabel(r"$f(x^{k})$: probability of the explained class")
    ax.set_title(title or "Mean perturbation curves")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _ablation_subset_text(rows: Sequence[Mapping]) -> str:
    """'n = 48 images per model' (or per-model counts) from the ablation rows' ``n_images``."""
    counts = {r.get("model", ""): r["n_images"] for r in rows if "n_images" in r}
    if not counts:
        return ""
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f"subset of n = {n} correctly classified test images" + (" per model" if len(counts) > 1 else "")
    return "subsets of " + ", ".join(f"n = {n} ({m})" if m else f"n = {n}" for m, n in counts.items()) + " test images"


def plot_ablation(rows: Sequence[Mapping], ax=None, title: str | None = None):
    """Bar chart of MoRF - random AOPC (with interval) per perturbation setting and model (rows need a ``model`` key).

    Every bar carries its value as text (so a bar of exactly 0 reads "0.000" rather than looking missing);
    the default title names the image subset (the rows' ``n_images``).
    """
    fig, ax = _ax(ax, figsize=(9, 4.8))
    models = list(dict.fromkeys(r.get("model", "") for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    width = 0.8 / max(1, len(models))
    extent = [0.0]
    labels = []
    for j, model in enumerate(models):
        sel = {r["setting"]: r for r in rows if r.get("model", "") == model}
        pos = np.arange(len(settings)) + (j - (len(models) - 1) / 2) * width
        vals = np.array([sel[s]["morf_minus_random"] if s in sel else np.nan for s in settings])
        low = np.array([sel[s]["morf_minus_random_low"] if s in sel else np.nan for s in settings])
        high = np.array([sel[s]["morf_minus_random_high"] if s in sel else np.nan for s in settings])
        ax.bar(
            pos,
            vals,
            width,
            yerr=np.vstack([vals - low, high - vals]),
            capsize=3,
            label=model or None,
            color=f"C{j}",
            edgecolor=f"C{j}",
            lw=1.0,
        )
        for x, v, lo, hi in zip(pos, vals, low, high):
            if np.isfinite(v):
                labels.append((x, v, lo, hi))
                extent += [lo, hi]
    span = max(extent) - min(extent) or 1.0
    pad = 0.02 * span
    for x, v, lo, hi in labels:
        text = format_value(v)
        # above the interval for values >= 0, below it for negative values
        y, va = (max(v, hi) + pad, "bottom") if v >= 0 else (min(v, lo) - pad, "top")
        ax.text(x, y, text, ha="center", va=va, fontsize=7, rotation=90 if len(models) > 2 else 0)
        if abs(v) < 0.005 * span:  # a bar too thin to see: mark its position on the zero line
            ax.plot([x - width / 2, x + width / 2], [0, 0], lw=3, color="black", solid_capstyle="butt")
    ax.set_ylim(min(extent) - 0.15 * span, max(extent) + 0.2 * span)
    ax.set_xticks(np.arange(len(settings)))
    ax.set_xticklabels([label.replace(" ", "\n", 1) for label in settings])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("AOPC(MoRF) − AOPC(random)")
    subset = _ablation_subset_text(rows)
    ax.set_title(
        title or "Perturbation ablation: heatmap advantage over a random order" + (f"\n({subset})" if subset else "")
    )
    if any(models):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig
