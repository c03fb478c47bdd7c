"""The published runs of a profile (one per seed and backend) and where a new run falls among them.

Training from scratch amplifies the last-bit differences between machines (SIMD width, kernel choice, thread count),
so a profile's numbers are published as a distribution: ``docs/reference/<profile>.json`` holds the headline numbers
of every run of a seed sweep (``python -m helpers.runner.sweep --grid params/sweep-seeds.yaml``), collected by
``make docs``. At the end of a study the runner compares the run with them (:func:`compare`) and writes
``reference.md`` beside the summary: each headline number inside or outside the published range, and whether the
verdict on the paper's claim is the one the published runs gave.

Reads JSON only (no Keras, no plotting), so the runner's own process stays light.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from helpers.common.config import MODEL_SLOTS
from helpers.common.text import markdown_table

__all__ = [
    "REFERENCE_DIR",
    "HEADLINE",
    "IGNORED_PARAMETERS",
    "run_record",
    "sweep_records",
    "merge_runs",
    "reference_path",
    "load_reference",
    "comparable_parameters",
    "parameter_differences",
    "spread",
    "seed_table",
    "verdict_sentence",
    "compare",
    "comparison_markdown",
]

#: Where the published runs live, relative to the project root: one ``<profile>.json`` each.
REFERENCE_DIR = Path("docs") / "reference"
#: The headline numbers of a run (key, label), read from ``metrics/summary.json``.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("test_recall", "macro test recall"),
    ("test_f1", "macro test F1"),
    ("aopc_morf", "AOPC (MoRF)"),
    ("aopc_random", "random-order AOPC"),
    ("morf_minus_random", "MoRF − random"),
)
#: Parameters that may differ between a run and the published ones: the seed (the published runs vary it), and
#: where files go.
IGNORED_PARAMETERS = frozenset({"seed", "work_dir", "report_dir", "data_dir", "profile"})
#: Published numbers are rounded to three decimals: a value this close to the range's edge counts as inside.
ROUNDING = 5e-4


def _load(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _headline(summary: Mapping) -> dict[str, dict[str, float]]:
    """Per model, the :data:`HEADLINE` numbers of a ``summary.json`` payload (NaN where absent)."""
    models = summary.get("classification", {}).get("models", {})
    aopc = summary.get("aopc", {})
    names = list(dict.fromkeys([*models, *aopc]))
    values = {}
    for name in names:
        cls, curves = models.get(name, {}), aopc.get(name, {})
        values[name] = {
            "test_recall": _number(cls.get("macro_recall", {}).get("estimate")),
            "test_f1": _number(cls.get("macro_f1", {}).get("estimate")),
            "aopc_morf": _number(curves.get("morf", {}).get("final")),
            "aopc_random": _number(curves.get("random", {}).get("final")),
            "morf_minus_random": _number(curves.get("morf_minus_random", {}).get("final")),
        }
    return values


def comparable_parameters(parameters: Mapping) -> dict:
    """Every notebook's parameters without those a run may change freely (:data:`IGNORED_PARAMETERS`)."""
    return {
        stem: {key: value for key, value in sorted(values.items()) if key not in IGNORED_PARAMETERS}
        for stem, values in sorted(parameters.items())
    }


def run_record(report_dir: str | os.PathLike) -> dict:
    """One run's entry for the reference: seed, backend, machine, comparable parameters, headline numbers, verdict.

    Reads ``run.json`` and ``metrics/summary.json`` of a finished report; raises ValueError naming the file that is
    missing or incomplete.
    """
    report = Path(report_dir)
    run, summary = _load(report / "run.json"), _load(report / "metrics" / "summary.json")
    if not run:
        raise ValueError(f"{report / 'run.json'} is missing or unreadable: not a finished run")
    if not summary.get("classification") or not summary.get("aopc"):
        raise ValueError(f"{report / 'metrics' / 'summary.json'} is missing or incomplete: the run stopped before 07")
    parameters = run.get("parameters", {})
    seeds = {values.get("seed") for values in parameters.values() if "seed" in values}
    if len(seeds) != 1:
        raise ValueError(f"{report / 'run.json'}: the notebooks ran with seeds {sorted(map(str, seeds))}, not one seed")
    environment = run.get("environment", {})
    device = environment.get("device", {})
    conclusions = summary.get("conclusions", {})
    return {
        "seed": seeds.pop(),
        "backend": environment.get("keras_backend"),
        "machine": {
            "cpu": device.get("cpu"),
            "cpu_features": device.get("cpu_features"),
            "usable_cores": device.get("usable_cores"),
            "threads": device.get("threads"),
            "gpus": device.get("gpus"),
            "versions": {k: environment.get("versions", {}).get(k) for k in ("keras", "tensorflow", "jax", "numpy")},
            "commit": environment.get("git", {}).get("commit"),
        },
        "parameters": comparable_parameters(parameters),
        "values": _headline(summary),
        "verdict": conclusions.get("verdict"),
        "better_heatmaps": conclusions.get("better_heatmaps"),
    }


