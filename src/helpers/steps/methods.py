"""Notebook 08 in one call: every heatmap method scored by every metric, and whether the metrics agree.

Is Grad-CAM a good map for these models at all (the same metrics on the other CAM methods and the model-independent
baselines of :mod:`helpers.explain`), and does a metric measure the model or the perturbation (noise-MoRF AOPC beside
the metrics of :mod:`helpers.metrics`)? Per model, on one seeded sample of correctly classified test images shared by
every method and metric: means with percentile-bootstrap intervals, paired differences of the study's method against
each other method, and Kendall's τ between the methods' rankings by every two metrics (:func:`rank_agreement`); the
sentences follow the study's interval rule (:func:`helpers.metrics.intervals.interval_sign`).

References: Samek et al. 2017 (IEEE TNNLS), AOPC; Rong et al. 2022 (ICML), ROAD; Petsiuk et al. 2018 (BMVC),
insertion and deletion; Zhang et al. 2018 (IJCV), the pointing game; Adebayo et al. 2018 (NeurIPS), sanity checks;
Kendall 1938 (Biometrika), rank correlation; Efron & Tibshirani 1993, the bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.common import config
from helpers.common.choices import METRIC_GROUPS
from helpers.common.text import markdown_table
from helpers.metrics.agreement import METRIC_BY_KEY, METRICS, paired_comparisons, rank_agreement, summarise
from helpers.metrics.intervals import MIN_IMAGES
from helpers.report.method_tables import (
    agreement_sentence,
    agreement_table,
    comparison_sentence,
    comparison_table,
    method_label,
    methods_table,
)
from helpers.study import files as study
from helpers.study import lineage, split_files

__all__ = [
    "NOTEBOOK", "MethodsReport", "evaluate_methods",
]  # fmt: skip

#: The notebook this step is.
NOTEBOOK = "08_methods_and_metrics"


# ----------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------
# Sentences and tables
# ----------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------------


@dataclass
class MethodsReport:
    """What notebook 08 shows, per model: the methods × metrics table, the reference's paired comparisons, the
    metrics' agreement (Kendall's τ); the sentences, the figures (closed: display them) and the files written."""

    paths: study.StudyPaths
    settings: dict
    reference: str
    results: dict
    tables: dict
    comparison_tables: dict
    agreement_tables: dict
    sentences: list
    figures: dict
    files: dict
    setup_text: str


def _method_options(methods, top_n: int, seed: int, ids) -> dict:
    options = {"scorecam": {"top_n": top_n or None}, "random": {"seed": seed, "image_ids": np.asarray(ids)}}
    return {method: value for method, value in options.items() if method in methods}


def _explained_stage(result: Mapping) -> tuple[int, bool]:
    """The first stage that re-draws a backbone layer (the one producing the explained activations), and whether there is one."""
    for index, stage in enumerate(result["stages"]):
        if any(path.startswith(f"{config.FEATURE_LAYER}/") for path in result["layers"][stage]):
            return index, True
    return len(result["stages"]) - 1, False


def _evaluate_model(model, x, classes, ids, masks, methods, metrics, s: Mapping, rand) -> dict:
    """Per-image values of every metric for every method on one model's images (and its randomisation images)."""
    from helpers.explain.registry import method_heatmaps
    from helpers.metrics.aopc import per_image_aopc
    from helpers.metrics.energy import mask_energy
    from helpers.metrics.insertion import curve_auc, insertion_curves
    from helpers.metrics.perturbation import perturbation_curves
    from helpers.metrics.pointing import pointing_game
    from helpers.metrics.randomisation import randomisation_test
    from helpers.metrics.road import road_evaluation

    common = dict(seed=s["seed"], batch_size=s["batch_size"], image_ids=ids, region_scores=s["region_scores"])
    options = _method_options(methods, s["scorecam_top_n"], s["seed"], ids)
    maps = method_heatmaps(methods, model, x, classes=classes, batch_size=s["batch_size"], options=options)
    values: dict = {m.key: {} for m in METRICS if m.group in metrics}
    raw: dict = {"values": values, "curves": {m: {} for m in methods}, "chance": {}}
    curve = dict(perturbation=s["perturbation"], sigma=s["sigma"], progress=False, **common)
    if "aopc" in metrics:
        random = perturbation_curves(model, x, None, classes, s["region_size"], order="random", **curve)
        raw["aopc"] = {"random": per_image_aopc(random)[:, -1], "morf": {}}
    for method, heat in maps.items():
        if {"aopc", "insertion_deletion"} & set(metrics):
            morf = perturbation_curves(model, x, heat, classes, s["region_size"], order="morf", **curve)
            raw["curves"][method]["deletion"] = morf.mean(axis=0)
        if "aopc" in metrics:
            raw["aopc"]["morf"][method] = per_image_aopc(morf)[:, -1]
            values["morf_minus_random"][method] = raw["aopc"]["morf"][method] - raw["aopc"]["random"]
        if "insertion_deletion" in metrics:
            inserted = insertion_curves(model, x, heat, classes, s["region_size"], progress=False, **common)
            values["insertion_auc"][method], values["deletion_auc"][method] = curve_auc(inserted), curve_auc(morf)
            raw["curves"][method]["insertion"] = inserted.mean(axis=0)
        if "road" in metrics:
            road = road_evaluation(model, x, heat, classes, s["region_size"], s["road_fractions"], n_boot=1, **common)
            values["road_combined"][method] = road["scores"]["per_image_combined"]
            raw["curves"][method].update(road_morf=road["morf"].mean(axis=0), road_lerf=road["lerf"].mean(axis=0))
            raw["road_residual"] = max(raw.get("road_residual", 0.0), road["residual"])
        for kind, mask in masks.items():
            present = mask.reshape(len(mask), -1).any(axis=1)
            if "mask_energy" in metrics:
                values[f"energy_{kind}"][method] = np.where(present, mask_energy(heat, mask), np.nan)
            if "pointing_game" in metrics:
                values[f"pointing_{kind}"][method] = pointing_game(heat, mask)
            share = mask.reshape(len(mask), -1).astype(bool).mean(axis=1)[present]
            for key in (f"energy_{kind}", f"pointing_{kind}"):
                if key in values and share.size:
                    raw["chance"][key] = float(share.mean())
    if "randomisation" in metrics:
        rx, rclasses, rids = rand
        result = randomisation_test(
            model, rx, methods, classes=rclasses, backbone_layers=s["randomisation_stages"], seed=s["seed"],
            batch_size=s["batch_size"], n_boot=s["n_bootstrap"], keep=1,
            method_options=_method_options(methods, s["scorecam_top_n"], s["seed"], rids),
        )  # fmt: skip
        index, inside = _explained_stage(result)
        for method, entry in result["methods"].items():
            values["randomisation_spearman"][method] = entry["spearman"][index]
            values["randomisation_ssim"][method] = entry["ssim"][index]
        raw["randomisation"] = {
            "stages": result["stages"], "layers": result["layers"], "explained_stage": result["stages"][index],
            "backbone_randomised": inside, "n_images": result["n_images"],
            "summary": {m: entry["summary"] for m, entry in result["methods"].items()},
            "maps": {m: entry["maps"][:, 0] for m, entry in result["methods"].items()},
        }  # fmt: skip
    return raw


