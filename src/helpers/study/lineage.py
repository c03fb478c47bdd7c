"""Lineage of the study's files: which notebook, run, parameters and inputs made each one (like ``dvc.lock``).

Every file a notebook writes through :mod:`helpers.study.files` gets a side file ``<file>.lineage.json``::

    {"artifact": "data/models/demo/vgg16.keras", "producer": "03_train_vgg16", "run_id": "...",
     "fingerprint": "<sha256 of the file>", "parameters": {...}, "parameters_fingerprint": "...",
     "inputs": {"data/processed/demo/split.csv": "<its fingerprint when it was read>"}}

The inputs of a file are the files its notebook read before writing it (:func:`note_read`). The report folder
holds ``lineage.json``: per notebook the run that produced its part of the report, and the fingerprints of what it
read and wrote. A read is refused (:class:`LineageError`, naming the notebook to rerun) when the file's inputs have
changed since it was made, when it has no lineage, or when the report being built shows its producing notebook with
other outputs (data/ holds files of another run, e.g. a failed one). The runner computes stale notebooks from the
same records (:func:`stale_notebooks`).

Every read also rehashes the file (once) and refuses it when its bytes no longer match the ``fingerprint`` of its
side file (modified or truncated since it was written); the runner does the same for the files a partial run would
read, before any kernel starts (the image cache, keyed by its inputs, records the SHA-256 of its array and is decoded
again when that no longer matches). A file of the classifier notebooks 03-07 (its parameters name ``input_mask`` and
a model slot) is refused when it was made with another :data:`VIEW_PARAMETERS` value than the reading notebook has
(:func:`classifier_view`): the notebook's parameters from the runner, else those it gave
:func:`helpers.study.files.load_split`, else those of the first such file it read.

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
from typing import Sequence

import numpy as np

from helpers.common.files import load_json, save_json

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
    "array_digest",
    "fingerprint",
    "VIEW_PARAMETERS",
    "classifier_view",
    "request_view",
    "as_typed",
    "side_file",
    "reset_reads",
    "record_write",
    "note_read",
    "note_report_write",
    "check_input",
    "read_verified",
    "refuse_modified",
    "note_cache_read",
    "producer_of",
    "modified_producer",
    "parameter_conflicts",
    "parameter_changes",
    "saved_input_problem",
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
#: Parameters that decide what a classifier saw; a classifier notebook's file made with other values is refused.
VIEW_PARAMETERS: tuple[str, ...] = ("image_size", "input_mask", "mask_margin")
#: What this process's classifiers see: "requested" (from load_split) and "read" (the first classifier file read,
#: with its path and producer).
_VIEW: dict[str, tuple] = {}
#: Bytes per chunk of :func:`array_digest` (chunks are hashed on threads).
_DIGEST_CHUNK = 1 << 24


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


def array_digest(array) -> str:
    """SHA-256 (hex) of the SHA-256 digests of an array's 16 MiB chunks (its C-order bytes), the chunks hashed on threads."""
    from helpers.common.parallel import each_index

    data = memoryview(np.ascontiguousarray(array)).cast("B")
    starts = range(0, len(data), _DIGEST_CHUNK)
    parts = each_index(lambda i: hashlib.sha256(data[starts[i] : starts[i] + _DIGEST_CHUNK]).digest(), len(starts))
    return hashlib.sha256(b"".join(parts)).hexdigest()


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
    """Forget the reads of this process (a notebook starts: :func:`helpers.study.files.study_paths`)."""
    _READS.clear()
    _VIEW.clear()


def classifier_view(parameters) -> dict:
    """What a classifier saw, from a classifier notebook's or its file's parameters (they name ``input_mask`` and a
    model slot, ``model_name`` or ``model_names``): ``image_size``, ``input_mask`` and, with ``input_mask="lung"``,
    ``mask_margin``; empty for other notebooks (02's masks do not depend on what the classifiers see)."""
    if not isinstance(parameters, dict) or not {"model_name", "model_names"} & set(parameters):
        return {}
    return _view(parameters)


