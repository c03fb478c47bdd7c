"""Files of the lung segmentation (notebook 02): the U-Net, its history, and the predicted lung masks of every split.

::

    paths.models    / "lung_unet.keras"          the U-Net with the best validation Dice's weights (SHA-256 checked)
    paths.models    / "lung_unet_history.csv"    loss and validation Dice per epoch
    paths.models    / "lung_unet_training.json"  settings, the kept epoch, SHA-256 of the model
    paths.processed / "lung_masks.npz"           predicted lung masks (0/1 uint8) per split at the classifier's size

The classifier notebooks (03-07) read ``lung_masks.npz`` through :func:`helpers.study.files.load_split` when
``input_mask="lung"``; the lineage record of the masks makes them stale when notebook 02 reruns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.common.files import atomic_path, save_json, save_npz
from helpers.data.layout import SPLITS
from helpers.study import lineage
from helpers.study.integrity import load_verified_npz, verified_model_info

__all__ = [
    "SEGMENTATION_NOTEBOOK",
    "segmenter_files",
    "save_segmenter",
    "load_segmenter",
    "lung_masks_path",
    "save_lung_masks",
    "load_lung_masks",
]

#: The notebook that trains the U-Net and writes the predicted lung masks.
SEGMENTATION_NOTEBOOK = "02_lung_segmentation"


def segmenter_files(paths) -> dict[str, Path]:
    """The U-Net's files in ``paths.models``: ``model``, ``history``, ``info``."""
    folder = Path(paths.models)
    return {
        "model": folder / "lung_unet.keras",
        "history": folder / "lung_unet_history.csv",
        "info": folder / "lung_unet_training.json",
    }


def save_segmenter(paths, model, history: pd.DataFrame, info: dict) -> dict[str, Path]:
    """Write the U-Net, its history and its JSON (with the model's SHA-256) atomically, and record their lineage."""
    files = segmenter_files(paths)
    with atomic_path(files["model"], suffix=".keras") as tmp:
        model.save(tmp)
    with atomic_path(files["history"], suffix=".csv") as tmp:
        history.to_csv(tmp, index=False)
    sha = lineage.file_digest(files["model"])
    save_json({**info, "sha256": {"model": sha}, "run_id": lineage.run_id()}, files["info"])
    lineage.record_write(paths, files["model"], SEGMENTATION_NOTEBOOK, lineage.current_parameters() or info, sha)
    return files


def load_segmenter(paths):
    """The saved U-Net (safe mode) after checking its SHA-256 and lineage, and its training JSON."""
    from helpers.models.segmentation import load_unet

    files = segmenter_files(paths)
    info = verified_model_info(paths, files, SEGMENTATION_NOTEBOOK)
    return load_unet(files["model"]), info


def lung_masks_path(paths) -> Path:
    """``paths.processed / "lung_masks.npz"``: one 0/1 uint8 (N, H, W) array per split, manifest order."""
    return Path(paths.processed) / "lung_masks.npz"


def save_lung_masks(paths, masks: dict) -> Path:
    """Write the predicted lung masks of every split (``{"train": (N, H, W), ...}``, 0/1) and record their lineage."""
    missing = sorted(set(SPLITS) - set(masks))
    if missing:
        raise ValueError(f"lung masks are missing for the split(s) {missing}")
    arrays = {split: (np.asarray(masks[split]) > 0).astype(np.uint8) for split in SPLITS}
    for split, array in arrays.items():
        if array.ndim != 3 or array.shape[1] != array.shape[2]:
            raise ValueError(f"lung masks of {split!r} must be (N, S, S), got {array.shape}")
    path = save_npz(lung_masks_path(paths), **arrays)
    lineage.record_write(paths, path, SEGMENTATION_NOTEBOOK)
    return path


def load_lung_masks(paths, split: str, image_size: int, n_images: int) -> np.ndarray:
    """The predicted lung masks of one split, checked against its size and count (a clear error naming the file)."""
    path = lung_masks_path(paths)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: input_mask='lung' needs the lung masks of {SEGMENTATION_NOTEBOOK}; run it first"
        )
    arrays = load_verified_npz(paths, path, SEGMENTATION_NOTEBOOK, keys=(split,))  # the others stay compressed
    if split not in arrays:
        raise ValueError(f"{path} has no {split!r} masks: rerun {SEGMENTATION_NOTEBOOK}")
    masks = arrays[split]
    if masks.shape != (n_images, image_size, image_size):
        raise ValueError(
            f"{path} holds {split!r} masks of shape {masks.shape}, but the split has {n_images} images at "
            f"{image_size}x{image_size}: rerun {SEGMENTATION_NOTEBOOK} with this image_size"
        )
    return masks
