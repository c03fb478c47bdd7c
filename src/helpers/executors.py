"""Where a sweep's trials run: here, one after another or in worker processes pinned to GPUs, or as Ray tasks.

An executor runs one picklable function over a list of argument tuples and yields ``(index, result)`` pairs as
they finish; a call that raised (or whose worker died) yields the exception instead of a result, so the caller
records it and goes on. Every option is checked, and a Ray cluster reached, in :meth:`start` before any call runs.

- ``local`` (default): ``workers=1`` runs the calls in this process, in order; ``workers=N`` runs them in N worker
  processes (``spawn``). With GPUs on the machine (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``) worker i sees
  one GPU only (``CUDA_VISIBLE_DEVICES``), round robin when there are more workers than GPUs; the notebooks'
  kernels inherit it.
- ``ray``: each call a Ray task (``num_gpus=1`` when the cluster has GPUs, so Ray pins it to one) on
  ``ray.init(address=...)``: an existing cluster (``host:port``, ``ray://host:port``, ``auto``) or, without an
  address, a local instance started on the spot and stopped by :meth:`close`. The tasks see the driver's
  ``KERAS_BACKEND`` and import the driver's ``helpers``; on a cluster every node needs the project at the same path
  and the work folder on a shared file system. Ray is the optional extra ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["EXECUTORS", "ExecutorError", "gpu_ids", "make_executor", "LocalExecutor", "RayExecutor"]

EXECUTORS = ("local", "ray")
#: Seconds to wait for a TCP connection to a Ray address before calling it unreachable.
CONNECT_TIMEOUT = 5.0


class ExecutorError(ValueError):
    """Executor options that cannot work, or a Ray cluster that cannot be reached; the message names the option."""


def gpu_ids(environ: dict | None = None) -> list[str]:
    """The GPUs this machine offers: ``CUDA_VISIBLE_DEVICES`` when set (empty or -1: none), else ``nvidia-smi -L``."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


