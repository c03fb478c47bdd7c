"""The study runner: execute the numbered notebooks in order with papermill and a parameter profile.

Usage::

    python -m helpers.runner.pipeline --profile demo
    python -m helpers.runner.pipeline --profile smoke --only 01,03 -p seed=1 -p 03_train_vgg16.epochs=3

Each profile is ``params/<profile>.yaml`` with a ``shared:`` section (keys given to every notebook that
declares them) and one section per notebook, named after its file stem (``01_data:`` ...). Unknown keys,
in the file or on the command line, are rejected before anything runs. Notebooks execute into a staging
folder of its own; the report folder ``reports/<profile>/`` is replaced only when every notebook succeeded.
One run per work folder and profile at a time (``reports/.<profile>.lock``; ``--wait`` queues behind it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.common.config import CACHE_ENV, CACHE_SETTINGS, NOTEBOOK_ENV
from helpers.common.files import atomic_path, find_project_root, save_json
from helpers.runner import kernels
from helpers.runner import parameters as declared_parameters
from helpers.runner.executed_notebooks import clean_outputs, failure_message, reader_notes, show_final_paths
from helpers.runner.profiles import (
    ProfileError,
    available_profiles,
    discover_notebooks,
    effective_parameters,
    load_profile,
    notebook_parameters,
    resolve_parameters,
    select_notebooks,
)
from helpers.runner.runlock import RunLock, RunLocked, describe
from helpers.runner.staging import SWEEPS, carry_sweeps, clean_leftovers, discard, kept, os_text, without_sweeps
from helpers.study import lineage
from helpers.study.files import StudyPaths


class NotebookFailed(RuntimeError):
    """A notebook raised during execution; names the notebook and the cell (``notebook``: the file name)."""

    def __init__(self, message: str, notebook: str | None = None):
        super().__init__(message)
        self.notebook = notebook


class RunError(RuntimeError):
    """The runner itself could not go on (a disk or permission error); says what failed and where."""


class StaleInputs(ProfileError):
    """A partial run would read files whose lineage does not match the report (checked before any kernel starts)."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run; the message says what became of its staging folder and the report."""


@dataclass
class RunResult:
    """What a run executed, how long each notebook took, and where the report is."""

    profile: str
    report_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, dict] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        """Sum of the notebooks' wall times."""
        return float(sum(self.timings.values()))


def _environment(project_dir=None) -> dict:
    from helpers.runner.provenance import environment

    return environment(project_dir or find_project_root())