def _view(parameters: dict) -> dict:
    if "input_mask" not in parameters:
        return {}
    view = {name: parameters[name] for name in ("image_size", "input_mask") if name in parameters}
    if parameters["input_mask"] == "lung" and "mask_margin" in parameters:
        view["mask_margin"] = parameters["mask_margin"]
    return view


def as_typed(name: str, value) -> str:
    """A parameter as the runner's command line takes it: ``-p input_mask=lung``, ``-p mask_margin=8``."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return f"-p {name}={text}"


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _differences(made: dict, wanted: dict) -> list[tuple[str, object, object]]:
    """``(name, made, wanted)`` of the names both hold with other values, :data:`VIEW_PARAMETERS` first."""
    names = [n for n in VIEW_PARAMETERS if n in wanted] + [n for n in wanted if n not in VIEW_PARAMETERS]
    return [(n, made[n], wanted[n]) for n in names if n in made and not _same(made[n], wanted[n])]


def _mismatch(path: Path, producer: str, name: str, made, wanted, other: str | None = None) -> LineageError:
    """The error for a file made with ``name=made`` read where ``wanted`` is expected, naming both values and the fixes."""
    where = f"{other} (read before it) was made with" if other else "this notebook has"
    return LineageError(
        f"{path.name} was made by {producer} with {name}={made!r}, but {where} {name}={wanted!r}: run this notebook "
        f"with {name}={made!r} (papermill: -p {name} {made}; the runner: {as_typed(name, made)}), or rerun {producer} "
        f"and the notebooks after it with {name}={wanted!r} (python -m helpers.runner.pipeline --from {_number(producer)} "
        f"{as_typed(name, wanted)})"
    )


def request_view(image_size: int, input_mask: str, mask_margin: int) -> None:
    """Note what this notebook's classifiers see (:func:`helpers.study.files.load_split` calls this); refuse
    (:class:`LineageError`) when a classifier file this notebook read before was made for another input."""
    view = _view({"image_size": image_size, "input_mask": input_mask, "mask_margin": mask_margin})
    if "read" in _VIEW:
        made, path, producer = _VIEW["read"]
        for name, was, wanted in _differences(made, view):
            raise _mismatch(path, producer, name, was, wanted)
    _VIEW["requested"] = (view,)


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


def _number(producer: str) -> str:
    return producer[:2] if producer[:2].isdigit() else producer


def _rerun_hint(producer: str) -> str:
    return f"rerun {producer} and the notebooks after it (python -m helpers.runner.pipeline --from {_number(producer)})"


def _check_parameters(path: Path, record: dict, producer: str, expect: dict | None) -> None:
    """Refuse a file made with other parameters than ``expect`` or, for a classifier notebook's file, another view."""
    params = record.get("parameters") or {}
    made = {**{k: params[k] for k in (expect or {}) if k in params}, **classifier_view(params)}
    runner = classifier_view(current_parameters())
    other = None
    if runner:
        wanted = runner
    elif "requested" in _VIEW:
        wanted = _VIEW["requested"][0]
    elif "read" in _VIEW:
        wanted, other = _VIEW["read"][0], _VIEW["read"][1].name
    else:
        wanted = {}
    for name, was, wanted_value in _differences(made, {**wanted, **(expect or {})}):
        raise _mismatch(path, producer, name, was, wanted_value, other if name not in (expect or {}) else None)
    if classifier_view(params) and "read" not in _VIEW:
        _VIEW["read"] = (classifier_view(params), path, producer)


def refuse_modified(path, producer: str, digest: str | None = None, record: dict | None = None) -> None:
    """Refuse (:class:`LineageError`) a file whose bytes (``digest``, else hashed here) no longer match the
    ``fingerprint`` its side file (or ``record``) recorded when ``producer`` wrote it; nothing when it has none."""
    path = Path(path)
    if record is None and side_file(path).is_file():
        try:
            record = load_json(side_file(path))
        except ValueError:
            record = None
    recorded = (record or {}).get("fingerprint")
    if recorded and (digest if digest is not None else file_digest(path)) != recorded:
        raise LineageError(
            f"{path} was modified after {producer} wrote it (its SHA-256 no longer matches the one in "
            f"{side_file(path).name}): {_rerun_hint(producer)}"
        )


