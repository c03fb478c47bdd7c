"""Sweeps over notebook parameters: every trial a runner call in its own folder, resumable, one table and figure.

::

    python -m helpers.sweep --profile smoke --grid params/sweep-demo.yaml

The grid file (YAML) names notebook sections (``shared``, ``03_train_vgg16`` or ``03`` ...) and a list of values per
parameter; ``search: grid`` runs every combination, ``search: random`` draws ``trials`` of them with ``seed``.
``notebooks`` (optional) limits the notebooks each trial runs (default: all). ``compare`` (optional) names a parameter
of the grid with two values, e.g. ``input_mask``: the report then compares each pair of trials that differ only in it,
per model with paired intervals (:func:`helpers.comparison.compare_runs`). Every value is checked against the
runner's declarations (:mod:`helpers.profiles`, :mod:`helpers.parameters`) before any trial starts.

Trial ``tNN-<hash>`` runs :func:`helpers.pipeline.run_study` with its values as overrides and the work folder
``reports/<profile>/sweeps/<name>/<trial>/`` (its data and its report ``reports/<profile>/`` inside). A trial whose
``trial.json`` says ``done`` with the same values is never rerun; a failed one is recorded with its error and the
sweep goes on. The table and figure: :mod:`helpers.sweep_report`.

Trials run through an executor (:mod:`helpers.executors`): ``--executor local`` (default; ``--workers N`` runs N
at once, pinned to GPUs) or ``--executor ray [--ray-address ADDR]``. Whatever runs a trial writes the same trial
folder and ``trial.json``; the executor is started (a Ray cluster reached) before any trial. When the sweep ends it
refreshes the parent report ``reports/<profile>/`` (its ``sweeps.md`` and ``index.html``) under the runner's lock.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import parameters as declared
from . import pipeline
from .executors import ExecutorError, make_executor
from .profiles import ProfileError, _section_for, _suggest, discover_notebooks, load_profile, resolve_parameters
from .study import find_project_root, save_json

__all__ = ["SweepError", "Sweep", "Trial", "load_sweep", "run_sweep", "main"]

GRID_KEYS = ("name", "description", "search", "trials", "seed", "notebooks", "parameters", "compare")
SEARCHES = ("grid", "random")


class SweepError(ValueError):
    """A grid file the sweep cannot run (the message names every problem)."""


@dataclass(frozen=True)
class Trial:
    """One combination of values: ``values`` maps ``section.key`` (``shared.key`` for every notebook) to a value."""

    index: int
    values: dict

    @property
    def name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.values, sort_keys=True).encode()).hexdigest()[:8]
        return f"t{self.index:02d}-{digest}"

    def overrides(self) -> list[str]:
        """The runner's ``-p`` texts: ``key=value`` for shared keys, ``stem.key=value`` otherwise."""
        out = []
        for where, value in self.values.items():
            section, key = where.split(".", 1)
            out.append(f"{key}={value!r}" if section == "shared" else f"{section}.{key}={value!r}")
        return out


@dataclass
class Sweep:
    """A checked grid file: its name, the trials and the notebooks each trial runs (None: all)."""

    name: str
    profile: str
    trials: list[Trial]
    only: str | None = None
    description: str = ""
    source: str = ""
    axes: dict = field(default_factory=dict)
    compare: str | None = None


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"grid file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"grid file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SweepError(f"grid file {path} must be a mapping with a 'parameters' section")
    return data


