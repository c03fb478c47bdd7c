"""Sweeps over notebook parameters: every trial a runner call in its own folder, resumable, one table and figure.

::

    python -m helpers.runner.sweep --profile smoke --grid params/sweep-demo.yaml

The grid file (YAML) names notebook sections (``shared``, ``03_train_vgg16`` or ``03`` ...) and a list of values per
parameter; ``search: grid`` runs every combination, ``search: random`` draws ``trials`` of them with ``seed``.
``notebooks`` (optional) limits the notebooks each trial runs (default: all). ``compare`` (optional) names a parameter
of the grid with two values, e.g. ``input_mask``: the report then compares each pair of trials that differ only in it,
per model with paired intervals (:func:`helpers.report.comparison.compare_runs`). Every value is checked against the
runner's declarations (:mod:`helpers.runner.profiles`, :mod:`helpers.runner.parameters`) before any trial starts.

Trial ``tNN-<hash>`` runs :func:`helpers.runner.pipeline.run_study` with its values as overrides and the work folder
``reports/<profile>/sweeps/<name>/<trial>/`` (its data and its report ``reports/<profile>/`` inside). A trial whose
``trial.json`` says ``done`` with the same values is never rerun; a failed one is recorded with its error and the
sweep goes on. The table and figure: :mod:`helpers.runner.sweep_report`.

Trials run through an executor (:mod:`helpers.runner.executors`): ``--executor local`` (default; ``--workers N`` runs N
at once, pinned to GPUs) or ``--executor ray [--ray-address ADDR]``. Whatever runs a trial writes the same trial
folder and ``trial.json``; the executor is started (a Ray cluster reached) before any trial. When the sweep ends it
refreshes the parent report ``reports/<profile>/`` (its ``sweeps.md`` and ``index.html``) under the runner's lock.

One sweep of a name per work folder and profile at a time: it holds ``reports/.<profile>.sweep-<name>.lock`` while
its trials run (a second one stops and names the first, or queues behind it with ``--wait``). The command exits 0
only when every trial is done; 1 when any failed (its last line says how many, and where their errors are) or the
work folder cannot be written; 2 for a grid, profile or option it refuses before any trial; 130 when SIGINT or
SIGTERM stopped it (the running trial's runner removes its staging folder and shuts its kernel down).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers.common.files import find_project_root, save_json
from helpers.common.text import did_you_mean
from helpers.runner import parameters as declared
from helpers.runner import pipeline
from helpers.runner.executors import ExecutorError, interrupt_on_signal, make_executor
from helpers.runner.profiles import (
    RUNNER_KEYS,
    ProfileError,
    discover_notebooks,
    load_profile,
    resolve_parameters,
    section_for,
)
from helpers.runner.runlock import RunLock, RunLocked, describe
from helpers.runner.staging import os_text

__all__ = [
    "SweepError",
    "SweepRunError",
    "SweepInterrupted",
    "Sweep",
    "Trial",
    "load_sweep",
    "run_sweep",
    "failed_trials",
    "main",
]

GRID_KEYS = ("name", "description", "search", "trials", "seed", "notebooks", "parameters", "compare")
SEARCHES = ("grid", "random")


class SweepError(ValueError):
    """A grid file the sweep cannot run (the message names every problem)."""


class SweepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a trial; the message names it and says what its runner left."""


