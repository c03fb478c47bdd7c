"""Notebook 08 in one call: every heatmap method scored by every metric, and whether the metrics agree.

Is Grad-CAM a good map for these models at all (the same metrics on the other CAM methods and the model-independent
baselines of :mod:`helpers.explain`), and does a metric measure the model or the perturbation (noise-MoRF AOPC beside
the metrics of :mod:`helpers.metrics`)? Per model, on one seeded sample of correctly classified test images shared by
every method and metric: means with percentile-bootstrap intervals, paired differences of the study's method against
each other method, and Kendall's τ between the methods' rankings by every two metrics (:func:`rank_agreement`); the
sentences follow the study's interval rule (:func:`helpers.intervals.interval_sign`).

References: Samek et al. 2017 (IEEE TNNLS), AOPC; Rong et al. 2022 (ICML), ROAD; Petsiuk et al. 2018 (BMVC),
insertion and deletion; Zhang et al. 2018 (IJCV), the pointing game; Adebayo et al. 2018 (NeurIPS), sanity checks;
Kendall 1938 (Biometrika), rank correlation; Efron & Tibshirani 1993, the bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import config, lineage, split_files, study
from ._core import check_int, check_seed, format_value, markdown_table
from .intervals import MIN_IMAGES, interval_sign

__all__ = [
    "NOTEBOOK", "METRIC_GROUPS", "Metric", "METRICS", "METHOD_LABELS", "MethodsReport", "kendall_tau", "summarise",
    "paired_comparisons", "rank_agreement", "comparison_sentence", "agreement_sentence", "methods_table",
    "comparison_table", "agreement_table", "evaluate_methods",
]  # fmt: skip

#: The notebook this step is.
NOTEBOOK = "08_methods_and_metrics"
#: Metric families the ``metrics`` parameter selects.
METRIC_GROUPS: tuple[str, ...] = ("aopc", "road", "insertion_deletion", "mask_energy", "pointing_game", "randomisation")


@dataclass(frozen=True)
class Metric:
    """One column of the methods × metrics table: its key, label, family and which direction is better."""

    key: str
    label: str
    group: str
    higher_is_better: bool


#: Every column of the table, in order.
METRICS: tuple[Metric, ...] = (
    Metric("morf_minus_random", "AOPC MoRF − random", "aopc", True),
    Metric("road_combined", "ROAD (LeRF − MoRF)/2", "road", True),
    Metric("insertion_auc", "insertion AUC", "insertion_deletion", True),
    Metric("deletion_auc", "deletion AUC", "insertion_deletion", False),
    Metric("energy_lesion", "mask energy, lesion", "mask_energy", True),
    Metric("energy_lung", "mask energy, lungs", "mask_energy", True),
    Metric("pointing_lesion", "pointing game, lesion", "pointing_game", True),
    Metric("pointing_lung", "pointing game, lungs", "pointing_game", True),
    Metric("randomisation_spearman", "Spearman to trained, top backbone layer re-drawn", "randomisation", False),
    Metric("randomisation_ssim", "SSIM to trained, top backbone layer re-drawn", "randomisation", False),
)
_BY_KEY = {m.key: m for m in METRICS}

#: How the text names each built-in method.
METHOD_LABELS: dict[str, str] = {
    "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "xgradcam": "XGrad-CAM",
    "layercam": "Layer-CAM", "scorecam": "Score-CAM", "eigencam": "Eigen-CAM", "sobel": "the Sobel edge map",
    "random": "the random map",
}  # fmt: skip


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


# ----------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------


def kendall_tau(x, y) -> np.ndarray | float:
    """Kendall's τ-b of two rankings along the last axis (ties allowed; items with NaN in either left out); NaN when undefined.

    ``x`` and ``y`` (..., K): τ-b = (concordant − discordant pairs) / sqrt(pairs untied in x · pairs untied in y),
    as ``scipy.stats.kendalltau(x, y, nan_policy="omit")``, for a whole stack of rankings at once.
    References: Kendall 1938, "A new measure of rank correlation", Biometrika; Kendall 1945 (τ-b, ties).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim < 1:
        raise ValueError(f"x and y must be rankings of one shape (..., K), got {x.shape} and {y.shape}")
    first, second = np.triu_indices(x.shape[-1], 1)
    dx, dy = x[..., first] - x[..., second], y[..., first] - y[..., second]
    valid = np.isfinite(dx) & np.isfinite(dy)
    sx, sy = np.where(valid, np.sign(dx), 0.0), np.where(valid, np.sign(dy), 0.0)
    untied = np.count_nonzero(sx, axis=-1) * np.count_nonzero(sy, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(untied > 0, (sx * sy).sum(axis=-1) / np.sqrt(np.maximum(untied, 1)), np.nan)
    return float(tau) if tau.ndim == 0 else tau


def summarise(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict | None:
    """Mean of the finite per-image ``values`` with its percentile-bootstrap interval (``mean, low, high, n``); None when none is finite."""
    from .scores import bootstrap_ci

    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    entry = bootstrap_ci(finite, n_boot, seed, level)
    return {"mean": entry["mean"], "low": entry["low"], "high": entry["high"], "n": int(finite.size)}


def paired_comparisons(per_method, reference: str, higher_is_better=True, n_boot=2000, seed=0, level=0.95) -> list:
    """``reference`` − each other method, paired over the images finite for both, with bootstrap intervals.

    Rows: ``method``, ``estimate``, ``low``, ``high``, ``n`` and ``better``: +1 when the reference is better (the
    interval excludes 0 on the better side, on at least :data:`helpers.intervals.MIN_IMAGES` images), -1 when worse,
    0 when it cannot be told (:func:`helpers.intervals.interval_sign`).
    """
    if reference not in per_method:
        return []
    ref = np.asarray(per_method[reference], np.float64)
    rows = []
    for method, values in per_method.items():
        entry = None if method == reference else summarise(ref - np.asarray(values, np.float64), n_boot, seed, level)
        if entry is None:
            continue
        sign = interval_sign(entry["low"], entry["high"], entry["n"])
        rows.append({"method": method, "estimate": entry["mean"], "low": entry["low"], "high": entry["high"],
                     "n": entry["n"], "better": sign if higher_is_better else -sign})  # fmt: skip
    return rows


def _boot_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, K) means over the finite entries of ``values`` (K, n) under resample counts (B, n)."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(finite, values, 0.0).T) / (counts @ finite.T.astype(np.float64))


def rank_agreement(values, higher_is_better=None, image_sets=None, n_boot=2000, seed=0, level=0.95) -> dict:
    """Kendall's τ between the methods' rankings by every two metrics, with percentile-bootstrap intervals over images.

    ``values``: {metric: {method: per-image values (n,)}} (NaN: no value for that image); a metric ranks the methods
    by their mean over its finite values, oriented by ``higher_is_better`` (default True), so that τ > 0 means the
    two metrics agree on which methods are better. Metrics of one ``image_sets`` name (default: all one set) were
    computed on the same images and are resampled together; different sets are resampled independently. Returns
    ``metrics``, ``methods`` and ``pairs``: one row per two metrics (``first``, ``second``, ``tau``, ``low``, ``high``,
    NaN where undefined, ``n_images``, ``n_methods``: the methods both rank).
    References: Kendall 1938 (Biometrika), rank correlation; Efron & Tibshirani 1993 (percentile bootstrap).
    """
    metrics = list(values)
    methods = list(dict.fromkeys(m for metric in metrics for m in values[metric]))
    n_boot, seed = check_int("n_boot", n_boot, 1), check_seed(seed)
    sets = {metric: (image_sets or {}).get(metric, "") for metric in metrics}
    arrays, counts = {}, {}
    for metric in metrics:
        n = max(len(np.atleast_1d(v)) for v in values[metric].values())
        rows = [np.asarray(values[metric].get(m, np.full(n, np.nan)), np.float64) for m in methods]
        arrays[metric] = np.stack(rows)
        if sets[metric] not in counts:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A0, len(counts)]))
            counts[sets[metric]] = np.stack([np.bincount(r, minlength=n) for r in rng.integers(0, n, (n_boot, n))])
        if counts[sets[metric]].shape[1] != n:
            raise ValueError(f"metric {metric!r} has {n} images, unlike the other metrics of its image set")
    sign = {m: 1.0 if (higher_is_better or {}).get(m, True) else -1.0 for m in metrics}
    point = {m: sign[m] * _boot_means(arrays[m], np.ones((1, arrays[m].shape[1])))[0] for m in metrics}
    boot = {m: sign[m] * _boot_means(arrays[m], counts[sets[m]].astype(np.float64)) for m in metrics}
    pairs, alpha = [], (1.0 - level) / 2.0
    for i, a in enumerate(metrics):
        for b in metrics[i + 1 :]:
            samples = kendall_tau(boot[a], boot[b])
            samples = samples[np.isfinite(samples)]
            low, high = np.quantile(samples, [alpha, 1 - alpha]) if samples.size else (np.nan, np.nan)
            pairs.append({"first": a, "second": b, "tau": kendall_tau(point[a], point[b]), "low": float(low),
                          "high": float(high), "n_images": int(min(arrays[a].shape[1], arrays[b].shape[1])),
                          "n_methods": int((np.isfinite(point[a]) & np.isfinite(point[b])).sum())})  # fmt: skip
    return {"metrics": metrics, "methods": methods, "pairs": pairs, "n_boot": n_boot, "level": level}