def sweep_records(sweep_dir: str | os.PathLike, profile: str) -> list[dict]:
    """:func:`run_record` of every finished trial of a seed sweep folder (``reports/<profile>/sweeps/<name>``)."""
    folder = Path(sweep_dir)
    if not (folder / "sweep.json").is_file():
        raise ValueError(f"{folder} is not a sweep folder (no sweep.json): run python -m helpers.runner.sweep first")
    records = []
    for trial in sorted(p for p in folder.iterdir() if p.is_dir()):
        status = _load(trial / "trial.json").get("status")
        report = trial / "reports" / profile
        if status == "done" and (report / "run.json").is_file():
            records.append(run_record(report))
    if not records:
        raise ValueError(f"{folder} holds no finished trial of profile {profile!r}")
    return records


def merge_runs(old: Sequence[Mapping], new: Sequence[Mapping]) -> list[dict]:
    """``old`` runs with those of ``new`` added; a new run replaces an old one of the same seed and backend.

    All runs must share their parameters (a reference mixes seeds, not settings): raises ValueError otherwise.
    """
    merged = {(run["seed"], run["backend"]): dict(run) for run in old}
    merged.update({(run["seed"], run["backend"]): dict(run) for run in new})
    runs = sorted(merged.values(), key=lambda run: (str(run["backend"]), run["seed"]))
    first = runs[0]["parameters"] if runs else {}
    for run in runs:
        if parameter_differences(first, run["parameters"]):
            raise ValueError(
                f"the run of seed {run['seed']} on {run['backend']} has other parameters than seed "
                f"{runs[0]['seed']} on {runs[0]['backend']}: {_differences(first, run['parameters'])}"
            )
    return runs


def reference_path(profile: str, root: str | os.PathLike) -> Path:
    """``<root>/docs/reference/<profile>.json``."""
    return Path(root) / REFERENCE_DIR / f"{profile}.json"


def load_reference(profile: str, root: str | os.PathLike) -> dict | None:
    """The published runs of ``profile`` (None when the project publishes none for it)."""
    path = reference_path(profile, root)
    if not path.is_file():
        return None
    reference = _load(path)
    if not reference.get("runs"):
        raise ValueError(f"{path} holds no runs: regenerate it with make docs")
    return reference


def parameter_differences(expected: Mapping, actual: Mapping) -> list[str]:
    """``NN.key=value (published: value)`` for every parameter that both sides set to different values.

    A notebook or parameter that only one side has (added to the study after the published runs) is not a difference:
    it did not exist when the published runs were made, and the runs are compared on what they share.
    """
    found = []
    for stem in sorted(set(expected) & set(actual)):
        a, b = actual[stem], expected[stem]
        for key in sorted(set(a) & set(b)):
            if a[key] != b[key]:
                found.append(f"{stem[:2]}.{key}={a[key]!r} (published: {b[key]!r})")
    return found


def _differences(expected: Mapping, actual: Mapping, limit: int = 4) -> str:
    """The first ``limit`` of :func:`parameter_differences`, joined."""
    found = parameter_differences(expected, actual)
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return ", ".join(found[:limit]) + more


def spread(values: Sequence[float]) -> dict:
    """``n``, ``median``, ``min`` and ``max`` of the finite values (NaN when there are none)."""
    finite = sorted(v for v in (_number(x) for x in values) if not math.isnan(v))
    if not finite:
        return {"n": 0, "median": math.nan, "min": math.nan, "max": math.nan}
    mid = len(finite) // 2
    median = finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2
    return {"n": len(finite), "median": median, "min": finite[0], "max": finite[-1]}


def _runs_for(reference: Mapping, backend: str | None) -> tuple[list[dict], str]:
    """The published runs to compare with: those of ``backend`` when there are any, else all; and a label."""
    runs = list(reference["runs"])
    same = [run for run in runs if run.get("backend") == backend]
    backends = sorted({str(run.get("backend")) for run in runs})
    if same:
        return same, f"{len(same)} published runs on {backend}"
    return runs, f"{len(runs)} published runs on {', '.join(backends)}"


def _models(runs: Sequence[Mapping]) -> list[str]:
    """The models of the runs, the study's slots first in their order (JSON files may hold them sorted by name)."""
    names = set(name for run in runs for name in run["values"])
    return sorted(names, key=lambda n: (MODEL_SLOTS.index(n) if n in MODEL_SLOTS else len(MODEL_SLOTS), n))


def verdict_sentence(runs: Sequence[Mapping]) -> str:
    """How often each verdict on the paper's claim occurred, e.g. ``"cannot be judged" in 4 of 5 runs, "holds" in 1``."""
    counts = Counter(str(run.get("verdict")) for run in runs)
    parts = [f'"{verdict}" in {count}' for verdict, count in counts.most_common()]
    parts[0] += f" of {len(runs)} runs"
    return ", ".join(parts)


