"""Study-level reports: tables, conclusions, the summary, the index and HTML export; the training notebooks' step.

Everything here reads computed results (classification metrics, :func:`helpers.scores.aopc_report`) and writes
text: markdown tables, sentences whose numbers and verdicts are computed, ``summary.md``/``summary.json``
(through :mod:`helpers.study`) and the report's ``index.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import config, figures, study
from ._core import format_value
from ._report_html import export_report, markdown_to_html, notebook_to_html, write_index
from .config import PAPER_PROFILE
from .evaluation import SCORE_LABELS

__all__ = [
    "TrainingReport",
    "train_and_report",
    "PAPER_RESULTS",
    "PAPER_PROFILE",
    "AOPC_LABELS",
    "markdown_table",
    "compact_comparison",
    "paper_comparison_caveat",
    "summary_row",
    "aopc_table",
    "ablation_table",
    "summary_rows",
    "paired_sentences",
    "aopc_conclusions",
    "write_summary",
    "notebook_to_html",
    "markdown_to_html",
    "write_index",
    "export_report",
]

#: The paper's test results on the real data (macro averages), per model slot.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "vgg16": {"recall": 0.86, "f1": 0.86},
    "densenet201": {"recall": 0.88, "f1": 0.88},
}


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    """Render a list of dicts as a GitHub-flavoured markdown table."""
    if not rows:
        return ""
    columns = columns or list(rows[0].keys())

    def cell(value):
        if isinstance(value, float):
            return floatfmt.format(value)
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(col, "")) for col in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Classification (notebook 04)
# --------------------------------------------------------------------------------------------------


def compact_comparison(
    metrics_by_model: Mapping[str, Mapping], paper: Mapping[str, Mapping] | None = None
) -> pd.DataFrame:
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
    columns = pd.MultiIndex.from_product(
        [names, [SCORE_LABELS["recall"], SCORE_LABELS["f1"]]], names=["model", "score"]
    )
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
    return (
        f"Caveat: profile {profile!r} runs on synthetic phantoms with small from-scratch backbones, not on "
        "the COVID-19 Radiography Database with ImageNet VGG16/DenseNet201; its numbers are not comparable "
        f"to the paper's (only the {PAPER_PROFILE!r} profile reproduces the paper's setting)."
    )


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
# AOPC (notebook 06): tables, conclusions, the summary
# --------------------------------------------------------------------------------------------------


def _interval(value, low, high) -> str:
    return f"{format_value(value)} [{format_value(low)}, {format_value(high)}]"


def _entry_interval(entry: Mapping) -> str:
    """'final [low, high]' of an :func:`helpers.scores.aopc_summary` or :func:`helpers.scores.paired_difference` result."""
    return _interval(entry["final"], entry["final_low"], entry["final_high"])


def _ci_label(level: float) -> str:
    return f"[{int(round(100 * level))}% CI]"


#: Column names of the AOPC quantities, by report key.
AOPC_LABELS: dict[str, str] = {
    "morf": "AOPC (MoRF)",
    "random": "random-order AOPC",
    "lerf": "LeRF AOPC",
    "morf_minus_random": "MoRF − random",
    "morf_minus_lerf": "MoRF − LeRF",
}


def aopc_table(report: Mapping) -> list[dict]:
    """Rows for ``reporting.markdown_table``: per model its images, AOPC per order, MoRF − random and MoRF − LeRF ('value [low, high]').

    When the report has a paired comparison, a last row gives the paired differences first − second model on the
    images both classify correctly, per order and for MoRF − random / MoRF − LeRF.
    """
    ci = _ci_label(report["level"])
    rows = []
    for name, entry in report["models"].items():
        row = {"model": name, "images": entry["morf"]["n_images"]}
        for key, label in AOPC_LABELS.items():
            if key in entry:
                row[f"{label} {ci}"] = _entry_interval(entry[key])
        rows.append(row)
    if "paired" in report:
        p = report["paired"]
        a, b = p["models"]
        row = {"model": f"{a} − {b} (paired, both correct)", "images": p["n_images"]}
        differences = dict(p.get("order_differences", {"morf": p["difference"]}))
        for other in ("random", "lerf"):
            if f"morf_minus_{other}_difference" in p:
                differences[f"morf_minus_{other}"] = p[f"morf_minus_{other}_difference"]
        for key, label in AOPC_LABELS.items():
            if key in differences:
                row[f"{label} {ci}"] = _entry_interval(differences[key])
        rows.append(row)
    return rows


def ablation_table(rows: Sequence[Mapping]) -> list[dict]:
    """Rows for ``reporting.markdown_table`` from :func:`helpers.scores.perturbation_ablation` rows (with a ``model`` key): AOPC of MoRF and random, MoRF − random with interval."""
    table = []
    for r in rows:
        table.append(
            {
                "model": r.get("model", ""),
                "perturbation": r["setting"],
                "AOPC (MoRF)": float(r["aopc_morf"]),
                "random-order AOPC": float(r["aopc_random"]),
                f"MoRF − random {_ci_label(r.get('level', 0.95))}": _interval(
                    r["morf_minus_random"], r["morf_minus_random_low"], r["morf_minus_random_high"]
                ),
                "images": r["n_images"],
            }
        )
    return table


def summary_rows(report: Mapping, classification: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """The study's final table as rows for ``reporting.markdown_table``: model, macro test recall and F1, AOPC, random baseline, MoRF − random, MoRF − LeRF (with intervals).

    ``report`` is :func:`helpers.scores.aopc_report`'s result; ``classification[model]`` holds the test ``recall`` and ``f1``
    (macro averages, e.g. from ``evaluation.summary_row``). MoRF − random is the heatmap's own score: the raw
    AOPC also grows with the model's sensitivity to the perturbation, which the random order measures.
    """
    ci = _ci_label(report["level"])
    rows = []
    for name, entry in report["models"].items():
        if name not in classification:
            raise ValueError(f"classification has no metrics for model {name!r}")
        row = {
            "model": name,
            "macro test recall": float(classification[name]["recall"]),
            "macro test F1": float(classification[name]["f1"]),
        }
        for key, label in AOPC_LABELS.items():
            if key != "lerf" and key in entry:
                row[f"{label} {ci}"] = _entry_interval(entry[key])
        row["images"] = entry["morf"]["n_images"]
        rows.append(row)
    return rows


def paired_sentences(report: Mapping) -> list[str]:
    """The paired model comparison as text: MoRF AOPC difference, the random-order AOPCs it is confounded with, and the MoRF − random difference that measures the heatmaps."""
    if "paired" not in report:
        return []
    p = report["paired"]
    a, b = p["models"]
    orders = p.get("orders", {a: {"morf": p[a]}, b: {"morf": p[b]}})
    lines = [
        f"Paired comparison on the {p['n_images']} test images both models classify correctly. "
        f"AOPC (MoRF): {a} {p[a]['final']:.3f}, {b} {p[b]['final']:.3f}, "
        f"difference {a} − {b} = {_entry_interval(p['difference'])}."
    ]
    if "random" in orders[a] and "random" in orders[b]:
        lines.append(
            f"This raw AOPC difference mixes the heatmaps with each model's sensitivity to the perturbation itself: "
            f"a random region order already gives AOPC {a} {orders[a]['random']['final']:.3f}, "
            f"{b} {orders[b]['random']['final']:.3f}."
        )
    if "morf_minus_random_difference" in p:
        lines.append(
            f"The heatmaps are measured by MoRF − random (the AOPC a heatmap adds over a random order on the same "
            f"images): {a} {_entry_interval(orders[a]['morf_minus_random'])}, "
            f"{b} {_entry_interval(orders[b]['morf_minus_random'])}; paired difference {a} − {b} = "
            f"{_entry_interval(p['morf_minus_random_difference'])}."
        )
    return lines


def _ci_sign(entry: Mapping) -> int:
    """+1 when the interval lies above 0, -1 below 0, 0 when it contains 0."""
    return 1 if entry["final_low"] > 0 else (-1 if entry["final_high"] < 0 else 0)


def aopc_conclusions(
    report: Mapping, classification: Mapping[str, Mapping[str, float]], recall_tolerance: float = 0.01
) -> dict:
    """Whether this run supports the paper's claim (the better-generalizing model has the better AOPC), as sentences computed from the numbers.

    The better-generalizing model is the one with the higher macro test recall; recalls within
    ``recall_tolerance`` make the claim impossible to judge by accuracy. AOPC is compared on the images
    both models classify correctly (paired intervals), then the caveats: AOPC also measures the model's
    sensitivity to the perturbation (the random-order AOPC), and the heatmaps' own quality is MoRF − random.
    Returns ``verdict`` ("holds", "does not hold", "cannot be judged"), ``better_generalizing`` and
    ``better_aopc`` (model names or None), ``better_heatmaps`` (the model whose MoRF − random is higher
    with an interval excluding 0, else None) and ``sentences``.
    References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images"; Samek et al., IEEE TNNLS 2017.
    """
    if not recall_tolerance >= 0:
        raise ValueError(f"recall_tolerance must be non-negative, got {recall_tolerance!r}")
    names = list(report["paired"]["models"]) if "paired" in report else list(report["models"])[:2]
    if len(names) != 2:
        raise ValueError(f"aopc_conclusions needs two models in the report, got {list(report['models'])}")
    for name in names:
        if name not in classification:
            raise ValueError(f"classification has no metrics for model {name!r}")
    a, b = names
    recall = {n: float(classification[n]["recall"]) for n in names}
    f1 = {n: float(classification[n]["f1"]) for n in names}
    if "paired" in report:
        p = report["paired"]
        src = p.get("orders", {a: {"morf": p[a]}, b: {"morf": p[b]}})
        where = f"on the {p['n_images']} test images both models classify correctly"
        morf_diff, heat_diff = p["difference"], p.get("morf_minus_random_difference")
        rand_diff = p.get("order_differences", {}).get("random")
    else:
        src = report["models"]
        where = "on each model's own correctly classified test images (no image is classified correctly by both)"
        morf_diff = heat_diff = rand_diff = None
    morf = {n: src[n]["morf"]["final"] for n in names}
    sentences = []

    # 1. the paper's claim: accuracy first, then raw AOPC
    better_aopc = a if morf[a] > morf[b] else (b if morf[b] > morf[a] else None)
    if morf_diff is not None and _ci_sign(morf_diff) == 0:
        aopc_text = (
            f"AOPC (MoRF) {a} {morf[a]:.3f} vs {b} {morf[b]:.3f} {where}; the paired difference "
            f"{_entry_interval(morf_diff)} does not exclude 0"
        )
    elif morf_diff is not None:
        aopc_text = (
            f"AOPC (MoRF) {a} {morf[a]:.3f} vs {b} {morf[b]:.3f} {where}, paired difference "
            f"{a} − {b} = {_entry_interval(morf_diff)}"
        )
    else:
        aopc_text = f"AOPC (MoRF) {a} {morf[a]:.3f} vs {b} {morf[b]:.3f} {where}"
    if abs(recall[a] - recall[b]) <= recall_tolerance:
        verdict, better_gen = "cannot be judged", None
        sentences.append(
            f"The paper's claim (the better-generalizing model has the better AOPC) cannot be judged by accuracy "
            f"on this run: macro test recall is {recall[a]:.3f} for {a} and {recall[b]:.3f} for {b} (F1 {f1[a]:.3f} "
            f"and {f1[b]:.3f}), within {recall_tolerance:g} of each other, so neither model generalizes better."
        )
        sentences.append(f"For the record, {aopc_text}.")
    else:
        better_gen = a if recall[a] > recall[b] else b
        other = b if better_gen == a else a
        verdict = "holds" if better_aopc == better_gen else "does not hold"
        qualifier = ""
        if verdict == "holds" and morf_diff is not None and _ci_sign(morf_diff) == 0:
            qualifier = " only as a point estimate"
        sentences.append(
            f"{better_gen} generalizes better (macro test recall {recall[better_gen]:.3f} vs {recall[other]:.3f}, "
            f"F1 {f1[better_gen]:.3f} vs {f1[other]:.3f}) and "
            f"{'has' if verdict == 'holds' else 'does not have'} the higher AOPC: {aopc_text}. "
            f"The paper's claim {verdict} on this run{qualifier}."
        )

    # 2. caveat: sensitivity to the perturbation, measured by the random order
    if all("random" in src[n] for n in names):
        rand = {n: src[n]["random"]["final"] for n in names}
        text = (
            f"Caveat: AOPC also grows with a model's sensitivity to the perturbation itself; a random region "
            f"order already gives AOPC {a} {rand[a]:.3f} and {b} {rand[b]:.3f}"
        )
        if rand_diff is not None and _ci_sign(rand_diff) != 0:
            text += (
                f" (paired difference {_entry_interval(rand_diff)}), so the raw AOPC comparison between "
                f"the models is confounded by how each reacts to the noise"
            )
        sentences.append(text + ".")

    # 3. the heatmaps' own score: MoRF - random
    better_heat = None
    if all("morf_minus_random" in src[n] for n in names):
        per_model = []
        for n in names:
            entry = src[n]["morf_minus_random"]
            judgement = {
                1: "better than a random order",
                0: "no better than a random order",
                -1: "worse than a random order",
            }[_ci_sign(entry)]
            per_model.append(f"{n} {_entry_interval(entry)} ({judgement})")
        text = "The heatmaps themselves are measured by MoRF − random: " + "; ".join(per_model)
        if heat_diff is not None:
            sign = _ci_sign(heat_diff)
            better_heat = {1: a, -1: b, 0: None}[sign]
            text += f"; paired difference {a} − {b} = {_entry_interval(heat_diff)}"
            if better_heat is None:
                text += ", so neither model's heatmaps are distinguishably better"
            else:
                text += f", so {better_heat}'s heatmaps are better"
                if better_gen is not None:
                    text += (
                        " (the better-generalizing model's)"
                        if better_heat == better_gen
                        else " (not the better-generalizing model's)"
                    )
        sentences.append(text + ".")
    return {
        "verdict": verdict,
        "better_generalizing": better_gen,
        "better_aopc": better_aopc,
        "better_heatmaps": better_heat,
        "sentences": sentences,
    }


def write_summary(
    paths,
    rows: list[dict],
    report: Mapping | None = None,
    title: str | None = None,
    notes: str = "",
    conclusions: Mapping | None = None,
) -> dict:
    """Write the final table to ``paths.report / "summary.md"`` and ``paths.metrics / "summary.json"``; return both paths.

    Under the table: the paired model comparison (:func:`paired_sentences`), ``notes``, and the sentences of
    ``conclusions`` (:func:`aopc_conclusions`) when given. ``title`` defaults to "Study summary (<profile> profile)".
    """
    title = title or f"Study summary ({paths.profile} profile)"
    lines = [f"# {title}", "", markdown_table(rows)]
    if report is not None:
        paired = paired_sentences(report)
        if paired:
            lines += [" ".join(paired), ""]
    if notes:
        lines += [notes, ""]
    if conclusions is not None:
        lines += ["## Conclusions", ""] + [f"- {s}" for s in conclusions["sentences"]] + [""]
    payload = {"profile": paths.profile, "rows": rows}
    keys = ("final", "final_low", "final_high", "n_images")
    if report is not None:
        payload["aopc"] = {
            name: {order: {k: entry[order][k] for k in keys} for order in AOPC_LABELS if order in entry}
            | {"selection": entry.get("selection", "")}
            for name, entry in report["models"].items()
        }
    if report is not None and "paired" in report:
        p = report["paired"]
        payload["paired_models"] = p["models"]
        payload["paired_difference"] = {k: p["difference"][k] for k in (*keys, "share_positive")}
        for other in ("random", "lerf"):
            key = f"morf_minus_{other}_difference"
            if key in p:
                payload[f"paired_{key}"] = {k: p[key][k] for k in (*keys, "share_positive")}
    if conclusions is not None:
        payload["conclusions"] = dict(conclusions)
    return study.save_summary(paths, "\n".join(lines), payload)


# --------------------------------------------------------------------------------------------------
# Training notebooks (02, 03): one call
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainingReport:
    """What a training notebook shows: the files written, tables, the recall figure and text lines."""

    paths: study.StudyPaths
    result: object  # helpers.training.TrainingResult
    files: dict
    split_table: pd.DataFrame
    history_table: pd.DataFrame
    figure: object  # matplotlib Figure (closed: display it with IPython.display.display)
    setup_text: str
    model_text: str
    training_text: str
    kept_epoch_text: str


def train_and_report(
    profile: str,
    work_dir: str,
    report_dir: str,
    seed: int,
    image_size: int,
    model_name: str,
    backbone: str,
    weights,
    freeze_backbone: bool,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    use_feature_cache: bool,
    mixed_precision: bool | str = False,
) -> TrainingReport:
    """Train one model slot on the split of notebook 01 and write its files, training metrics and recall figure.

    Builds the classifier (:func:`helpers.models.build_classifier`), trains it keeping the epoch with the best mean
    validation recall of the disease classes (:func:`helpers.training.train_classifier`), writes the model, history
    and training JSON (:func:`helpers.study.save_training`), ``metrics/training_<model_name>.json`` and the recall
    figure (Figure 2 for the ``vgg16`` slot, 3 for ``densenet201``).
    References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (training protocol, Figures 2-3).
    """
    import keras
    import matplotlib.pyplot as plt

    from . import models, training

    paths = study.study_paths(profile, work_dir, report_dir)
    keras.utils.set_random_seed(seed)
    gpus = training.enable_gpu_memory_growth()
    policy = training.configure_precision(mixed_precision)
    setup_text = (
        f"profile {profile}: {model_name} slot with backbone {backbone!r}, backend {keras.backend.backend()}, "
        f"dtype policy {policy}, GPUs with memory growth: {gpus or 'none'}"
    )
    x_train, y_train = study.load_split(paths, "train", image_size)
    x_val, y_val = study.load_split(paths, "val", image_size)
    split_table = pd.DataFrame(
        {
            "train": pd.Series(y_train).value_counts().sort_index().to_numpy(),
            "validation": pd.Series(y_val).value_counts().sort_index().to_numpy(),
        },
        index=config.CLASS_NAMES,
    )
    model = models.build_classifier(
        backbone,
        image_size,
        num_classes=len(config.CLASS_NAMES),
        weights=weights,
        freeze_backbone=freeze_backbone,
        seed=seed,
    )
    counts = models.parameter_counts(model)
    feature_shape = model.get_layer(models.feature_layer_name(model)).output.shape[1:]
    model_text = (
        f"feature map {tuple(feature_shape)}, head pooling {model.get_layer('head_pool').pool_size}\n"
        f"parameters: {counts['total']:,} in total, {counts['trainable']:,} trainable"
    )
    result = training.train_classifier(
        model,
        x_train,
        y_train,
        x_val,
        y_val,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        use_feature_cache=use_feature_cache,
    )
    files = study.save_training(
        result,
        paths,
        model_name,
        backbone=backbone,
        weights=None if weights is None else str(weights),
        freeze_backbone=freeze_backbone,
        image_size=image_size,
    )
    # metrics hold results only; wall times stay in the model folder's training JSON
    info = {k: v for k, v in result.info().items() if k != "timings"}
    study.save_metrics_file(paths, "training", {"model_name": model_name, "backbone": backbone, **info}, model_name)
    t = result.timings
    training_text = (
        f"trained in {t['total_s']:.1f} s (backbone features {t['features_s']:.1f} s, fitting {t['fit_s']:.1f} s; "
        f"feature cache {'on' if result.settings['feature_cache'] else 'off'}); saved {files['model'].name}"
    )
    shown = ["epoch", "loss", "val_loss", *[training.recall_column("val", c) for c in config.CLASS_NAMES]]
    history_table = result.history[[*shown, training.CRITERION_COLUMN]].round(3)
    label = figures.SLOT_LABELS.get(model_name, model_name)
    fig = figures.plot_recall_history(
        result.history,
        config.CLASS_NAMES,
        chosen_epoch=result.chosen_epoch,
        title=f"{label} ({backbone}): recall per class and epoch",
    )
    figures.save_figure(fig, paths.figures, figures.recall_history_figure(model_name)[1])
    plt.close(fig)  # shown where the notebook displays it, not at the end of the training cell
    lines = [f"{model_name}: kept epoch {result.chosen_epoch} of {len(result.history)}"]
    for name in config.CLASS_NAMES:
        marker = "" if name in config.DISEASE_CLASSES else "  (not in the criterion)"
        lines.append(f"  validation recall {name:<16} {result.val_recalls[name]:.2f}{marker}")
    lines.append(f"  mean over the disease classes  {result.chosen_row[training.CRITERION_COLUMN]:.3f}")
    return TrainingReport(
        paths, result, files, split_table, history_table, fig, setup_text, model_text, training_text, "\n".join(lines)
    )
