"""The figures of lung segmentation: predicted vs true masks, the worst cases by Dice, validation Dice per epoch.

Re-exported by :mod:`helpers.report.figures`. Masks are drawn as outlines on the image: the true mask in green, the
predicted one in red (dashed), each panel titled with its Dice.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from helpers.common import config
from helpers.models.segmentation import dice

#: Outline colours of the true and the predicted masks.
TRUE_COLOR, PREDICTED_COLOR = "#2ca02c", "#d62728"


def _outline(ax, mask, color: str, style: str) -> None:
    mask = np.asarray(mask, dtype=np.float32)
    if mask.any() and not mask.all():
        ax.contour(mask, levels=[0.5], colors=[color], linewidths=1.2, linestyles=style)


def _mask_panels(images, true_masks, pred_masks, indices, labels, class_names, title: str, columns: int):
    images = np.asarray(images)
    images = images[..., 0] if images.ndim == 4 else images
    true_masks, pred_masks = np.asarray(true_masks), np.asarray(pred_masks)
    if not (len(images) == len(true_masks) == len(pred_masks)):
        raise ValueError(f"{len(images)} images, {len(true_masks)} true and {len(pred_masks)} predicted masks differ")
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no images to plot")
    scores = dice(pred_masks[indices], true_masks[indices])
    columns = min(int(columns), len(indices))
    rows = -(-len(indices) // columns)
    # each row: a square 2.6-inch image under a two-line title, so titles never reach into the row above
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.2 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index, score in zip(axes.ravel(), indices, scores):
        vmax = 1.0 if images.dtype != np.uint8 else 255
        ax.imshow(images[index], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        _outline(ax, true_masks[index], TRUE_COLOR, "solid")
        _outline(ax, pred_masks[index], PREDICTED_COLOR, "dashed")
        name = f" {class_names[int(labels[index])]}" if labels is not None else ""
        ax.set_title(f"#{index}{name}\nDice {score:.3f}", fontsize=9)
    handles = [
        plt.Line2D([], [], color=TRUE_COLOR, label="true lung mask"),
        plt.Line2D([], [], color=PREDICTED_COLOR, linestyle="dashed", label="predicted"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_segmentation_examples(
    images, true_masks, pred_masks, labels=None, class_names=config.CLASS_NAMES, n: int = 8, seed: int = 0,
    indices=None, columns: int = 4,
):  # fmt: skip
    """Predicted vs true lung masks as outlines on ``n`` test images (a seeded draw, or ``indices``), Dice in each title."""
    if indices is None:
        count = min(int(n), len(images))
        indices = np.sort(np.random.default_rng(seed).choice(len(images), size=count, replace=False))
    return _mask_panels(
        images, true_masks, pred_masks, indices, labels, class_names, "Predicted vs true lung masks (test images)",
        columns,
    )  # fmt: skip


def plot_worst_segmentations(
    images, true_masks, pred_masks, labels=None, class_names=config.CLASS_NAMES, n: int = 8, columns: int = 4
):
    """The ``n`` test images with the lowest Dice (ties: the lower index), outlines as in :func:`plot_segmentation_examples`."""
    scores = dice(pred_masks, true_masks)
    worst = np.argsort(scores, kind="stable")[: min(int(n), len(scores))]
    return _mask_panels(
        images, true_masks, pred_masks, worst, labels, class_names,
        f"The {len(worst)} test images with the lowest Dice", columns,
    )  # fmt: skip


def plot_segmentation_history(history: pd.DataFrame, best_epoch: int | None = None):
    """Validation Dice (and IoU when recorded) per epoch, the training loss on a second axis, the kept epoch marked."""
    if history.empty or "val_dice" not in history.columns:
        raise ValueError("history needs rows and a 'val_dice' column (from train_segmentation)")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    epochs = history["epoch"].to_numpy()
    ax.plot(epochs, history["val_dice"], marker="o", color="C0", label="validation Dice")
    if "val_iou" in history.columns:
        ax.plot(
            epochs, history["val_iou"], marker=".", color="C0", alpha=0.5, linestyle="dotted", label="validation IoU"
        )
    if best_epoch is not None:
        value = float(history.loc[history["epoch"] == best_epoch, "val_dice"].iloc[0])
        ax.axvline(best_epoch, color="0.5", linestyle="--", linewidth=1)
        right_half = best_epoch > (epochs.min() + epochs.max()) / 2  # write towards the middle, off the right axis
        ax.annotate(f"kept: epoch {best_epoch}\nDice {value:.3f}", (best_epoch, value), textcoords="offset points",
                    xytext=(-6 if right_half else 6, -28), ha="right" if right_half else "left", fontsize=8)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation score (threshold 0.5)")
    ax.set_xticks(epochs)
    lines, names = ax.get_legend_handles_labels()
    if "loss" in history.columns:
        loss_ax = ax.twinx()
        loss_ax.plot(epochs, history["loss"], color="C1", marker="s", markersize=3, label="training loss")
        loss_ax.set_ylabel("training loss (BCE + soft Dice)")
        more, more_names = loss_ax.get_legend_handles_labels()
        lines, names = lines + more, names + more_names
    ax.legend(lines, names, loc="center right", fontsize=8)
    ax.set_title("Lung segmentation: validation Dice per epoch")
    fig.tight_layout()
    return fig


def plot_masked_inputs(images, masked, labels, class_names=config.CLASS_NAMES, per_class: int = 2, seed: int = 0):
    """Test images (top of each pair) and what a classifier sees with ``input_mask="lung"`` (below), ``per_class`` per class."""
    images, masked, labels = np.asarray(images), np.asarray(masked), np.asarray(labels)
    if images.shape != masked.shape or len(images) != len(labels):
        raise ValueError(f"images {images.shape}, masked {masked.shape} and labels {labels.shape} must match")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(class_names)):
        members = np.flatnonzero(labels == c)
        chosen += [(c, int(i)) for i in np.sort(rng.choice(members, size=min(per_class, members.size), replace=False))]
    if not chosen:
        raise ValueError("no images to plot")
    fig, axes = plt.subplots(2, len(chosen), figsize=(1.9 * len(chosen), 4.2), squeeze=False)
    for column, (c, index) in enumerate(chosen):
        for row, stack in enumerate((images, masked)):
            ax = axes[row, column]
            picture = stack[index][..., 0] if stack.ndim == 4 else stack[index]
            ax.imshow(picture, cmap="gray", vmin=0, vmax=255 if stack.dtype == np.uint8 else 1.0)
            ax.axis("off")
        axes[0, column].set_title(f"#{index}\n{class_names[c]}", fontsize=8)
    axes[0, 0].text(-0.1, 0.5, "image", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.1, 0.5, "lung input", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    fig.suptitle("What the classifiers see with input_mask = 'lung' (predicted lungs, dilated; the rest grey)")
    fig.tight_layout()
    return fig
