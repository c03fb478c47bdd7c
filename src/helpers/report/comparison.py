"""Two runs of the study on the same test split, compared per model with paired intervals (e.g. masked vs unmasked).

::

    rows = compare_runs(paths_none, paths_lung, names=("none", "lung"))

For each model slot both runs trained: macro test recall and F1 (the same stratified resamples of the test images
for both runs), the share of Grad-CAM mass inside the dataset's lung masks, the AOPC of the MoRF order and MoRF −
random, each as the mean per-image difference second − first over the images both runs classify correctly (the
images AOPC uses), with a percentile bootstrap interval. A difference is read as higher or lower only when its
interval excludes 0 (:func:`helpers.metrics.intervals.interval_sign`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from helpers.common.files import load_json, load_npz
from helpers.data.dataset import load_masks
from helpers.metrics import intervals
from helpers.metrics.energy import mask_energy
from helpers.metrics.intervals import bootstrap_ci
from helpers.study.split_files import read_manifest

__all__ = ["MEASURES", "compare_runs", "comparison_markdown"]

#: The measures of a comparison row, in table order.
MEASURES: tuple[str, ...] = ("macro recall", "macro F1", "lung-mask energy", "AOPC (MoRF)", "MoRF − random")


def _run_files(paths) -> dict:
    """The per-image files of one run: split, predictions and heatmaps per model, the AOPC report."""
    aopc = Path(paths.metrics) / "aopc.json"
    for path in (Path(paths.split_manifest), aopc):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: the run is incomplete (it needs notebooks 01-07)")
    return {"split": Path(paths.split_manifest), "aopc": load_json(aopc)}


def _split_key(frame) -> list[tuple]:
    """The split as (split, label, file name) rows: the same for two runs over copies of one dataset (e.g. phantoms
    generated with one seed in each trial's own folder), different when an image or its split differs."""
    names = [Path(p).name for p in frame["path"]]
    return list(zip(frame["split"], frame["label"], names))


def _per_image_aopc(report: dict, n_images: int) -> dict[str, np.ndarray]:
    """AOPC of the MoRF and random orders per test image (NaN where the run left the image out)."""
    out = {}
    for order in ("morf", "random"):
        values = np.full(n_images, np.nan)
        entry = report[order]
        values[np.asarray(entry["indices"], np.int64)] = np.asarray(entry["per_image_final"], np.float64)
        out[order] = values
    return out


def _row(model, measure, names, a, b, n_boot, seed) -> dict:
    """One paired row: means of both runs on the images valid for both, the difference second − first, its reading."""
    valid = np.isfinite(a) & np.isfinite(b)
    n = int(valid.sum())
    row = {"model": model, "measure": measure, names[0]: np.nan, names[1]: np.nan, "n": n}
    if n < 2:
        return {**row, "difference": np.nan, "low": np.nan, "high": np.nan, "reading": "too few images"}
    ci = bootstrap_ci(b[valid] - a[valid], n_boot, seed)
    return {
        **row,
        names[0]: float(a[valid].mean()),
        names[1]: float(b[valid].mean()),
        "difference": ci["mean"],
        "low": ci["low"],
        "high": ci["high"],
        "reading": _reading(ci["low"], ci["high"], n, names),
    }


def _reading(low: float, high: float, n: int, names: Sequence[str]) -> str:
    sign = intervals.interval_sign(low, high, n)
    return {1: f"higher with {names[1]}", -1: f"lower with {names[1]}", 0: "not distinguishable"}[sign]


def compare_runs(
    first,
    second,
    names: Sequence[str] = ("none", "lung"),
    models: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict]:
    """Paired comparison of two complete runs (:class:`helpers.study.files.StudyPaths`) on the same test split, per model.

    Rows (:data:`MEASURES` per model): ``model``, ``measure``, the mean of each run (columns named by ``names``),
    ``difference`` (second − first) with ``low``/``high`` (95% percentile bootstrap), ``n`` images and ``reading``.
    Recall and F1 are paired over stratified resamples of every test image; the per-image measures over the images
    both runs classify correctly. Raises ValueError when the runs' test splits differ.
    References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (paired percentile bootstrap).
    """
    names = tuple(names)
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"names must be two different labels, got {names!r}")
    files = [_run_files(first), _run_files(second)]
    frames = [read_manifest(f["split"]) for f in files]
    if _split_key(frames[0]) != _split_key(frames[1]):
        raise ValueError(
            f"the runs have different splits ({files[0]['split']} and {files[1]['split']}): a paired comparison "
            "needs the same test images (the same data, seed and split settings)"
        )
    frame = frames[0]
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    labels = test["label_index"].to_numpy(np.int64)
    image_size = int(files[0]["aopc"]["settings"]["image_size"])
    lungs = load_masks(test, image_size, kind="lung")
    reports = [f["aopc"]["report"]["models"] for f in files]
    order = files[0]["aopc"]["report"].get("paired", {}).get("models", [])  # the study's order (vgg16 first)
    known = [m for m in order if m in reports[0]] + [m for m in reports[0] if m not in order]
    shared = [m for m in known if m in reports[1]] if models is None else list(models)
    if not shared:
        raise ValueError(f"the runs share no model: {sorted(reports[0])} and {sorted(reports[1])}")
    rows = []
    for model in shared:
        predicted, heat, aopc = [], [], []
        for paths, report in zip((first, second), reports):
            if model not in report:
                raise ValueError(f"model {model!r} is not in {Path(paths.metrics) / 'aopc.json'}")
            predicted.append(load_npz(Path(paths.processed) / f"predictions_{model}.npz")["predicted"])
            heat.append(load_npz(Path(paths.processed) / f"heatmaps_{model}.npz")["heatmaps"])
            aopc.append(_per_image_aopc(report[model], len(labels)))
        classification = intervals.classification_intervals(
            labels, dict(zip(names, predicted)), n_boot=n_boot, seed=seed, compare=names
        )
        for measure, key in (("macro recall", "macro_recall"), ("macro F1", "macro_f1")):
            diff = classification[f"{key.split('_')[1]}_difference"]  # first − second
            low, high = -diff["high"], -diff["low"]
            rows.append(
                {
                    "model": model,
                    "measure": measure,
                    **{name: classification["models"][name][key]["estimate"] for name in names},
                    "n": len(labels),
                    "difference": -diff["estimate"],
                    "low": low,
                    "high": high,
                    "reading": _reading(low, high, len(labels), names),
                }
            )
        both = (predicted[0] == labels) & (predicted[1] == labels)
        energy = [np.where(both, mask_energy(h, lungs, size=image_size), np.nan) for h in heat]
        if lungs.reshape(len(lungs), -1).max(axis=1).any():
            rows.append(_row(model, "lung-mask energy", names, *energy, n_boot, seed))
        morf = [np.where(both, a["morf"], np.nan) for a in aopc]
        gap = [np.where(both, a["morf"] - a["random"], np.nan) for a in aopc]
        rows.append(_row(model, "AOPC (MoRF)", names, *morf, n_boot, seed))
        rows.append(_row(model, "MoRF − random", names, *gap, n_boot, seed))
    return rows


def _finite(value) -> bool:
    """A number that is not NaN (rows read back from JSON hold None where a value was NaN)."""
    return value is not None and bool(np.isfinite(value))


def comparison_markdown(rows: list[dict], names: Sequence[str] = ("none", "lung")) -> str:
    """The comparison rows as a markdown table: both means, the difference with its interval, images, reading."""
    if not rows:
        return ""
    header = f"| model | measure | {names[0]} | {names[1]} | {names[1]} − {names[0]} [95% CI] | images | reading |"
    lines = [header, "|" + "---|" * 7]
    for r in rows:
        cells = [f"{r[name]:.3f}" if _finite(r[name]) else "–" for name in names]
        low, high = (r["low"] + 0.0, r["high"] + 0.0) if _finite(r["difference"]) else (0.0, 0.0)  # no "-0.000"
        diff = f"{r['difference']:+.3f} [{low:+.3f}, {high:+.3f}]" if _finite(r["difference"]) else "–"
        lines.append(
            f"| {r['model']} | {r['measure']} | {cells[0]} | {cells[1]} | {diff} | {r['n']} | {r['reading']} |"
        )
    return "\n".join(lines)