def _summaries(raw: Mapping, reference: str, n_boot: int, seed: int) -> dict:
    """Intervals, the paired comparisons with the reference and the metrics' agreement of one model's per-image values."""
    values = {key: per_method for key, per_method in raw["values"].items() if per_method}
    higher = {key: METRIC_BY_KEY[key].higher_is_better for key in values}
    sets = {key: "randomisation" for key in values if METRIC_BY_KEY[key].group == "randomisation"}
    out = {k: v for k, v in raw.items() if k not in ("values", "aopc")}
    out.update(
        per_image=values,
        summaries={key: {m: summarise(v, n_boot, seed) for m, v in per.items()} for key, per in values.items()},
        comparisons={key: paired_comparisons(per, reference, higher[key], n_boot, seed) for key, per in values.items()},
        agreement=rank_agreement(values, higher, sets, n_boot, seed) if len(values) >= 2 else None,
    )
    if "aopc" in raw:
        out["aopc"] = {"random": summarise(raw["aopc"]["random"], n_boot, seed),
                       "morf": {m: summarise(v, n_boot, seed) for m, v in raw["aopc"]["morf"].items()}}  # fmt: skip
    return out


def _pair(agreement: Mapping | None, first: str, second: str) -> dict | None:
    return next((p for p in (agreement or {}).get("pairs", []) if {p["first"], p["second"]} == {first, second}), None)


def _rows(table: pd.DataFrame) -> list[dict]:
    return [{table.index.name or "": index, **row} for index, row in table.to_dict(orient="index").items()]


