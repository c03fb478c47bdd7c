"""The dataset's folder layout (the Kaggle COVID-19 Radiography Database): where it is, what it must hold, the
split manifest's columns, and :class:`DatasetError`. Importable without NumPy, so the runner checks before any kernel.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from helpers.common.config import CLASS_NAMES, DATASET_DIRNAME

#: Columns of the split manifest (``paths.split_manifest``), in order.
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "label_index", "mask_path", "lesion_mask_path", "split")


#: Split names, in order.
SPLITS: tuple[str, ...] = ("train", "val", "test")


#: Extensions accepted as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")


#: Subfolder of a class holding lesion masks (synthetic phantoms only).
LESION_DIRNAME = "lesion_masks"


class DatasetError(ValueError):
    """A dataset folder, file or parameter that the data layer cannot use (the message names it)."""


def resolve_dataset_dir(root: str | os.PathLike) -> Path:
    """The ``COVID-19_Radiography_Dataset`` folder inside ``root``, or ``root`` itself; raises when it is missing."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    return dataset_folder(root)


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
