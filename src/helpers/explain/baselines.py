"""Model-independent baseline maps: a Sobel edge map of the image and a seeded random map, on the explained layer's grid.

A heatmap method that scores no better than these on a metric says nothing about the model on that metric; under
model-parameter randomisation these maps stay exactly the same (they never look at the weights).

* ``sobel``: the gradient magnitude ``sqrt(G_x^2 + G_y^2)`` of the image (mean over channels) by the 3x3 Sobel
  kernels, borders reflected (``cv2.BORDER_REFLECT_101``), averaged over each cell of the map grid (the study's
  regions when they fit, :func:`helpers.explain.base.cell_bounds`).
* ``random``: i.i.d. U(0, 1) values per cell from a generator seeded by (seed, image id) only.

The model only gives the grid (the explained layer's (h, w)) and, when asked, the predicted classes.

References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS (edge detectors as the
model-independent map); Sobel & Feldman 1968, "A 3x3 isotropic gradient operator for image processing".
"""

from __future__ import annotations

import numpy as np

from helpers.backend.compilation import compiled_function
from helpers.common.checks import check_int, check_pair, check_seed
from helpers.common.seeds import image_rng
from helpers.explain.base import (
    chosen_classes,
    explained_split,
    logits_function,
    map_grid,
    pooling_matrix,
    prepare_classes,
    prepare_images,
    run_batches,
)

__all__ = ["sobel", "random_map", "edge_map"]

#: Random stream of the random baseline (apart from the perturbation module's noise, tie and order streams).
_STREAM_RANDOM_MAP = 11

_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], np.float32)


def _sobel_function(batch_size: int, image_shape: tuple, grid: tuple):
    """Compiled ``x (B, H, W, C) -> (B, h, w)`` pooled Sobel gradient magnitude."""
    from keras import ops

    height, width, _ = image_shape
    rows = pooling_matrix(height, grid[0])
    cols = pooling_matrix(width, grid[1])
    kernel = np.stack([_SOBEL_X, _SOBEL_X.T], axis=-1)[:, :, None, :]  # (3, 3, 1, 2): G_x and G_y

    def edges(x):
        gray = ops.mean(ops.cast(x, "float32"), axis=-1, keepdims=True)
        padded = ops.pad(gray, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        gradients = ops.conv(padded, ops.convert_to_tensor(kernel), padding="valid")
        magnitude = ops.sqrt(ops.sum(gradients * gradients, axis=-1))
        pooled = ops.einsum("hH,bHW->bhW", ops.convert_to_tensor(rows), magnitude)
        return ops.relu(ops.einsum("bhW,wW->bhw", pooled, ops.convert_to_tensor(cols)))

    return compiled_function(("sobel", int(batch_size), *map(int, image_shape), *map(int, grid)), edges)


def _grid_and_classes(model, layer, grid, n, classes):
    if grid is not None:
        grid = check_pair(grid, "grid")
    elif model is None:
        raise ValueError("give a model (whose explained layer sets the grid) or grid=(h, w)")
    else:
        grid = map_grid(model, layer)
    num_classes = explained_split(model, layer).num_classes if model is not None else None
    return grid, prepare_classes(classes, n, num_classes)


def _explained(model, layer, x, wanted, batch_size):
    """The explained classes: the given ones, the model's predictions where -1 (all -1 without a model)."""
    if model is None or (wanted >= 0).all():
        return wanted
    from keras import ops

    split = explained_split(model, layer)
    logits_of = logits_function(model, split, batch_size)

    def per_batch(xb, cb):
        chosen = chosen_classes(logits_of(xb), cb)
        return ops.zeros((batch_size, 1, 1)), chosen

    return run_batches(x, wanted, batch_size, per_batch, "classes", return_classes=True)[1]


def edge_map(images, grid, batch_size: int = 32) -> np.ndarray:
    """Pooled Sobel edge magnitude (N, h, w) float32 of images (N, H, W[, C]) on a ``grid`` = (h, w) (no model).

    References: Sobel & Feldman 1968, "A 3x3 isotropic gradient operator for image processing".
    """
    from keras import ops

    batch_size = check_int("batch_size", batch_size, 1)
    x = prepare_images(None, images)
    grid = check_pair(grid, "grid")
    run = _sobel_function(batch_size, x.shape[1:], grid)
    return run_batches(
        x, np.full(len(x), -1, np.int32), batch_size, lambda xb, cb: (run(xb), ops.zeros_like(cb)), "sobel"
    )


def sobel(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False, grid=None):
    """Sobel edge magnitude of the image, averaged over each cell of the explained layer's grid (model-independent).

    ``grid`` (h, w) replaces the explained layer's grid (then ``model`` may be None).
    References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS (the edge-detector baseline).
    """
    x = prepare_images(model, images)
    grid, wanted = _grid_and_classes(model, layer, grid, len(x), classes)
    maps = edge_map(x, grid, batch_size)
    return (maps, _explained(model, layer, x, wanted, batch_size)) if return_classes else maps


def random_map(
    model,
    images,
    classes=None,
    layer=None,
    batch_size=32,
    progress=False,
    return_classes=False,
    seed=0,
    image_ids=None,
    grid=None,
):
    """I.i.d. U(0, 1) map per image on the explained layer's grid, seeded by (seed, image id) only.

    ``image_ids`` (default 0..N-1): a subset scored with its original ids gets the same maps.
    References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS (model-independent baselines).
    """
    x = prepare_images(model, images)
    grid, wanted = _grid_and_classes(model, layer, grid, len(x), classes)
    seed = check_seed(seed)
    ids = np.arange(len(x)) if image_ids is None else np.asarray(image_ids, dtype=np.int64)
    if ids.shape != (len(x),) or (len(ids) and ids.min() < 0):
        raise ValueError(f"image_ids must be {len(x)} non-negative integers, got shape {ids.shape}")
    maps = np.stack([image_rng(seed, i, _STREAM_RANDOM_MAP).random(grid, dtype=np.float32) for i in ids])
    return (maps, _explained(model, layer, x, wanted, batch_size)) if return_classes else maps
