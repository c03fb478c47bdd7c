"""Lineage of the study's files: which notebook, run, parameters and inputs made each one (like ``dvc.lock``).

Every file a notebook writes through :mod:`helpers.study` gets a side file ``<file>.lineage.json``::

    {"artifact": "data/models/demo/vgg16.keras", "producer": "03_train_vgg16", "run_id": "...",
     "fingerprint": "<sha256 of the file>", "parameters": {...}, "parameters_fingerprint": "...",
     "inputs": {"data/processed/demo/split.csv": "<its fingerprint when it was read>"}}

The inputs of a file are the files its notebook read before writing it (:func:`note_read`). The report folder
holds ``lineage.json``: per notebook the run that produced its part of the report, and the fingerprints of what it
read and wrote. A read is refused (:class:`LineageError`, naming the notebook to rerun) when the file's inputs have
changed since it was made, when it has no lineage, or when the report being built shows its producing notebook with
other outputs (data/ holds files of another run, e.g. a failed one). The runner computes stale notebooks from the
same records (:func:`stale_notebooks`).

The runner tells each kernel its notebook, run and parameters in :data:`NOTEBOOK_ENV`, :data:`RUN_ENV` and
:data:`PARAMETERS_ENV`; outside the runner the run is ``interactive-<time>-<pid>`` and the producer is the notebook
that normally writes the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ._core import load_json, save_json

__all__ = [
    "LineageError",
    "RUN_ENV",
    "NOTEBOOK_ENV",
    "PARAMETERS_ENV",
    "REPORT_FILE",
    "new_run_id",
    "run_id",
    "current_notebook",
    "current_parameters",
    "file_digest",
    "fingerprint",
    "side_file",
    "reset_reads",
    "record_write",
    "note_read",
    "note_report_write",
    "check_input",
    "current_fingerprint",
    "load_report_lineage",
    "start_notebook",
    "stale_notebooks",
    "tracked",
]

RUN_ENV, NOTEBOOK_ENV, PARAMETERS_ENV = "STUDY_RUN_ID", "STUDY_NOTEBOOK", "STUDY_PARAMETERS"
#: The report's lineage file (per notebook: run id, reads, writes).
REPORT_FILE = "lineage.json"
SIDE_SUFFIX = ".lineage.json"
_INTERACTIVE_RUN = f"interactive-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
#: Files read so far by this process (this notebook's kernel): key -> fingerprint.
_READS: dict[str, str] = {}


class LineageError(RuntimeError):
    """A file's lineage does not match what the current parameters and inputs imply; the message names what to rerun."""


def new_run_id() -> str:
    """A fresh run id: start time and process id."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


def run_id() -> str:
    """The id of the run this process belongs to (the runner's, else one per interactive session)."""
    return os.environ.get(RUN_ENV) or _INTERACTIVE_RUN


def current_notebook() -> str | None:
    """The stem of the notebook the runner is executing in this process, or None outside the runner."""
    return os.environ.get(NOTEBOOK_ENV) or None


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(value) -> str:
    """SHA-256 (first 16 hex digits) of a JSON-serializable value in canonical form."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def side_file(path: str | os.PathLike) -> Path:
    """The lineage side file of a data file: ``<file>.lineage.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDE_SUFFIX)


def _key(paths, path) -> str:
    """A file's name in lineage records: relative to the work folder, or ``report:<relative>`` inside the report."""
    path = Path(path).resolve()
    for prefix, base in (("report:", Path(paths.report).resolve()), ("", Path(paths.root).resolve())):
        if path.is_relative_to(base):
            return prefix + path.relative_to(base).as_posix()
    return str(path)


def current_parameters() -> dict | None:
    """The parameters the runner gave this notebook, or None outside the runner."""
    text = os.environ.get(PARAMETERS_ENV)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def reset_reads() -> None:
    """Forget the reads of this process (a notebook starts: :func:`helpers.study.study_paths`)."""
    _READS.clear()


# ----------------------------------------------------------------------------------------------------
# The report's lineage.json
# ----------------------------------------------------------------------------------------------------


def load_report_lineage(report: str | os.PathLike) -> dict:
    """The report folder's ``lineage.json`` (``{"notebooks": {stem: {"run_id", "reads", "writes"}}}``), empty when absent."""
    path = Path(report) / REPORT_FILE
    if not path.is_file():
        return {"notebooks": {}}
    data = load_json(path)
    data.setdefault("notebooks", {})
    return data


def start_notebook(report: str | os.PathLike, notebook: str, run: str) -> None:
    """Reset a notebook's section of the report's lineage before it runs (the runner calls this)."""
    data = load_report_lineage(report)
    data["notebooks"][notebook] = {"run_id": run, "reads": {}, "writes": {}}
    save_json(data, Path(report) / REPORT_FILE)


def _note(paths, kind: str, key: str, value: str, producer: str | None) -> None:
    notebook = current_notebook() or (producer if kind == "writes" else None)
    if notebook is None or not Path(paths.report).is_dir():
        return
    data = load_report_lineage(paths.report)
    section = data["notebooks"].setdefault(notebook, {"run_id": run_id(), "reads": {}, "writes": {}})
    if section.get("run_id") != run_id():  # an interactive rerun of this notebook replaces its section
        section.update(run_id=run_id(), reads={}, writes={})
    section[kind][key] = value
    save_json(data, Path(paths.report) / REPORT_FILE)


def note_report_write(paths, path, producer: str) -> None:
    """Record a report file (metrics JSON, summary) written by ``producer`` in the report's lineage."""
    _note(paths, "writes", _key(paths, path), file_digest(path), producer)