class SweepRunError(RuntimeError):
    """The sweep itself could not go on (a disk or permission error in the work folder); says what failed and where."""


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
    """Read and check a grid file against ``profile``: every problem is listed in one :class:`SweepError`.

    The values each trial would run with go through the runner's checks (relations such as a region size larger than
    the image too) even when the file has other problems, so one pass names them all.
    """
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
            problems.append(f"{path}: unknown key '{key}'{did_you_mean(key, GRID_KEYS)} (keys: {', '.join(GRID_KEYS)})")
    search = data.get("search", "grid")
    if search not in SEARCHES:
        problems.append(
            f"{path}: search must be one of {SEARCHES}, got {search!r}{did_you_mean(str(search), SEARCHES)}"
        )
    only = data.get("notebooks")
    if only is not None:
        listed = [str(n).strip() for n in only] if isinstance(only, list) else str(only).split(",")
        only = ",".join(part.strip() for part in listed)
        chosen = []
        for part in (part.strip() for part in listed):
            stem = section_for(part, stems)
            if stem is None:
                problems.append(f"{path}: notebooks: no notebook named '{part}'{did_you_mean(part, stems)}")
            else:
                chosen.append(stem)
        if chosen and min(chosen) != stems[0]:
            problems.append(
                f"{path}: notebooks: {listed} does not start at '{stems[0][:2]}': every trial runs in a work folder of "
                f"its own, where {min(chosen)} would find nothing of what {stems[0]} writes; list '{stems[0][:2]}' first"
            )
    axes, checked, given_in = {}, {}, {}
    sections = data.get("parameters")
    if not isinstance(sections, dict) or not sections:
        problems.append(f"{path}: 'parameters' must map notebook sections to {{parameter: [values]}}")
        sections = {}
    for section, keys in sections.items():
        stem = "shared" if section == "shared" else section_for(str(section), stems)
        if stem is None:
            problems.append(f"{path}: section '{section}' names no notebook{did_you_mean(str(section), stems)}")
            continue
        if not isinstance(keys, dict):
            problems.append(f"{path}: section '{section}' must map parameters to value lists")
            continue
        known = all_names if stem == "shared" else names[stem]
        for key, values in keys.items():
            where = f"{stem}.{key}"
            if key in RUNNER_KEYS:
                problems.append(f"{path}: '{where}' is set by the runner, not by a sweep")
            elif key not in known:
                problems.append(f"{path}: unknown parameter '{where}'{did_you_mean(key, known)}")
            elif where in given_in:
                problems.append(
                    f"{path}: '{where}' is given twice (in sections '{_typed(given_in[where])}' and "
                    f"'{_typed(section)}'): list its values once"
                )
            elif not isinstance(values, list):
                problems.append(f"{path}: '{where}' must be a list of values, got {values!r}")
            elif not values:
                problems.append(f"{path}: '{where}' has an empty value list")
            else:
                given_in[where] = section
                good = []
                for value in values:
                    try:
                        declared.check(None if stem == "shared" else stem, key, value)
                    except declared.ParameterError as exc:
                        problems.append(f"{path}: {where}: {str(exc).split(': ', 1)[-1]}")
                    else:
                        if not any(_same(value, other) for other in good):
                            good.append(value)
                repeated = _repeated(values)
                if repeated:
                    problems.append(
                        f"{path}: '{where}' lists {', '.join(map(repr, repeated))} more than once (each copy would "
                        "run the same trials again): list every value once"
                    )
                axes[where] = values
                if good:
                    checked[where] = good
    trials_n, seed = data.get("trials"), data.get("seed", 0)
    random_ok = isinstance(trials_n, int) and not isinstance(trials_n, bool) and trials_n >= 1
    if search == "random" and not random_ok:
        problems.append(f"{path}: search 'random' needs 'trials', a positive int, got {trials_n!r}")
    seed_ok = isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0
    if not seed_ok:
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
    # the trials: every combination of the values that passed (a random draw of them once the file is valid)
    combos = [dict(zip(checked, combo)) for combo in itertools.product(*checked.values())]
    if search == "random" and random_ok and seed_ok and trials_n < len(combos):
        picked = sorted(random.Random(seed).sample(range(len(combos)), trials_n))
        combos = [combos[i] for i in picked]
    trials = [Trial(i, combo) for i, combo in enumerate(combos)]
    # every trial's parameters through the runner's own checks (relations too), before any trial starts
    try:
        profile_dict = load_profile(profile, project / "params")
    except ProfileError as exc:
        problems.append(f"--profile {profile}: {exc}")
    else:
        problems += _trial_problems(profile_dict, notebooks, trials)
    if problems:
        raise SweepError("invalid sweep:\n  " + "\n  ".join(problems))
    return Sweep(name, Path(profile).stem, trials, only, str(data.get("description", "")), str(path), axes, compare)


def _typed(section) -> str:
    """A section name as the grid file spells it (YAML reads ``03:`` as the number 3)."""
    return f"{section:02d}" if isinstance(section, int) else str(section)


