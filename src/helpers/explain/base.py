"""What every heatmap method shares: input checks, the explained layer, compiled per-batch functions, the batch loop.

A method is a function ``(model, images, classes=None, layer=None, batch_size=32, progress=False,
return_classes=False, **options) -> (N, h, w) float32`` (with ``return_classes``: ``(maps, classes)``), the same
shape as :func:`helpers.explain.grad_cam.gradcam`. Images are uint8 (scaled by 1/255) or floats in [0, 1], (N, H, W[, C]);
``classes`` None explains the predicted class; ``layer`` None explains ``config.FEATURE_LAYER`` (the backbone's
output). The per-batch work is compiled once per model, layer, method and batch size (:func:`helpers.backend.compilation.compiled`);
every last batch is padded to the batch size, so a model sees one shape.

The one backend-specific step, the gradient of the class score with respect to the explained layer, is
:mod:`helpers.explain.grad_cam`' own; everything here is ``keras.ops``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from helpers.backend.compilation import backend, compiled, compiled_function
from helpers.backend.graph import split_at
from helpers.backend.transfer import pad_rows, to_device
from helpers.common import config
from helpers.common.checks import check_int, check_unit_range
from helpers.explain.grad_cam import class_score_gradient

__all__ = [
    "prepare_images",
    "prepare_classes",
    "unit_batch",
    "explained_split",
    "map_grid",
    "cell_bounds",
    "pooling_matrix",
    "chosen_classes",
    "gradient_maps_function",
    "activation_maps_function",
    "activations_function",
    "logits_function",
    "run_batches",
]


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------


def prepare_images(model, images) -> np.ndarray:
    """``images`` as (N, H, W, C) uint8 or float32 in [0, 1], checked against the model's input shape when given."""
    arr = np.asarray(images)
    expected = None
    if model is not None and getattr(model, "inputs", None):
        expected = tuple(model.inputs[0].shape[1:])
    if arr.ndim == 3 and (expected is None or (len(expected) == 3 and expected[-1] == 1)):
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {arr.shape}")
    if expected is not None and (
        len(expected) != 3 or any(e is not None and e != s for e, s in zip(expected, arr.shape[1:]))
    ):
        raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("images is empty")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    check_unit_range(arr, "images")
    return np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0)


def unit_batch(images: np.ndarray, start: int, stop: int, rows: int) -> np.ndarray:
    """Images ``start:stop`` as float32 in [0, 1], padded with zero images to ``rows``."""
    batch = images[start:stop]
    batch = batch.astype(np.float32) / np.float32(255.0) if batch.dtype == np.uint8 else batch.astype(np.float32)
    return pad_rows(batch, rows)


