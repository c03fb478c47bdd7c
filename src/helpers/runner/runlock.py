"""One run per work folder and profile: an exclusive ``flock`` on ``reports/.<profile>.lock``.

A sweep takes one of its own beside it, ``reports/.<profile>.sweep-<name>.lock`` (:mod:`helpers.runner.sweep`).

The lock file holds the holder's pid, host, start time and command (JSON) so a refused run can name it.
The operating system releases a ``flock`` when its process dies, however it dies (``kill -9`` included), so a
lock left by a killed run never blocks: the file may still name the dead run, but nobody holds the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


class RunLocked(RuntimeError):
    """Another live run holds the lock; ``holder`` is what it wrote into the lock file."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


def describe(holder: dict) -> str:
    """One line naming a lock holder: pid, host, start time and command."""
    if not holder:
        return "another run (it has not written its details yet)"
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host") and holder.get("host") != socket.gethostname():
        parts.append(f"on host {holder['host']}")
    parts.append(f"started {holder.get('started', '?')}")
    if holder.get("command"):
        parts.append(f"command: {holder['command']}")
    return "the run with " + ", ".join(parts)


def pid_alive(pid) -> bool:
    """Whether a process with this pid exists on this host (True when unsure, e.g. owned by another user)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a file, held from :meth:`acquire` to :meth:`release` (or the process's end)."""

    def __init__(self, path: str | os.PathLike, command: str | None = None, what: str = "this work folder and profile"):
        self.path = Path(path)
        self.command = command if command is not None else " ".join(sys.argv)
        self.what = what  # what the holder is using, for the message of a refused run
        self._fd: int | None = None

    def read_holder(self) -> dict:
        """What the current (or last) holder wrote into the lock file; {} when empty or unreadable."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _try(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def acquire(self, wait: bool = False, timeout: float | None = None, poll: float = 0.5, on_wait=None) -> dict:
        """Take the lock, or raise :class:`RunLocked` naming the holder (after ``timeout`` s when ``wait``).

        ``on_wait(holder)`` is called once when the lock is busy and the caller waits. Returns the previous
        holder's details when it was a run that died without releasing (its pid is gone), else {}.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this process")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by kernels (PEP 446)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            waited = False
            while not self._try():
                holder = self.read_holder()
                if not wait:
                    raise RunLocked(f"{describe(holder)} is using {self.what} (lock {self.path})", holder)
                if deadline is not None and time.monotonic() >= deadline:
                    raise RunLocked(f"{describe(holder)} still holds {self.path} after waiting {timeout:g} s", holder)
                if not waited and on_wait is not None:
                    on_wait(holder)
                waited = True
                time.sleep(poll)
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        previous = self.read_holder()
        dead = (
            previous
            if previous and previous.get("host") == socket.gethostname() and not pid_alive(previous.get("pid"))
            else {}
        )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            "command": self.command,
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(info).encode(), 0)
        return dead

    def release(self) -> None:
        """Empty the lock file and release the lock (the file stays: removing it would race with a waiting run)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
