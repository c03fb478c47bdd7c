"""The sweep's table (CSV, markdown, HTML) and figure, and the seed-robustness summary of the paper's claim.

One row per trial: its values, status (and error), the validation criterion (mean over the model slots of the
kept epoch's mean disease recall, the checkpoint criterion of :mod:`helpers.models.training`), and per model the test macro
recall and F1 and the AOPC (MoRF) and MoRF - random from the trial's ``metrics/summary.json``. The chosen trial has
the best validation criterion (ties: the first). A number a trial did not produce is missing (NaN), never a value:
the seed summary counts it as missing and states no conclusion it does not have the numbers for.

The parent report ``reports/<profile>/`` quotes its sweeps in ``sweeps.md`` (:func:`quote_sweeps`): a link to each
sweep's page and, for a grid with a seed axis, the seed-robustness table. The study runner writes it on every run (so
a rerun keeps the quote) and a finished sweep refreshes it (:func:`refresh_parent_report`); ``index.html`` shows it
under the study summary.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.common.config import MODEL_SLOTS
from helpers.common.files import save_json

__all__ = [
    "trial_metrics",
    "sweep_table",
    "write_report",
    "seed_summary",
    "seed_rows",
    "quote_sweeps",
    "refresh_parent_report",
    "paired_comparisons",
]

MODELS = MODEL_SLOTS
#: The parent report's quote of its sweeps (beside ``summary.md``).
QUOTE = "sweeps.md"


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
    measures = {"test_recall": "test recall", "test_f1": "test F1", "aopc": "AOPC (MoRF)",
                "morf_minus_random": "MoRF - random"}  # fmt: skip
    done = table[table["status"] == "done"]
    long = pd.DataFrame(
        [
            {"measure": label, "model": model, "value": float(row.get(f"{model}_{key}", math.nan))}
            for _, row in done.iterrows()
            for model in MODELS
            for key, label in measures.items()
        ]  # fmt: skip
    ).dropna()
    if len(done) >= 2 and len(long):  # every trial (a seed sweep: every seed) and the mean with its interval
        import seaborn as sns

        sns.stripplot(long, x="measure", y="value", hue="model", dodge=True, alpha=0.5, ax=right, legend=False)
        sns.pointplot(long, x="measure", y="value", hue="model", dodge=0.4, linestyle="none", markers="D",
                      errorbar=("ci", 95), seed=0, ax=right)  # fmt: skip
        right.set_xlabel("")
        right.set_title(f"{len(done)} trials (dots), mean and 95% bootstrap interval")
    elif len(chosen := table[table["chosen"]]):
        row = chosen.iloc[0]
        width = 0.38
        for i, model in enumerate(MODELS):
            values = [float(row.get(f"{model}_{m}", math.nan)) for m in measures]
            right.bar(np.arange(len(measures)) + (i - 0.5) * width, np.nan_to_num(values), width, label=model)
        right.set_xticks(range(len(measures)), list(measures.values()))
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
    compared = getattr(sweep, "compare", None)
    pairs = paired_comparisons(folder, sweep.profile, compared, records) if compared else []
    if compared:
        save_json({"compare": compared, "pairs": pairs}, folder / COMPARISON)
        markdown += "\n\n" + "\n".join(_comparison_lines(compared, pairs))
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
        f"<img src='sweep.png' alt='validation criterion per trial; the chosen trial'>{body}{extra}{_comparison_html(pairs)}\n"
    )
    return table


#: The paired comparison of a sweep with ``compare`` (beside ``results.csv``).
COMPARISON = "comparison.json"


def paired_comparisons(folder: Path, profile: str, compare: str, records: list[dict]) -> list[dict]:
    """Each pair of finished trials that differ only in ``compare``, compared per model (:func:`compare_runs`).

    Returns ``[{"first", "second": trial names, "values": the other axes' values, "names": the two values,
    "rows": comparison rows}]``; a pair whose runs cannot be compared carries ``error`` instead of rows.
    """
    from helpers.report.comparison import compare_runs
    from helpers.study.files import StudyPaths

    done = [r for r in records if r.get("status") == "done" and compare in r.get("values", {})]
    groups: dict[str, list[dict]] = {}
    for record in done:
        rest = {k: v for k, v in record["values"].items() if k != compare}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(record)
    pairs = []
    for key, members in groups.items():
        if len(members) != 2:
            continue
        members.sort(key=lambda r: r["index"])
        runs = [StudyPaths(root=folder / r["trial"], profile=profile, report=folder / r["trial"] / "reports" / profile)
                for r in members]  # fmt: skip
        names = [str(r["values"][compare]) for r in members]
        pair = {"first": members[0]["trial"], "second": members[1]["trial"], "values": json.loads(key), "names": names}
        try:
            pair["rows"] = compare_runs(*runs, names=names)
        except (OSError, ValueError, KeyError) as exc:
            pair["error"] = f"{type(exc).__name__}: {exc}"
        pairs.append(pair)
    return pairs


def _comparison_lines(compare: str, pairs: list[dict]) -> list[str]:
    from helpers.report.comparison import comparison_markdown

    lines = [f"## Paired comparison: {compare}", ""]
    if not pairs:
        return lines + ["No pair of finished trials differs only in this parameter yet.", ""]
    lines += [
        "Per model, the mean of each trial and the difference second − first with a 95% bootstrap interval: recall "
        "and F1 over every test image, the rest over the images both trials classify correctly. A difference is "
        "read as higher or lower only when its interval excludes 0.",
        "",
    ]
    for pair in pairs:
        fixed = ", ".join(f"{k.split('.', 1)[-1]}={v!r}" for k, v in pair["values"].items())
        lines += [f"**{pair['first']} vs {pair['second']}**" + (f" ({fixed})" if fixed else ""), ""]
        lines += [pair.get("error") or comparison_markdown(pair["rows"], pair["names"]), ""]
    return lines


def _comparison_html(pairs: list[dict]) -> str:
    if not pairs:
        return ""
    from helpers.report.comparison import comparison_markdown

    blocks = "".join(
        f"<h3>{html.escape(p['first'])} vs {html.escape(p['second'])}</h3>"
        f"<pre>{html.escape(p.get('error') or comparison_markdown(p['rows'], p['names']))}</pre>"
        for p in pairs
    )
    return f"<h2>Paired comparison</h2>{blocks}"


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


#: The measures of the seed table, per model.
SEED_MEASURES = ("test_recall", "aopc", "morf_minus_random")


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A column as floats (NaN where missing; all NaN when the table has no such column)."""
    if name not in frame:
        return np.full(len(frame), math.nan)
    return pd.to_numeric(frame[name], errors="coerce").astype(float).to_numpy()


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean, 95% interval and count (``_n``) over the done trials (seeds) that have each measure.

    ``attrs["claim"]`` says in how many seeds the model with the better test recall also has the larger
    MoRF - random (the better heatmaps by the study's measure). A seed without both models' test recall and
    MoRF - random (a trial that stopped before the metrics) is counted as missing and decides nothing; with no seed
    left the claim says so instead of counting.
    """
    done = table[table["status"] == "done"]
    rows = {}
    for model in MODELS:
        row = {}
        for measure in SEED_MEASURES:
            values = _column(done, f"{model}_{measure}")
            mean, low, high = _interval(values)
            row.update(
                {
                    f"{measure}_mean": mean,
                    f"{measure}_low": low,
                    f"{measure}_high": high,
                    f"{measure}_n": int(np.isfinite(values).sum()),
                }
            )
        rows[model] = row
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "model"
    recall = np.stack([_column(done, f"{m}_test_recall") for m in MODELS], axis=1)
    heat = np.stack([_column(done, f"{m}_morf_minus_random") for m in MODELS], axis=1)
    complete = np.isfinite(recall).all(axis=1) & np.isfinite(heat).all(axis=1)
    decided = complete & (recall[:, 0] != recall[:, 1])
    heat_decided = decided & (heat[:, 0] != heat[:, 1])
    agree = int(np.sum(heat_decided & (np.argmax(recall, axis=1) == np.argmax(heat, axis=1))))
    seeds, counted, missing = len(done), int(complete.sum()), int((~complete).sum())
    ties, level = counted - int(decided.sum()), int(decided.sum() - heat_decided.sum())
    lacking = (
        f" {missing} of {seeds} seeds lack a model's test recall or MoRF - random (notebook 07 writes both) and "
        "are not counted."
        if missing
        else ""
    )
    if not counted:
        claim = (
            f"No seed has both models' test recall and MoRF - random ({missing} of {seeds} without them; notebook 07 "
            "writes both), so nothing can be said about whether the better-generalizing model has the better "
            "heatmaps."
        )
    elif not decided.any():
        claim = (
            f"No seed has a better-generalizing model: test recall is equal in all {counted} seeds with the numbers, "
            f"so nothing can be said about its heatmaps.{lacking}"
        )
    else:
        claim = (
            f"In {agree} of {int(decided.sum())} seeds with a better-generalizing model (higher test recall; "
            f"{ties} ties of {counted}), that model also has the larger MoRF - random"
            + (f" ({level} with equal MoRF - random)" if level else "")
            + f".{lacking}"
        )
    summary.attrs.update(claim=claim, agree=agree, decided=int(decided.sum()), ties=ties, missing=missing, seeds=seeds)
    return summary


def seed_rows(summary: pd.DataFrame) -> list[dict]:
    """The seed table compactly: per model, ``mean [low, high]`` of test recall, AOPC and MoRF - random.

    A measure some seeds lack says how many (``(1 of 3 missing)``); one that all lack reads ``missing``.
    """
    seeds = summary.attrs.get("seeds")

    def cell(row, measure: str) -> str:
        mean, low, high = (float(row[f"{measure}_{part}"]) for part in ("mean", "low", "high"))
        if math.isnan(mean):
            return "missing" if seeds else ""
        text = f"{mean:.3f}" if math.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        n = row.get(f"{measure}_n")
        if seeds and n is not None and not pd.isna(n) and int(n) < seeds:
            text += f" ({seeds - int(n)} of {seeds} missing)"
        return text

    return [
        {
            "model": model,
            "test recall": cell(row, "test_recall"),
            "AOPC (MoRF)": cell(row, "aopc"),
            "MoRF - random": cell(row, "morf_minus_random"),
        }
        for model, row in summary.iterrows()
    ]


def _sweep_lines(folder: Path) -> list[str]:
    meta = _load(folder / "sweep.json")
    name = meta.get("name", folder.name)
    link = f"[{name}](sweeps/{folder.name}/index.html)" if (folder / "index.html").is_file() else name
    try:
        table = pd.read_csv(folder / "results.csv")
    except (OSError, ValueError):
        return [f"- {link}: no table yet (running, or interrupted before its first table)"]
    done = table[table["status"] == "done"]
    chosen = table[table["chosen"].astype(bool)] if "chosen" in table else table.iloc[:0]
    line = f"- {link} (`{meta.get('grid', '')}`): {len(done)} of {len(table)} trials done"
    if len(chosen):
        line += f"; chosen trial {chosen.iloc[0]['trial']} (best validation criterion)"
    lines = [line]
    if any(str(key).endswith(".seed") for key in meta.get("axes", {})) and len(done):
        summary = seed_summary(table)
        lines += [
            "",
            f"### Seed robustness (sweep {name}, {len(done)} seeds)",
            "",
            "Mean and 95% interval (t) over seeds.",
            "",
            _markdown(pd.DataFrame(seed_rows(summary))),
            "",
            summary.attrs["claim"],
            "",
        ]
    compared = _load(folder / COMPARISON)
    if compared.get("pairs"):
        lines += ["", *_comparison_lines(compared["compare"], compared["pairs"])]
    return lines


def quote_sweeps(report_dir: str | Path, sweeps_dir: str | Path | None = None) -> Path | None:
    """Write ``<report_dir>/sweeps.md`` from the sweeps in ``sweeps_dir`` (default ``<report_dir>/sweeps``), atomically.

    Removes a stale ``sweeps.md`` when there are none; returns its path, or None.
    """
    from helpers.common.files import atomic_path

    report = Path(report_dir)
    source = Path(sweeps_dir) if sweeps_dir is not None else report / "sweeps"
    folders = sorted(p for p in source.glob("*") if (p / "sweep.json").is_file()) if source.is_dir() else []
    path = report / QUOTE
    if not folders:
        path.unlink(missing_ok=True)
        return None
    lines = ["## Sweeps", "", "Sweeps of this profile (`python -m helpers.runner.sweep`), each on its own page:", ""]
    for folder in folders:
        lines += _sweep_lines(folder)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n")
    return path


def refresh_parent_report(work: str | Path, profile: str, log=print, timeout: float = 60.0) -> bool:
    """Requote the sweeps in ``<work>/reports/<profile>/`` and rewrite its ``index.html``, under the runner's lock.

    Only a finished report (one with ``run.json``) is touched. When a run holds the lock for longer than ``timeout``
    seconds, nothing is written: that run quotes the sweeps itself when it finishes. Returns whether it wrote.
    """
    from helpers.report.html import write_index
    from helpers.runner.runlock import RunLock, RunLocked

    reports = Path(work) / "reports"
    report = reports / profile
    if not (report / "run.json").is_file():
        return False
    lock = RunLock(reports / f".{profile}.lock", command=f"sweep: refresh the {profile} report's sweeps")
    try:
        lock.acquire(wait=True, timeout=timeout)
    except RunLocked as exc:
        log(f"note: the report {report} was not updated ({exc}); that run quotes the sweeps when it finishes")
        return False
    try:
        if not (report / "run.json").is_file():  # replaced or removed while we waited
            return False
        quote_sweeps(report)
        if (report / "index.html").is_file():  # a report exported without HTML stays without
            write_index(report, stale=_load(report / "run.json").get("stale", []))
    finally:
        lock.release()
    log(f"report {report / 'index.html'} links the sweeps (sweeps.md)")
    return True