def run_study(
    profile: str = "demo",
    only: str | None = None,
    overrides: list[str] = (),
    project_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
    export_html: bool = True,
    kernel_name: str | None = None,
    log=print,
    start: str | None = None,
    wait: bool = False,
    wait_timeout: float | None = None,
) -> RunResult:
    """Execute the profile's notebooks in order; replace ``reports/<profile>/`` only when all succeed.

    ``only`` runs the listed notebooks; ``start`` runs one notebook and every later one. A partial run
    updates the existing report and says which later notebooks still show results of an earlier run.
    Every parameter is checked before any kernel starts; then the run takes the lock of its work folder and
    profile (:class:`~helpers.runner.runlock.RunLocked` when another run holds it, unless ``wait``).
    """
    if only and start:
        raise ProfileError("use either --only or --from, not both")
    project = Path(project_dir).resolve() if project_dir else find_project_root()
    work = Path(work_dir).resolve() if work_dir else project
    notebooks = discover_notebooks(project / "notebooks")
    if start:
        first = select_notebooks(notebooks, start, option="--from")
        if len(first) != 1:
            raise ProfileError(f"--from {start!r} must name one notebook")
        selected = [nb for nb in notebooks if nb.name >= first[0].name]
    else:
        selected = select_notebooks(notebooks, only)
    profile_dict = load_profile(profile, project / "params")
    name = Path(profile).stem
    problem = declared_parameters.PARAMETERS["profile"].check(name)
    if problem:
        raise ProfileError(f"profile name {name!r} {problem}")
    parameters = resolve_parameters(profile_dict, notebooks, overrides, run={nb.stem for nb in selected})

    reports = work / "reports"
    if len(selected) < len(notebooks):
        _check_partial_run(StudyPaths(work, name, reports / name), notebooks, selected, parameters)
    lock = RunLock(reports / f".{name}.lock")
    try:
        reports.mkdir(parents=True, exist_ok=True)
        lock.acquire(
            wait=wait, timeout=wait_timeout, on_wait=lambda holder: log(f"waiting for {describe(holder)} to finish ...")
        )
    except OSError as exc:
        raise RunError(f"cannot take the run lock in {reports}: {os_text(exc)}") from exc
    saved = {key: os.environ.get(key) for key in (lineage.RUN_ENV, lineage.NOTEBOOK_ENV, lineage.PARAMETERS_ENV)}
    try:
        return _run_locked(
            name,
            profile_dict,
            notebooks,
            selected,
            parameters,
            work,
            reports,
            progress,
            export_html,
            kernel_name,
            log,
            project,
        )
    finally:
        lock.release()
        for key, value in saved.items():  # the kernels' lineage variables do not outlive the run
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_partial_run(
    paths: StudyPaths, notebooks: list[Path], selected: list[Path], parameters: dict | None = None
) -> None:
    """Refuse a partial run whose notebooks would read files that a stale notebook, or another run, wrote (lineage),
    that changed since they were written, or that were made for other parameters than the run's (``parameters``)."""
    stems = [nb.stem for nb in notebooks]
    chosen = [nb.stem for nb in selected]
    sections = lineage.load_report_lineage(paths.report)["notebooks"]
    problems = dict(lineage.stale_notebooks(paths, stems))
    for stem, section in sections.items():  # data/ holds other outputs than the report shows (e.g. a failed run)
        for key, value in section.get("writes", {}).items():
            if stem not in problems and lineage.current_fingerprint(paths, key) != value:
                problems[stem] = f"{key} now holds the output of another run"
    producers = {key: stem for stem, section in sections.items() for key in section.get("writes", {})}
    for stem in chosen:
        for key in sections.get(stem, {}).get("reads", {}):
            origin = producers.get(key)
            if origin in problems and origin not in chosen and origin != stem:
                first = min(s for s in problems if s not in chosen)
                raise StaleInputs(
                    f"{stem} reads {key}, written by {origin}, whose results do not match data/ "
                    f"({problems[origin]}): its inputs would mix two runs; rerun from {first} "
                    f"(--from {first[:2]}) or add the stale notebooks to --only"
                )
    requested = {}
    if parameters is not None:  # each rerun notebook's values as its kernel will see them, defaults included
        declared = {nb.stem: notebook_parameters(nb) for nb in selected}
        requested = effective_parameters({stem: dict(parameters.get(stem, {})) for stem in declared}, declared)
    problem = lineage.saved_input_problem(paths, chosen, requested)
    if problem:
        raise StaleInputs(problem)