def load_sweep(grid: str | Path, profile: str = "smoke", project_dir: str | Path | None = None) -> Sweep:
    """Read and check a grid file against ``profile``: every problem is listed in one :class:`SweepError`."""
    project = Path(project_dir).resolve() if project_dir else find_project_root()
    path = Path(grid)
    data = _read(path)
    notebooks = discover_notebooks(project / "notebooks")
    stems = [nb.stem for nb in notebooks]
    names = {nb.stem: set(pipeline.notebook_parameters(nb)) for nb in notebooks}
    all_names = set().union(*names.values())
    problems = []
    for key in data:
        if key not in GRID_KEYS:
            problems.append(f"{path}: unknown key '{key}'{_suggest(key, GRID_KEYS)} (keys: {', '.join(GRID_KEYS)})")
    search = data.get("search", "grid")
    if search not in SEARCHES:
        problems.append(f"{path}: search must be one of {SEARCHES}, got {search!r}{_suggest(str(search), SEARCHES)}")
    only = data.get("notebooks")
    if only is not None:
        only = ",".join(str(n) for n in only) if isinstance(only, list) else str(only)
        for part in only.split(","):
            if _section_for(part.strip(), stems) is None:
                problems.append(f"{path}: notebooks: no notebook named '{part.strip()}'{_suggest(part.strip(), stems)}")
    axes = {}
    sections = data.get("parameters")
    if not isinstance(sections, dict) or not sections:
        problems.append(f"{path}: 'parameters' must map notebook sections to {{parameter: [values]}}")
        sections = {}
    for section, keys in sections.items():
        stem = "shared" if section == "shared" else _section_for(str(section), stems)
        if stem is None:
            problems.append(f"{path}: section '{section}' names no notebook{_suggest(str(section), stems)}")
            continue
        if not isinstance(keys, dict):
            problems.append(f"{path}: section '{section}' must map parameters to value lists")
            continue
        known = all_names if stem == "shared" else names[stem]
        for key, values in keys.items():
            where = f"{stem}.{key}"
            if key in pipeline.RUNNER_KEYS:
                problems.append(f"{path}: '{where}' is set by the runner, not by a sweep")
            elif key not in known:
                problems.append(f"{path}: unknown parameter '{where}'{_suggest(key, known)}")
            elif not isinstance(values, list):
                problems.append(f"{path}: '{where}' must be a list of values, got {values!r}")
            elif not values:
                problems.append(f"{path}: '{where}' has an empty value list")
            else:
                for value in values:
                    try:
                        declared.check(None if stem == "shared" else stem, key, value)
                    except declared.ParameterError as exc:
                        problems.append(f"{path}: {where}: {str(exc).split(': ', 1)[-1]}")
                axes[where] = values
    trials_n, seed = data.get("trials"), data.get("seed", 0)
    if search == "random" and (not isinstance(trials_n, int) or isinstance(trials_n, bool) or trials_n < 1):
        problems.append(f"{path}: search 'random' needs 'trials', a positive int, got {trials_n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(f"{path}: seed must be an int >= 0, got {seed!r}")
    compare = data.get("compare")
    if compare is not None:
        matches = [where for where in axes if where == str(compare) or where.endswith(f".{compare}")]
        if len(matches) != 1 or len(axes[matches[0]]) != 2:
            problems.append(
                f"{path}: compare must name one parameter of the grid with exactly two values (the pair compared), "
                f"got {compare!r} (axes: {', '.join(f'{k} {v!r}' for k, v in axes.items()) or 'none'})"
            )
        else:
            compare = matches[0]
    name = str(data.get("name") or path.stem)
    problem = declared.PARAMETERS["profile"].check(name)
    if problem:
        problems.append(f"{path}: name {problem}")
    if problems:
        raise SweepError("invalid sweep:\n  " + "\n  ".join(problems))
    combos = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if search == "random" and trials_n < len(combos):
        picked = sorted(random.Random(seed).sample(range(len(combos)), trials_n))
        combos = [combos[i] for i in picked]
    trials = [Trial(i, combo) for i, combo in enumerate(combos)]
    # every trial's parameters through the runner's own checks (relations too), before any trial starts
    profile_dict = load_profile(profile, project / "params")
    for trial in trials:
        try:
            resolve_parameters(profile_dict, notebooks, trial.overrides())
        except ProfileError as exc:
            problems.append(f"trial {trial.name} {trial.values}: {exc}")
    if problems:
        raise SweepError("invalid sweep:\n  " + "\n  ".join(problems))
    return Sweep(name, Path(profile).stem, trials, only, str(data.get("description", "")), str(path), axes, compare)


def sweep_dir(work: Path, sweep: Sweep) -> Path:
    """``<work>/reports/<profile>/sweeps/<name>/``."""
    return work / "reports" / sweep.profile / "sweeps" / sweep.name


def _record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "trial.json").read_text())
    except (OSError, ValueError):
        return None


def trial_done(folder: Path, trial: Trial) -> dict | None:
    """The trial's record when ``trial.json`` says it finished with the same values, else None."""
    previous = _record(folder)
    if previous and previous.get("status") == "done" and previous.get("values") == trial.values:
        return previous
    return None


def run_trial(sweep: Sweep, trial: Trial, folder: Path, project: Path, log=print) -> dict:
    """Run one trial into ``folder`` (its work folder) unless it is done; returns its ``trial.json`` record."""
    previous = trial_done(folder, trial)
    if previous:
        log(f"{trial.name}: done before, not rerun")
        return previous
    folder.mkdir(parents=True, exist_ok=True)
    record = {"trial": trial.name, "index": trial.index, "values": trial.values, "overrides": trial.overrides()}
    try:
        result = pipeline.run_study(
            profile=sweep.profile,
            only=sweep.only,
            overrides=trial.overrides(),
            project_dir=project,
            work_dir=folder,
            progress=False,
            export_html=False,
            log=lambda text: None,
        )
        seconds = getattr(result, "total_seconds", 0.0)
        record.update(status="done", seconds=round(float(seconds() if callable(seconds) else seconds), 1))
    except Exception as exc:  # a failed trial is recorded and the sweep goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        log(f"{trial.name}: failed: {record['error'].splitlines()[0]}")
    save_json(record, folder / "trial.json")
    return record


