"""The study summary and its verdicts: every stated comparison names its two models and follows the interval rule.

A comparison names a winner only when the 95% interval of the paired difference excludes 0
(:func:`helpers.metrics.intervals.interval_sign`), on at least :data:`helpers.metrics.intervals.MIN_IMAGES` images; otherwise the
text says the models cannot be told apart on this run.
Re-exported by :mod:`helpers.report.tables`.

References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images"; Samek et al., IEEE TNNLS 2017 (AOPC);
Efron & Tibshirani, "An Introduction to the Bootstrap", 1993.
"""

from __future__ import annotations

from typing import Mapping

from helpers.common.text import format_value, markdown_table
from helpers.metrics.intervals import MIN_IMAGES, format_interval, interval_sign
from helpers.study import files as study

__all__ = [
    "VERDICTS",
    "summary_rows",
    "classification_rows",
    "paired_sentences",
    "aopc_conclusions",
    "write_summary",
]

#: The verdicts :func:`aopc_conclusions` can give on the paper's claim.
VERDICTS: tuple[str, ...] = ("holds", "does not hold", "cannot be judged")

#: Column names of the AOPC quantities, by report key (the same as :data:`helpers.report.tables.AOPC_LABELS`).
_AOPC_LABELS: dict[str, str] = {
    "morf": "AOPC (MoRF)",
    "random": "random-order AOPC",
    "lerf": "LeRF AOPC",
    "morf_minus_random": "MoRF − random",
    "morf_minus_lerf": "MoRF − LeRF",
}


def _test_images(n) -> str:
    """``"1 test image"`` or ``"N test images"``."""
    return f"{n} test image" if n == 1 else f"{n} test images"


def _entry_interval(entry: Mapping) -> str:
    """'final [low, high]' of an :func:`helpers.metrics.aopc.aopc_summary` or :func:`helpers.metrics.aopc.paired_difference` result."""
    return f"{format_value(entry['final'])} [{format_value(entry['final_low'])}, {format_value(entry['final_high'])}]"


def _ci_label(level: float) -> str:
    return f"[{int(round(100 * level))}% CI]"


def _ci_sign(entry: Mapping) -> int:
    return interval_sign(entry["final_low"], entry["final_high"], entry.get("n_images"))


def _check_classification(classification: Mapping, names) -> None:
    if "models" not in classification:
        raise ValueError(
            "classification must be helpers.metrics.intervals.classification_intervals' result (with 'models'), "
            f"got keys {sorted(classification)}"
        )
    for name in names:
        if name not in classification["models"]:
            raise ValueError(f"classification has no metrics for model {name!r}")


def summary_rows(report: Mapping, classification: Mapping) -> list[dict]:
    """The study's final table: model, macro test recall and F1 with intervals, AOPC, random baseline, MoRF − random, MoRF − LeRF.

    ``report``: :func:`helpers.metrics.aopc.aopc_report`; ``classification``: :func:`helpers.metrics.intervals.classification_intervals`
    on the same test images. MoRF − random is the heatmap's own score: the raw AOPC also grows with the model's
    sensitivity to the perturbation, which the random order measures.
    """
    _check_classification(classification, report["models"])
    ci, cls_ci = _ci_label(report["level"]), _ci_label(classification["level"])
    rows = []
    for name, entry in report["models"].items():
        scores = classification["models"][name]
        row = {
            "model": name,
            f"macro test recall {cls_ci}": format_interval(scores["macro_recall"]),
            f"macro test F1 {cls_ci}": format_interval(scores["macro_f1"]),
        }
        for key, label in _AOPC_LABELS.items():
            if key != "lerf" and key in entry:
                row[f"{label} {ci}"] = _entry_interval(entry[key])
        row["images"] = entry["morf"]["n_images"]
        rows.append(row)
    return rows


def classification_rows(classification: Mapping) -> list[dict]:
    """Per model, the test recall of every class with its interval (rows for ``reporting.markdown_table``)."""
    ci = _ci_label(classification["level"])
    return [
        {"model": name, **{f"recall {c} {ci}": format_interval(e) for c, e in scores["per_class_recall"].items()}}
        for name, scores in classification["models"].items()
    ]


