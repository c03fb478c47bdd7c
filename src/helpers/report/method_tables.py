"""Notebook 08's tables and sentences: methods x metrics with intervals, the metrics' agreement, and sentences that
name a better method only when the paired interval excludes zero.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.common.text import format_value
from helpers.metrics.agreement import METRIC_BY_KEY
from helpers.metrics.intervals import MIN_IMAGES, interval_sign

#: How the text names each built-in method.
METHOD_LABELS: dict[str, str] = {
    "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "xgradcam": "XGrad-CAM",
    "layercam": "Layer-CAM", "scorecam": "Score-CAM", "eigencam": "Eigen-CAM", "sobel": "the Sobel edge map",
    "random": "the random map",
}  # fmt: skip


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _signed(value: float) -> str:
    text = format_value(value)
    return text if text.startswith("-") or text == "0.000" else f"+{text}"


def _number(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; two significant digits where that would round a nonzero value to 0."""
    return f"{value:.2g}" if value and round(value, digits) == 0 else f"{value:.{digits}f}"


def _interval(entry: Mapping, digits: int = 3) -> str:
    return f"[{_number(entry['low'], digits)}, {_number(entry['high'], digits)}]"


def _clause(rows: Sequence[Mapping]) -> str:
    """'better than A (+d [l, h]), not distinguishable from B and C (their intervals contain 0) and worse than D (...)'."""
    parts = []
    better = [r for r in rows if r["better"] > 0]
    tied = [r for r in rows if r["better"] == 0]
    worse = [r for r in rows if r["better"] < 0]
    if better:
        parts.append("better than " + _join([f"{method_label(r['method'])} ({_signed(r['estimate'])} {_interval(r)})" for r in better]))  # fmt: skip
    if tied:
        whose = "its interval contains" if len(tied) == 1 else "their intervals contain"
        parts.append(f"not distinguishable from {_join([method_label(r['method']) for r in tied])} ({whose} 0)")
    if worse:
        parts.append("worse than " + _join([f"{method_label(r['method'])} ({_signed(r['estimate'])} {_interval(r)})" for r in worse]))  # fmt: skip
    return _join(parts)


def comparison_sentence(
    model_name: str,
    reference: str,
    rows: Sequence[Mapping],
    label: str = "AOPC MoRF − random",
    baselines: Sequence[str] = ("sobel", "random"),
    level: float = 0.95,
) -> str:
    """One sentence: is ``reference`` better than the baselines and the other methods by ``label``, under the interval rule.

    ``rows``: :func:`paired_comparisons` of ``reference`` against the others. A method is named better or worse only
    when the interval of the paired difference excludes 0 on at least :data:`helpers.metrics.intervals.MIN_IMAGES` images.
    """
    name = method_label(reference)
    if not rows:
        return f"{model_name}: no other method was scored by {label}, so {name} is compared with nothing."
    n = max(int(r["n"]) for r in rows)
    if n < MIN_IMAGES:
        return (
            f"{model_name}: whether {name} is better than the baselines and the other methods by {label} cannot be "
            f"judged on {n} image{'s' if n != 1 else ''} (fewer than {MIN_IMAGES})."
        )
    base = [r for r in rows if r["method"] in baselines]
    others = [r for r in rows if r["method"] not in baselines]
    parts = []
    if base:
        parts.append(f"against the model-independent baselines, {name} is {_clause(base)}")
    if others:
        parts.append(f"against the other methods, {'it' if base else name} is {_clause(others)}")
    return f"{model_name}, {label} on {n} images (paired differences, {level:.0%} intervals): " + "; ".join(parts) + "."


def agreement_sentence(
    model_name: str, entry: Mapping | None, first: str = "ROAD", second: str = "noise-MoRF", level: float = 0.95
) -> str:
    """One sentence: do two metrics agree on the ranking of the methods (Kendall's τ and its interval, the interval rule)."""
    if entry is None:
        return f"{model_name}: {first} and {second} were not both run, so their agreement is not measured."
    k, n = int(entry["n_methods"]), int(entry["n_images"])
    tau = f"Kendall's τ {entry['tau']:.2f} {_interval(entry, 2)}" if np.isfinite(entry["tau"]) else "τ undefined"
    what = f"whether {first} and {second} agree on the ranking of the methods"
    if k < 3 or not np.isfinite(entry["tau"]) or not np.isfinite(entry["low"]):
        return f"{model_name}: {what} cannot be judged ({k} methods ranked, {tau})."
    if n < MIN_IMAGES:
        return f"{model_name}: {what} cannot be judged on {n} images (fewer than {MIN_IMAGES}; {tau})."
    sign = interval_sign(entry["low"], entry["high"], n)
    if sign > 0:
        return f"{model_name}: {first} and {second} agree on the ranking of the {k} methods ({tau}, {level:.0%} interval over {n} images)."  # fmt: skip
    if sign < 0:
        return f"{model_name}: {first} and {second} rank the {k} methods in opposite orders ({tau}, {level:.0%} interval over {n} images)."  # fmt: skip
    return f"{model_name}: {what} cannot be judged: {tau} over {n} images, an interval that contains 0."


def _cell(entry: Mapping | None) -> str:
    return "–" if entry is None else f"{format_value(entry['mean'])} {_interval(entry)}"


def methods_table(summaries: Mapping[str, Mapping[str, Mapping | None]], chance: Mapping | None = None) -> pd.DataFrame:
    """Methods × metrics: ``mean [low, high]`` per cell from ``{metric: {method: entry}}``; a last row ``chance`` when given."""
    metrics = [m for m in METRIC_BY_KEY if m in summaries] + [m for m in summaries if m not in METRIC_BY_KEY]
    methods = list(dict.fromkeys(method for m in metrics for method in summaries[m]))
    columns = {m: METRIC_BY_KEY[m].label + (" ↑" if METRIC_BY_KEY[m].higher_is_better else " ↓") if m in METRIC_BY_KEY else m for m in metrics}  # fmt: skip
    rows = {method: {columns[m]: _cell(summaries[m].get(method)) for m in metrics} for method in methods}
    if chance:
        rows["chance (mask share)"] = {columns[m]: format_value(chance[m]) if m in chance else "" for m in metrics}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def agreement_table(agreement: Mapping) -> pd.DataFrame:
    """Kendall's τ [low, high] of every two metrics' rankings (upper triangle) from :func:`rank_agreement`."""
    label = {m: METRIC_BY_KEY[m].label if m in METRIC_BY_KEY else m for m in agreement["metrics"]}
    cells: dict = {}
    for p in agreement["pairs"]:
        text = f"{p['tau']:.2f} {_interval(p, 2)}" if np.isfinite(p["tau"]) and np.isfinite(p["low"]) else "–"
        cells.setdefault(label[p["first"]], {})[label[p["second"]]] = text
    table = pd.DataFrame.from_dict(cells, orient="index").fillna("")
    table.index.name = "τ"
    return table


def comparison_table(rows_by_metric: Mapping[str, Sequence[Mapping]]) -> pd.DataFrame:
    """The reference − each other method per metric, ``+d [low, high]``, marked better/worse where the interval rule names one."""
    cells: dict = {}
    for key, rows in rows_by_metric.items():
        for r in rows:
            verdict = {1: " better", -1: " worse"}.get(r["better"], "")
            cells.setdefault(r["method"], {})[METRIC_BY_KEY[key].label] = (
                f"{_signed(r['estimate'])} {_interval(r)}{verdict}"
            )
    table = pd.DataFrame.from_dict(cells, orient="index").fillna("–")
    table.index.name = "vs method"
    return table