def _same(a, b) -> bool:
    """Whether two grid values are the same value (``2`` and ``2.0`` are; ``1`` and ``True`` are not)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _repeated(values: list) -> list:
    """The values a list holds more than once (each named once, in order)."""
    out = []
    for i, value in enumerate(values):
        if any(_same(value, other) for other in values[:i]) and not any(_same(value, o) for o in out):
            out.append(value)
    return out


def _label(where: str) -> str:
    """A grid axis as ``-p`` takes it: ``seed`` for ``shared.seed``, ``07_aopc.region_size`` otherwise."""
    return where.split(".", 1)[1] if where.startswith("shared.") else where


def _trial_problems(profile_dict: dict, notebooks: list[Path], trials: list[Trial]) -> list[str]:
    """The runner's problems with the trials' values: each once, with the values of the trials it concerns."""
    found: dict[str, list[Trial]] = {}
    for trial in trials:
        try:
            resolve_parameters(profile_dict, notebooks, trial.overrides())
        except ProfileError as exc:
            lines = str(exc).splitlines()
            body = [line.strip() for line in lines[1:]] if len(lines) > 1 else lines
            for line in body:
                found.setdefault(line, []).append(trial)
    return [f"{line} ({_which(failing, trials)})" for line, failing in found.items()]


def _which(failing: list[Trial], trials: list[Trial]) -> str:
    """``every trial``, ``trials with key=value`` (what the failing ones share), or the first few trials' values."""
    if len(failing) == len(trials):
        return "every trial" if len(trials) > 1 else "the trial"
    shared = [
        (where, value)
        for where, value in failing[0].values.items()
        if all(_same(t.values.get(where), value) for t in failing)
        and not all(_same(t.values.get(where), value) for t in trials)
    ]
    if shared:
        return "trials with " + ", ".join(f"{_label(where)}={value!r}" for where, value in shared)
    shown = "; ".join(", ".join(f"{_label(k)}={v!r}" for k, v in t.values.items()) for t in failing[:3])
    return f"trials with {shown}" + (f" and {len(failing) - 3} more" if len(failing) > 3 else "")


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
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM: not a failure; the trial runs again next time
        said = str(exc).removeprefix("interrupted: ")
        raise SweepInterrupted(f"in trial {trial.name}" + (f": {said}" if said else "")) from None
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


def lock_path(work: Path, sweep: Sweep) -> Path:
    """The sweep's lock: ``<work>/reports/.<profile>.sweep-<name>.lock`` (beside the runner's, never moved by a run)."""
    return work / "reports" / f".{sweep.profile}.sweep-{sweep.name}.lock"


def run_sweep(
    grid: str | Path,
    profile: str = "smoke",
    project_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    log=print,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    wait: bool = False,
    wait_timeout: float | None = None,
) -> Path:
    """Check the grid and the executor, run every trial not yet done, write the table and figure; returns the sweep folder.

    One sweep of a name per work folder and profile at a time: :class:`~helpers.runner.runlock.RunLocked` names the one
    running (unless ``wait``). A failed trial is recorded and the others go on (see :func:`failed_trials`).
    """
    return _run_sweep(grid, profile, project_dir, work_dir, log, executor, workers, ray_address, wait, wait_timeout)[0]


def failed_trials(records: list[dict]) -> list[dict]:
    """The records of the trials that did not finish."""
    return [record for record in records if record.get("status") != "done"]


def _pending(sweep: Sweep, out: Path, records: dict, log) -> list[Trial]:
    """The trials not done yet; the done ones' records go into ``records`` (logged once each)."""
    for trial in sweep.trials:
        if trial.index in records:
            continue
        previous = trial_done(out / trial.name, trial)
        if previous:
            records[trial.index] = previous
            log(f"{trial.name}: done before, not rerun")
    return [trial for trial in sweep.trials if trial.index not in records]


