"""Notebook 06 in one call: :func:`explain_and_report` computes both models' heatmaps of the whole test set, draws the
paper's Figures 6-7 and the gallery, and scores the heatmaps' mask energy.

References: Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV; Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (Figures 6-7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from helpers.common import config
from helpers.report import figures, heatmap_figures
from helpers.report.describe import device_line
from helpers.study import files as study

__all__ = ["HeatmapReport", "explain_and_report"]


@dataclass
class HeatmapReport:
    """What notebook 06 shows: settings, the per-model heatmap runs, figures (closed: display them) and mask energy."""

    paths: study.StudyPaths
    settings_text: str
    inputs_text: str
    heatmaps_text: str
    example_text: str
    pair_figure: object
    overlays_figure: object
    gallery_figure: object
    energy_table: pd.DataFrame
    energy_comparisons: pd.DataFrame
    energy_figure: object


def explain_and_report(
    profile: str,
    work_dir: str,
    report_dir: str,
    seed: int,
    image_size: int,
    input_mask: str,
    mask_margin: int,
    model_names: Sequence[str],
    method: str,
    batch_size: int,
    gallery_per_class: int,
    alphas: Sequence[float],
) -> HeatmapReport:
    """Heatmaps by ``method`` (any of :data:`helpers.explain.registry.METHODS`) of every test image for each model,
    saved for notebook 07; Figure 6 (one COVID image both models classify as COVID), Figure 7 (overlays), the gallery
    of correct and wrong predictions, and the mask energy of each model's correctly classified images (the AOPC
    images) with paired intervals (``metrics/gradcam_mask_energy.json``).
    References: Selvaraju et al. 2017 (ICCV), Grad-CAM; Lamprou, Figures 6-7.
    """
    import keras

    from helpers.data import dataset
    from helpers.explain import heatmap
    from helpers.metrics import energy
    from helpers.models import classification
    from helpers.study import split_files

    paths = study.study_paths(profile, work_dir, report_dir)
    keras.utils.set_random_seed(seed)
    model_names = list(model_names)
    class_names = list(config.CLASS_NAMES)
    settings_text = f"{device_line()}\nprofile {profile}, backend {keras.backend.backend()}, report in {paths.report}"

    classifiers = {name: study.load_model(paths, name, image_size) for name in model_names}  # checksum, lineage
    images, labels = study.load_split(paths, "test", image_size, input_mask=input_mask, mask_margin=mask_margin)
    manifest = split_files.read_manifest(paths.split_manifest)
    test_frame = manifest[manifest["split"] == "test"].reset_index(drop=True)
    masks = {kind: dataset.load_masks(test_frame, image_size, kind=kind) for kind in ("lesion", "lung")}
    present = {kind: int((m.reshape(len(m), -1).max(axis=1) > 0).sum()) for kind, m in masks.items()}
    inputs_text = f"{len(images)} test images of {image_size} px; " + ", ".join(
        f"{kind} masks present for {n}" for kind, n in present.items()
    )

    heatmaps, predicted, lines = {}, {}, []
    for name, model in classifiers.items():
        start = time.perf_counter()
        heatmaps[name], predicted[name] = heatmap(
            method, model, images, batch_size=batch_size, progress=True, return_classes=True
        )
        seconds = time.perf_counter() - start
        study.save_heatmaps(paths, name, heatmaps[name], predicted[name], method)
        zero = int((heatmaps[name].reshape(len(images), -1).max(axis=1) == 0).sum())
        lines.append(
            f"{name}: {heatmaps[name].shape[1]}x{heatmaps[name].shape[2]} grid, {seconds:.1f} s "
            f"({len(images) / seconds:.0f} images/s), accuracy {(predicted[name] == labels).mean():.3f}, "
            f"all-zero maps {zero}/{len(images)}"
        )

    covid = class_names.index("COVID")
    example, how = classification.pick_common_example(labels, predicted, target=covid, seed=seed)
    described = heatmap_figures.describe_example(
        example, labels[example], {n: predicted[n][example] for n in model_names}, class_names
    )
    at_example = {n: heatmaps[n][example] for n in model_names}
    fig = heatmap_figures.plot_gradcam_pair(images[example], at_example, title=f"Grad-CAM of {described}",
                                            class_name=class_names[labels[example]], figure=6)  # fmt: skip
    figures.save_figure(fig, paths.figures, figures.FIG6_GRADCAM)
    pair_figure = figures.closed(fig)
    fig = heatmap_figures.plot_overlays(images[example], at_example, alphas=alphas, title=described, figure=7)
    figures.save_figure(fig, paths.figures, figures.FIG7_OVERLAYS)
    overlays_figure = figures.closed(fig)
    fig = heatmap_figures.plot_gallery(images, heatmaps, labels, predicted, class_names=class_names,
                                       per_class=gallery_per_class, seed=seed)  # fmt: skip
    figures.save_figure(fig, paths.figures, figures.GRADCAM_GALLERY)
    gallery_figure = figures.closed(fig)

    # the images AOPC uses (notebook 07): each model's correctly classified test images, where the explained
    # (predicted) class is the true class; mask kinds absent from this data are left out
    correct = {name: study.load_model_outputs(paths, name, n_images=len(images))["correct"] for name in model_names}
    energies = energy.mask_energies(heatmaps, masks, select=correct)
    report = energy.mask_energy_report(energies, labels, class_names)
    comparisons = energy.mask_energy_comparisons(energies, labels, class_names, seed=seed)
    study.save_metrics_file(paths, "mask_energy", {
        "method": method, "image_size": image_size, "input_mask": input_mask, "n_test": len(images),
        "images": "each model's correctly classified test images (as for AOPC)", "class_explained": "true class",
        "n_images": {name: int(c.sum()) for name, c in correct.items()}, "models": report, "comparisons": comparisons})  # fmt: skip
    table = energy.mask_energy_frame(report)
    fig = heatmap_figures.plot_mask_energy(energies, labels, class_names, seed=seed)
    figures.save_figure(fig, paths.figures, figures.MASK_ENERGY)
    return HeatmapReport(
        paths=paths,
        settings_text=settings_text,
        inputs_text=inputs_text,
        heatmaps_text="\n".join(lines),
        example_text=f"{described} (chosen: {how})",
        pair_figure=pair_figure,
        overlays_figure=overlays_figure,
        gallery_figure=gallery_figure,
        energy_table=table.pivot_table(index=["mask", "class"], columns="model", values="mean").round(3),
        energy_comparisons=pd.DataFrame(
            [
                {
                    "mask": r["mask"],
                    "class": r["class"],
                    "comparison": f"{r['first']} − {r['second']}",
                    "difference [95% CI]": f"{r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]",
                    "images": r["n"],
                    "reading": r["reading"],
                }
                for r in comparisons
            ]
        ),  # fmt: skip
        energy_figure=figures.closed(fig),
    )
