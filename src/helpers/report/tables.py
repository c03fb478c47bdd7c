"""The study's tables: both models next to the paper's results, per-model headline rows, AOPC and ablation tables.

Everything here reads computed results (classification metrics, :func:`helpers.metrics.aopc.aopc_report`) and returns
rows or frames; the sentences and verdicts built on them are :mod:`helpers.report.verdicts`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.common.config import PAPER_PROFILE
from helpers.common.text import format_value
from helpers.models.classification import MEASURE_LABELS

__all__ = [
    "PAPER_RESULTS",
    "AOPC_LABELS",
    "compact_comparison",
    "paper_comparison_caveat",
    "summary_row",
    "aopc_table",
    "ablation_table",
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
        [names, [MEASURE_LABELS["recall"], MEASURE_LABELS["f1"]]], names=["model", "measure"]
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
    """'final [low, high]' of an :func:`helpers.metrics.aopc.aopc_summary` or :func:`helpers.metrics.aopc.paired_difference` result."""
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
    """Rows for ``reporting.markdown_table`` from :func:`helpers.metrics.aopc.perturbation_ablation` rows (with a ``model`` key): AOPC of MoRF and random, MoRF − random with interval."""
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
