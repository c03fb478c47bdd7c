"""The sweep's table (CSV, markdown, HTML) and figure, and the seed-robustness summary of the paper's claim.

One row per trial: its values, status (and error), the validation criterion (mean over the model slots of the
kept epoch's mean disease recall, the checkpoint criterion of :mod:`helpers.training`), and per model the test macro
recall and F1 and the AOPC (MoRF) and MoRF - random from the trial's ``metrics/summary.json``. The chosen trial has
the best validation criterion (ties: the first).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["trial_metrics", "sweep_table", "write_report", "seed_summary"]

MODELS = ("vgg16", "densenet201")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def trial_metrics(folder: Path, profile: str) -> dict:
    """The trial's numbers read from its report (NaN where a notebook did not run)."""
    metrics = Path(folder) / "reports" / profile / "metrics"
    summary = _load(metrics / "summary.json")
    row, criteria = {}, []
    for model in MODELS:
        training = _load(metrics / f"training_{model}.json")
        value = training.get("val_mean_disease_recall", math.nan)
        criteria.append(value)
        row[f"{model}_val_criterion"] = value
        models = summary.get("classification", {}).get("models", {}).get(model, {})
        report = _load(metrics / f"classification_{model}.json").get("macro_avg", {})  # notebook 05, without 07
        row[f"{model}_test_recall"] = models.get("macro_recall", {}).get("estimate", report.get("recall", math.nan))
        row[f"{model}_test_f1"] = models.get("macro_f1", {}).get("estimate", report.get("f1", math.nan))
        aopc = summary.get("aopc", {}).get(model, {})
        row[f"{model}_aopc"] = aopc.get("morf", {}).get("final", math.nan)
        row[f"{model}_morf_minus_random"] = aopc.get("morf_minus_random", {}).get("final", math.nan)
    row["val_criterion"] = float(np.nanmean(criteria)) if not all(map(math.isnan, criteria)) else math.nan
    return row


def sweep_table(folder: Path, profile: str, records: list[dict]) -> pd.DataFrame:
    """One row per trial record, with a ``chosen`` column marking the best validation criterion."""
    rows = []
    for record in records:
        row = {"trial": record["trial"], "status": record.get("status", "?"), **record.get("values", {})}
        if record.get("status") == "done":
            row.update(trial_metrics(Path(folder) / record["trial"], profile))
        row["error"] = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if "val_criterion" not in table:
        table["val_criterion"] = math.nan
    scores = table["val_criterion"].astype(float)
    table["chosen"] = False
    if scores.notna().any():
        table.loc[scores.idxmax(), "chosen"] = True
    return table


def _figure(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    scores = table["val_criterion"].astype(float).fillna(0.0)
    colors = [
        "tab:orange" if c else ("tab:blue" if s == "done" else "tab:gray")
        for c, s in zip(table["chosen"], table["status"])
    ]
    left.bar(range(len(table)), scores, color=colors)
    left.set_xticks(range(len(table)), table["trial"], rotation=60, ha="right", fontsize=7)
    left.set_ylabel("validation criterion (mean disease recall)")
    left.set_title("per trial (orange: chosen, grey: failed)")
    chosen = table[table["chosen"]]
    if len(chosen):
        row = chosen.iloc[0]
        measures = ["test_recall", "test_f1", "aopc", "morf_minus_random"]
        width = 0.38
        for i, model in enumerate(MODELS):
            values = [float(row.get(f"{model}_{m}", math.nan)) for m in measures]
            right.bar(np.arange(len(measures)) + (i - 0.5) * width, np.nan_to_num(values), width, label=model)
        right.set_xticks(range(len(measures)), ["test recall", "test F1", "AOPC (MoRF)", "MoRF - random"])
        right.legend()
        right.set_title(f"chosen trial {row['trial']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(table: pd.DataFrame, index: bool = False) -> str:
    """A pipe table (no tabulate needed); floats with three decimals."""
    frame = table.reset_index() if index else table

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.3f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_report(folder: Path, sweep, records: list[dict]) -> pd.DataFrame:
    """Write ``results.csv``, ``results.md``, ``index.html`` and ``sweep.png`` (and ``seeds.*`` for a seed axis)."""
    folder = Path(folder)
    table = sweep_table(folder, sweep.profile, records)
    table.to_csv(folder / "results.csv", index=False)
    shown = table.drop(columns=["error"]) if not table["error"].astype(bool).any() else table
    markdown = f"# Sweep {sweep.name} ({sweep.profile})\n\n{sweep.description}\n\n" + _markdown(shown)
    seeds = None
    if any(key.endswith(".seed") for key in getattr(sweep, "axes", {})) and (table["status"] == "done").any():
        seeds = seed_summary(table)
        seeds.to_csv(folder / "seeds.csv")
        markdown += "\n\n## Seed robustness\n\n" + _markdown(seeds, index=True) + "\n\n" + seeds.attrs["claim"]
    (folder / "results.md").write_text(markdown + "\n")
    _figure(table, folder / "sweep.png")
    body = shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")
    extra = (
        ""
        if seeds is None
        else f"<h2>Seed robustness</h2>{seeds.to_html(float_format=lambda v: f'{v:.3f}')}<p>{html.escape(seeds.attrs['claim'])}</p>"
    )
    (folder / "index.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>Sweep {html.escape(sweep.name)}</title>"
        f"<h1>Sweep {html.escape(sweep.name)} ({html.escape(sweep.profile)})</h1><p>{html.escape(sweep.description)}</p>"
        f"<img src='sweep.png' alt='validation criterion per trial; the chosen trial'>{body}{extra}\n"
    )
    return table


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and a t-based 95% interval over seeds (the mean alone with one seed)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean and 95% interval over the done trials (seeds) of test recall, AOPC and MoRF - random.

    ``attrs["claim"]`` says in how many seeds the model with the better test recall also has the larger
    MoRF - random (the better heatmaps by the study's measure).
    """
    done = table[table["status"] == "done"]
    rows = {}
    for model in MODELS:
        row = {}
        for measure in ("test_recall", "aopc", "morf_minus_random"):
            mean, low, high = _interval(done[f"{model}_{measure}"].astype(float).to_numpy())
            row.update({f"{measure}_mean": mean, f"{measure}_low": low, f"{measure}_high": high})
        rows[model] = row
    summary = pd.DataFrame(rows).T
    summary.index.name = "model"
    recall = done[[f"{m}_test_recall" for m in MODELS]].astype(float).to_numpy()
    heat = done[[f"{m}_morf_minus_random" for m in MODELS]].astype(float).to_numpy()
    decided = recall[:, 0] != recall[:, 1]
    agree = int(np.sum(decided & (np.argmax(recall, axis=1) == np.argmax(heat, axis=1))))
    summary.attrs["claim"] = (
        f"In {agree} of {int(decided.sum())} seeds with a better-generalizing model (higher test recall; "
        f"{len(done) - int(decided.sum())} ties of {len(done)}), that model also has the larger MoRF - random."
    )
    summary.attrs["agree"], summary.attrs["decided"] = agree, int(decided.sum())
    return summary