def _run_sweep(
    grid, profile, project_dir, work_dir, log, executor, workers, ray_address, wait, wait_timeout
) -> tuple[Path, list[dict]]:
    """:func:`run_sweep`, returning the trials' records too."""
    from helpers.runner import sweep_report

    runner = make_executor(executor, workers, ray_address)
    project = Path(project_dir).resolve() if project_dir else find_project_root()
    work = Path(work_dir).resolve() if work_dir else project
    sweep = load_sweep(grid, profile, project)
    out = sweep_dir(work, sweep)
    records = {}
    started = False
    if _pending(sweep, out, records, log):  # a Ray cluster is reached (or refused) before anything is written
        runner.start(log)
        started = True
    try:
        lock = RunLock(lock_path(work, sweep), what=f"the sweep {sweep.name} of profile {sweep.profile} in this folder")
        try:
            lock.path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(
                wait=wait,
                timeout=wait_timeout,
                on_wait=lambda holder: log(f"waiting for {describe(holder)} to finish ..."),
            )
        except OSError as exc:
            raise SweepRunError(f"cannot take the sweep lock in {lock.path.parent}: {os_text(exc)}") from exc
        try:
            pending = _pending(sweep, out, records, log)  # a sweep we waited for may have finished some
            if pending and not started:
                runner.start(log)
            _run_pending(sweep, runner, pending, out, project, records, log)
            ordered = [records[trial.index] for trial in sweep.trials]
            sweep_report.write_report(out, sweep, ordered)
        finally:
            lock.release()
    finally:
        runner.close()
    sweep_report.refresh_parent_report(work, sweep.profile, log)
    failed = failed_trials(ordered)
    log(f"sweep {sweep.name}: {len(ordered) - len(failed)} done, {len(failed)} failed; table in {out}")
    return out, ordered


def _run_pending(sweep: Sweep, runner, pending: list[Trial], out: Path, project: Path, records: dict, log) -> None:
    """Run the pending trials through the executor; each record goes into ``records`` as its trial ends."""
    out.mkdir(parents=True, exist_ok=True)
    save_json(
        {
            "name": sweep.name,
            "profile": sweep.profile,
            "grid": sweep.source,
            "axes": sweep.axes,
            "compare": sweep.compare,
        },
        out / "sweep.json",
    )
    if not pending:
        return
    apart = runner.workers_apart  # trials in other processes log with print (a callable may not pickle)
    calls = [
        (f"[{n}/{len(pending)}]", sweep, trial, out / trial.name, project, print if apart else log)
        for n, trial in enumerate(pending, 1)
    ]
    if apart:
        log(f"{len(pending)} trial(s) submitted to the {runner.name} executor")
    for position, result in runner.run(_numbered_trial, calls, log):
        trial = pending[position]
        if isinstance(result, BaseException):
            result = _lost(trial, out / trial.name, result)
            log(f"{trial.name}: failed: {result['error'].splitlines()[0]}")
        records[trial.index] = result
        if apart:
            took = f" in {result['seconds']} s" if "seconds" in result else ""
            log(f"{trial.name}: {result.get('status')}{took}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``python -m helpers.runner.sweep``: 0 when every trial is done, 1 when any failed."""
    parser = argparse.ArgumentParser(prog="python -m helpers.runner.sweep", description=__doc__.split("\n\n")[0])
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
    parser.add_argument(
        "--wait",
        action="store_true",
        help="when the same sweep already runs in this work folder, wait for it instead of stopping",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --wait: give up after this many seconds (default: wait as long as it takes)",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the running trial's runner removes its staging folder and shuts its kernel down
    previous = {sig: signal.signal(sig, interrupt_on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            workers = int(args.workers)
        except ValueError:
            raise ExecutorError(f"--workers must be an integer >= 1, got {args.workers!r}") from None
        out, records = _run_sweep(
            args.grid,
            args.profile,
            None,
            args.work_dir,
            print,
            args.executor,
            workers,
            args.ray_address,
            args.wait,
            args.wait_timeout,
        )
    except (SweepError, ProfileError, ExecutorError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunLocked as exc:
        hint = "" if args.wait else "; wait for it to finish, or pass --wait to queue behind it"
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    except SweepRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {os_text(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        said = f" {exc}" if isinstance(exc, SweepInterrupted) else ""
        print(
            f"sweep interrupted{said}; finished trials are kept, and the same command resumes with the others",
            file=sys.stderr,
        )
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = failed_trials(records)
    if failed:
        names = ", ".join(record["trial"] for record in failed[:3]) + (" ..." if len(failed) > 3 else "")
        print(
            f"error: {len(failed)} of {len(records)} trials failed ({names}): their errors are in {out / 'results.md'} "
            "and each trial's trial.json; the same command tries them again",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
