"""What made a run's numbers: library versions, the git commit, the device and the Keras backend, for ``run.json``.

Read without importing TensorFlow, JAX or Keras (package metadata, ``git``, ``/proc/cpuinfo``, ``nvidia-smi``), so the
runner's console stays free of their start-up logs; the kernels import them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from helpers.common.config import TF_THREAD_VARIABLES, THREADS_ENV
from helpers.report.describe import cpu_name

__all__ = [
    "LIBRARIES",
    "CPU_FEATURES",
    "library_versions",
    "git_state",
    "cpu_features",
    "usable_cores",
    "thread_settings",
    "device",
    "keras_backend",
    "environment",
]

#: Libraries that shape a number of the study, by the name recorded; each with its distribution names.
LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
    "keras": ("keras",),
    "scikit-learn": ("scikit-learn",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
    "papermill": ("papermill",),
    "pandas": ("pandas",),
    "matplotlib": ("matplotlib",),
}


def library_versions() -> dict[str, str | None]:
    """Installed version of every library in :data:`LIBRARIES` (None when absent), plus ``python``."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, distributions in LIBRARIES.items():
        versions[name] = None
        for dist in distributions:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def _run(command: list[str], cwd=None) -> str | None:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state(project_dir) -> dict:
    """``commit`` (None outside a git checkout) and ``dirty`` (tracked files changed since that commit)."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd=project_dir) if shutil.which("git") else None
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_dir)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


#: CPU features that change which float kernels run (SIMD width, fused multiply-add), as ``/proc/cpuinfo`` names them.
CPU_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "asimd", "sve")


def cpu_features() -> list[str]:
    """The entries of :data:`CPU_FEATURES` this CPU has (``/proc/cpuinfo`` flags; empty where it cannot be read)."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            have = set(line.split(":", 1)[1].split())
            return [name for name in CPU_FEATURES if name in have]
    return []


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_settings() -> dict:
    """The environment variables that set the kernels' thread counts (``$STUDY_THREADS``, TensorFlow's, OpenMP's), as set."""
    names = (THREADS_ENV, *TF_THREAD_VARIABLES, "OMP_NUM_THREADS", "XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS")
    return {name: os.environ[name] for name in names if name in os.environ}


def device() -> dict:
    """``cpu`` (model name), ``cpu_features``, ``cpu_count``, ``usable_cores``, ``threads`` and ``gpus`` (``nvidia-smi``)."""
    cpu = cpu_name()
    gpus: list[str] = []
    if shutil.which("nvidia-smi"):
        listed = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
        gpus = [line.strip() for line in (listed or "").splitlines() if line.strip()]
    return {
        "cpu": cpu,
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": thread_settings(),
        "gpus": gpus,
    }


def keras_backend() -> str:
    """The backend the kernels' Keras uses: ``KERAS_BACKEND``, else ``~/.keras/keras.json``, else ``tensorflow``."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return str(json.loads(config.read_text()).get("backend", "tensorflow"))
    except (OSError, ValueError):
        return "tensorflow"


def environment(project_dir) -> dict:
    """Everything above for ``run.json``: ``versions``, ``git``, ``device``, ``keras_backend``, ``platform``, and ``python``/``keras`` at the top level."""
    versions = library_versions()
    return {
        "python": versions["python"],
        "keras": versions["keras"],
        "keras_backend": keras_backend(),
        "platform": platform.platform(),
        "versions": versions,
        "git": git_state(project_dir),
        "device": device(),
    }
