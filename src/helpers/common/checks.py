"""Validators shared by every layer: integers, seeds, pairs, and images as float32 in [0, 1] (names the argument)."""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------------------------------
# Validators
# ----------------------------------------------------------------------------------------------------


def check_int(name: str, value, minimum: int = 1, error: type = ValueError, type_error: type | None = None) -> int:
    """Return ``value`` as an int ``>= minimum``; raise ``error`` (``type_error`` for a non-integer, if given)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise (type_error or error)(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed, error: type = ValueError) -> int:
    """Return ``seed`` as a non-negative int."""
    return check_int("seed", seed, 0, error)


def check_pair(value, name: str) -> tuple[int, int]:
    """Return ``value`` as a (height, width) pair of positive ints, or raise naming ``name``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(int(v) for v in value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a (height, width) pair, got {value!r}") from None
        if len(pair) != 2 or any(float(v) != int(v) for v in value):
            raise ValueError(f"{name} must be an int or a (height, width) pair of ints, got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def check_unit_range(x, name: str = "images") -> None:
    """Raise unless every value of the float array ``x`` lies in [0, 1] (NaN fails)."""
    low, high = float(np.min(x)), float(np.max(x))
    if not (low >= -1e-6 and high <= 1 + 1e-6):
        raise ValueError(
            f"{name} holds floats in [{low:g}, {high:g}]: float images must be in [0, 1] "
            "(pass uint8 images, or divide by 255)"
        )


def to_unit_range(batch, name: str = "images") -> np.ndarray:
    """Convert a batch of uint8 images to float32 in [0, 1]; float batches must already be in [0, 1]."""
    batch = np.asarray(batch)
    if batch.dtype == np.uint8:
        return batch.astype(np.float32) / np.float32(255.0)
    if batch.size:
        check_unit_range(batch, name)
    return batch.astype(np.float32, copy=False)


def image_array(images, name: str = "images") -> np.ndarray:
    """Return images as float32 (N, H, W, C) in [0, 1]; uint8 is divided by 255, (N, H, W) gets a channel axis."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, C), got {arr.shape}")
    if arr.dtype == np.uint8:
        return to_unit_range(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    return np.clip(to_unit_range(arr, name), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------
# Files: project root, atomic writes, JSON and NPZ
# ----------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------
# Splitting a functional classifier into feature map and head
# ----------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------
# Moving data to the device
# ----------------------------------------------------------------------------------------------------
