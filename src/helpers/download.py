"""Where the real dataset is: a folder the user names, or the Kaggle download that ``kagglehub`` keeps in its cache.

``source="kaggle"`` with an empty ``data_dir`` downloads the COVID-19 Radiography Database with ``kagglehub``
(the optional extra: ``.venv/bin/pip install -c constraints.txt -e ".[kaggle]"``) into kagglehub's cache (``~/.cache/kagglehub`` or
``$KAGGLEHUB_CACHE``; a second call reuses it) and uses it. kagglehub lays the download out as::

    <cache>/datasets/tawsifurrahman/covid19-radiography-database/versions/<n>/COVID-19_Radiography_Dataset/...

Without kagglehub, offline, or without Kaggle credentials where Kaggle asks for them, the error names the manual
steps (:data:`MANUAL_STEPS`). Importable without NumPy or Keras, so the runner can check before any kernel starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path

from .config import CLASS_NAMES, DATASET_DIRNAME

__all__ = [
    "KAGGLE_HANDLE",
    "KAGGLE_URL",
    "MANUAL_STEPS",
    "dataset_folder",
    "kagglehub_available",
    "layout_problem",
    "resolve_kaggle_dir",
]

#: The dataset's Kaggle handle (owner/slug) and page.
KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_HANDLE}"
#: What to do by hand when the download cannot run.
MANUAL_STEPS = (
    f"download the COVID-19 Radiography Database from {KAGGLE_URL} (about 800 MB), unzip it, and pass the folder "
    f"holding {DATASET_DIRNAME} with -p data_dir=/path/to/it (or set data_dir in notebook 01's parameters cell); "
    'or install kagglehub (in a checkout\'s .venv: .venv/bin/pip install -c constraints.txt -e ".[kaggle]"; '
    "elsewhere, e.g. on Colab: pip install kagglehub) and, if Kaggle asks for them, credentials "
    "(~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)"
)


def kagglehub_available() -> bool:
    """Whether ``kagglehub`` can be imported (without importing it)."""
    return importlib.util.find_spec("kagglehub") is not None


def _canonical(name: str) -> str:
    """A folder name without case, spaces, underscores and hyphens (``viral_pneumonia`` ~ ``Viral Pneumonia``)."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def dataset_folder(root: str | os.PathLike) -> Path:
    """The innermost ``COVID-19_Radiography_Dataset`` folder under ``root`` (an unzip may nest it twice), or ``root``."""
    folder = Path(root).expanduser()
    while (folder / DATASET_DIRNAME).is_dir():
        folder = folder / DATASET_DIRNAME
    return folder


def layout_problem(root: str | os.PathLike) -> str | None:
    """Why ``root`` is not the dataset in the Kaggle layout (a missing folder, a missing class folder), or None.

    ``root`` is the ``COVID-19_Radiography_Dataset`` folder or the folder holding it. Only lists folders (no file is
    read), so the runner checks ``data_dir`` with it before any kernel starts.
    """
    root = Path(root).expanduser()
    if not root.exists():
        return f"dataset root {root} does not exist"
    if not root.is_dir():
        return f"dataset root {root} is not a folder"
    dataset = dataset_folder(root)
    found = sorted(p.name for p in dataset.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [name for name in CLASS_NAMES if not (dataset / name).is_dir()]
    if not missing:
        return None
    near = {name: [f for f in found if _canonical(f) == _canonical(name)] for name in missing}
    if all(near.values()):
        renames = ", ".join(f"{near[name][0]!r} to {name!r}" for name in missing)
        return f"class folder {dataset / missing[0]} is missing in {dataset}: rename {renames}"
    listed = ", ".join(found[:8]) + (f", ... ({len(found) - 8} more)" if len(found) > 8 else "") if found else "none"
    return (
        f"class folder {dataset / missing[0]} is missing: {dataset} should be the {DATASET_DIRNAME} folder (or the "
        f"folder holding it), with the class folders {list(CLASS_NAMES)}; its folders: {listed}"
    )


def _dataset_error(message: str):
    from .dataset import DatasetError  # lazily: this module stays importable without NumPy/OpenCV

    return DatasetError(message)


def resolve_kaggle_dir(data_dir: str | os.PathLike = "", handle: str = KAGGLE_HANDLE) -> Path:
    """The ``COVID-19_Radiography_Dataset`` folder for ``source="kaggle"``.

    A non-empty ``data_dir`` is used as given (the folder holding ``COVID-19_Radiography_Dataset``, or that folder
    itself; :func:`helpers.dataset.resolve_dataset_dir`). An empty one downloads ``handle`` with
    ``kagglehub.dataset_download`` (reused from its cache when present). Raises
    :class:`helpers.dataset.DatasetError` naming the manual steps when kagglehub is missing, the download fails
    (offline, no credentials) or the download lacks the dataset folder.
    """
    from .dataset import resolve_dataset_dir

    if str(data_dir):
        return resolve_dataset_dir(data_dir)
    try:
        kagglehub = importlib.import_module("kagglehub")
    except ImportError as exc:
        raise _dataset_error(
            f"source='kaggle' with an empty data_dir downloads the dataset with kagglehub, which is not installed "
            f"({exc}). Either {MANUAL_STEPS}."
        ) from exc
    try:
        downloaded = kagglehub.dataset_download(handle)
    except Exception as exc:  # offline, no credentials, HTTP errors: kagglehub raises many kinds
        raise _dataset_error(
            f"could not download {handle} with kagglehub ({type(exc).__name__}: {exc}). Either {MANUAL_STEPS}."
        ) from exc
    root = Path(downloaded)
    found = resolve_dataset_dir(root)
    if found.name != DATASET_DIRNAME:
        raise _dataset_error(
            f"kagglehub downloaded {handle} to {root}, but it holds no {DATASET_DIRNAME} folder. Either {MANUAL_STEPS}."
        )
    return found
