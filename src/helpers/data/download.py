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
from pathlib import Path

from helpers.common.config import DATASET_DIRNAME

__all__ = [
    "KAGGLE_HANDLE",
    "KAGGLE_URL",
    "MANUAL_STEPS",
    "kagglehub_available",
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


def _dataset_error(message: str):
    from helpers.data.layout import DatasetError

    return DatasetError(message)


def resolve_kaggle_dir(data_dir: str | os.PathLike = "", handle: str = KAGGLE_HANDLE) -> Path:
    """The ``COVID-19_Radiography_Dataset`` folder for ``source="kaggle"``.

    A non-empty ``data_dir`` is used as given (the folder holding ``COVID-19_Radiography_Dataset``, or that folder
    itself; :func:`helpers.data.layout.resolve_dataset_dir`). An empty one downloads ``handle`` with
    ``kagglehub.dataset_download`` (reused from its cache when present). Raises
    :class:`helpers.data.layout.DatasetError` naming the manual steps when kagglehub is missing, the download fails
    (offline, no credentials) or the download lacks the dataset folder.
    """
    from helpers.data.layout import resolve_dataset_dir

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