def seed_table(reference: Mapping) -> str:
    """Markdown: per backend and model, the median [min, max] over the published runs of every headline number."""
    runs = list(reference["runs"])
    rows = []
    for backend in sorted({str(run.get("backend")) for run in runs}):
        subset = [run for run in runs if str(run.get("backend")) == backend]
        for model in _models(subset):
            row = {"backend": backend, "model": model, "seeds": str(len(subset))}
            for key, label in HEADLINE:
                s = spread([run["values"].get(model, {}).get(key) for run in subset])
                row[f"{label} median [min, max]"] = (
                    "" if s["n"] == 0 else f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"
                )
            rows.append(row)
    lines = [markdown_table(rows).rstrip("\n"), ""]
    for backend in sorted({str(run.get("backend")) for run in runs}):
        subset = [run for run in runs if str(run.get("backend")) == backend]
        seeds = ", ".join(str(run["seed"]) for run in subset)
        better = Counter(str(run.get("better_heatmaps") or "neither model") for run in subset).most_common()
        heat = ", ".join(f"{name} in {count}" for name, count in better)
        lines.append(
            f"- {backend} (seeds {seeds}): the paper's claim {verdict_sentence(subset)}; the better heatmaps "
            f"(paired MoRF − random, interval excluding 0): {heat} of {len(subset)}."
        )
    return "\n".join(lines) + "\n"


def compare(
    summary: Mapping, parameters: Mapping, backend: str | None, reference: Mapping | None, profile: str = ""
) -> dict:
    """Where a run falls among the published runs of its profile.

    ``summary``: the run's ``metrics/summary.json``; ``parameters``: every notebook's parameters (``run.json``);
    ``reference``: :func:`load_reference`. Returns ``applies`` (False when there is no reference or the run's
    parameters differ from the published runs' other than by the seed; ``reason`` says why), ``rows`` (per model
    and headline number: the run's value, the published median, min and max, and ``inside``), ``outside`` (labels
    of the numbers outside their range), ``verdict``, ``verdict_count`` (published runs with the same verdict),
    ``n_runs``, ``runs_label`` and ``line`` (one sentence for the runner's console).
    """
    name = profile or str(summary.get("profile", ""))
    if reference is None:
        line = f"no published runs of the {name} profile to compare with (docs/reference/{name}.json)"
        return {"applies": False, "reason": line, "rows": [], "outside": [], "line": line}
    runs, label = _runs_for(reference, backend)
    published = runs[0]["parameters"]
    own = comparable_parameters(parameters)
    if parameter_differences(published, own):
        line = (
            f"not comparable with the {label} of the {name} profile: this run's parameters differ "
            f"({_differences(published, own)})"
        )
        return {"applies": False, "reason": line, "rows": [], "outside": [], "line": line}
    values = _headline(summary)
    rows, outside = [], []
    for model in _models(runs):
        for key, label_text in HEADLINE:
            s = spread([run["values"].get(model, {}).get(key) for run in runs])
            value = values.get(model, {}).get(key, math.nan)
            if s["n"] == 0 or math.isnan(_number(value)):
                continue
            inside = s["min"] - ROUNDING <= value <= s["max"] + ROUNDING
            rows.append({"model": model, "measure": label_text, "value": value, **s, "inside": inside})
            if not inside:
                outside.append(f"{model} {label_text} {value:.3f} (published {s['min']:.3f} to {s['max']:.3f})")
    verdict = summary.get("conclusions", {}).get("verdict")
    same = sum(1 for run in runs if run.get("verdict") == verdict)
    numbers = f"{len(rows) - len(outside)} of {len(rows)} headline numbers inside the published range"
    if outside:
        numbers += " (outside: " + "; ".join(outside) + ")"
    verdict_text = f'verdict "{verdict}" as in {same} of {len(runs)} published runs'
    line = f"compared with the {label} of the {name} profile: {numbers}; {verdict_text}"
    return {
        "applies": True,
        "reason": "",
        "rows": rows,
        "outside": outside,
        "verdict": verdict,
        "verdict_count": same,
        "n_runs": len(runs),
        "runs_label": label,
        "published_verdicts": verdict_sentence(runs),
        "line": line,
    }


def comparison_markdown(comparison: Mapping) -> str:
    """``reference.md``: the comparison of :func:`compare` as a short page (a table and two sentences)."""
    lines = ["# This run against the published runs", ""]
    if not comparison["applies"]:
        return "\n".join([*lines, comparison["reason"][0].upper() + comparison["reason"][1:] + ".", ""])
    lines += [
        f"Each headline number of this run next to the median and range (min to max) of the "
        f"{comparison['runs_label']} (docs/reference/; one run per training seed). Training from scratch amplifies "
        "the last-bit float differences between machines, so a run on another CPU lands elsewhere in this spread.",
        "",
    ]
    table = [
        {
            "model": row["model"],
            "measure": row["measure"],
            "this run": f"{row['value']:.3f}",
            "published median [min, max]": f"{row['median']:.3f} [{row['min']:.3f}, {row['max']:.3f}]",
            "inside": "yes" if row["inside"] else "**no**",
        }
        for row in comparison["rows"]
    ]
    lines += [markdown_table(table).rstrip("\n"), ""]
    lines.append(
        f'The verdict on the paper\'s claim, "{comparison["verdict"]}", is the one {comparison["verdict_count"]} of '
        f"{comparison['n_runs']} published runs gave (published: {comparison['published_verdicts']})."
    )
    return "\n".join(lines) + "\n"