def _markdown(title: str, s: Mapping, report: MethodsReport) -> str:
    """methods.md: the settings, the sentences and per model the three tables."""
    lines = [
        f"# {title}",
        "",
        f"Methods: {', '.join(s['methods'])}. On each model's seeded sample of {s['n_images'] or 'all'} correctly "
        f"classified test images ({s['region_size']} px regions; MoRF with {s['perturbation']} σ={s['sigma']}; ROAD at "
        f"fractions {', '.join(f'{f:g}' for f in s['road_fractions'])}; Score-CAM on the top "
        f"{s['scorecam_top_n'] or 'all'} channels); randomisation on {s['randomisation_images']} of them. Cells: mean "
        "[95% bootstrap interval over images]; ↑ higher is better, ↓ lower is better. A comparison names a winner only "
        f"when the 95% interval of the paired difference excludes 0, on at least {MIN_IMAGES} images.",
        "",
        *(f"- {sentence}" for sentence in report.sentences),
    ]
    for name, result in report.results.items():
        lines += ["", f"## {name}", "", f"{result['n_images']} {result['selection']} test images.", ""]
        lines.append(markdown_table(_rows(report.tables[name])))
        if "randomisation" in result:
            r = result["randomisation"]
            where = (
                "the first to re-draw a backbone layer" if r["backbone_randomised"] else "no backbone layer re-drawn"
            )
            lines.append(f"Randomisation: similarity at stage `{r['explained_stage']}` ({where}), {r['n_images']} images.")  # fmt: skip
        if len(report.comparison_tables[name]):
            lines += ["", f"{method_label(report.reference)} − each other method, paired over the same images:", ""]
            lines.append(markdown_table(_rows(report.comparison_tables[name])))
        if report.agreement_tables.get(name) is not None:
            lines += ["", "Kendall's τ between the methods' rankings by two metrics [95% interval]:", ""]
            lines.append(markdown_table(_rows(report.agreement_tables[name])))
    return "\n".join(lines) + "\n"


def _write(paths, payload: Mapping, markdown: str) -> dict:
    """``metrics/methods.json`` (a metrics file of the study) and ``methods.md``."""
    files = {"metrics": study.save_metrics_file(paths, "methods", payload)}
    files["markdown"] = paths.report / "methods.md"
    with study.atomic_path(files["markdown"]) as tmp:
        tmp.write_text(markdown)
    lineage.note_report_write(paths, files["markdown"], NOTEBOOK)
    return files


