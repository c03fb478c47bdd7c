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
from ._core import format_value, markdown_table
from ._report_html import export_report, markdown_to_html, notebook_to_html, write_index
from .config import PAPER_PROFILE
from .describe import comparison_caveat, describe_data, describe_models, device_line, read_run_files
from .evaluation import SCORE_LABELS
from .verdicts import VERDICTS, aopc_conclusions, classification_rows, paired_sentences, summary_rows, write_summary

__all__ = [
    "TrainingReport",
    "train_and_report",
    "PAPER_RESULTS",
    "PAPER_PROFILE",
    "AOPC_LABELS",
    "markdown_table",
    "compact_comparison",
    "paper_comparison_caveat",
    "comparison_caveat",
    "describe_data",
    "describe_models",
    "read_run_files",
    "device_line",
    "summary_row",
    "aopc_table",
    "ablation_table",
    "summary_rows",
    "classification_rows",
    "paired_sentences",
    "VERDICTS",
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


# --------------------------------------------------------------------------------------------------
# Classification (notebook 05)
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
# AOPC (notebook 07): tables, conclusions, the summary
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


# --------------------------------------------------------------------------------------------------
# Training notebooks (03, 04): one call
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
    sampling: str = "downsample",
    input_mask: str = "none",
    mask_margin: int = 0,
) -> TrainingReport:
    """Train one model slot on the split of notebook 01 and write its files, training metrics and recall figure.

    Builds the classifier (:func:`helpers.models.build_classifier`), trains it keeping the epoch with the best mean
    validation recall of the disease classes (:func:`helpers.training.train_classifier`), writes the model, history
    and training JSON (:func:`helpers.study.save_training`), ``metrics/training_<model_name>.json`` and the recall
    figure (Figure 2 for the ``vgg16`` slot, 3 for ``densenet201``). ``sampling`` is the class-imbalance strategy
    (:data:`helpers.training.SAMPLINGS`; ``"downsample"`` trains on notebook 01's split as it is). ``input_mask="lung"``
    trains on the images reduced to notebook 02's predicted lungs (:func:`helpers.study.load_split`).
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
        f"{device_line()}\n"
        f"profile {profile}: {model_name} slot with backbone {backbone!r}, backend {keras.backend.backend()}, "
        f"dtype policy {policy}, GPUs with memory growth: {gpus or 'none'}"
    )
    masking = {"input_mask": input_mask, "mask_margin": mask_margin}
    x_train, y_train = study.load_split(paths, "train", image_size, **masking)
    x_val, y_val = study.load_split(paths, "val", image_size, **masking)
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
        sampling=sampling,
    )
    files = study.save_training(
        result,
        paths,
        model_name,
        backbone=backbone,
        weights=None if weights is None else str(weights),
        freeze_backbone=freeze_backbone,
        image_size=image_size,
        **masking,
    )
    # metrics hold results only; wall times stay in the model folder's training JSON
    info = {k: v for k, v in result.info().items() if k != "timings"}
    study.save_metrics_file(
        paths,
        "training",
        {
            "model_name": model_name,
            "backbone": backbone,
            "weights": None if weights is None else str(weights),
            "freeze_backbone": freeze_backbone,
            **masking,
            **info,
        },
        model_name,
    )
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