def _run_locked(
    name, profile_dict, notebooks, selected, parameters, work, reports, progress, export_html, kernel_name, log, project
) -> RunResult:
    import papermill as pm

    partial = len(selected) < len(notebooks)
    final = reports / name
    staging = reports / f".{name}.staging-{os.getpid()}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6:06d}"
    failed = reports / f".{name}.failed"
    backup = reports / f".{name}.previous"
    replaced = False
    step = f"cleaning up after earlier runs in {reports}"
    try:
        clean_leftovers(name, reports, final, backup, failed, log)
        if final.exists() and partial:
            step = f"copying the report {final} into the staging folder"
            shutil.copytree(final, staging, ignore=without_sweeps(final))  # a partial run updates the report
        step = f"creating the staging folder {staging}"
        staging.mkdir(parents=True, exist_ok=True)

        # kernels inherit the environment: quiet TensorFlow, plain-text progress bars in the saved notebooks
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("STUDY_PLAIN_PROGRESS", "1")
        os.environ.setdefault("TQDM_MININTERVAL", "2")
        # one persistent JAX compilation cache per work folder: every kernel and every rerun reuses compilations
        os.environ.setdefault(CACHE_ENV, str(work / "data" / "cache" / "jax"))
        for key, value in CACHE_SETTINGS.items():
            os.environ.setdefault(key, value)
        result = RunResult(profile=name, report_dir=final)
        run_id = lineage.new_run_id()
        os.environ[lineage.RUN_ENV] = run_id
        log(f"profile {name} ({profile_dict['_path']}): {len(selected)} notebook(s), writing to {final}")
        started = time.perf_counter()
        for position, nb in enumerate(selected, start=1):
            params = dict(parameters[nb.stem])
            declared = notebook_parameters(nb)
            runner_values = {"profile": name, "work_dir": str(work), "report_dir": str(staging)}
            params.update({k: v for k, v in runner_values.items() if k in declared})
            effective = effective_parameters({nb.stem: params}, {nb.stem: declared})[nb.stem]
            # run.json: every value the notebook ran with (its defaults too), with the report's final folder
            result.parameters[nb.stem] = {**effective, **({"report_dir": str(final)} if "report_dir" in params else {})}
            log(f"[{position}/{len(selected)}] {nb.stem} ...")
            os.environ[NOTEBOOK_ENV] = nb.stem  # the kernel's compile log names its notebook
            step = f"executing {nb.name} into {staging}"
            lineage.start_notebook(staging, nb.stem, run_id)
            os.environ[lineage.NOTEBOOK_ENV] = nb.stem
            recorded = {k: v for k, v in effective.items() if k not in ("work_dir", "report_dir")}
            os.environ[lineage.PARAMETERS_ENV] = json.dumps(recorded, default=str)  # every value, defaults too
            t0 = time.perf_counter()
            try:
                pm.execute_notebook(
                    str(nb),
                    str(staging / nb.name),
                    parameters=params,
                    cwd=str(nb.parent),
                    progress_bar=progress,
                    kernel_name=kernel_name,
                    kernel_manager_class=kernels.kernel_manager_class(),
                )
            except OSError:
                raise  # the runner's own disk error, not the notebook's
            except Exception as exc:  # papermill raises PapermillExecutionError with the cell
                if kernels.signal_received is not None:
                    raise KeyboardInterrupt from None  # the kernel died of the same signal
                _keep_failed(nb, exc, staging, failed, final, log)
            clean_outputs(staging / nb.name)
            show_final_paths(staging / nb.name, staging, final)
            for note in reader_notes(staging / nb.name):  # what the notebook says to its reader, on the console too
                log(f"  {nb.stem}: {note}")
            result.timings[nb.stem] = time.perf_counter() - t0
            log(f"[{position}/{len(selected)}] {nb.stem} done in {result.timings[nb.stem]:.1f} s")

        # notebooks of the report (copied from it) whose inputs the rerun ones rewrote: from their lineage
        staged = StudyPaths(work, name, staging)
        stale = lineage.stale_notebooks(staged, [nb.stem for nb in notebooks], rerun=[nb.stem for nb in selected])
        step = f"writing {staging / 'run.json'}"
        _write_run_info(staging, final, name, result, partial, sorted(stale), run_id)
        stale = json.loads((staging / "run.json").read_text())["stale"]
        step = f"comparing the run with the published runs in {staging}"
        compared = _compare_with_reference(staging, name, project, stale)
        step = f"quoting the sweeps of {final / SWEEPS} in {staging}"
        from helpers.runner.sweep_report import quote_sweeps

        quote_sweeps(staging, final / SWEEPS)  # sweeps.md: the sweeps move into the new report at the swap
        dropped = [] if export_html else _drop_stale_html(staging, [nb.stem for nb in selected])
        if export_html:
            from helpers.report.html import export_report

            step = f"exporting the HTML report into {staging}"
            export_report(staging, log=lambda *a: None, stale=stale)

        step = f"replacing the report {final}"
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:  # the renames are not interrupted half-way
            carried = final.exists() and carry_sweeps(final, staging)  # the sweeps are not the run's: they stay
            try:
                if final.exists():
                    final.rename(backup)
                try:
                    staging.rename(final)
                except OSError:
                    if backup.exists() and not final.exists():
                        backup.rename(final)
                    raise
            except OSError:
                if carried:
                    carry_sweeps(staging, final)
                raise
            replaced = True
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        shutil.rmtree(backup, ignore_errors=True)
    except NotebookFailed:
        raise
    except KeyboardInterrupt:
        if replaced:
            raise RunInterrupted(f"interrupted after the run finished: the report {final} is complete") from None
        raise RunInterrupted(
            f"interrupted: {discard(staging)}; {kept(final)}; files under data/ that finished "
            "notebooks rewrote (split, cached images, models) are complete but may come from this run"
        ) from None
    except OSError as exc:
        raise RunError(f"{step} failed: {os_text(exc)}; {discard(staging)}; {kept(final)}") from exc
    log(
        f"done in {time.perf_counter() - started:.1f} s; report: {final}"
        + (f" (open {final / 'index.html'})" if (final / "index.html").is_file() else "")
    )
    if stale:
        log(
            f"note: {', '.join(stale)} read what the rerun notebooks wrote and were not rerun, so their figures and "
            f"metrics in the report come from an earlier run; rerun them with --from {min(stale)[:2]}"
        )
    if dropped:
        log(
            f"note: --no-html: removed the earlier run's {', '.join(dropped)}, which no longer matched the report; "
            "run again without --no-html to export the pages"
        )
    if compared is not None:
        log(compared["line"] + (f" (see {final / REFERENCE_PAGE})" if compared["applies"] else ""))
    return result


