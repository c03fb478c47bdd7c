"""The figures of notebook 06 (Grad-CAM): Figures 6-7, the gallery and mask energy."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from helpers.common import config
from helpers.explain.maps import gray_to_rgb, overlay
from helpers.metrics.energy import UNIFORM
from helpers.models.classification import classes_without_errors, gallery_columns, gallery_indices
from helpers.report.figure_names import figure_title

# --------------------------------------------------------------------------------------------------
# Grad-CAM (notebook 06): Figures 6-7, gallery, mask energy
# --------------------------------------------------------------------------------------------------


def _show_image(ax, image):
    ax.imshow(gray_to_rgb(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def describe_example(index: int, label: int, predictions: dict, class_names=config.CLASS_NAMES) -> str:
    """One line naming a test image, its true class and each model's prediction.

    E.g. "test image #42, true class COVID, predicted COVID by both models" or "..., predicted COVID by
    vgg16, Normal by densenet201". ``predictions``: {model: predicted class index of this image}.
    """
    predicted = {name: class_names[int(c)] for name, c in predictions.items()}
    text = f"test image #{int(index)}, true class {class_names[int(label)]}"
    if not predicted:
        return text
    values = set(predicted.values())
    if len(values) == 1:
        who = "both models" if len(predicted) == 2 else ("all models" if len(predicted) > 2 else next(iter(predicted)))
        return f"{text}, predicted {values.pop()} by {who}"
    return f"{text}, predicted " + ", ".join(f"{c} by {name}" for name, c in predicted.items())


def plot_gradcam_pair(image, heatmaps: dict, title: str = "", class_name: str = "", figure: int | None = 6):
    """Figure 6: the image beside each model's raw heatmap at its native grid (one panel per model).

    ``title`` (e.g. from :func:`describe_example`) becomes the suptitle, prefixed "Figure <figure>: "
    unless ``figure`` is None.
    """
    fig, axes = plt.subplots(1, 1 + len(heatmaps), figsize=(3.6 * (1 + len(heatmaps)), 3.6), squeeze=False)
    axes = axes[0]
    _show_image(axes[0], image)
    axes[0].set_title("test image" + (f" ({class_name})" if class_name else ""))
    for ax, (name, heat) in zip(axes[1:], heatmaps.items()):
        heat = np.asarray(heat, dtype=np.float32)
        im = ax.imshow(heat, cmap="jet", interpolation="nearest", vmin=0.0)
        ax.set_title(f"{name}: Grad-CAM {heat.shape[0]}x{heat.shape[1]}")
        step = max(1, int(np.ceil(max(heat.shape) / 10)))
        ax.set_xticks(range(0, heat.shape[1], step))
        ax.set_yticks(range(0, heat.shape[0], step))
        ax.set_xlabel("feature-map column")
        ax.set_ylabel("feature-map row")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="raw Grad-CAM")
    fig.suptitle(figure_title(title or "Grad-CAM at the feature-map grid", figure))
    fig.tight_layout()
    return fig


def plot_overlays(
    image, heatmaps: dict, alphas=(0.2, 0.4, 0.6, 0.8), cmap: str = "jet", title: str = "", figure: int | None = 7
):
    """Figure 7: overlays of each model's heatmap on the image at several alphas (rows: models), with a colour bar.

    ``title`` names the image (e.g. from :func:`describe_example`); the suptitle is prefixed
    "Figure <figure>: " unless ``figure`` is None. The colour bar shows the heatmap scale (normalized per image).
    """
    alphas = list(alphas)
    colours = cmap if callable(cmap) or cmap == "jet" else matplotlib.colormaps[cmap]
    fig, axes = plt.subplots(
        len(heatmaps),
        len(alphas),
        figsize=(2.8 * len(alphas) + 0.9, 2.9 * len(heatmaps) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for row, (name, heat) in enumerate(heatmaps.items()):
        for col, alpha in enumerate(alphas):
            ax = axes[row, col]
            _show_image(ax, overlay(image, heat, alpha=alpha, cmap=colours))
            ax.set_title(f"{name}, alpha = {alpha:g}")
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=cmap)
    fig.colorbar(
        mappable,
        ax=axes,
        fraction=0.04,
        pad=0.02,
        shrink=0.9,
        label="Grad-CAM, normalized per image (0 = none, 1 = peak)",
    )
    heading = "Grad-CAM overlays" + (f" of {title}" if title else "")
    fig.suptitle(
        figure_title(heading, figure) + "\nheatmap upsampled bilinearly, blended as (1 - alpha) image + alpha heatmap"
    )
    return fig


def no_error_note(labels, predictions: dict, class_names=config.CLASS_NAMES) -> str:
    """A sentence listing the classes without misclassified test images, per model ("" when every class has errors)."""
    error_free = classes_without_errors(labels, predictions, class_names)
    present = [class_names[c] for c in range(len(class_names)) if (np.asarray(labels) == c).any()]
    models = list(error_free)
    if models and all(error_free[m] == present for m in models):
        return (
            "No misclassified test images: every prediction is correct"
            + (f" for {'both models' if len(models) == 2 else 'all models'}" if len(models) > 1 else "")
            + "."
        )
    common = [c for c in present if all(c in error_free[m] for m in models)]
    parts = []
    if common:
        who = "both models" if len(models) == 2 else ("all models" if len(models) > 2 else models[0])
        parts.append(f"{', '.join(common)} ({who})")
    for m in models:
        own = [c for c in error_free[m] if c not in common]
        if own:
            parts.append(f"{', '.join(own)} ({m})")
    return ("No misclassified test images for " + "; ".join(parts) + ".") if parts else ""


def plot_gallery(
    images,
    heatmaps: dict,
    labels,
    predictions: dict,
    class_names=config.CLASS_NAMES,
    per_class: int = 2,
    alpha: float = 0.5,
    seed: int = 0,
):
    """Gallery of overlays: one row per (class, model), up to ``per_class`` correct then wrong predictions.

    Wrong-prediction columns that no row fills are dropped (:func:`helpers.models.classification.gallery_columns`); a row without
    misclassified images says so in its first wrong slot, and the suptitle lists the error-free classes
    (:func:`no_error_note`).
    """
    labels = np.asarray(labels)
    rows = [(c, name) for c in range(len(class_names)) for name in heatmaps]
    picks = {name: gallery_indices(labels, predictions[name], per_class, seed, len(class_names)) for name in heatmaps}
    n_correct, n_wrong = gallery_columns(picks)
    n_correct = max(n_correct, 1)
    cols = n_correct + n_wrong
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(2.2 * cols + 0.6, 2.4 * len(rows)), squeeze=False, layout="constrained"
    )
    for r, (c, name) in enumerate(rows):
        correct, wrong = picks[name][c]
        slots = (
            [("correct", i) for i in correct]
            + [("correct", None)] * (n_correct - len(correct))
            + [("wrong", i) for i in wrong]
            + [("wrong", None)] * (n_wrong - len(wrong))
        )
        for k, (ax, (kind, idx)) in enumerate(zip(axes[r], slots)):
            ax.set_xticks([])
            ax.set_yticks([])
            if idx is None:
                first_empty = (
                    (k == 0 and not len(correct)) if kind == "correct" else (k == n_correct and not len(wrong))
                )
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if first_empty:
                    text = (
                        f"no {'correctly classified' if kind == 'correct' else 'misclassified'}\n{class_names[c]} image"
                    )
                    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35", fontsize=8)
            else:
                ax.imshow(overlay(images[idx], heatmaps[name][idx], alpha=alpha))
                pred = int(np.asarray(predictions[name])[idx])
                zero = " (zero map)" if not np.asarray(heatmaps[name][idx]).max() > 0 else ""
                ax.set_title(
                    f"#{idx}: pred {class_names[pred]}{zero}", fontsize=7, color="tab:green" if pred == c else "tab:red"
                )
            if k == 0:
                ax.set_ylabel(f"{name}\n{class_names[c]}", fontsize=8)
    if n_wrong:
        heading = (
            f"Grad-CAM gallery: up to {n_correct} correct (green) and {n_wrong} wrong (red) predictions per true class"
        )
    else:
        heading = f"Grad-CAM gallery: {n_correct} correct predictions per true class"
    note = no_error_note(labels, predictions, class_names)
    fig.suptitle(heading + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def mask_energy_ylim(values, margin: float = 0.05) -> tuple[float, float]:
    """Y-limits for mask energies: the finite values' range widened by ``margin`` (of [0, 1]), clipped to [-0.02, 1.02].

    ``values``: any nested sequence or dict of arrays (every plotted value, the uniform map included, so the
    chance level is never cut off). Falls back to (-0.02, 1.02) without finite values.
    """
    arrays = []

    def collect(v):
        if isinstance(v, dict):
            for item in v.values():
                collect(item)
        else:
            arrays.append(np.asarray(v, dtype=np.float64).ravel())

    collect(values)
    finite = np.concatenate(arrays) if arrays else np.zeros(0)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return -0.02, 1.02
    lo, hi = float(finite.min()), float(finite.max())
    return max(-0.02, lo - margin), min(1.02, hi + margin)


def _mask_energy_panel(ax, energies: dict, labels, class_names, mask_kind: str, rng, legend: bool = True):
    names = list(energies)
    width = 0.8 / max(len(names), 1)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    has_values = np.zeros(len(class_names), bool)
    for m, name in enumerate(names):
        colour = "0.55" if name == UNIFORM else colours[m % len(colours)]
        energy = np.asarray(energies[name], dtype=np.float64)
        data, positions = [], []
        for c in range(len(class_names)):
            values = energy[(labels == c) & np.isfinite(energy)]
            if values.size:
                data.append(values)
                positions.append(c + (m - (len(names) - 1) / 2) * width)
                has_values[c] = True
        if data:
            box = ax.boxplot(
                data, positions=positions, widths=width * 0.8, patch_artist=True, showfliers=False, manage_ticks=False
            )
            for patch in box["boxes"]:
                patch.set_facecolor(colour)
                patch.set_alpha(0.35)
            for pos, values in zip(positions, data):
                ax.scatter(pos + rng.uniform(-width / 4, width / 4, values.size), values, s=8, color=colour, alpha=0.6)
        ax.plot([], [], color=colour, lw=6, alpha=0.5, label=name)
    lo, hi = mask_energy_ylim(energies)
    ax.set_ylim(lo, hi)
    for c in np.flatnonzero(~has_values):
        # every value missing: without a uniform map (never all zero) the cause cannot be told apart
        text = f"no {mask_kind} mask" if UNIFORM in energies else f"no {mask_kind} mask\nor all-zero maps"
        ax.text(c, (lo + hi) / 2, text, ha="center", va="center", fontsize=11, color="0.4", style="italic")
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, fontsize=11)
    ax.set_xlim(-0.6, len(class_names) - 0.4)
    ax.tick_params(axis="y", labelsize=11)
    ax.set_xlabel("true class", fontsize=12)
    ax.set_ylabel(f"share of heatmap mass\ninside the {mask_kind} mask", fontsize=12)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Grad-CAM mass inside the {mask_kind} mask", fontsize=13)
    if legend:
        ax.legend(title="model", fontsize=10, title_fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_mask_energy(energies: dict, labels, class_names=config.CLASS_NAMES, mask_kind: str = "lesion", seed: int = 0):
    """Box plots (with jittered points) of mask energy per class, one box per model; NaN values are skipped.

    ``energies``: {model: (N,)} (one panel titled by ``mask_kind``) or {kind: {model: (N,)}} as returned by
    :func:`helpers.metrics.energy.mask_energies` (one panel per mask kind, stacked in rows). Each panel's y-range fits its values
    (:func:`mask_energy_ylim`); a class without any mask of that kind says so.
    """
    labels = np.asarray(labels)
    if energies and all(isinstance(v, dict) for v in energies.values()):
        panels = list(energies.items())
    else:
        panels = [(mask_kind, energies)]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(panels), 1, figsize=(1.6 * len(class_names) + 3.4, 3.9 * len(panels)), squeeze=False)
    for ax, (kind, per_model) in zip(axes[:, 0], panels):
        _mask_energy_panel(ax, per_model, labels, class_names, kind, rng)
    fig.tight_layout()
    return fig