def _suggest(value: str, options: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(value, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def make_executor(name: str = "local", workers: int = 1, ray_address: str | None = None, gpus=None):
    """Check the options and return an executor (not started): ``local`` with ``workers``, or ``ray`` at ``ray_address``."""
    if name not in EXECUTORS:
        raise ExecutorError(
            f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}{_suggest(str(name), EXECUTORS)}"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ExecutorError(f"--workers must be an integer >= 1, got {workers!r}")
    if name == "local":
        if ray_address:
            raise ExecutorError("--ray-address needs --executor ray")
        return LocalExecutor(workers, gpus)
    if workers != 1:
        raise ExecutorError("--workers is for --executor local; Ray runs as many trials at once as the cluster fits")
    return RayExecutor(ray_address)


# ----------------------------------------------------------------------------------------------------
# Local: in this process, or in worker processes pinned to GPUs
# ----------------------------------------------------------------------------------------------------


def _pin_worker(slots) -> None:
    """Process-pool initializer: take one GPU id from the queue and make it the only one this worker sees."""
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


class LocalExecutor:
    """Calls in this process (``workers=1``) or in ``workers`` spawned processes, each pinned to one GPU if any."""

    name = "local"

    def __init__(self, workers: int = 1, gpus: Sequence[str] | None = None):
        self.workers = workers
        self.gpus = list(gpus) if gpus is not None else None

    @property
    def workers_apart(self) -> bool:
        """Whether calls run in other processes (their arguments must pickle)."""
        return self.workers > 1

    def start(self, log=print) -> None:
        """Find the GPUs to pin the workers to (nothing to connect to)."""
        if self.gpus is None:
            self.gpus = gpu_ids() if self.workers > 1 else []
        if self.workers > 1:
            pinned = f", pinned to GPU {', '.join(self.gpus)} (one each)" if self.gpus else ""
            shared = " (workers share GPUs round robin)" if len(self.gpus) and self.workers > len(self.gpus) else ""
            log(f"local executor: {self.workers} worker processes{pinned}{shared}")

    def run(self, function: Callable, calls: Sequence[tuple], log=print) -> Iterator[tuple[int, object]]:
        """Yield ``(index, result or exception)`` for every call, in order (one worker) or as they finish."""
        if self.workers == 1:
            for index, args in enumerate(calls):
                try:
                    yield index, function(*args)
                except Exception as exc:  # a call's failure is the caller's to record
                    yield index, exc
            return
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        slots = context.Queue()
        for i in range(self.workers):
            slots.put(self.gpus[i % len(self.gpus)] if self.gpus else None)
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_pin_worker, initargs=(slots,))
        try:
            pending = {pool.submit(function, *args): index for index, args in enumerate(calls)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        yield index, future.result()
                    except Exception as exc:  # the call raised, or its worker died (BrokenProcessPool)
                        yield index, exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Nothing to stop: the pool ends with :meth:`run`."""


# ----------------------------------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------------------------------


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address; None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ExecutorError(f"--ray-address must be host:port, ray://host:port or auto, got {address!r}")
    return parts.hostname, port


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise :class:`ExecutorError` unless something accepts TCP connections at a Ray ``address`` (host:port)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ExecutorError(
            f"--ray-address {address}: no Ray cluster reachable at {target[0]}:{target[1]} ({reason}); "
            "start one with `ray start --head`, or leave --ray-address out to start a local instance"
        ) from None


def _call(function: Callable, *args):
    """The one Ray task: ``function(*args)`` (any picklable callable, builtins included)."""
    return function(*args)


class RayExecutor:
    """Every call a Ray task on the cluster at ``address`` (None: ``RAY_ADDRESS``, else a new local instance)."""

    name = "ray"

    #: Calls run in Ray's worker processes (their arguments must pickle).
    workers_apart = True

    def __init__(self, address: str | None = None):
        self.address = address
        self.gpus = 0.0
        self._ray = None

    def start(self, log=print) -> None:
        """Reach the cluster (or start a local instance) before any call: :class:`ExecutorError` when that fails."""
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_reachable(address)
        try:
            import ray
        except ImportError:
            raise ExecutorError('--executor ray needs Ray: pip install -c constraints.txt -e ".[ray]"') from None
        import helpers

        source = str(Path(helpers.__file__).resolve().parents[1])
        paths = [source] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != source]
        env = {"PYTHONPATH": os.pathsep.join(paths)}
        if os.environ.get("KERAS_BACKEND"):
            env["KERAS_BACKEND"] = os.environ["KERAS_BACKEND"]
        try:
            context = ray.init(
                address=address, include_dashboard=False, runtime_env={"env_vars": env}, logging_level="warning"
            )
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"--ray-address {address}" if address else "a local Ray instance"
            raise ExecutorError(f"{where}: Ray could not start or connect: {exc}") from None
        self._ray = ray
        self.gpus = float(ray.cluster_resources().get("GPU", 0))
        where = f"cluster at {address}" if address else "a local instance started for this sweep"
        log(
            f"ray executor: {where} ({getattr(context, 'address_info', {}).get('address', '?')}), "
            f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {self.gpus:g} GPUs"
        )

    def run(self, function: Callable, calls: Sequence[tuple], log=print) -> Iterator[tuple[int, object]]:
        """Submit every call as a task (``num_gpus=1`` when the cluster has GPUs); yield results as they finish."""
        ray = self._ray
        if not calls:
            return
        if ray is None:
            raise RuntimeError("start() the executor first")
        task = ray.remote(num_gpus=1 if self.gpus else 0, max_retries=0)(_call)
        pending = {task.remote(function, *args): index for index, args in enumerate(calls)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        yield index, ray.get(ref)
                    except Exception as exc:  # the task raised, or its worker died
                        yield index, exc
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Disconnect (and stop the local instance this executor started)."""
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None
