"""One place for the study's constants, paths and atomic file writes.

Every notebook calls :func:`study_paths` with its ``profile``, ``work_dir`` and ``report_dir``
parameters and reads or writes files only through the returned :class:`StudyPaths`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Class folders of the COVID-19 Radiography Database, in the study's label order.
CLASS_NAMES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
#: The three disease classes whose mean validation recall picks the checkpoint.
DISEASE_CLASSES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Viral Pneumonia")
#: Folder name of the dataset inside a download (Kaggle layout).
DATASET_DIRNAME = "COVID-19_Radiography_Dataset"
#: Environment variable that overrides the project root (the folder holding data/ and reports/).
ROOT_ENV = "STUDY_WORK_DIR"


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """Return the study's root: ``$STUDY_WORK_DIR``, else the nearest parent holding ``params/`` and ``pyproject.toml``, else the start folder."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    return here


@dataclass(frozen=True)
class StudyPaths:
    """Folders of one profile's run: raw data, processed arrays, models and the report."""

    root: Path
    profile: str
    report: Path

    @property
    def raw(self) -> Path:
        """Raw images (never modified); synthetic phantoms are generated here."""
        return self.root / "data" / "raw"

    @property
    def processed(self) -> Path:
        """Split manifest, cached arrays, predictions and heatmaps of this profile."""
        return self.root / "data" / "processed" / self.profile

    @property
    def cache(self) -> Path:
        """Decoded image arrays, keyed by their inputs (shared across profiles)."""
        return self.root / "data" / "processed" / "cache"

    @property
    def models(self) -> Path:
        """Trained models, histories and chosen epochs of this profile."""
        return self.root / "data" / "models" / self.profile

    @property
    def figures(self) -> Path:
        """PNG figures of the report."""
        return self.report / "figures"

    @property
    def metrics(self) -> Path:
        """JSON metrics of the report."""
        return self.report / "metrics"

    @property
    def split_manifest(self) -> Path:
        """CSV of every used image with its split (written by notebook 01)."""
        return self.processed / "split.csv"

    def ensure(self) -> "StudyPaths":
        """Create every folder of this profile and return self."""
        for folder in (self.raw, self.processed, self.cache, self.models, self.figures, self.metrics):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def study_paths(profile: str = "demo", work_dir: str | os.PathLike = "", report_dir: str | os.PathLike = "") -> StudyPaths:
    """Resolve the folders of a profile; empty strings mean the defaults (project root, ``reports/<profile>``)."""
    if not profile or any(sep in str(profile) for sep in ("/", "\\")):
        raise ValueError(f"profile must be a plain name such as 'demo', got {profile!r}")
    root = Path(work_dir).expanduser().resolve() if str(work_dir) else find_project_root()
    report = Path(report_dir).expanduser().resolve() if str(report_dir) else root / "reports" / profile
    return StudyPaths(root=root, profile=str(profile), report=report).ensure()


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
    return obj


def save_json(obj, path: str | os.PathLike) -> Path:
    """Write ``obj`` (numpy values allowed) as indented, key-sorted JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_to_jsonable(obj), indent=2, sort_keys=True) + "\n")
    return path


def load_json(path: str | os.PathLike):
    """Read a JSON file, naming it in the error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the notebook that writes it first")
    return json.loads(path.read_text())


def save_npz(path: str | os.PathLike, **arrays) -> Path:
    """Write arrays to a compressed ``.npz`` atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_npz(path: str | os.PathLike) -> dict:
    """Read every array of an ``.npz`` into a dict, naming the file when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the notebook that writes it first")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}

#: Name of the classifier's nested backbone layer; its output is the Grad-CAM feature map.
FEATURE_LAYER = "backbone"
#: Name of the classifier's pre-softmax Dense layer (the class scores yᶜ).
LOGITS_LAYER = "logits"
#: Name of the classifier's softmax output layer.
PROBABILITIES_LAYER = "probabilities"