def note_cache_read(paths, cached, array, **facts) -> bool:
    """Record this notebook's read of a cache file holding ``array``; False (the caller decodes again) when its
    content no longer matches the SHA-256 (:func:`array_digest`) recorded when it was cached."""
    side, digest = side_file(cached), array_digest(array)
    try:
        record = load_json(side) if side.is_file() else {}
    except ValueError:
        record = {}
    if record.get("sha256") not in (None, digest):
        print(f"note: {cached} does not match the SHA-256 recorded when it was cached (modified since): decoding again")
        Path(cached).unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return False
    if "sha256" not in record:
        save_json({"fingerprint": Path(cached).stem, **facts, "sha256": digest}, side)
    note_read(paths, cached, Path(cached).stem)
    return True


def check_input(paths, path, producer: str, expect: dict | None = None, digest: str | None = None) -> dict:
    """Read ``path``'s lineage and refuse it (:class:`LineageError`) unless it matches; record the read; return the record.

    Refused when: it has no lineage; its bytes do not match the SHA-256 recorded when it was written (``digest``:
    the caller's hash of the bytes it read, else the file is hashed here); a file it was made from has changed
    since; a parameter in ``expect`` differs from the one it was made with, or (a classifier notebook's file) what
    its classifier saw differs from this notebook's (:func:`classifier_view`); or the report being built shows its
    producer with other outputs.
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
    refuse_modified(path, producer, digest, record)
    for key, value in record.get("inputs", {}).items():
        now = current_fingerprint(paths, key)
        if now != value:
            what = "is gone" if now is None else "has changed since (rewritten by a later run)"
            raise LineageError(f"{path.name} was made by {producer} from {key}, which {what}; {_rerun_hint(producer)}")
    _check_parameters(path, record, producer, expect)
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


def read_verified(paths, path, producer: str, expect: dict | None = None) -> bytes:
    """The bytes of ``path``, read once, hashed once and checked by :func:`check_input` before the caller parses them."""
    path = Path(path)
    data = path.read_bytes()
    check_input(paths, path, producer, expect=expect, digest=hashlib.sha256(data).hexdigest())
    return data


# ----------------------------------------------------------------------------------------------------
# Staleness for the runner
# ----------------------------------------------------------------------------------------------------


def tracked(section: dict | None) -> bool:
    """Whether a notebook's lineage section records any read or write (a notebook that does not use :mod:`helpers.study.files` has none)."""
    return bool(section and (section.get("reads") or section.get("writes")))


def _producers(sections: dict) -> dict[str, str]:
    return {key: stem for stem, section in sections.items() for key in section.get("writes", {})}


