"""Notebook 07 in one call: :func:`score_and_report` scores both models' heatmaps by MoRF perturbation (AOPC), runs the
perturbation ablation, writes ``summary.md`` with the computed conclusions and the per-image explorer.

References: Samek et al. 2017, "Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS
(MoRF, AOPC); Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (Figure 8, the final table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from helpers.common.text import markdown_table
from helpers.report import describe, figures, tables, verdicts
from helpers.study import files as study

__all__ = ["AopcReport", "score_and_report"]


@dataclass
class AopcReport:
    """What notebook 07 shows: settings, inputs, figures (closed: display them), Markdown tables and the conclusions."""

    paths: study.StudyPaths
    settings_text: str
    inputs_table: pd.DataFrame
    selection_text: str
    curves_figure: object
    aopc_figure: object
    aopc_markdown: str
    paired_markdown: str
    ablation_figure: object | None
    ablation_markdown: str
    summary_markdown: str
    classification_markdown: str
    verdict_text: str
    conclusions_markdown: str
    explorer: Path | None
    report: dict = field(repr=False)


def score_and_report(
    profile: str,
    work_dir: str,
    report_dir: str,
    seed: int,
    image_size: int,
    input_mask: str,
    mask_margin: int,
    model_names: Sequence[str],
    region_size: int,
    region_scores: str,
    perturbation: str,
    sigma: float,
    batch_size: int,
    n_bootstrap: int,
    orders: Sequence[str],
    ablation_perturbations: Sequence[str],
    ablation_sigmas: Sequence[float],
    ablation_images: int,
    explorer_page: bool = True,
) -> AopcReport:
    """Score the heatmaps of notebook 06 by MoRF (and random, LeRF) perturbation and write the study's summary.

    For every test image and order, f(x^k) for k = 0..L (:func:`helpers.metrics.perturbation.perturbation_curves`,
    saved for the explorer); AOPC with bootstrap and paired intervals on each model's correctly classified images
    (:func:`helpers.metrics.aopc.aopc_report`); the ablation over perturbations and sigma on a seeded subset;
    recall and F1 intervals (:func:`helpers.metrics.intervals.classification_intervals`); the conclusions, which follow
    the interval rule (:func:`helpers.report.verdicts.aopc_conclusions`); ``summary.md``, ``metrics/summary.json``,
    ``metrics/aopc.json`` and, with ``explorer_page``, ``explorer.html``.
    References: Samek et al. 2017 (IEEE TNNLS), AOPC; Lamprou, Figure 8.
    """
    import keras
    import matplotlib.pyplot as plt

    from helpers.metrics import aopc, intervals
    from helpers.metrics import perturbation as pt
    from helpers.report import explorer
    from helpers.steps.segmentation import input_note

    paths = study.study_paths(profile, work_dir, report_dir)
    keras.utils.set_random_seed(seed)
    model_names, orders = list(model_names), list(orders)
    grid = pt.region_grid(image_size, region_size)
    settings_text = (
        f"{describe.device_line()}\nprofile {profile}: {grid.grid_shape[0]}x{grid.grid_shape[1]} regions of "
        f"{region_size} px (L = {grid.n_regions} steps), region scores {region_scores!r}, perturbation "
        f"{perturbation!r}, sigma {sigma}"
    )
    images, labels = study.load_split(paths, "test", image_size, input_mask=input_mask, mask_margin=mask_margin)
    outputs, heatmap_method = study.load_compared_outputs(paths, model_names, labels)  # one method, one test split
    classifiers = {name: study.load_model(paths, name, image_size) for name in model_names}
    inputs_table = pd.DataFrame(
        {name: {"test images": len(out["labels"]), "correctly classified": int(out["correct"].sum()),
                "heatmap grid": "x".join(map(str, out["heatmaps"].shape[1:]))}
         for name, out in outputs.items()}
    )  # fmt: skip

    curves = {name: {} for name in model_names}
    for name in model_names:
        out = outputs[name]
        for order in orders:
            curves[name][order] = pt.perturbation_curves(
                classifiers[name], images, out["heatmaps"], out["classes"], region_size, perturbation=perturbation,
                sigma=sigma, order=order, seed=seed, batch_size=batch_size, region_scores=region_scores,
            )  # fmt: skip
    masks = {name: outputs[name]["correct"] for name in model_names}
    for name in model_names:  # every image's curves, for the per-image explorer
        study.save_curves(paths, name, curves[name])
    selection_lines = []
    for name in model_names:
        selected, selection = aopc.selection_mask(masks[name])
        selection_lines.append(f"{name}: AOPC on {int(selected.sum())} {selection} test images (of {len(selected)})")

    fig, axes = plt.subplots(1, len(model_names), figsize=(6 * len(model_names), 4.2), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], model_names):
        chosen = aopc.selection_mask(masks[name])[0]
        figures.plot_curves({order: curves[name][order][chosen] for order in orders}, ax=ax,
                            title=f"{name}: $f(x^{{k}})$ by region order", seed=seed)  # fmt: skip
    fig.tight_layout()
    figures.save_figure(fig, paths.figures, figures.MORF_CURVES)
    curves_figure = figures.closed(fig)

    report = aopc.aopc_report(curves, masks, n_boot=n_bootstrap, seed=seed)
    fig = figures.plot_aopc(
        {name: report["models"][name]["morf"] for name in model_names},
        baselines={name: report["models"][name]["random"] for name in model_names if "random" in curves[name]},
        title="Figure 8: AOPC vs perturbation step (MoRF; dashed: random order)",
    )
    figures.save_figure(fig, paths.figures, figures.FIG8_AOPC)
    aopc_figure = figures.closed(fig)

    settings = [(p, sigma) for p in ablation_perturbations] + [("gaussian", s) for s in ablation_sigmas if s != sigma]
    ablation_rows = []
    for name in model_names:
        out = outputs[name]
        subset = aopc.sample_indices(aopc.selection_mask(masks[name])[0], ablation_images, seed=seed)
        rows = aopc.perturbation_ablation(
            classifiers[name], images[subset], out["heatmaps"][subset], out["classes"][subset], region_size,
            settings, seed=seed, batch_size=batch_size, image_ids=subset, n_boot=n_bootstrap,
            region_scores=region_scores,
            # the main setting's curves of these images were computed above: reuse them
            precomputed={(perturbation, sigma): {o: curves[name][o][subset] for o in ("morf", "random")}}
            if {"morf", "random"} <= set(orders) else None,
        )  # fmt: skip
        ablation_rows += [{"model": name, **row} for row in rows]
    ablation_figure = None
    if ablation_rows:
        fig = figures.plot_ablation(ablation_rows)
        figures.save_figure(fig, paths.figures, figures.AOPC_ABLATION)
        ablation_figure = figures.closed(fig)

    # recall and F1 with 95% intervals: test images resampled within each true class, the same resamples for both
    classification = intervals.classification_intervals(
        labels, {name: outputs[name]["predicted"] for name in model_names}, n_boot=n_bootstrap, seed=seed
    )
    conclusions = verdicts.aopc_conclusions(report, classification)
    rows = verdicts.summary_rows(report, classification)
    notes = (
        f"MoRF of {heatmap_method} heatmaps with {region_size} px regions ({grid.n_regions} steps, region scores "
        f"{region_scores!r}), perturbation {perturbation!r}, sigma {sigma}, seed {seed}. "
        + input_note(paths, input_mask, mask_margin)
    )
    verdicts.write_summary(paths, rows, report, title=f"Study summary ({profile} profile)", notes=notes,
                           conclusions=conclusions, classification=classification)  # fmt: skip
    study.save_metrics_file(paths, "aopc", {
        "settings": {"region_size": region_size, "grid_shape": grid.grid_shape, "steps": grid.n_regions,
                     "region_scores": region_scores, "perturbation": perturbation, "sigma": sigma, "seed": seed,
                     "orders": orders, "method": heatmap_method, "image_size": image_size, "input_mask": input_mask,
                     "mask_margin": mask_margin},
        "report": report, "ablation": ablation_rows})  # fmt: skip
    page = explorer.write_explorer(paths) if explorer_page else None
    return AopcReport(
        paths=paths,
        settings_text=settings_text,
        inputs_table=inputs_table,
        selection_text="\n".join(selection_lines),
        curves_figure=curves_figure,
        aopc_figure=aopc_figure,
        aopc_markdown=markdown_table(tables.aopc_table(report)),
        paired_markdown="\n\n".join(verdicts.paired_sentences(report)),
        ablation_figure=ablation_figure,
        ablation_markdown=markdown_table(tables.ablation_table(ablation_rows)) if ablation_rows else "",
        summary_markdown=markdown_table(rows),
        classification_markdown=markdown_table(verdicts.classification_rows(classification)),
        verdict_text=f"verdict: the paper's claim {conclusions['verdict']} on this run "
        f"({' vs '.join(conclusions['models'])})",
        conclusions_markdown="\n".join(f"- {sentence}" for sentence in conclusions["sentences"]),
        explorer=page,
        report=report,
    )
