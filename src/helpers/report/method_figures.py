"""The figures of notebook 08 (heatmap methods and metrics): the methods × metrics table and the randomisation figure.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state): nothing is shown until the notebook
displays them, and nothing needs closing.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from helpers.common.text import format_value
from helpers.explain.maps import gray_to_rgb
from helpers.report.figure_names import METHODS_METRICS, METHODS_RANDOMISATION

__all__ = ["column_scores", "plot_methods_metrics", "plot_randomisation", "methods_figures"]


def column_scores(means: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Each column of (methods, metrics) means scaled to [0, 1], 1 = the best method of that metric (NaN stays NaN)."""
    means = np.asarray(means, np.float64)
    out = np.full(means.shape, np.nan)
    for j, higher in enumerate(higher_is_better):
        column = means[:, j] if higher else -means[:, j]
        finite = np.isfinite(column)
        if not finite.any():
            continue
        low, high = column[finite].min(), column[finite].max()
        out[finite, j] = (column[finite] - low) / (high - low) if high > low else 0.5
    return out


def plot_methods_metrics(summaries: Mapping[str, Mapping[str, Mapping]], metrics) -> Figure:
    """One panel per model: methods (rows) × metrics (columns), each cell its mean and 95% interval.

    ``summaries``: {model: {metric key: {method: {mean, low, high} or None}}}; ``metrics``: the
    :data:`helpers.steps.methods.METRICS` declarations (key, label, higher_is_better) in column order. The colour
    ranks the methods within each column (green: best of that metric, red: worst; grey: no value), so columns of
    different scales and directions read alike.
    """
    names = list(summaries)
    keys = [m for m in metrics if any(m.key in summaries[n] for n in names)]
    methods = list(dict.fromkeys(method for n in names for k in keys for method in summaries[n].get(k.key, {})))
    width, height = 1.25 * len(keys) + 2.5, 0.5 * len(methods) + 2.2
    fig = Figure(figsize=(width, height * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        entries = [[summaries[name].get(k.key, {}).get(method) for k in keys] for method in methods]
        means = np.array([[np.nan if e is None else e["mean"] for e in row] for row in entries])
        scores = column_scores(means, [k.higher_is_better for k in keys])
        ax.imshow(
            np.ma.masked_invalid(scores), cmap="RdYlGn", vmin=-0.25, vmax=1.25, aspect="auto"
        )  # pale ends: text stays legible
        ax.set_facecolor("0.85")
        for i, row in enumerate(entries):
            for j, e in enumerate(row):
                text = (
                    "–" if e is None else "{}\n[{}, {}]".format(*(format_value(e[k]) for k in ("mean", "low", "high")))
                )
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{k.label} {'↑' if k.higher_is_better else '↓'}" for k in keys], rotation=30, ha="right",
                           fontsize=7.5)  # fmt: skip
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels(methods, fontsize=8)
        ax.set_title(f"{name}: mean [95% interval]; colour ranks the methods within each metric (green = best)")
    return fig


def _stage_label(stage: str) -> str:
    return stage.split("/")[-1]


def plot_randomisation(randomisation: Mapping[str, Mapping], images: Mapping[str, np.ndarray]) -> Figure:
    """Per model: one image's maps of every method as the cascade re-draws the layers, and the similarity curves.

    ``randomisation``: {model: {stages, explained_stage, maps {method: (S+1, h, w), trained first}, summary {method:
    per-stage rows with ``spearman`` and ``ssim`` entries}}}; ``images``: {model: the image whose maps are shown}.
    Maps are scaled to their own maximum (an all-zero map stays dark blue). Curves: mean Spearman (solid) and SSIM
    (dashed) over the randomisation images with the Spearman band; the dotted line marks the stage from which the
    backbone's top layer (the one producing the explained activations) is re-drawn.
    References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS (Figures 2 and 4).
    """
    names = list(randomisation)
    first = randomisation[names[0]]
    methods, columns = list(first["maps"]), len(first["stages"]) + 2
    fig = Figure(figsize=(1.05 * columns * len(names) + 1, 0.95 * len(methods) + 3.6), layout="constrained")
    outer = fig.add_gridspec(1, len(names))
    for block, name in enumerate(names):
        r = randomisation[name]
        stages = ["trained", *r["stages"]]
        grid = outer[0, block].subgridspec(len(methods) + 1, len(stages) + 1, height_ratios=[1] * len(methods) + [3.2])
        ax = fig.add_subplot(grid[0, 0])
        ax.imshow(gray_to_rgb(images[name]))
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
        for i, method in enumerate(methods):
            for j, stage in enumerate(stages):
                ax = fig.add_subplot(grid[i, j + 1])
                heat = np.asarray(r["maps"][method][j], np.float32)
                peak = float(heat.max())
                ax.imshow(heat / peak if peak > 0 else heat, cmap="jet", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(_stage_label(stage), fontsize=6.5, rotation=20)
                if j == 0:
                    ax.set_ylabel(method, fontsize=7)
        ax = fig.add_subplot(grid[-1, :])
        steps = np.arange(len(stages))
        for k, method in enumerate(methods):
            rows = r["summary"][method]
            curve = {
                s: [1.0] + [np.nan if row[s] is None else row[s]["mean"] for row in rows] for s in ("spearman", "ssim")
            }
            ax.plot(steps, curve["spearman"], "-o", ms=3, color=f"C{k % 10}", label=method)
            ax.plot(steps, curve["ssim"], "--", color=f"C{k % 10}", lw=1)
            low = [1.0] + [np.nan if row["spearman"] is None else row["spearman"]["low"] for row in rows]
            high = [1.0] + [np.nan if row["spearman"] is None else row["spearman"]["high"] for row in rows]
            ax.fill_between(steps, low, high, color=f"C{k % 10}", alpha=0.08, lw=0)
        ax.axvline(stages.index(r["explained_stage"]), color="0.3", ls=":", lw=1)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(steps)
        ax.set_xticklabels([_stage_label(s) for s in stages], rotation=25, ha="right", fontsize=7)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel("similarity to the trained maps")
        ax.set_title(
            f"{name}: Spearman (solid, 95% band) and SSIM (dashed); dotted: top backbone layer re-drawn", fontsize=8
        )
        ax.grid(alpha=0.3)
        if block == len(names) - 1:
            ax.legend(fontsize=6.5, ncol=2, loc="lower left")
    return fig


def methods_figures(results: Mapping[str, Mapping], images: np.ndarray, metrics) -> dict:
    """Notebook 08's figures by file name, from :func:`helpers.steps.methods.evaluate_methods`' per-model results."""
    made = {METHODS_METRICS: plot_methods_metrics({n: r["summaries"] for n, r in results.items()}, metrics)}
    rand = {n: r["randomisation"] for n, r in results.items() if "randomisation" in r}
    if rand:
        examples = {n: images[results[n]["randomisation_image_ids"][0]] for n in rand}
        made[METHODS_RANDOMISATION] = plot_randomisation(rand, examples)
    return made