def paired_sentences(report: Mapping) -> list[str]:
    """The paired model comparison as text: MoRF AOPC difference, the random-order AOPCs it is confounded with, and the MoRF − random difference that measures the heatmaps."""
    if "paired" not in report:
        return []
    p = report["paired"]
    a, b = p["models"]
    orders = p.get("orders", {a: {"morf": p[a]}, b: {"morf": p[b]}})
    lines = [
        f"Paired comparison of {a} and {b} on the {_test_images(p['n_images'])} both classify correctly. "
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


def _verdict(a, b, recall_diff, n_test, morf_diff, where) -> tuple[str, str | None, str | None, str]:
    """(verdict, better-generalizing model, better-AOPC model, one-sentence reason) by the interval rule."""
    recall_text = f"the paired difference of macro test recall {a} − {b} = {format_interval(recall_diff)}"
    sign = interval_sign(recall_diff["low"], recall_diff["high"], n_test)
    better_aopc = None
    if morf_diff is not None:
        better_aopc = {1: a, -1: b, 0: None}[_ci_sign(morf_diff)]
    if n_test < MIN_IMAGES:
        reason = (
            f"{recall_text} rests on only {_test_images(n_test)} (fewer than {MIN_IMAGES}), too few for an interval"
        )
        return "cannot be judged", None, better_aopc, reason
    if sign == 0:
        reason = f"{recall_text} on the {_test_images(n_test)} includes 0, so neither model generalizes distinguishably better"
        return "cannot be judged", None, better_aopc, reason
    better_gen = a if sign > 0 else b
    if morf_diff is None:
        reason = (
            f"{better_gen} generalizes better ({recall_text} excludes 0), but no test image is classified "
            "correctly by both models, so their AOPC cannot be compared on the same images"
        )
        return "cannot be judged", better_gen, None, reason
    aopc_text = f"the paired AOPC difference {a} − {b} = {_entry_interval(morf_diff)} {where}"
    if better_aopc is None:
        why = "includes 0" if morf_diff["n_images"] >= MIN_IMAGES else f"rests on fewer than {MIN_IMAGES} images"
        reason = f"{better_gen} generalizes better ({recall_text} excludes 0), but {aopc_text} {why}"
        return "cannot be judged", better_gen, None, reason
    verdict = "holds" if better_aopc == better_gen else "does not hold"
    reason = (
        f"{better_gen} generalizes better ({recall_text} excludes 0) and {better_aopc} has the higher AOPC "
        f"({aopc_text} excludes 0)"
    )
    return verdict, better_gen, better_aopc, reason


def aopc_conclusions(report: Mapping, classification: Mapping) -> dict:
    """Whether this run supports the paper's claim (the better-generalizing model has the better AOPC), by the interval rule.

    ``report``: :func:`helpers.metrics.aopc.aopc_report` (its paired comparison names the two models);
    ``classification``: :func:`helpers.metrics.intervals.classification_intervals` of the same two models on the same test
    images. A model generalizes better only when the interval of the paired macro-recall difference excludes 0,
    and has the better AOPC only when the interval of the paired AOPC difference (images both classify correctly)
    excludes 0; the claim "holds" or "does not hold" only when both are decided, else it "cannot be judged".
    Caveats follow: AOPC also measures the model's sensitivity to the perturbation (the random-order AOPC), and
    the heatmaps' own quality is MoRF − random. Returns ``verdict`` (one of :data:`VERDICTS`), ``reason`` (one
    sentence), ``models`` (the two compared), ``recall_difference`` {estimate, low, high}, ``better_generalizing``,
    ``better_aopc``, ``better_heatmaps`` (model names or None) and ``sentences``.
    References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images"; Samek et al., IEEE TNNLS 2017.
    """
    if "paired" in report:
        names = list(report["paired"]["models"])
    elif len(report["models"]) == 2:
        names = list(report["models"])
    else:
        raise ValueError(
            f"aopc_conclusions compares two models; the report has {list(report['models'])} and no paired comparison"
        )
    _check_classification(classification, names)
    a, b = names
    if list(classification.get("compared", [])) != [a, b]:
        raise ValueError(
            f"classification compares {classification.get('compared')} but the AOPC report compares {[a, b]}: "
            "compute both for the same two models in the same order"
        )
    recall_diff = {k: float(classification["recall_difference"][k]) for k in ("estimate", "low", "high")}
    recall = {n: classification["models"][n]["macro_recall"] for n in names}
    f1 = {n: classification["models"][n]["macro_f1"] for n in names}
    if "paired" in report:
        p = report["paired"]
        src = p.get("orders", {a: {"morf": p[a]}, b: {"morf": p[b]}})
        where = f"on the {_test_images(p['n_images'])} both models classify correctly"
        morf_diff, heat_diff = p["difference"], p.get("morf_minus_random_difference")
        rand_diff = p.get("order_differences", {}).get("random")
    else:
        src = report["models"]
        where = "on each model's own correctly classified test images (no image is classified correctly by both)"
        morf_diff = heat_diff = rand_diff = None
    verdict, better_gen, better_aopc, reason = _verdict(a, b, recall_diff, classification["n_images"], morf_diff, where)
    morf = {n: src[n]["morf"]["final"] for n in names}
    sentences = [
        f"The paper's claim (the better-generalizing model has the better AOPC) {verdict} on this run: {reason}.",
        f"For the record: macro test recall {a} {format_interval(recall[a])}, {b} {format_interval(recall[b])}; "
        f"macro test F1 {a} {format_interval(f1[a])}, {b} {format_interval(f1[b])}; AOPC (MoRF) {a} {morf[a]:.3f}, "
        f"{b} {morf[b]:.3f} {where}.",
    ]

    # caveat: sensitivity to the perturbation, measured by the random order
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

    # the heatmaps' own score: MoRF - random
    better_heat = None
    if all("morf_minus_random" in src[n] for n in names):
        judgements = {
            1: "better than a random order",
            0: "no better than a random order",
            -1: "worse than a random order",
        }
        per_model = [
            f"{n} {_entry_interval(src[n]['morf_minus_random'])} ({judgements[_ci_sign(src[n]['morf_minus_random'])]})"
            for n in names
        ]
        text = "The heatmaps themselves are measured by MoRF − random: " + "; ".join(per_model)
        if heat_diff is not None:
            better_heat = {1: a, -1: b, 0: None}[_ci_sign(heat_diff)]
            text += f"; paired difference {a} − {b} = {_entry_interval(heat_diff)}"
            if better_heat is None:
                text += ", so neither model's heatmaps are distinguishably better (the interval includes 0 or rests on too few images)"
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
        "reason": reason,
        "models": [a, b],
        "recall_difference": recall_diff,
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
    classification: Mapping | None = None,
) -> dict:
    """Write the final table to ``paths.report / "summary.md"`` and ``paths.metrics / "summary.json"``; return both paths.

    Under the table: per-class test recall with intervals (``classification``, from
    :func:`helpers.metrics.intervals.classification_intervals`), the paired model comparison (:func:`paired_sentences`),
    ``notes``, and the sentences of ``conclusions`` (:func:`aopc_conclusions`) when given. ``title`` defaults to
    "Study summary (<profile> profile)".
    """
    title = title or f"Study summary ({paths.profile} profile)"
    lines = [f"# {title}", "", markdown_table(rows)]
    if classification is not None:
        lines += [
            f"Test recall per class on the {_test_images(classification['n_images'])}; intervals: "
            f"{classification['method']} ({classification['n_boot']} resamples).",
            "",
            markdown_table(classification_rows(classification)),
        ]
    if report is not None:
        paired = paired_sentences(report)
        if paired:
            lines += [" ".join(paired), ""]
    if notes:
        lines += [notes, ""]
    if conclusions is not None:
        lines += ["## Conclusions", ""] + [f"- {s}" for s in conclusions["sentences"]] + [""]
    payload = {"profile": paths.profile, "rows": rows}
    if classification is not None:
        payload["classification"] = dict(classification)
    keys = ("final", "final_low", "final_high", "n_images")
    if report is not None:
        payload["aopc"] = {
            name: {order: {k: entry[order][k] for k in keys} for order in _AOPC_LABELS if order in entry}
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