# ----------------------------------------------------------------------------------------------------
# Sentences and tables
# ----------------------------------------------------------------------------------------------------


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
        parts.append("better than " + _join([f"{_label(r['method'])} ({_signed(r['estimate'])} {_interval(r)})" for r in better]))  # fmt: skip
    if tied:
        whose = "its interval contains" if len(tied) == 1 else "their intervals contain"
        parts.append(f"not distinguishable from {_join([_label(r['method']) for r in tied])} ({whose} 0)")
    if worse:
        parts.append("worse than " + _join([f"{_label(r['method'])} ({_signed(r['estimate'])} {_interval(r)})" for r in worse]))  # fmt: skip
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
    when the interval of the paired difference excludes 0 on at least :data:`helpers.intervals.MIN_IMAGES` images.
    """
    name = _label(reference)
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
    metrics = [m for m in _BY_KEY if m in summaries] + [m for m in summaries if m not in _BY_KEY]
    methods = list(dict.fromkeys(method for m in metrics for method in summaries[m]))
    columns = {m: _BY_KEY[m].label + (" ↑" if _BY_KEY[m].higher_is_better else " ↓") if m in _BY_KEY else m for m in metrics}  # fmt: skip
    rows = {method: {columns[m]: _cell(summaries[m].get(method)) for m in metrics} for method in methods}
    if chance:
        rows["chance (mask share)"] = {columns[m]: format_value(chance[m]) if m in chance else "" for m in metrics}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def agreement_table(agreement: Mapping) -> pd.DataFrame:
    """Kendall's τ [low, high] of every two metrics' rankings (upper triangle) from :func:`rank_agreement`."""
    label = {m: _BY_KEY[m].label if m in _BY_KEY else m for m in agreement["metrics"]}
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
            cells.setdefault(r["method"], {})[_BY_KEY[key].label] = f"{_signed(r['estimate'])} {_interval(r)}{verdict}"
    table = pd.DataFrame.from_dict(cells, orient="index").fillna("–")
    table.index.name = "vs method"
    return table


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
    from .explain import method_heatmaps
    from .localization import mask_energy
    from .metrics import curve_auc, insertion_curves, pointing_game, randomisation_test, road_evaluation
    from .perturbation import perturbation_curves
    from .scores import per_image_aopc

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
    higher = {key: _BY_KEY[key].higher_is_better for key in values}
    sets = {key: "randomisation" for key in values if _BY_KEY[key].group == "randomisation"}
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
            lines += ["", f"{_label(report.reference)} − each other method, paired over the same images:", ""]
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

    from . import figures
    from ._figures_methods import methods_figures
    from .dataset import load_masks
    from .describe import device_line
    from .explain import METHODS, MODEL_INDEPENDENT, get_method
    from .metrics import FRACTIONS
    from .scores import sample_indices, selection_mask

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
