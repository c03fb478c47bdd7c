"""The runner's folders beside the report: per-run staging folders, the last failed run, an interrupted swap.

``reports/<profile>/sweeps/`` belongs to the sweeps (:mod:`helpers.runner.sweep`), not to a run: a run moves it (a rename,
never a copy) from the report it replaces into the new one (:func:`carry_sweeps`), and a folder left by a killed run
hands it back before it is removed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
from pathlib import Path

from helpers.runner.runlock import pid_alive

#: The report's sub-folder that sweeps write and runs carry over.
SWEEPS = "sweeps"


def carry_sweeps(source: Path, target: Path) -> bool:
    """Move ``source/sweeps`` to ``target/sweeps`` (one rename) when the target has none; return whether it moved."""
    if not (source / SWEEPS).is_dir() or (target / SWEEPS).exists():
        return False
    target.mkdir(parents=True, exist_ok=True)
    (source / SWEEPS).rename(target / SWEEPS)
    return True


def without_sweeps(root: Path):
    """A ``shutil.copytree`` ignore function that leaves out ``root/sweeps`` (a partial run copies the report)."""
    root = Path(root).resolve()
    return lambda folder, names: [SWEEPS] if SWEEPS in names and Path(folder).resolve() == root else []


def _rescue(folder: Path, final: Path, log) -> None:
    if carry_sweeps(folder, final):
        log(f"moved the sweeps back into {final} from {folder}, left by an interrupted run")


def clean_leftovers(name: str, reports: Path, final: Path, backup: Path, failed: Path, log) -> None:
    """Under the lock: restore a report an interrupted swap set aside, drop the last failed run and dead runs' staging."""
    if backup.exists():
        if final.exists():
            _rescue(backup, final, log)
            shutil.rmtree(backup)
        else:
            backup.rename(final)
            log(f"restored the report {final} that an interrupted run had set aside")
    if failed.exists():
        _rescue(failed, final, log)
        shutil.rmtree(failed)
    pattern = re.compile(rf"^\.{re.escape(name)}\.staging-(\d+)-[\dT-]+$")
    for leftover in reports.iterdir():
        match = pattern.match(leftover.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        if pid_alive(int(match.group(1))):  # cannot prove it dead (a reused pid): leave it
            log(f"note: left {leftover} alone: a process {match.group(1)} exists")
            continue
        _rescue(leftover, final, log)
        shutil.rmtree(leftover, ignore_errors=True)


def discard(staging: Path) -> str:
    """Remove a run's staging folder (signals wait); say what became of it."""
    if not staging.exists():
        return "no staging folder was left"
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        shutil.rmtree(staging)
        return f"the staging folder {staging} was removed"
    except OSError as exc:
        return f"the staging folder {staging} could not be removed ({os_text(exc)}): remove it by hand"
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def kept(final: Path) -> str:
    """What became of the report folder: unchanged, or never written."""
    return f"the previous report in {final} is unchanged" if final.exists() else f"no report was written to {final}"


def os_text(exc: OSError) -> str:
    """``No space left on device (ENOSPC): /path`` from an OSError."""
    code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    text = exc.strerror or str(exc)
    return text + (f" ({code})" if code else "") + (f": {exc.filename}" if exc.filename else "")
