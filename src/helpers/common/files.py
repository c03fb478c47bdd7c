"""The project's files: its root folder, atomic writes, JSON and NPZ files read and written whole."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from helpers.common.config import ROOT_ENV


def find_project_root(start: str | os.PathLike | None = None, checkout: bool = False) -> Path:
    """The study's root: ``$STUDY_WORK_DIR``, else the nearest parent of ``start`` (default: the working folder) holding ``params/`` and ``pyproject.toml``, else (with ``checkout``) the checkout this package runs from, else ``start``."""  # noqa: E501
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    here = Path(start or Path.cwd()).resolve()
    package_checkout = Path(__file__).resolve().parents[3]  # <root>/src/helpers/common/files.py in a checkout install
    for candidate in [here, *here.parents] + ([package_checkout] if checkout else []):
        if (candidate / "params").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    return here


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600 files; give the result the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _to_jsonable(obj.item())  # so NaN/inf numpy scalars become null too
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (set, frozenset)):
        return sorted((_to_jsonable(v) for v in obj), key=str)
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    return str(obj)  # anything else (e.g. a complex number, bytes): its text rather than a failed save


def save_json(obj, path: str | os.PathLike) -> Path:
    """Write ``obj`` (numpy values allowed) as indented, key-sorted JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_to_jsonable(obj), indent=2, sort_keys=True) + "\n")
    return path


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the notebook that writes it first")
    return path


def load_json(path: str | os.PathLike):
    """Read a JSON file, naming it in the error when it is missing."""
    return json.loads(_existing(path).read_text())


def save_npz(path: str | os.PathLike, **arrays) -> Path:
    """Write arrays to a compressed ``.npz`` atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_npz(path: str | os.PathLike, keys=None) -> dict:
    """Read the arrays of an ``.npz`` into a dict (all, or those of ``keys`` it holds), naming the file when it is missing."""
    wanted = None if keys is None else ({keys} if isinstance(keys, str) else set(keys))
    with np.load(_existing(path), allow_pickle=False) as data:
        return {key: data[key] for key in data.files if wanted is None or key in wanted}
