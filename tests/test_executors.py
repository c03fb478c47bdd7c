"""Executors: options checked up front, worker processes pinned to GPUs, failures yielded, Ray reached or refused."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from helpers.runner import executors, kernels
from helpers.runner.executors import ExecutorError, LocalExecutor, RayExecutor, make_executor


def _where(x):
    """A call that reports the process and GPU it ran in."""
    time.sleep(0.3)  # long enough that both workers take calls
    if x == "boom":
        raise ValueError("asked to fail")
    return x, os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def _die():
    os._exit(3)


def _sleep_marked(path: str):
    """A long call that says when it has started."""
    Path(path).write_text("")
    time.sleep(60)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "rayy"}, "--executor must be one of local, ray, got 'rayy' \\(did you mean 'ray'\\?\\)"),
        ({"workers": 0}, "--workers must be an integer >= 1, got 0"),
        ({"workers": 1.5}, "--workers must be an integer >= 1, got 1.5"),
        ({"ray_address": "localhost:6379"}, "--ray-address needs --executor ray"),
        ({"name": "ray", "workers": 2}, "--workers is for --executor local"),
    ],
)
def test_bad_options_name_the_option(kwargs, message):
    with pytest.raises(ExecutorError, match=message):
        make_executor(**kwargs)


def test_gpu_ids_follow_cuda_visible_devices():
    assert executors.gpu_ids({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
    assert executors.gpu_ids({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert executors.gpu_ids({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_one_worker_runs_in_order_in_this_process_and_yields_failures():
    runner = make_executor("local")
    runner.start(log=lambda text: None)
    results = list(runner.run(_where, [("a",), ("boom",), ("b",)]))
    assert [i for i, _ in results] == [0, 1, 2]
    assert results[0][1][:2] == ("a", os.getpid()) and results[2][1][0] == "b"
    assert isinstance(results[1][1], ValueError) and "asked to fail" in str(results[1][1])


def test_worker_processes_are_pinned_one_gpu_each():
    runner = LocalExecutor(workers=2, gpus=["3", "5"])
    logs = []
    runner.start(log=logs.append)
    assert "2 worker processes, pinned to GPU 3, 5" in logs[0]
    results = dict(runner.run(_where, [(x,) for x in "abcd"] + [("boom",)]))
    assert isinstance(results.pop(4), ValueError)
    assert sorted(x for x, _, _ in results.values()) == list("abcd")
    gpu_of = {pid: gpu for _, pid, gpu in results.values()}
    assert os.getpid() not in gpu_of
    assert set(gpu_of.values()) <= {"3", "5"}
    assert len(gpu_of) == 2 and len(set(gpu_of.values())) == 2  # two workers, one GPU each


def test_a_dead_worker_is_yielded_as_a_failure():
    results = list(LocalExecutor(workers=2, gpus=[]).run(_die, [()]))
    assert len(results) == 1 and isinstance(results[0][1], BrokenProcessPool)


def test_sigterm_to_the_sweep_interrupts_the_worker_processes_calls(tmp_path, monkeypatch):
    """SIGTERM reaches the sweep's process alone: the workers' calls are interrupted too, not waited for."""
    monkeypatch.setattr(kernels, "signal_received", None)
    marks = [tmp_path / "a", tmp_path / "b"]

    def terminate_when_both_run():
        deadline = time.monotonic() + 60
        while not all(m.exists() for m in marks) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, executors.interrupt_on_signal)
    threading.Thread(target=terminate_when_both_run, daemon=True).start()
    results = []
    try:
        with pytest.raises(KeyboardInterrupt):
            for item in LocalExecutor(workers=2, gpus=[]).run(_sleep_marked, [(str(m),) for m in marks]):
                results.append(item)
        stopped = time.time()
    finally:
        signal.signal(signal.SIGTERM, previous)
        logging.getLogger("asyncio").disabled = False
    assert all(m.exists() for m in marks) and results == []
    assert kernels.signal_received == signal.SIGTERM
    assert stopped - max(m.stat().st_mtime for m in marks) < 30  # the 60 s calls were not waited for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_ray_address_is_refused_at_once():
    port = _free_port()
    runner = make_executor("ray", ray_address=f"127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=f"--ray-address 127.0.0.1:{port}: no Ray cluster reachable"):
        runner.start(log=lambda text: None)
    assert time.monotonic() - t0 < executors.CONNECT_TIMEOUT + 1
    with pytest.raises(ExecutorError, match="--ray-address must be host:port"):
        make_executor("ray", ray_address="nowhere").start(log=lambda text: None)


def test_ray_runs_each_call_as_a_task_on_a_local_instance(monkeypatch):
    import ray  # the [ray] extra: installed by make test, so this test never skips there

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    runner = RayExecutor()
    logs = []
    runner.start(log=logs.append)
    try:
        assert ray.is_initialized() and "a local instance started for this sweep" in logs[0]
        executors.check_reachable(ray.get_runtime_context().gcs_address)  # a real GCS passes the handshake
        # functions Ray workers can import: the task sees the driver's backend and helpers, a failure comes back
        results = dict(runner.run(os.getenv, [("KERAS_BACKEND",), ("PYTHONPATH",)]))
        failed = dict(runner.run(int, [("12",), ("x",)]))
    finally:
        runner.close()
    assert not ray.is_initialized()
    assert results[0] == os.environ["KERAS_BACKEND"]
    assert results[1].split(os.pathsep)[0] == str(Path(executors.__file__).resolve().parents[2])
    assert failed[0] == 12 and isinstance(failed[1], Exception) and "invalid literal" in str(failed[1])
