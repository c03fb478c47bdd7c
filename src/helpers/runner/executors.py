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
  and the work folder on a shared file system. Ray is the optional extra ``pip install -e ".[ray]"``. An address is
  asked for a gRPC handshake first (:func:`check_reachable`), so one where anything else listens is refused in
  seconds rather than retried for minutes.

SIGTERM, like SIGINT, unwinds a running call as Ctrl-C does (:func:`interrupt_on_signal`); worker processes of the
local executor are passed the signal, so each runner removes its staging folder and shuts its kernel down.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlsplit

from helpers.common.text import did_you_mean

__all__ = [
    "EXECUTORS",
    "ExecutorError",
    "gpu_ids",
    "make_executor",
    "interrupt_on_signal",
    "check_reachable",
    "LocalExecutor",
    "RayExecutor",
]

EXECUTORS = ("local", "ray")
#: Seconds to wait for a Ray address to accept a TCP connection, and then to answer as a gRPC server does.
CONNECT_TIMEOUT = 5.0
#: The HTTP/2 connection preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, Ray Client) answers both
#: with a SETTINGS frame of its own (frame type 4 in the fourth byte of the first frame's header).
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


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


def make_executor(name: str = "local", workers: int = 1, ray_address: str | None = None, gpus=None):
    """Check the options and return an executor (not started): ``local`` with ``workers``, or ``ray`` at ``ray_address``."""
    if name not in EXECUTORS:
        raise ExecutorError(
            f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}{did_you_mean(str(name), EXECUTORS)}"
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


def interrupt_on_signal(signum, frame) -> None:
    """Signal handler: SIGTERM (or SIGINT) unwinds like Ctrl-C, after telling the kernels (:mod:`helpers.runner.kernels`)."""
    from helpers.runner import kernels

    kernels.mark_interrupted(signum)
    raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------------
# Local: in this process, or in worker processes pinned to GPUs
# ----------------------------------------------------------------------------------------------------

#: In a worker process: whether it is running a call (a signal then interrupts it), and whether a signal came.
_busy = False
_stopped: int | None = None


def _worker_signal(signum, frame) -> None:
    """A worker's handler: interrupt the running call; an idle worker starts no call after it (and then ends)."""
    global _stopped
    _stopped = signum
    if _busy:
        interrupt_on_signal(signum, frame)


def _pin_worker(slots, pids) -> None:
    """Process-pool initializer: take one GPU id from the queue and make it the only one this worker sees.

    The worker also reports its pid (so an interrupted sweep can pass the signal on) and unwinds its running call on
    SIGINT and SIGTERM as the sweep's own process does.
    """
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    pids.put(os.getpid())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _worker_signal)


def _in_worker(function: Callable, *args):
    """``function(*args)`` in a pool worker, marked as running so that a signal interrupts it."""
    global _busy
    _busy = True
    try:
        if _stopped is not None:  # the signal came before this call started
            interrupt_on_signal(_stopped, None)
        return function(*args)
    finally:
        _busy = False


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
        slots, pids = context.Queue(), context.Queue()
        for i in range(self.workers):
            slots.put(self.gpus[i % len(self.gpus)] if self.gpus else None)
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_pin_worker, initargs=(slots, pids))
        try:
            pending = {pool.submit(_in_worker, function, *args): index for index, args in enumerate(calls)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        yield index, future.result()
                    except Exception as exc:  # the call raised, or its worker died (BrokenProcessPool)
                        yield index, exc
        except (KeyboardInterrupt, GeneratorExit):  # SIGTERM reaches this process alone: the workers unwind too
            _signal_workers(pids)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Nothing to stop: the pool ends with :meth:`run`."""


def _signal_workers(pids) -> None:
    """Send SIGTERM to every worker that reported its pid (a worker that has ended already is skipped)."""
    import queue

    while True:
        try:
            pid = pids.get(timeout=0.1)
        except queue.Empty:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


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


def check_reachable(address: str, timeout: float | None = None) -> None:
    """Raise :class:`ExecutorError` unless a gRPC server (as Ray's are) answers at a Ray ``address`` within ``timeout`` s.

    ``ray.init`` retries for minutes at an address where something else listens (a web server, say), so the address
    is first asked for an HTTP/2 handshake, which every gRPC server answers at once (not with ``RAY_USE_TLS``).
    """
    target = _host_port(address)
    if target is None:
        return
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    where = f"{target[0]}:{target[1]}"
    deadline = time.monotonic() + timeout
    try:
        conn = socket.create_connection(target, timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ExecutorError(
            f"--ray-address {address}: no Ray cluster reachable at {where} ({reason}); "
            "start one with `ray start --head`, or leave --ray-address out to start a local instance"
        ) from None
    with conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        answer = _first_bytes(conn, deadline)
    if len(answer) >= 4 and answer[3] == 4:  # an HTTP/2 SETTINGS frame
        return
    if not answer:
        heard = f"it sent nothing back within {timeout:g} s"
    else:
        line = answer.decode("latin-1").strip().splitlines()[0][:40] if answer.strip() else ""
        heard = f"it answered {line!r}" if line.isprintable() and line else "it answered in another protocol"
    raise ExecutorError(
        f"--ray-address {address}: {where} accepts connections but is not a Ray cluster ({heard}); give the "
        "head node's GCS address (port 6379 unless `ray start --head --port` chose another) or ray://host:10001 "
        "for Ray Client"
    )


def _first_bytes(conn: socket.socket, deadline: float, size: int = 64) -> bytes:
    """Send the HTTP/2 handshake and return what comes back before ``deadline`` (b"" when nothing does)."""
    received = b""
    try:
        conn.settimeout(max(deadline - time.monotonic(), 0.01))
        conn.sendall(_HTTP2_HELLO)
        while len(received) < 9:
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = conn.recv(size)
            if not chunk:
                break
            received += chunk
    except OSError:  # a time-out, or the peer reset the connection
        pass
    return received


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
        except Exception as exc:  # Ray raises bare Exceptions too (e.g. "the current node timed out during startup")
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