def note_read(paths, path, value: str | None = None, producer: str | None = None) -> None:
    """Record that this notebook read ``path`` (fingerprint ``value``, default its digest)."""
    key = _key(paths, path)
    value = value if value is not None else file_digest(path)
    _READS[key] = value
    _note(paths, "reads", key, value, producer)


# ----------------------------------------------------------------------------------------------------
# Side files of data files
# ----------------------------------------------------------------------------------------------------


def record_write(paths, path, producer: str, parameters: dict | None = None, value: str | None = None, **extra) -> dict:
    """Write ``<path>.lineage.json``: producer, run, parameters, fingerprint, and the inputs read so far."""
    params = parameters if parameters is not None else current_parameters()
    key = _key(paths, path)
    record = {
        "artifact": key,
        "producer": current_notebook() or producer,
        "run_id": run_id(),
        "fingerprint": value if value is not None else file_digest(path),
        "parameters": params,
        "parameters_fingerprint": fingerprint(params),
        "inputs": {k: v for k, v in sorted(_READS.items()) if k != key},  # a file is not its own input
        **extra,
    }
    save_json(record, side_file(path))
    _note(paths, "writes", record["artifact"], record["fingerprint"], record["producer"])
    return record


def current_fingerprint(paths, key: str) -> str | None:
    """The fingerprint a file has now: its side file's, a report file's digest, None when it is gone."""
    path = Path(paths.report) / key[len("report:") :] if key.startswith("report:") else Path(paths.root) / key
    if side_file(path).is_file():
        try:
            return load_json(side_file(path)).get("fingerprint")
        except (OSError, ValueError):
            return None
    return file_digest(path) if path.is_file() else None


def _rerun_hint(producer: str) -> str:
    number = producer[:2] if producer[:2].isdigit() else producer
    return f"rerun {producer} and the notebooks after it (python -m helpers.pipeline --from {number})"


def check_input(paths, path, producer: str, expect: dict | None = None) -> dict:
    """Read ``path``'s lineage and refuse it (:class:`LineageError`) unless it matches; record the read; return the record.

    Refused when: it has no lineage; a file it was made from has changed since; a parameter in ``expect``
    differs from the one it was made with; or the report being built shows its producer with other outputs.
    """
    path = Path(path)
    side = side_file(path)
    if not side.is_file():
        raise LineageError(
            f"{path} has no lineage record ({side.name}): it was written by an older version or an interrupted "
            f"run, so what made it is unknown; {_rerun_hint(producer)}"
        )
    try:
        record = load_json(side)
    except ValueError:
        raise LineageError(
            f"{side} is not readable JSON, so what made {path.name} is unknown; {_rerun_hint(producer)}"
        ) from None
    producer = record.get("producer") or producer
    for key, value in record.get("inputs", {}).items():
        now = current_fingerprint(paths, key)
        if now != value:
            what = "is gone" if now is None else "has changed since (rewritten by a later run)"
            raise LineageError(f"{path.name} was made by {producer} from {key}, which {what}; {_rerun_hint(producer)}")
    for name, wanted in (expect or {}).items():
        made = (record.get("parameters") or {}).get(name, wanted)
        if made != wanted:
            raise LineageError(
                f"{path.name} was made by {producer} with {name}={made!r}, but this notebook has {name}={wanted!r}; "
                f"{_rerun_hint(producer)} with the same {name}"
            )
    section = load_report_lineage(paths.report)["notebooks"].get(producer)
    if section is not None and current_notebook() != producer:
        shown = section.get("writes", {}).get(record["artifact"])
        if (shown is not None and shown != record["fingerprint"]) or (
            shown is None and section.get("run_id") != record.get("run_id")
        ):
            raise LineageError(
                f"{path.name} was written by run {record.get('run_id')} of {producer}, but the report in "
                f"{paths.report} shows {producer} from run {section.get('run_id')} (data/ holds another run's "
                f"files, e.g. of a failed run); {_rerun_hint(producer)}"
            )
    note_read(paths, path, record["fingerprint"], producer)
    return record


# ----------------------------------------------------------------------------------------------------
# Staleness for the runner
# ----------------------------------------------------------------------------------------------------


def tracked(section: dict | None) -> bool:
    """Whether a notebook's lineage section records any read or write (a notebook that does not use :mod:`helpers.study` has none)."""
    return bool(section and (section.get("reads") or section.get("writes")))


def _producers(sections: dict) -> dict[str, str]:
    return {key: stem for stem, section in sections.items() for key in section.get("writes", {})}


def stale_notebooks(paths, notebooks, rerun=()) -> dict[str, str]:
    """Notebooks of the report (in ``notebooks`` order) whose results no longer match data/: ``{stem: reason}``.

    A notebook is stale when a file it read now has another fingerprint, or was written by a stale notebook.
    Notebooks in ``rerun`` are current. A notebook of the report without lineage records (an older report, or a
    notebook that does not use :mod:`helpers.study`) is stale when it comes after the first rerun notebook.
    """
    sections = load_report_lineage(paths.report)["notebooks"]
    producers = _producers({k: v for k, v in sections.items()})
    stale: dict[str, str] = {}
    first_rerun = min(rerun) if rerun else None
    for stem in notebooks:
        if stem in rerun:
            continue
        section = sections.get(stem)
        if not tracked(section):
            if first_rerun is not None and stem > first_rerun and (Path(paths.report) / f"{stem}.ipynb").is_file():
                stale[stem] = "it has no lineage record and comes after a rerun notebook"
            continue
        for key, value in section.get("reads", {}).items():
            origin = producers.get(key)
            if origin in stale:
                stale[stem] = f"it read {key}, written by {origin}, which is stale"
                break
            if current_fingerprint(paths, key) != value:
                stale[stem] = f"{key} has changed since it ran"
                break
    return stale