def evaluate_methods(
    profile: str,
    work_dir: str,
    report_dir: str,
    seed: int,
    image_size: int,
    input_mask: str = "none",
    mask_margin: int = 4,
    model_names: Sequence[str] = ("vgg16", "densenet201"),
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] = METRIC_GROUPS,
    region_size=16,
    region_scores: str = "grid",
    perturbation: str = "gaussian",
    sigma: float = 0.1,
    n_images: int = 48,
    scorecam_top_n: int = 16,
    road_fractions: Sequence[float] | None = None,
    randomisation_images: int = 4,
    randomisation_stages: int = 2,
    n_bootstrap: int = 2000,
    batch_size: int = 64,
) -> MethodsReport:
    """Score every heatmap method by every metric on each model's correctly classified test images; write the report.

    Per model, on one seeded sample of ``n_images`` correctly classified test images (0: all), explained for their
    class: AOPC MoRF − random (``perturbation``, ``sigma``), ROAD's combined score at ``road_fractions`` (default
    10 %, ..., 90 %), insertion and deletion AUCs, mask energy and the pointing game for the lesion and lung masks
    the data has, and on ``randomisation_images`` of them the Spearman and SSIM similarity of each method's maps to
    the trained model's once the head and the backbone's top layer are re-drawn (the cascade through the head and
    ``randomisation_stages`` backbone layers). The study's method (notebook 06's) is the reference of the paired
    comparisons. Writes ``metrics/methods.json``, ``methods.md`` and the figures ``methods_metrics`` and
    ``methods_randomisation``. References: see the module docstring.
    """
    import keras

    from helpers.data.dataset import load_masks
    from helpers.explain import METHODS, MODEL_INDEPENDENT
    from helpers.explain.registry import get_method
    from helpers.metrics.aopc import sample_indices, selection_mask
    from helpers.metrics.road import FRACTIONS
    from helpers.report import figures
    from helpers.report.describe import device_line
    from helpers.report.method_figures import methods_figures

    methods, metrics = list(METHODS if methods is None else methods), list(metrics)
    for method in methods or [None]:
        get_method(method)  # names the known methods
    if [m for m in metrics if m not in METRIC_GROUPS] or ("randomisation" in metrics and randomisation_stages < 1):
        raise ValueError(f"metrics must be among {list(METRIC_GROUPS)} (got {metrics}); randomisation needs "
                         f"randomisation_stages >= 1 (got {randomisation_stages})")  # fmt: skip
    paths = study.study_paths(profile, work_dir, report_dir)
    keras.utils.set_random_seed(seed)
    settings = {
        "methods": methods, "metrics": metrics, "model_names": list(model_names), "image_size": image_size,
        "input_mask": input_mask, "mask_margin": mask_margin, "region_size": region_size,
        "region_scores": region_scores, "perturbation": perturbation, "sigma": sigma, "n_images": n_images,
        "scorecam_top_n": scorecam_top_n, "road_fractions": [float(f) for f in (road_fractions or FRACTIONS)],
        "randomisation_images": randomisation_images, "randomisation_stages": randomisation_stages,
        "n_bootstrap": n_bootstrap, "batch_size": batch_size, "seed": seed,
    }  # fmt: skip
    images, _ = study.load_split(paths, "test", image_size, input_mask=input_mask, mask_margin=mask_margin)
    masks = {}
    if {"mask_energy", "pointing_game"} & set(metrics):
        frame = split_files.read_manifest(paths.split_manifest)
        test_frame = frame[frame["split"] == "test"].reset_index(drop=True)
        masks = {kind: load_masks(test_frame, image_size, kind=kind) for kind in ("lesion", "lung")}
        masks = {kind: m for kind, m in masks.items() if m.reshape(len(m), -1).any()}
    results, reference = {}, None
    for name in model_names:
        model = study.load_model(paths, name, image_size)
        out = study.load_model_outputs(paths, name, n_images=len(images))
        if reference is None:
            reference = (
                out["method"] if out["method"] in methods else ("gradcam" if "gradcam" in methods else methods[0])
            )
        selected, selection = selection_mask(out["correct"])
        subset = sample_indices(selected, n_images, seed)
        rsub = sample_indices(np.isin(np.arange(len(images)), subset), randomisation_images, seed)
        raw = _evaluate_model(
            model, images[subset], out["classes"][subset], subset, {k: m[subset] for k, m in masks.items()},
            methods, metrics, settings, (images[rsub], out["classes"][rsub], rsub),
        )  # fmt: skip
        results[name] = {"selection": selection, "n_images": int(len(subset)), "image_ids": subset,
                         "randomisation_image_ids": rsub, **_summaries(raw, reference, n_bootstrap, seed)}  # fmt: skip
    second = "noise-MoRF" if perturbation in ("gaussian", "uniform") else f"MoRF ({perturbation})"
    sentences = []
    for name, r in results.items():
        if "morf_minus_random" in r["comparisons"]:
            rows = r["comparisons"]["morf_minus_random"]
            sentences.append(comparison_sentence(name, reference, rows, baselines=MODEL_INDEPENDENT))
        pair = _pair(r["agreement"], "road_combined", "morf_minus_random")
        sentences.append(agreement_sentence(name, pair, "ROAD", second))
    made = methods_figures(results, images, METRICS)
    for figure_name, fig in made.items():
        figures.save_figure(fig, paths.figures, figure_name)
    report = MethodsReport(
        paths=paths, settings=settings, reference=reference, results=results,
        tables={n: methods_table(r["summaries"], r["chance"]) for n, r in results.items()},
        comparison_tables={n: comparison_table(r["comparisons"]) for n, r in results.items()},
        agreement_tables={n: agreement_table(r["agreement"]) if r["agreement"] else None for n, r in results.items()},
        sentences=sentences, figures=made, files={}, setup_text=(
            f"{device_line()}\nprofile {profile}: {len(methods)} methods, metrics {', '.join(metrics)}; reference "
            f"{reference}; " + ", ".join(f"{n}: {r['n_images']} {r['selection']} images" for n, r in results.items())),
    )  # fmt: skip
    models = {n: {k: v for k, v in r.items() if k != "randomisation"} for n, r in results.items()}
    for n, r in results.items():
        if "randomisation" in r:
            models[n]["randomisation"] = {k: v for k, v in r["randomisation"].items() if k != "maps"}
    payload = {"settings": settings, "reference": reference, "sentences": sentences, "models": models,
               "metrics": {m.key: {"label": m.label, "group": m.group, "higher_is_better": m.higher_is_better} for m in METRICS}}  # fmt: skip
    report.files = _write(
        paths, payload, _markdown(f"Heatmap methods and metrics ({profile} profile)", settings, report)
    )
    return report