def _drop_stale_html(staging: Path, rerun: list[str]) -> list[str]:
    """Remove ``index.html`` and the HTML pages of the rerun notebooks, copied from an earlier run; return their names."""
    names = ["index.html", *(f"{stem}.html" for stem in rerun)]
    dropped = [name for name in names if (staging / name).is_file()]
    for name in dropped:
        (staging / name).unlink()
    return dropped


#: The runner's page comparing a run with the published runs of its profile (:mod:`helpers.report.reference`).
REFERENCE_PAGE = "reference.md"


def _compare_with_reference(staging: Path, name: str, project: Path, stale: list[str]) -> dict | None:
    """Write ``reference.md`` and ``reference.json`` into the staged report; None when it holds no current summary."""
    from helpers.report import reference

    summary_path = staging / "metrics" / "summary.json"
    if not summary_path.is_file() or "07_aopc" in stale:
        for leftover in (REFERENCE_PAGE, "reference.json"):
            (staging / leftover).unlink(missing_ok=True)  # a partial run must not keep an earlier comparison
        return None
    run = json.loads((staging / "run.json").read_text())
    summary = json.loads(summary_path.read_text())
    try:
        published = reference.load_reference(name, project)
    except ValueError as exc:
        published, note = None, str(exc)
    else:
        note = None
    compared = reference.compare(summary, run["parameters"], run["environment"].get("keras_backend"), published, name)
    if note:
        compared = {**compared, "line": note, "reason": note}
    save_json(compared, staging / "reference.json")
    with atomic_path(staging / REFERENCE_PAGE) as tmp:
        tmp.write_text(reference.comparison_markdown(compared))
    return compared