def stale_notebooks(paths, notebooks, rerun=()) -> dict[str, str]:
    """Notebooks of the report (in ``notebooks`` order) whose results no longer match data/: ``{stem: reason}``.

    A notebook is stale when a file it read now has another fingerprint, or was written by a stale notebook.
    Notebooks in ``rerun`` are current. A notebook of the report without lineage records (an older report, or a
    notebook that does not use :mod:`helpers.study.files`) is stale when it comes after the first rerun notebook.
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


def _record(paths, key: str) -> dict | None:
    """The side-file record of a work-folder file written by a notebook (with a producer), else None."""
    if key.startswith("report:"):
        return None
    side = side_file(Path(paths.root) / key)
    try:
        record = load_json(side) if side.is_file() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("producer") else None


def producer_of(paths, key: str) -> str | None:
    """The notebook that wrote the work-folder file ``key``, from its side file (None without one)."""
    return (_record(paths, key) or {}).get("producer")


def modified_producer(paths, key: str) -> str | None:
    """The notebook that wrote the work-folder file ``key`` when its bytes no longer match the SHA-256 it recorded
    (hashed here), else None (unchanged, gone, or a file without a producer's record such as the image cache)."""
    record, path = _record(paths, key), Path(paths.root) / key
    if record is None or not record.get("fingerprint") or not path.is_file():
        return None
    return None if file_digest(path) == record["fingerprint"] else record["producer"]


def parameter_conflicts(paths, key: str, parameters: dict) -> list[tuple[str, object, object]]:
    """``(name, saved, requested)`` for each :func:`classifier_view` value on which the file ``key`` (a classifier
    notebook's) was made otherwise than a notebook with ``parameters`` would read it."""
    record = _record(paths, key)
    made = classifier_view((record or {}).get("parameters"))
    return _differences(made, classifier_view(parameters)) if made else []


def parameter_changes(paths, section: dict | None, parameters: dict) -> list[tuple[str, object, object]]:
    """``(name, saved, requested)`` for each parameter a notebook is about to run with that differs from the one its
    files of the report (``section["writes"]``) were made with: its outputs will change."""
    for key in (section or {}).get("writes", {}):
        saved = ((_record(paths, key) or {}).get("parameters")) or {}
        if saved:
            return [
                (name, saved[name], value)
                for name, value in parameters.items()
                if name in saved and not _same(saved[name], value)
            ]
    return []


def saved_input_problem(paths, rerun: Sequence[str], requested: dict[str, dict]) -> str | None:
    """Why a partial run of the notebooks ``rerun`` (their parameters: ``requested``) must not start, or None.

    It must not when a notebook it reruns would read, from a notebook it does not rerun, a file whose bytes changed
    since it was written (SHA-256, hashed here), a file made for another input (:func:`classifier_view`: another
    ``image_size``, ``input_mask`` or ``mask_margin``), or a file made from what a rerun notebook rewrites with
    other parameters (e.g. notebook 02 with another lung segmentation under models trained on the old one).
    """
    sections = load_report_lineage(paths.report)["notebooks"]
    producers = _producers(sections)
    conflicts = []  # (origin, key, stem, (name, saved, wanted))
    for stem in rerun:
        for key in sorted(sections.get(stem, {}).get("reads", {})):
            if producers.get(key) in rerun:
                continue
            producer = modified_producer(paths, key)
            if producer:
                return (
                    f"{key} was modified after {producer} wrote it (its SHA-256 no longer matches its lineage "
                    f"record) and {stem} reads it: rerun {producer} and the notebooks after it (--from {_number(producer)})"
                )
            origin = producers.get(key) or producer_of(paths, key) or "its notebook"
            conflicts += [
                (origin, key, stem, found) for found in parameter_conflicts(paths, key, requested.get(stem))[:1]
            ]
    if conflicts:
        origin, key, stem, (name, saved, wanted) = min(conflicts, key=lambda c: c[:2])
        more = f" (and {len(conflicts) - 1} more file(s))" if len(conflicts) > 1 else ""
        return (
            f"{stem} would read {key}{more}, which {origin} made with {name}={saved!r}, but this run has "
            f"{as_typed(name, wanted)}: rerun from {origin} with it (--from {_number(origin)} "
            f"{as_typed(name, wanted)}), or run with {as_typed(name, saved)}"
        )
    changed = {stem: parameter_changes(paths, sections.get(stem), requested.get(stem, {})) for stem in rerun}
    changed = {stem: found for stem, found in changed.items() if found}
    stale: dict[str, str] = {}  # notebooks not rerun made from what a changed one rewrites (directly or not)
    for stem in sorted(set(sections) - set(rerun)):
        causes = [producers.get(key) for key in sections[stem].get("reads", {})]
        cause = next((c if c in changed else stale[c] for c in causes if c in changed or c in stale), None)
        if cause:
            stale[stem] = cause
    for stem in rerun:
        for key in sections.get(stem, {}).get("reads", {}):
            origin = producers.get(key)
            if origin in stale:
                cause = stale[origin]
                name, saved, wanted = changed[cause][0]
                return (
                    f"{stem} reads {key}, written by {origin}, which was made from what {cause} rewrites in this run "
                    f"with {as_typed(name, wanted)} (saved: {name}={saved!r}): its inputs would mix two runs; add "
                    f"{origin} to --only, or rerun from {cause} (--from {_number(cause)})"
                )
    return None
