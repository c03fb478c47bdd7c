"""The study's dataset and its split manifest: the dataset folder notebook 01's parameters name, and ``split.csv``
written and read with its lineage (the SHA-256 that every later read checks).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.common.config import CLASS_NAMES
from helpers.common.files import atomic_path
from helpers.data.download import resolve_kaggle_dir
from helpers.data.layout import MANIFEST_COLUMNS, SPLITS, DatasetError
from helpers.data.phantoms import synthesize_dataset, synthetic_dir_name
from helpers.study import lineage

__all__ = ["dataset_from_parameters", "write_manifest", "read_manifest"]


def dataset_from_parameters(
    paths,
    source: str = "synthetic",
    data_dir: str | os.PathLike = "",
    synthetic_per_class=500,
    synthetic_size: int = 128,
    seed: int = 0,
    confounder: bool = False,
    progress: bool = True,
) -> Path:
    """The dataset folder named by notebook 01's parameters: the Kaggle download, or phantoms generated under ``paths.raw``.

    ``source="kaggle"``: the folder ``data_dir``, or with an empty ``data_dir`` the download kagglehub keeps in its
    cache (:func:`helpers.data.download.resolve_kaggle_dir`).
    """
    if source == "kaggle":
        return resolve_kaggle_dir(data_dir)
    if source == "synthetic":
        root = Path(paths.raw) / synthetic_dir_name(synthetic_size, synthetic_per_class, seed, confounder)
        return synthesize_dataset(
            root, synthetic_per_class, image_size=synthetic_size, seed=seed, confounder=confounder, progress=progress
        )
    raise DatasetError(f"source must be 'synthetic' or 'kaggle', got {source!r}")


def write_manifest(frames, path: str | os.PathLike, paths=None) -> Path:
    """Write the split manifest CSV (columns :data:`helpers.data.layout.MANIFEST_COLUMNS`) from (train, val, test) frames or one frame with ``split``, atomically.

    With ``paths`` (:class:`StudyPaths`) its lineage is recorded (``split.csv.lineage.json``), which later
    notebooks need to read it through :func:`load_split`.
    """
    frame = pd.concat(list(frames), ignore_index=True) if isinstance(frames, (list, tuple)) else frames
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"cannot write the manifest {path}: the frames lack the columns {missing}")
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise DatasetError(f"cannot write the manifest {path}: unknown split names {bad}")
    path = Path(path)
    with atomic_path(path, suffix=".csv") as tmp:
        frame[list(MANIFEST_COLUMNS)].to_csv(tmp, index=False)
    if paths is not None:
        lineage.record_write(
            paths, path, "01_data", skipped=len(frame.attrs.get("skipped", [])), dataset=frame.attrs.get("root")
        )
    return path


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read the split manifest CSV, checking its bytes against its lineage record's SHA-256, its columns, labels and splits."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split manifest {path} does not exist: run notebook 01 (01_data) first")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    lineage.refuse_modified(path, "01_data", digest)  # when it has a lineage record
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"split manifest {path} is not a readable CSV: {exc}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"split manifest {path} lacks the columns {missing} (has {list(frame.columns)})")
    if frame.empty:
        raise DatasetError(f"split manifest {path} has no rows")
    bad_labels = sorted(set(frame["label"]) - set(CLASS_NAMES))
    bad_splits = sorted(set(frame["split"]) - set(SPLITS))
    if bad_labels or bad_splits:
        raise DatasetError(f"split manifest {path} has unknown labels {bad_labels} or splits {bad_splits}")
    expected = frame["label"].map(CLASS_NAMES.index)
    if (
        not frame["label_index"].str.fullmatch(r"\d+").all()
        or (frame["label_index"].astype(np.int64) != expected).any()
    ):
        raise DatasetError(f"split manifest {path} has label_index values that do not match its labels")
    frame["label_index"] = frame["label_index"].astype(np.int64)
    frame = frame[list(MANIFEST_COLUMNS)]
    frame.attrs["sha256"] = digest
    return frame