def _numbered_trial(label: str, sweep: Sweep, trial: Trial, folder: Path, project: Path, log) -> dict:
    """:func:`run_trial` after a ``[n/N] name values`` line (the executors' task)."""
    log(f"{label} {trial.name} {trial.values}")
    return run_trial(sweep, trial, folder, project, log)


def _lost(trial: Trial, folder: Path, exc: BaseException) -> dict:
    """The record of a trial whose worker or task died before it could write one (written here instead)."""
    record = {
        "trial": trial.name,
        "index": trial.index,
        "values": trial.values,
        "overrides": trial.overrides(),
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_json(record, folder / "trial.json")
    return record


def run_sweep(
    grid: str | Path,
    profile: str = "smoke",
    project_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    log=print,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> Path:
    """Check the grid and the executor, run every trial not yet done, write the table and figure; returns the sweep folder."""
    from . import sweep_report

    runner = make_executor(executor, workers, ray_address)
    project = Path(project_dir).resolve() if project_dir else find_project_root()
    work = Path(work_dir).resolve() if work_dir else project
    sweep = load_sweep(grid, profile, project)
    out = sweep_dir(work, sweep)
    records = {}
    for trial in sweep.trials:
        previous = trial_done(out / trial.name, trial)
        if previous:
            records[trial.index] = previous
            log(f"{trial.name}: done before, not rerun")
    pending = [trial for trial in sweep.trials if trial.index not in records]
    if pending:  # a Ray cluster is reached (or the options refused) before any trial starts
        runner.start(log)
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_json(
            {
                "name": sweep.name,
                "profile": sweep.profile,
                "grid": sweep.source,
                "axes": sweep.axes,
                "compare": sweep.compare,
            },  # fmt: skip
            out / "sweep.json",
        )
        apart = runner.workers_apart  # trials in other processes log with print (a callable may not pickle)
        calls = [
            (f"[{n}/{len(pending)}]", sweep, trial, out / trial.name, project, print if apart else log)
            for n, trial in enumerate(pending, 1)
        ]
        if apart and pending:
            log(f"{len(pending)} trial(s) submitted to the {runner.name} executor")
        for position, result in runner.run(_numbered_trial, calls, log) if pending else ():
            trial = pending[position]
            if isinstance(result, BaseException):
                result = _lost(trial, out / trial.name, result)
                log(f"{trial.name}: failed: {result['error'].splitlines()[0]}")
            records[trial.index] = result
            if apart:
                took = f" in {result['seconds']} s" if "seconds" in result else ""
                log(f"{trial.name}: {result.get('status')}{took}")
    finally:
        runner.close()
    ordered = [records[trial.index] for trial in sweep.trials]
    sweep_report.write_report(out, sweep, ordered)
    failed = [r["trial"] for r in ordered if r.get("status") != "done"]
    log(f"sweep {sweep.name}: {len(ordered) - len(failed)} done, {len(failed)} failed; table in {out}")
    sweep_report.refresh_parent_report(work, sweep.profile, log)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``python -m helpers.sweep``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo", help="profile name in params/ or a YAML path (default: demo)")
    parser.add_argument("--grid", required=True, help="grid file, e.g. params/sweep-demo.yaml")
    parser.add_argument("--work-dir", default=None, help="folder holding reports/ (default: the project root)")
    parser.add_argument(
        "--executor", default="local", help="local (default: this machine) or ray (a Ray task per trial)"
    )
    parser.add_argument(
        "--workers", default="1", help="local executor: trials at once, in worker processes pinned to GPUs (default 1)"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="ray executor: host:port, ray://host:port or auto (default: a local instance)",
    )
    args = parser.parse_args(argv)
    try:
        try:
            workers = int(args.workers)
        except ValueError:
            raise ExecutorError(f"--workers must be an integer >= 1, got {args.workers!r}") from None
        run_sweep(
            args.grid,
            args.profile,
            work_dir=args.work_dir,
            executor=args.executor,
            workers=workers,
            ray_address=args.ray_address,
        )
    except (SweepError, ProfileError, ExecutorError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"sweep interrupted: {exc or 'the running trials stopped'}; finished trials are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