def prepare_classes(classes, n: int, num_classes: int | None) -> np.ndarray:
    """(N,) int32 explained classes, -1 meaning the predicted class; ``classes`` None, one int or N ints."""
    if classes is None:
        return np.full(n, -1, dtype=np.int32)
    arr = np.asarray(classes)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise ValueError(f"classes must be None, one int or {n} ints (one per image), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0)):
            raise ValueError(f"classes must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    upper = num_classes if num_classes is not None else np.iinfo(np.int32).max
    bad = (arr < 0) | (arr >= upper)
    if bad.any():
        raise ValueError(f"classes must lie in [0, {upper - 1}] for this model, got {arr[bad][:5].tolist()}")
    return arr.astype(np.int32)


def explained_split(model, layer=None):
    """The model cut at the explained layer (default ``config.FEATURE_LAYER``), whose output alone must give the logits."""
    if model is None or not getattr(model, "inputs", None):
        raise ValueError("model must be a functional Keras model (with inputs and named layers)")
    if backend() not in ("tensorflow", "jax"):
        raise NotImplementedError(f"heatmap methods support the tensorflow and jax backends, not {backend()!r}")
    name = config.FEATURE_LAYER if layer is None else str(layer)
    split = split_at(model, name)
    if split.dual_call is not None:
        raise ValueError(
            f"the logits of model {model.name!r} depend on more than layer {name!r}: pick a layer whose output "
            "alone gives the logits (e.g. the backbone's output)"
        )
    return split


def map_grid(model, layer=None) -> tuple[int, int]:
    """(h, w) of the explained layer's feature map: the grid of every method's heatmaps."""
    shape = explained_split(model, layer).feature_model.output.shape
    return int(shape[1]), int(shape[2])


def cell_bounds(length: int, cells: int) -> np.ndarray:
    """(cells + 1,) pixel bounds of ``cells`` cells along ``length`` pixels: the study's regions when they fit.

    Regions of ceil(length / cells) pixels (the last one smaller, as :func:`helpers.metrics.perturbation.region_grid`)
    when that gives ``cells`` cells, else the even split ``floor(i * length / cells)``.
    """
    size = math.ceil(length / cells)
    if math.ceil(length / size) == cells:
        return np.minimum(np.arange(cells + 1) * size, length)
    return np.floor(np.arange(cells + 1) * length / cells).astype(int)


def pooling_matrix(length: int, cells: int) -> np.ndarray:
    """(cells, length) float32 matrix averaging the pixels of each cell of :func:`cell_bounds`."""
    bounds = cell_bounds(length, cells)
    matrix = np.zeros((cells, length), np.float32)
    for i in range(cells):
        matrix[i, bounds[i] : bounds[i + 1]] = 1.0 / max(1, bounds[i + 1] - bounds[i])
    return matrix


# ----------------------------------------------------------------------------------------------------
# Compiled per-batch functions
# ----------------------------------------------------------------------------------------------------


def chosen_classes(logits, classes):
    """The explained class of each row: ``classes`` where given (>= 0), else the argmax of the logits (keras.ops)."""
    from keras import ops

    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.where(classes < 0, predicted, classes)


def _shared_backbone(model, split, batch_size: int):
    """The compiled backbone of :func:`helpers.backend.device.features` when the explained layer is the backbone's output."""
    if split.layer_name != config.FEATURE_LAYER:
        return None
    from helpers.backend.device import features

    try:
        return features(model, int(batch_size), "float32")
    except ValueError:
        return None


def gradient_maps_function(model, split, name: str, combine: Callable, batch_size: int) -> Callable:
    """Compiled ``(x, classes) -> (maps, chosen)`` with ``maps = combine(A, dy^c/dA)``, A the explained layer's output."""
    num_classes = split.num_classes

    def head_body(calls, a, classes):
        grads, chosen = class_score_gradient(calls[0], a, classes, num_classes)
        return combine(a, grads), chosen

    shared = _shared_backbone(model, split, batch_size)
    if shared is not None:
        key = ("cam head", split.layer_name, name, int(batch_size))
        head = compiled(model, key, head_body, (split.head_model,))
        return lambda x, classes: head(shared(x), classes)

    def body(calls, x, classes):
        return head_body(calls[1:], calls[0](x), classes)

    key = ("cam", split.layer_name, name, int(batch_size))
    return compiled(model, key, body, (split.feature_model, split.head_model))


def activations_function(model, split, batch_size: int) -> Callable:
    """Compiled ``x -> (A, logits)``: the explained layer's output and the class scores of one batch."""
    shared = _shared_backbone(model, split, batch_size)
    if shared is not None:
        head = _logits_head(model, split, batch_size)
        return lambda x: _pair(shared(x), head)

    def body(calls, x):
        a = calls[0](x)
        return a, calls[1](a)

    key = ("cam activations", split.layer_name, int(batch_size))
    return compiled(model, key, body, (split.feature_model, split.head_model))


def _pair(a, head):
    return a, head(a)


def _logits_head(model, split, batch_size: int) -> Callable:
    """Compiled ``A -> logits`` (the head of the split)."""
    key = ("cam logits head", split.layer_name, int(batch_size))
    return compiled(model, key, lambda calls, a: calls[0](a), (split.head_model,))


def activation_maps_function(model, split, name: str, combine: Callable, batch_size: int) -> Callable:
    """Compiled ``(x, classes) -> (maps, chosen)`` with ``maps = combine(A)`` (no gradient: e.g. Eigen-CAM)."""
    run = activations_function(model, split, batch_size)
    key = ("cam finish", name, int(batch_size), *map(int, split.feature_model.output.shape[1:]))
    finish = compiled_function(key, lambda a, logits, classes: (combine(a), chosen_classes(logits, classes)))
    return lambda x, classes: finish(*run(x), classes)


def logits_function(model, split, batch_size: int) -> Callable:
    """Compiled ``x -> logits`` of a batch of ``batch_size`` images (the backbone shared with the study's forward)."""
    shared = _shared_backbone(model, split, batch_size)
    if shared is not None:
        head = _logits_head(model, split, batch_size)
        return lambda x: head(shared(x))
    body = lambda calls, x: calls[1](calls[0](x))  # noqa: E731
    key = ("cam full logits", split.layer_name, int(batch_size))
    return compiled(model, key, body, (split.feature_model, split.head_model))


# ----------------------------------------------------------------------------------------------------
# The batch loop
# ----------------------------------------------------------------------------------------------------


def run_batches(
    images: np.ndarray,
    classes: np.ndarray,
    batch_size: int,
    per_batch: Callable,
    desc: str,
    progress: bool = False,
    return_classes: bool = False,
):
    """Run ``per_batch(x float32 (B, H, W, C), classes int32 (B,)) -> (maps, chosen)`` over padded batches; stack them.

    Every batch is dispatched before any is read back (the device works while the host prepares the next one).
    """
    from keras import ops

    batch_size = check_int("batch_size", batch_size, 1)
    n = images.shape[0]
    pending = []
    bar = None
    if progress:
        from helpers.common.progress import tqdm

        bar = tqdm(total=n, desc=desc, unit="img")
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x = unit_batch(images, start, stop, batch_size)
        c = pad_rows(classes[start:stop], batch_size)
        pending.append((start, stop, per_batch(to_device(x), to_device(c))))
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()
    maps, explained = None, np.empty(n, dtype=np.int32)
    for start, stop, (batch_maps, chosen) in pending:
        batch_maps = np.asarray(ops.convert_to_numpy(batch_maps), dtype=np.float32)
        if maps is None:
            maps = np.empty((n, *batch_maps.shape[1:]), dtype=np.float32)
        maps[start:stop] = batch_maps[: stop - start]
        explained[start:stop] = np.asarray(ops.convert_to_numpy(chosen))[: stop - start]
    return (maps, explained) if return_classes else maps
