"""Verified reads: an ``.npz`` under data/ checked against its lineage, a saved model against its recorded SHA-256."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping

import numpy as np

from helpers.common.files import load_json
from helpers.study import lineage
from helpers.study.lineage import LineageError


class ModelIntegrityError(LineageError):
    """A saved model's bytes do not match the SHA-256 recorded when it was saved (truncated or modified)."""


def load_verified_npz(paths, path, producer: str, keys=None) -> dict:
    """The arrays (all, or ``keys``) of an ``.npz`` under data/, read once and checked against its lineage
    (:func:`helpers.study.lineage.read_verified`: SHA-256, inputs, parameters) before they are parsed."""
    data = lineage.read_verified(paths, path, producer)
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files if keys is None or key in keys}


def verified_model_info(paths, files: Mapping[str, Path], notebook: str, expect: Mapping | None = None) -> dict:
    """The JSON ``files["info"]`` of a saved model ``files["model"]`` once both exist, the model has the SHA-256 the
    JSON recorded at saving (:class:`ModelIntegrityError`) and its lineage holds (:class:`LineageError`); errors name
    ``notebook``, which wrote them."""
    for key in ("model", "info"):
        if not files[key].is_file():
            raise FileNotFoundError(f"{files[key]} does not exist: run {notebook} first")
    info = load_json(files["info"])
    recorded = (info.get("sha256") or {}).get("model")
    if not recorded:
        raise ModelIntegrityError(
            f"{files['info']} records no SHA-256 of {files['model'].name} (saved by an older version): rerun {notebook}"
        )
    digest = lineage.file_digest(files["model"])
    if digest != recorded:
        raise ModelIntegrityError(
            f"{files['model']} does not match the SHA-256 recorded in {files['info'].name} when it was saved "
            f"(the file is truncated or was modified): rerun {notebook}"
        )
    lineage.check_input(paths, files["model"], notebook, expect=expect, digest=digest)
    return info