def _write_run_info(
    staging: Path, final: Path, name: str, result: RunResult, partial: bool, stale: list[str], run_id: str
):
    sections = lineage.load_report_lineage(staging)["notebooks"]
    run_info = {
        "profile": name,
        "run_id": run_id,
        "runs": {stem: run_id for stem in result.timings},
        "report_dir": str(final),
        "notebooks": list(result.timings),
        "seconds": {k: round(v, 2) for k, v in result.timings.items()},
        "parameters": result.parameters,
        "environment": _environment(),
    }
    if partial and (staging / "run.json").is_file():
        previous = json.loads((staging / "run.json").read_text())
        run_info["seconds"] = {**previous.get("seconds", {}), **run_info["seconds"]}
        run_info["parameters"] = {**previous.get("parameters", {}), **run_info["parameters"]}
        run_info["notebooks"] = sorted(run_info["seconds"])
        run_info["runs"] = {**previous.get("runs", {}), **{stem: run_id for stem in result.timings}}
        # notebooks without lineage (older reports) stay stale until rerun; the others are judged by lineage
        judged = {stem for stem, section in sections.items() if lineage.tracked(section)}
        stale_before = set(previous.get("stale", [])) - set(result.timings) - judged
        stale = sorted(stale_before | set(stale))
    run_info["total_seconds"] = round(sum(run_info["seconds"].values()), 2)
    run_info["stale"] = stale
    save_json(run_info, staging / "run.json")


def _keep_failed(nb: Path, exc: Exception, staging: Path, failed: Path, final: Path, log):
    """Set a failed run's staging folder aside as ``.<profile>.failed`` and raise :class:`NotebookFailed`."""
    message = failure_message(nb, exc)
    try:
        if (staging / nb.name).is_file():
            clean_outputs(staging / nb.name)
        staging.rename(failed)
        where = f"the partial run is in {failed / nb.name}"
    except OSError as os_exc:
        where = f"the partial run could not be kept ({os_text(os_exc)}); {discard(staging)}"
    log(f"FAILED: {message}")
    log(f"{where}; {kept(final)}")
    raise NotebookFailed(message, nb.name) from exc


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``python -m helpers.runner.pipeline``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.runner.pipeline", description=__doc__.split("\n\n")[0])
    project = find_project_root(checkout=True)  # run from elsewhere: the checkout this package is installed from
    try:
        names = ", ".join(available_profiles(project / "params"))
    except (FileNotFoundError, OSError):  # outside the project: the error of run_study says more
        names = ""
    parser.add_argument(
        "--profile",
        default="demo",
        help="profile name in params/ or a YAML path (default: demo)" + (f"; profiles: {names}" if names else ""),
    )
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers or stems, e.g. 01,03")
    parser.add_argument(
        "--from", dest="start", default=None, metavar="NN", help="run this notebook and every later one, e.g. --from 03"
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter: key=value (every notebook declaring it), or NN.key=value / NN_notebook.key=value "
        "(one notebook), e.g. -p epochs=3 -p 07.region_size=24",
    )
    parser.add_argument("--work-dir", default=None, help="folder for data/ and reports/ (default: the project root)")
    parser.add_argument("--no-progress", action="store_true", help="hide the per-cell progress bar")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML export of the executed notebooks")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="when another run of this profile uses the work folder, wait for it instead of stopping",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --wait: give up after this many seconds (default: wait as long as it takes)",
    )
    args = parser.parse_args(argv)
    if project != find_project_root():
        print(f"study folder {project} (this package's checkout; the working folder is not in a study folder)")
    # a terminated run unwinds like Ctrl-C, so papermill shuts its kernel down and the report stays as it was
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_study(
            profile=args.profile,
            only=args.only,
            start=args.start,
            overrides=args.param,
            project_dir=project,
            work_dir=args.work_dir,
            progress=not args.no_progress and sys.stderr.isatty(),
            export_html=not args.no_html,
            wait=args.wait,
            wait_timeout=args.wait_timeout,
        )
    except (ProfileError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunLocked as exc:
        hint = "" if args.wait else "; wait for it to finish, or pass --wait to queue behind it"
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 2
    except NotebookFailed as exc:
        # the FAILED line above gives the cell, the line and the error
        print(
            f"error: notebook {exc.notebook} failed (see FAILED above)" if exc.notebook else f"error: {exc}",
            file=sys.stderr,
        )
        return 1
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {os_text(exc)}", file=sys.stderr)
        return 1
    except RunInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before any notebook started: nothing was changed", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _on_signal(signum, frame):
    kernels.mark_interrupted(signum)
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
