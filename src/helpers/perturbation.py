"""MoRF/LeRF region perturbation, perturbation curves, AOPC and bootstrap intervals.

The image is cut into a grid of square regions; the regions are ordered by the heatmap (most relevant
first for MoRF, least relevant first for LeRF, or a seeded random order as the baseline), and step k of
the curve replaces regions 1..k by a perturbed copy of the image. ``f(x^k)``, the model's probability of
the explained class, falls fastest when the heatmap ranks the truly relevant regions first; the area
over that curve, AOPC, scores the heatmap.

Definitions used throughout (one fixed perturbed copy ``g(x)`` per image):

* ``step(p)`` = position (1-based) of the region holding pixel ``p`` in the perturbation order;
* ``x^k = where(step(p) <= k, g(x), x)`` for k = 0..L, L = number of regions (so ``x^0 = x``, ``x^L = g(x)``);
* ``AOPC(L) = 1/(L+1) * mean_i sum_{k=1..L} [f_i(x^0) - f_i(x^k)]``.

References: Samek et al., "Evaluating the visualization of what a deep neural network has learned",
IEEE TNNLS 2017 (MoRF, LeRF, AOPC); Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (34 px
regions, additive N(0, 0.1) noise, AOPC of VGG16 and DenseNet201).
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

#: Perturbation functions g understood by :func:`perturbed_images` and :func:`morf_curves`.
PERTURBATIONS: tuple[str, ...] = ("gaussian", "uniform", "mean", "blur")
#: Region orders understood by :func:`region_order` and :func:`morf_curves`.
ORDERS: tuple[str, ...] = ("morf", "lerf", "random")
#: Device memory (bytes) that one group of resident images (clean copy, perturbed copy, step map) may use.
DEVICE_BUDGET_BYTES = 512 * 2**20

# Independent random streams derived from (seed, image id, stream).
_STREAM_NOISE = 1
_STREAM_TIES = 2
_STREAM_RANDOM_ORDER = 3


# ----------------------------------------------------------------------------------------------------
# Region grid and region scores
# ----------------------------------------------------------------------------------------------------


def _pair(value, name: str) -> tuple[int, int]:
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


@dataclass(frozen=True)
class RegionGrid:
    """Regions of an image in raster order: per-pixel region index, grid shape and region bounds."""

    image_shape: tuple[int, int]
    region_size: tuple[int, int]
    grid_shape: tuple[int, int]
    row_bounds: np.ndarray  # (gh + 1,) pixel row where each region row starts, plus the image height
    col_bounds: np.ndarray  # (gw + 1,)
    region_map: np.ndarray  # (H, W) int32, region index of every pixel (raster order of regions)

    @property
    def n_regions(self) -> int:
        """Number of regions R (= L, the number of perturbation steps)."""
        return self.grid_shape[0] * self.grid_shape[1]

    @property
    def region_pixels(self) -> np.ndarray:
        """(R,) number of pixels in each region."""
        return np.bincount(self.region_map.ravel(), minlength=self.n_regions)


def region_grid(image_size, region_size) -> RegionGrid:
    """Cut an image of ``image_size`` into ``region_size`` regions in raster order (last row/column smaller when it does not divide).

    34 px regions of a 299 px image give a 9x9 grid whose last row and column are 27 px.
    """
    (height, width) = _pair(image_size, "image_size")
    (rh, rw) = _pair(region_size, "region_size")
    if rh > height or rw > width:
        raise ValueError(f"region_size {region_size!r} is larger than the image ({height}x{width})")
    gh, gw = math.ceil(height / rh), math.ceil(width / rw)
    row_bounds = np.minimum(np.arange(gh + 1) * rh, height)
    col_bounds = np.minimum(np.arange(gw + 1) * rw, width)
    rows = np.arange(height) // rh
    cols = np.arange(width) // rw
    region_map = (rows[:, None] * gw + cols[None, :]).astype(np.int32)
    return RegionGrid((height, width), (rh, rw), (gh, gw), row_bounds, col_bounds, region_map)


def _bilinear_matrix(out_len: int, in_len: int) -> np.ndarray:
    """(out_len, in_len) matrix of 1-D bilinear resizing with half-pixel centres (as cv2 / tf.image.resize)."""
    src = (np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5
    src = np.clip(src, 0.0, in_len - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, in_len - 1)
    frac = src - lo
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.arange(out_len), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_len), hi), frac)
    return matrix


def _region_mean_matrix(bounds: np.ndarray, length: int) -> np.ndarray:
    """(n_regions, length) matrix averaging pixels of each 1-D region."""
    matrix = np.zeros((len(bounds) - 1, length))
    for r in range(len(bounds) - 1):
        matrix[r, bounds[r] : bounds[r + 1]] = 1.0 / (bounds[r + 1] - bounds[r])
    return matrix


def _heatmap_array(heatmaps, name: str = "heatmaps") -> np.ndarray:
    """Return heatmaps as float64 (N, h, w), accepting a trailing channel axis of 1."""
    heat = np.asarray(heatmaps)
    if heat.ndim == 4 and heat.shape[-1] == 1:
        heat = heat[..., 0]
    if heat.ndim != 3:
        raise ValueError(f"{name} must have shape (N, h, w), got {heat.shape}")
    if not np.issubdtype(heat.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {heat.dtype}")
    heat = heat.astype(np.float64)
    if not np.all(np.isfinite(heat)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return heat


def region_scores(heatmaps, image_size, region_size) -> np.ndarray:
    """Score every region: the heatmap's own cell when its shape is the region grid, else the region mean of the bilinearly upsampled map; (N, R)."""
    grid = region_grid(image_size, region_size)
    heat = _heatmap_array(heatmaps)
    n, h, w = heat.shape
    if (h, w) == grid.grid_shape:
        return heat.reshape(n, -1).copy()
    height, width = grid.image_shape
    rows = _region_mean_matrix(grid.row_bounds, height) @ _bilinear_matrix(height, h)  # (gh, h)
    cols = _region_mean_matrix(grid.col_bounds, width) @ _bilinear_matrix(width, w)  # (gw, w)
    return np.einsum("ah,nhw,bw->nab", rows, heat, cols).reshape(n, -1)


# ----------------------------------------------------------------------------------------------------
# Seeds, orders and perturbed copies
# ----------------------------------------------------------------------------------------------------


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _image_ids(image_ids, n: int) -> np.ndarray:
    """Return per-image ids (default 0..n-1) as non-negative int64, checking their count."""
    if image_ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(image_ids)
    if ids.shape != (n,):
        raise ValueError(f"image_ids must have one id per image ({n}), got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer) or (n and ids.min() < 0):
        raise ValueError("image_ids must be non-negative integers")
    return ids.astype(np.int64)


def image_rng(seed: int, image_id: int, stream: int) -> np.random.Generator:
    """Random generator of one image: a function of (seed, image id, stream) only, so batching and model never change it."""
    return np.random.default_rng(np.random.SeedSequence([_check_seed(seed), int(image_id), int(stream)]))


def region_order(scores, order: str = "morf", seed: int = 0, image_ids=None) -> np.ndarray:
    """Region indices in perturbation order, (N, R): MoRF by descending score, LeRF ascending, or a seeded random order.

    Row i lists image i's regions, the region perturbed at step k in column k-1. Ties are broken by a
    random priority seeded from (seed, image id), never by raster order; ``"random"`` ignores the scores.
    References: Samek et al., "Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS 2017.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must have shape (N, R) with R > 0, got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    seed = _check_seed(seed)
    ids = _image_ids(image_ids, len(scores))
    n, r = scores.shape
    result = np.empty((n, r), dtype=np.int32)
    for i in range(n):
        if order == "random":
            result[i] = image_rng(seed, ids[i], _STREAM_RANDOM_ORDER).permutation(r)
            continue
        priority = image_rng(seed, ids[i], _STREAM_TIES).permutation(r)
        primary = -scores[i] if order == "morf" else scores[i]
        result[i] = np.lexsort((priority, primary))
    return result


def step_of_region(orders) -> np.ndarray:
    """Invert region orders: (N, R) step number (1..R) at which each region is perturbed (MoRF's cumulative steps).

    References: Samek et al., IEEE TNNLS 2017.
    """
    orders = np.asarray(orders)
    n, r = orders.shape
    steps = np.empty_like(orders, dtype=np.int32)
    steps[np.arange(n)[:, None], orders] = np.arange(1, r + 1, dtype=np.int32)[None, :]
    return steps


def _image_array(images, name: str = "images") -> np.ndarray:
    """Return images as float32 (N, H, W, C) in [0, 1]; uint8 is divided by 255, (N, H, W) gets a channel axis."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, C), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < -1e-6 or arr.max() > 1.0 + 1e-6):
        raise ValueError(f"float {name} must lie in [0, 1] (got min {arr.min()}, max {arr.max()})")
    return np.clip(arr, 0.0, 1.0)


def _check_perturbation(perturbation: str, sigma: float, fill, blur_sigma) -> None:
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    if fill is not None and not 0.0 <= float(fill) <= 1.0:
        raise ValueError(f"fill must be None (the image mean) or a value in [0, 1], got {fill!r}")
    if blur_sigma is not None and not float(blur_sigma) > 0:
        raise ValueError(f"blur_sigma must be positive, got {blur_sigma!r}")


def perturbed_images(
    images,
    perturbation: str = "gaussian",
    sigma: float = 0.1,
    seed: int = 0,
    image_ids=None,
    fill: float | None = None,
    blur_sigma: float = 4.0,
) -> np.ndarray:
    """The fixed perturbed copy g(x) of every image, float32 (N, H, W, C) in [0, 1].

    ``"gaussian"``: clip(x + N(0, sigma)) (the paper's); ``"uniform"``: U(0, 1) replacement (Samek et al.);
    ``"mean"``: the image mean, or ``fill``; ``"blur"``: a Gaussian blur of the image (``blur_sigma`` px).
    Noise comes from a generator seeded by (seed, image id) only: the same image gets the same noise
    whichever model, order or batch size is used (common random numbers).
    References: Samek et al., IEEE TNNLS 2017; Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images".
    """
    _check_perturbation(perturbation, sigma, fill, blur_sigma)
    seed = _check_seed(seed)
    x = _image_array(images)
    ids = _image_ids(image_ids, len(x))
    out = np.empty_like(x)
    for i in range(len(x)):
        if perturbation == "gaussian":
            noise = image_rng(seed, ids[i], _STREAM_NOISE).standard_normal(x.shape[1:], dtype=np.float32)
            out[i] = x[i] + np.float32(sigma) * noise
        elif perturbation == "uniform":
            out[i] = image_rng(seed, ids[i], _STREAM_NOISE).random(x.shape[1:], dtype=np.float32)
        elif perturbation == "mean":
            out[i] = x[i].mean() if fill is None else float(fill)
        else:  # blur
            import cv2

            blurred = cv2.GaussianBlur(x[i], (0, 0), sigmaX=float(blur_sigma), borderType=cv2.BORDER_REFLECT)
            out[i] = blurred.reshape(x.shape[1:])
    return np.clip(out, 0.0, 1.0, out=out)


# ----------------------------------------------------------------------------------------------------
# Batched perturbation curves
# ----------------------------------------------------------------------------------------------------

_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _compile(model, key, body):
    """Compile ``body(forward, *args)`` for ``model``, cached per model and ``key``: ``forward`` maps a batch to the model's outputs.

    On JAX the whole body is one jitted function of the model's variables (``stateless_call``), on TensorFlow a
    ``tf.function``; other backends run eagerly. The cache holds the model weakly.
    """
    cache = _COMPILED.setdefault(model, {})
    if key in cache:
        return cache[key]
    model_ref = weakref.ref(model)  # the cache must not keep the model alive
    del model
    backend = _backend()
    if backend == "jax":
        import jax

        @jax.jit
        def _jitted(trainable, non_trainable, *args):
            def forward(inputs):
                return model_ref().stateless_call(trainable, non_trainable, inputs, training=False)[0]

            return body(forward, *args)

        def compiled(*args):
            model = model_ref()
            return _jitted([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables], *args)

    else:

        def compiled(*args):
            return body(lambda inputs: model_ref()(inputs, training=False), *args)

        if backend == "tensorflow":
            import tensorflow as tf

            compiled = tf.function(compiled, reduce_retracing=True)
    cache[key] = compiled
    return compiled


def make_forward(model):
    """A compiled forward pass of ``model`` (jitted ``stateless_call`` on JAX, ``tf.function`` on TensorFlow): batch -> probabilities."""
    return _compile(model, "forward", lambda forward, inputs: forward(inputs))


def _make_curve_batch(model, batch_size: int):
    """Compiled ``(x, g, steps, classes, start, n_steps) -> f`` for one batch of (image, step) pairs.

    Pairs ``start .. start + batch_size - 1`` of the group's flattened sequence (image-major, step-minor)
    are built on the device as ``where(steps[img] <= k, g[img], x[img])`` and scored in one forward.
    """
    from keras import ops

    def build_and_score(forward, x, g, steps, classes, start, n_steps):
        pair = start + ops.arange(batch_size, dtype="int32")
        img = ops.minimum(pair // n_steps, ops.shape(x)[0] - 1)
        k = pair % n_steps
        perturbed = ops.expand_dims(ops.take(steps, img, axis=0) <= k[:, None, None], -1)
        inputs = ops.where(perturbed, ops.take(g, img, axis=0), ops.take(x, img, axis=0))
        probs = forward(inputs)
        return ops.take_along_axis(probs, ops.take(classes, img)[:, None], axis=1)[:, 0]

    return _compile(model, ("curve", batch_size), build_and_score)


def _model_classes(model) -> int | None:
    """Number of model outputs (classes) when the model declares it."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[-1], (int, type(None))):
        return shape[-1]
    return None


def _model_input_shape(model) -> tuple | None:
    """(H, W, C) the model declares for its single input, when fully known."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if not isinstance(shape, tuple) or len(shape) != 4 or any(d is None for d in shape[1:]):
        return None
    return shape[1:]


def _group_size(n_images: int, n_steps: int, batch_size: int, bytes_per_image: int, budget: int) -> int:
    """Images per device-resident group: a multiple of lcm(batch, L+1)/(L+1) so batches never straddle groups."""
    unit = math.lcm(batch_size, n_steps) // n_steps
    units = max(1, budget // max(1, unit * bytes_per_image))
    return min(n_images, unit * units)


def default_blur_sigma(region_size) -> float:
    """Blur width (px) of the ``"blur"`` perturbation when none is given: a quarter of the region side, at least 1."""
    return max(1.0, min(_pair(region_size, "region_size")) / 4.0)


def morf_curves(
    model,
    images,
    heatmaps,
    classes,
    region_size,
    perturbation: str = "gaussian",
    sigma: float = 0.1,
    order: str = "morf",
    seed: int = 0,
    batch_size: int = 128,
    image_ids=None,
    progress: bool = True,
    fill: float | None = None,
    blur_sigma: float | None = None,
    device_budget_bytes: int = DEVICE_BUDGET_BYTES,
) -> np.ndarray:
    """Perturbation curves f(x^k), k = 0..L, of every image: float64 (N, L+1), f = the model's probability of ``classes[i]``.

    ``images`` uint8 or float in [0, 1], (N, H, W[, C]); ``heatmaps`` (N, h, w) raw relevance (``None`` allowed
    for ``order="random"``); ``classes`` (N,) explained class. The L+1 cumulative inputs of each image are
    built on the device from a per-pixel step index, and (image, step) pairs of consecutive images go
    through the model ``batch_size`` at a time. ``image_ids`` (default 0..N-1) seed the noise and the
    tie-breaking, so a subset scored with its original ids gets the same numbers. ``blur_sigma`` defaults
    to a quarter of the region size.
    References: Samek et al., IEEE TNNLS 2017; Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images".
    """
    from keras import ops

    # --- validate everything before heavy work
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if blur_sigma is None:
        blur_sigma = default_blur_sigma(region_size)
    _check_perturbation(perturbation, sigma, fill, blur_sigma)
    seed = _check_seed(seed)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = int(batch_size)
    x = _image_array(images)
    n, height, width, channels = x.shape
    if n == 0:
        raise ValueError("images is empty")
    expected = _model_input_shape(model)
    if expected is not None and tuple(expected) != (height, width, channels):
        raise ValueError(f"images have shape (H, W, C) = {(height, width, channels)} but the model expects {tuple(expected)}")
    grid = region_grid((height, width), region_size)
    if heatmaps is None:
        if order != "random":
            raise ValueError(f"heatmaps are required for order={order!r} (only 'random' ignores them)")
        scores = np.zeros((n, grid.n_regions))
    else:
        heat = _heatmap_array(heatmaps)
        if len(heat) != n:
            raise ValueError(f"heatmaps has {len(heat)} maps for {n} images")
        scores = region_scores(heat, (height, width), grid.region_size)
    classes = np.asarray(classes)
    if classes.shape != (n,):
        raise ValueError(f"classes must have one class per image, shape ({n},), got {classes.shape}")
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must be integer class indices, got dtype {classes.dtype}")
    n_classes = _model_classes(model)
    if classes.min() < 0 or (n_classes is not None and classes.max() >= n_classes):
        raise ValueError(f"classes must lie in [0, {n_classes}), got range [{classes.min()}, {classes.max()}]")
    ids = _image_ids(image_ids, n)

    # --- host-side bookkeeping (cheap): orders, per-region steps, perturbed copies
    steps_of_regions = step_of_region(region_order(scores, order, seed, ids))
    n_steps = grid.n_regions + 1
    region_map = grid.region_map

    bytes_per_image = height * width * (8 * channels + 4)
    group = _group_size(n, n_steps, batch_size, bytes_per_image, int(device_budget_bytes))
    batch_fn = _make_curve_batch(model, batch_size)
    n_steps_t = ops.convert_to_tensor(np.int32(n_steps))
    curves = np.empty((n, n_steps), dtype=np.float64)

    total_batches = sum(
        math.ceil(min(group, n - s) * n_steps / batch_size) for s in range(0, n, group)
    )
    bar = None
    if progress:
        from .progress import tqdm

        bar = tqdm(total=total_batches, desc=f"{order} curves ({perturbation})", unit="batch")
    for first in range(0, n, group):
        last = min(n, first + group)
        real = last - first
        padded = group if n > group else real  # pad the last group so every group compiles to one shape
        g_host = perturbed_images(
            x[first:last], perturbation, sigma, seed, ids[first:last], fill=fill, blur_sigma=blur_sigma
        )
        step_pix = steps_of_regions[first:last][:, region_map]  # (real, H, W) int32
        cls = classes[first:last].astype(np.int32)
        x_host = x[first:last]
        if padded > real:
            pad = padded - real
            x_host = np.concatenate([x_host, np.zeros((pad,) + x.shape[1:], np.float32)])
            g_host = np.concatenate([g_host, np.zeros((pad,) + x.shape[1:], np.float32)])
            step_pix = np.concatenate([step_pix, np.zeros((pad, height, width), np.int32)])
            cls = np.concatenate([cls, np.zeros(pad, np.int32)])
        x_dev = ops.convert_to_tensor(x_host)
        g_dev = ops.convert_to_tensor(g_host)
        steps_dev = ops.convert_to_tensor(step_pix)
        cls_dev = ops.convert_to_tensor(cls)
        pairs = real * n_steps
        outputs = []
        for start in range(0, pairs, batch_size):
            outputs.append(batch_fn(x_dev, g_dev, steps_dev, cls_dev, ops.convert_to_tensor(np.int32(start)), n_steps_t))
            if bar is not None:
                bar.update(1)
        values = np.concatenate([ops.convert_to_numpy(o) for o in outputs])[:pairs]
        curves[first:last] = values.reshape(real, n_steps)
    if bar is not None:
        bar.close()
    return curves


# ----------------------------------------------------------------------------------------------------
# AOPC, masks and statistics
# ----------------------------------------------------------------------------------------------------


def _curves_array(curves, name: str = "curves") -> np.ndarray:
    arr = np.asarray(curves, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, L+1), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return arr


def _mask_array(mask, n: int, name: str = "mask") -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != (n,) or mask.dtype != bool:
        raise ValueError(f"{name} must be a boolean array of shape ({n},), got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise ValueError(f"{name} selects no image")
    return mask


def per_image_aopc(curves) -> np.ndarray:
    """Per-image AOPC after every step, (N, L+1): (1/(L+1)) * sum_{k=1..L} [f(x^0) - f(x^k)], 0 at L = 0.

    References: Samek et al., IEEE TNNLS 2017.
    """
    arr = _curves_array(curves)
    drops = np.cumsum(arr[:, :1] - arr, axis=1)  # column 0 is f0 - f0 = 0
    return drops / np.arange(1, arr.shape[1] + 1)[None, :]


def aopc(curves, mask=None) -> dict:
    """AOPC after each step L = 0..L_max (mean of :func:`per_image_aopc` over ``mask``'s images) and per-image values.

    ``mask`` (boolean (N,), e.g. :func:`correct_mask`) selects the images; ``None`` takes all. Returns
    ``aopc`` (L_max+1,), ``final`` (AOPC at L_max), ``per_image`` (n, L_max+1), ``per_image_final`` (n,),
    ``indices`` (the selected images) and ``n_images``.
    References: Samek et al., IEEE TNNLS 2017.
    """
    arr = _curves_array(curves)
    mask = _mask_array(mask, len(arr))
    per_image = per_image_aopc(arr[mask])
    curve = per_image.mean(axis=0)
    return {
        "aopc": curve,
        "final": float(curve[-1]),
        "per_image": per_image,
        "per_image_final": per_image[:, -1],
        "indices": np.flatnonzero(mask),
        "n_images": int(mask.sum()),
    }


def correct_mask(predicted, labels) -> np.ndarray:
    """Boolean (N,) mask of the correctly classified images."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or predicted.ndim != 1:
        raise ValueError(f"predicted and labels must be 1-D of one shape, got {predicted.shape} and {labels.shape}")
    return predicted == labels


def common_mask(*masks) -> np.ndarray:
    """Images selected by every mask (e.g. classified correctly by both models), for a paired comparison."""
    if not masks:
        raise ValueError("common_mask needs at least one mask")
    arrays = [np.asarray(m, dtype=bool) for m in masks]
    if any(a.shape != arrays[0].shape or a.ndim != 1 for a in arrays):
        raise ValueError(f"masks must be 1-D of one shape, got {[a.shape for a in arrays]}")
    return np.logical_and.reduce(arrays)


def bootstrap_ci(per_image_values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap interval of the mean over images (axis 0): ``mean``, ``low``, ``high`` (per column for 2-D input).

    Resampling is vectorized as a (n_boot, n) matrix of draw counts, so a whole curve shares one set of resamples.
    References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile interval).
    """
    values = np.asarray(per_image_values, dtype=np.float64)
    if values.ndim not in (1, 2) or len(values) == 0:
        raise ValueError(f"per_image_values must be a non-empty (n,) or (n, T) array, got {values.shape}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    rng = np.random.default_rng(np.random.SeedSequence([_check_seed(seed), 0xB007]))
    n = len(values)
    flat = values.reshape(n, -1)
    means = np.empty((n_boot, flat.shape[1]))
    block = max(1, min(n_boot, 2**22 // n))
    for b0 in range(0, n_boot, block):
        b1 = min(n_boot, b0 + block)
        draws = rng.integers(0, n, size=(b1 - b0, n))
        counts = np.bincount((draws + n * np.arange(b1 - b0)[:, None]).ravel(), minlength=(b1 - b0) * n)
        means[b0:b1] = counts.reshape(b1 - b0, n) @ flat / n
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    shape = values.shape[1:]
    mean = flat.mean(axis=0)
    squeeze = (lambda a: float(a[0])) if not shape else (lambda a: a.reshape(shape))
    return {"mean": squeeze(mean), "low": squeeze(low), "high": squeeze(high), "n": n, "n_boot": int(n_boot), "level": level}


def aopc_summary(curves, mask=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """AOPC curve and final value with bootstrap intervals (per-step band and final), plus per-image final values."""
    result = aopc(curves, mask)
    band = bootstrap_ci(result["per_image"], n_boot, seed, level)
    return {
        "aopc": result["aopc"],
        "aopc_low": band["low"],
        "aopc_high": band["high"],
        "final": result["final"],
        "final_low": float(band["low"][-1]),
        "final_high": float(band["high"][-1]),
        "per_image_final": result["per_image_final"],
        "indices": result["indices"],
        "n_images": result["n_images"],
        "level": level,
    }


def paired_difference(curves_a, curves_b, mask=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """AOPC(a) - AOPC(b) on the same images (per-image differences resampled together): curve, final, intervals.

    Used for model vs model on the images both classify correctly, and for MoRF - LeRF or MoRF - random of one model.
    """
    a, b = _curves_array(curves_a, "curves_a"), _curves_array(curves_b, "curves_b")
    if a.shape != b.shape:
        raise ValueError(f"curves_a and curves_b must have one shape, got {a.shape} and {b.shape}")
    mask = _mask_array(mask, len(a))
    return _difference_summary(per_image_aopc(a[mask]) - per_image_aopc(b[mask]), n_boot, seed, level)


def _difference_summary(diff: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    """Mean curve, final value and bootstrap intervals of per-image AOPC differences (n, L+1)."""
    band = bootstrap_ci(diff, n_boot, seed, level)
    return {
        "difference": band["mean"],
        "difference_low": band["low"],
        "difference_high": band["high"],
        "final": float(band["mean"][-1]),
        "final_low": float(band["low"][-1]),
        "final_high": float(band["high"][-1]),
        "share_positive": float(np.mean(diff[:, -1] > 0)),
        "n_images": int(len(diff)),
        "level": level,
    }


def paired_contrast_difference(
    curves_a, baseline_a, curves_b, baseline_b, mask=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """[AOPC(a) - AOPC(baseline_a)] - [AOPC(b) - AOPC(baseline_b)] on the same images, per-image values resampled together.

    With a = model 1 MoRF, baseline_a = model 1 random order (and b, baseline_b the same for model 2) this
    compares the heatmaps' advantage over a random order between two models, which removes each model's
    own sensitivity to the perturbation. Same keys as :func:`paired_difference`.
    """
    arrays = [_curves_array(c, name) for c, name in
              ((curves_a, "curves_a"), (baseline_a, "baseline_a"), (curves_b, "curves_b"), (baseline_b, "baseline_b"))]
    if any(arr.shape != arrays[0].shape for arr in arrays):
        raise ValueError(f"all curves must have one shape, got {[arr.shape for arr in arrays]}")
    mask = _mask_array(mask, len(arrays[0]))
    pa, ba, pb, bb = (per_image_aopc(arr[mask]) for arr in arrays)
    return _difference_summary((pa - ba) - (pb - bb), n_boot, seed, level)


def selection_mask(mask) -> tuple[np.ndarray, str]:
    """The images AOPC is computed on: ``mask`` (the correctly classified ones), or all images when it selects none (tiny runs)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 1:
        raise ValueError(f"mask must be 1-D, got shape {mask.shape}")
    if mask.any():
        return mask, "correctly classified"
    return np.ones_like(mask), "all images (none classified correctly)"


def aopc_report(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    masks: Mapping[str, np.ndarray],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Every AOPC number of the study from ``curves[model][order]`` (N, L+1) and ``masks[model]`` (correctly classified).

    Per model and order: :func:`aopc_summary` on that model's correct images (all images if it has none,
    see :func:`selection_mask`; ``selection`` says which); MoRF - random and MoRF - LeRF (paired, same images).
    For the first two models, on the images both classify correctly (when there are such images): each
    model's AOPC per order and its MoRF - random / MoRF - LeRF (``orders``), the paired difference per order
    (first minus second, ``order_differences``; MoRF also as ``difference``) and the paired difference of MoRF - random (``morf_minus_random_difference``:
    the heatmap comparison, free of each model's sensitivity to the perturbation) and of MoRF - LeRF.
    """
    names = list(curves)
    if not names:
        raise ValueError("curves is empty")
    report: dict = {"models": {}, "n_boot": n_boot, "seed": seed, "level": level}
    for name in names:
        if name not in masks:
            raise ValueError(f"masks has no entry for model {name!r}")
        if "morf" not in curves[name]:
            raise ValueError(f"curves[{name!r}] has no 'morf' curves")
        mask, selection = selection_mask(masks[name])
        entry = {o: aopc_summary(c, mask, n_boot, seed, level) for o, c in curves[name].items()}
        for other in ("random", "lerf"):
            if other in curves[name]:
                entry[f"morf_minus_{other}"] = paired_difference(
                    curves[name]["morf"], curves[name][other], mask, n_boot, seed, level
                )
        entry["selection"] = selection
        report["models"][name] = entry
    if len(names) >= 2:
        a, b = names[:2]
        both = common_mask(masks[a], masks[b])
        if both.any():
            orders = {name: {o: aopc_summary(c, both, n_boot, seed, level) for o, c in curves[name].items()}
                      for name in (a, b)}
            order_differences = {
                o: paired_difference(curves[a][o], curves[b][o], both, n_boot, seed, level)
                for o in curves[a] if o in curves[b]
            }
            paired = {
                "models": [a, b],
                "n_images": int(both.sum()),
                a: orders[a]["morf"],  # the same seeded bootstrap as below: computed once
                b: orders[b]["morf"],
                "difference": order_differences["morf"],
                "orders": orders,
                "order_differences": order_differences,
            }
            for other in ("random", "lerf"):
                if other in curves[a] and other in curves[b]:
                    for name in (a, b):
                        paired["orders"][name][f"morf_minus_{other}"] = paired_difference(
                            curves[name]["morf"], curves[name][other], both, n_boot, seed, level
                        )
                    paired[f"morf_minus_{other}_difference"] = paired_contrast_difference(
                        curves[a]["morf"], curves[a][other], curves[b]["morf"], curves[b][other], both, n_boot, seed, level
                    )
            report["paired"] = paired
    return report


def sample_indices(mask, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices of ``mask``'s selected images, drawn with the seed and sorted (``n`` <= 0: all of them)."""
    chosen = np.flatnonzero(np.asarray(mask, dtype=bool))
    if n <= 0 or n >= len(chosen):
        return chosen
    rng = np.random.default_rng(np.random.SeedSequence([_check_seed(seed), 0x5AB5]))
    return np.sort(rng.choice(chosen, size=int(n), replace=False))


def load_model_outputs(paths, model_name: str, n_images: int | None = None) -> dict:
    """Read one model's test predictions (notebook 04) and heatmaps (notebook 05) and check they match each other and the test split.

    Returns ``probabilities``, ``labels``, ``predicted``, ``heatmaps``, ``classes`` (explained class),
    ``method`` (the heatmap method) and ``correct``: the images whose prediction and explained class are both
    the true label, so every scored curve follows the probability of the class the image was counted correct for.
    """
    from .evaluation import load_predictions, predictions_path
    from .gradcam import heatmaps_path, load_heatmaps

    pred_path, heat_path = predictions_path(paths, model_name), heatmaps_path(paths, model_name)
    pred, heat = load_predictions(paths, model_name), load_heatmaps(paths, model_name)
    for key in ("heatmaps", "classes"):
        if key not in heat:
            raise KeyError(f"{heat_path} has no array {key!r}")
    n = len(pred["labels"])
    if n_images is not None and n != n_images:
        raise ValueError(f"{pred_path} has {n} images but the test split has {n_images}: rerun notebook 04")
    if len(heat["heatmaps"]) != n or len(heat["classes"]) != n:
        raise ValueError(f"{heat_path} has {len(heat['heatmaps'])} heatmaps for {n} test images: rerun notebook 05")
    labels = pred["labels"].astype(np.int64)
    predicted = pred["predicted"].astype(np.int64)
    classes = heat["classes"].astype(np.int64)
    disagree = int(np.sum(predicted != classes))
    if disagree:
        warnings.warn(f"{model_name}: {disagree} test image(s) explained for another class than notebook 04 predicted "
                      f"(a near-tie); they are left out of the correctly classified set", stacklevel=2)
    return {
        "probabilities": pred["probabilities"],
        "labels": labels,
        "predicted": predicted,
        "heatmaps": heat["heatmaps"],
        "classes": classes,
        "method": str(heat.get("method", "gradcam")),
        "correct": correct_mask(predicted, labels) & (classes == labels),
    }


# ----------------------------------------------------------------------------------------------------
# Ablation over perturbation functions
# ----------------------------------------------------------------------------------------------------


def setting_label(perturbation: str, sigma: float | None = None, blur_sigma: float | None = None) -> str:
    """Short label of a perturbation setting, e.g. ``gaussian σ=0.1``, ``blur σ=4 px``, ``uniform``."""
    if perturbation == "gaussian":
        return f"gaussian σ={sigma:g}"
    if perturbation == "blur":
        return f"blur σ={blur_sigma:g} px"
    return perturbation


def perturbation_ablation(
    model,
    images,
    heatmaps,
    classes,
    region_size,
    settings: Sequence[tuple[str, float]],
    mask=None,
    seed: int = 0,
    batch_size: int = 128,
    image_ids=None,
    n_boot: int = 1000,
    level: float = 0.95,
    blur_sigma: float | None = None,
    progress: bool = True,
    precomputed: Mapping[tuple, Mapping[str, np.ndarray]] | None = None,
) -> list[dict]:
    """AOPC of MoRF and random orders for each (perturbation, sigma) in ``settings``: one row per distinct setting.

    ``sigma`` matters for ``"gaussian"`` only (settings differing only in an unused sigma are run once).
    ``precomputed`` maps a setting ``(perturbation, sigma)`` to its ``{"morf": curves, "random": curves}`` of these
    same images and ids (e.g. the main run's), which are used instead of scoring that setting again.
    Rows: ``setting`` (label), ``perturbation``, ``sigma`` (None unless Gaussian), ``aopc_morf`` with interval,
    ``aopc_random``, ``morf_minus_random`` with interval, ``n_images``.

    References: Samek et al., IEEE TNNLS 2017 (uniform replacement); Fong & Vedaldi, "Interpretable
    explanations of black boxes by meaningful perturbation", ICCV 2017 (blur).
    """
    if blur_sigma is None:
        blur_sigma = default_blur_sigma(region_size)
    unique = []
    for p, s in settings:
        _check_perturbation(str(p), float(s), None, blur_sigma)
        key = (str(p), float(s) if p == "gaussian" else None)
        if key not in unique:
            unique.append(key)
    known = {}
    for (p, s), given in (precomputed or {}).items():
        key = (str(p), float(s) if p == "gaussian" else None)
        if set(given) < {"morf", "random"} or any(len(given[o]) != len(images) for o in ("morf", "random")):
            raise ValueError(f"precomputed curves for {key} need 'morf' and 'random' curves of all {len(images)} images")
        known[key] = given
    rows = []
    if progress:
        from .progress import tqdm

        unique_iter = tqdm(unique, desc="perturbation ablation", unit="setting")
    else:
        unique_iter = unique
    for p, s in unique_iter:
        common = dict(perturbation=p, sigma=0.0 if s is None else s, seed=seed, batch_size=batch_size,
                      image_ids=image_ids, progress=False, blur_sigma=blur_sigma)
        if (p, s) in known:
            morf, rand = known[(p, s)]["morf"], known[(p, s)]["random"]
        else:
            morf = morf_curves(model, images, heatmaps, classes, region_size, order="morf", **common)
            rand = morf_curves(model, images, None, classes, region_size, order="random", **common)
        m = aopc_summary(morf, mask, n_boot, seed, level)
        r = aopc_summary(rand, mask, n_boot, seed, level)
        d = paired_difference(morf, rand, mask, n_boot, seed, level)
        rows.append(
            {
                "setting": setting_label(p, s, blur_sigma),
                "perturbation": p,
                "sigma": s,
                "aopc_morf": m["final"],
                "aopc_morf_low": m["final_low"],
                "aopc_morf_high": m["final_high"],
                "aopc_random": r["final"],
                "morf_minus_random": d["final"],
                "morf_minus_random_low": d["final_low"],
                "morf_minus_random_high": d["final_high"],
                "n_images": m["n_images"],
                "level": level,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------
# Figures and the study summary
# ----------------------------------------------------------------------------------------------------


def _ax(ax, figsize=(7, 4.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def plot_aopc(summaries: Mapping[str, dict], baselines: Mapping[str, dict] | None = None, ax=None, title: str | None = None):
    """The paper's Figure 8: AOPC against the perturbation step for each model (solid) and its random-order baseline (dashed), with interval bands."""
    fig, ax = _ax(ax)
    colors = {}
    for i, (label, s) in enumerate(summaries.items()):
        steps = np.arange(len(s["aopc"]))
        (line,) = ax.plot(steps, s["aopc"], lw=2, label=f"{label} MoRF (AOPC {s['final']:.3f})", color=f"C{i}")
        ax.fill_between(steps, s["aopc_low"], s["aopc_high"], alpha=0.2, color=line.get_color(), lw=0)
        colors[label] = line.get_color()
    for label, s in (baselines or {}).items():
        steps = np.arange(len(s["aopc"]))
        color = colors.get(label, "grey")
        ax.plot(steps, s["aopc"], ls="--", lw=1.5, color=color, label=f"{label} random order ({s['final']:.3f})")
        ax.fill_between(steps, s["aopc_low"], s["aopc_high"], alpha=0.1, color=color, lw=0)
    level = next(iter(summaries.values()))["level"] if summaries else 0.95
    ax.set_xlabel("perturbation step L")
    ax.set_ylabel("AOPC(L)")
    ax.set_title(title or f"AOPC vs perturbation step ({level:.0%} bootstrap bands)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_curves(curves: Mapping[str, np.ndarray], ax=None, title: str | None = None, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Mean perturbation curves f(x^k) against the step k with bootstrap bands, one line per entry of ``curves`` ((n, L+1) each)."""
    fig, ax = _ax(ax)
    for label, c in curves.items():
        c = _curves_array(c, f"curves[{label!r}]")
        band = bootstrap_ci(c, n_boot, seed, level)
        steps = np.arange(c.shape[1])
        (line,) = ax.plot(steps, band["mean"], lw=2, label=f"{label} (n={len(c)})")
        ax.fill_between(steps, band["low"], band["high"], alpha=0.2, color=line.get_color(), lw=0)
    ax.set_xlabel("perturbation step k")
    ax.set_ylabel("f(x^k): probability of the explained class")
    ax.set_title(title or "Mean perturbation curves")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _ablation_subset_text(rows: Sequence[Mapping]) -> str:
    """'n = 48 images per model' (or per-model counts) from the ablation rows' ``n_images``."""
    counts = {r.get("model", ""): r["n_images"] for r in rows if "n_images" in r}
    if not counts:
        return ""
    if len(set(counts.values())) == 1:
        n = next(iter(counts.values()))
        return f"subset of n = {n} correctly classified test images" + (" per model" if len(counts) > 1 else "")
    return "subsets of " + ", ".join(f"n = {n} ({m})" if m else f"n = {n}" for m, n in counts.items()) + " test images"


def plot_ablation(rows: Sequence[Mapping], ax=None, title: str | None = None):
    """Bar chart of MoRF - random AOPC (with interval) per perturbation setting and model (rows need a ``model`` key).

    Every bar carries its value as text (so a bar of exactly 0 reads "0.000" rather than looking missing);
    the default title names the image subset (the rows' ``n_images``).
    """
    fig, ax = _ax(ax, figsize=(9, 4.8))
    models = list(dict.fromkeys(r.get("model", "") for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    width = 0.8 / max(1, len(models))
    extent = [0.0]
    labels = []
    for j, model in enumerate(models):
        sel = {r["setting"]: r for r in rows if r.get("model", "") == model}
        pos = np.arange(len(settings)) + (j - (len(models) - 1) / 2) * width
        vals = np.array([sel[s]["morf_minus_random"] if s in sel else np.nan for s in settings])
        low = np.array([sel[s]["morf_minus_random_low"] if s in sel else np.nan for s in settings])
        high = np.array([sel[s]["morf_minus_random_high"] if s in sel else np.nan for s in settings])
        ax.bar(pos, vals, width, yerr=np.vstack([vals - low, high - vals]), capsize=3, label=model or None,
               color=f"C{j}", edgecolor=f"C{j}", lw=1.0)
        for x, v, lo, hi in zip(pos, vals, low, high):
            if np.isfinite(v):
                labels.append((x, v, lo, hi))
                extent += [lo, hi]
    span = max(extent) - min(extent) or 1.0
    pad = 0.02 * span
    for x, v, lo, hi in labels:
        text = _fmt(v)
        # above the interval for values >= 0, below it for negative values
        y, va = (max(v, hi) + pad, "bottom") if v >= 0 else (min(v, lo) - pad, "top")
        ax.text(x, y, text, ha="center", va=va, fontsize=7, rotation=90 if len(models) > 2 else 0)
        if abs(v) < 0.005 * span:  # a bar too thin to see: mark its position on the zero line
            ax.plot([x - width / 2, x + width / 2], [0, 0], lw=3, color="black", solid_capstyle="butt")
    ax.set_ylim(min(extent) - 0.15 * span, max(extent) + 0.2 * span)
    ax.set_xticks(np.arange(len(settings)))
    ax.set_xticklabels([label.replace(" ", "\n", 1) for label in settings])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("AOPC(MoRF) − AOPC(random)")
    subset = _ablation_subset_text(rows)
    ax.set_title(title or "Perturbation ablation: heatmap advantage over a random order" + (f"\n({subset})" if subset else ""))
    if any(models):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig


def _fmt(value) -> str:
    """A number with 3 decimals, never "-0.000"."""
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _interval(value, low, high) -> str:
    return f"{_fmt(value)} [{_fmt(low)}, {_fmt(high)}]"


def _entry_interval(entry: Mapping) -> str:
    """'final [low, high]' of an :func:`aopc_summary` or :func:`paired_difference` result."""
    return _interval(entry["final"], entry["final_low"], entry["final_high"])


def _ci_label(level: float) -> str:
    return f"[{int(round(100 * level))}% CI]"


#: Column names of the AOPC quantities, by report key.
AOPC_LABELS: dict[str, str] = {
    "morf": "AOPC (MoRF)",
    "random": "random-order AOPC",
    "lerf": "LeRF AOPC",
    "morf_minus_random": "MoRF − random",
    "morf_minus_lerf": "MoRF − LeRF",
}


def aopc_table(report: Mapping) -> list[dict]:
    """Rows for ``reporting.markdown_table``: per model its images, AOPC per order, MoRF − random and MoRF − LeRF ('value [low, high]').

    When the report has a paired comparison, a last row gives the paired differences first − second model on the
    images both classify correctly, per order and for MoRF − random / MoRF − LeRF.
    """
    ci = _ci_label(report["level"])
    rows = []
    for name, entry in report["models"].items():
        row = {"model": name, "images": entry["morf"]["n_images"]}
        for key, label in AOPC_LABELS.items():
            if key in entry:
                row[f"{label} {ci}"] = _entry_interval(entry[key])
        rows.append(row)
    if "paired" in report:
        p = report["paired"]
        a, b = p["models"]
        row = {"model": f"{a} − {b} (paired, both correct)", "images": p["n_images"]}
        differences = dict(p.get("order_differences", {"morf": p["difference"]}))
        for other in ("random", "lerf"):
            if f"morf_minus_{other}_difference" in p:
                differences[f"morf_minus_{other}"] = p[f"morf_minus_{other}_difference"]
        for key, label in AOPC_LABELS.items():
            if key in differences:
                row[f"{label} {ci}"] = _entry_interval(differences[key])
        rows.append(row)
    return rows


def ablation_table(rows: Sequence[Mapping]) -> list[dict]:
    """Rows for ``reporting.markdown_table`` from :func:`perturbation_ablation` rows (with a ``model`` key): AOPC of MoRF and random, MoRF − random with interval."""
    table = []
    for r in rows:
        table.append(
            {
                "model": r.get("model", ""),
                "perturbation": r["setting"],
                "AOPC (MoRF)": float(r["aopc_morf"]),
                "random-order AOPC": float(r["aopc_random"]),
                f"MoRF − random {_ci_label(r.get('level', 0.95))}": _interval(
                    r["morf_minus_random"], r["morf_minus_random_low"], r["morf_minus_random_high"]
                ),
                "images": r["n_images"],
            }
        )
    return table


def summary_rows(report: Mapping, classification: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """The study's final table as rows for ``reporting.markdown_table``: model, macro test recall and F1, AOPC, random baseline, MoRF − random, MoRF − LeRF (with intervals).

    ``report`` is :func:`aopc_report`'s result; ``classification[model]`` holds the test ``recall`` and ``f1``
    (macro averages, e.g. from ``evaluation.summary_row``). MoRF − random is the heatmap's own score: the raw
    AOPC also grows with the model's sensitivity to the perturbation, which the random order measures.
    """
    ci = _ci_label(report["level"])
    rows = []
    for name, entry in report["models"].items():
        if name not in classification:
            raise ValueError(f"classification has no metrics for model {name!r}")
        row = {
            "model": name,
            "macro test recall": float(classification[name]["recall"]),
            "macro test F1": float(classification[name]["f1"]),
        }
        for key, label in AOPC_LABELS.items():
            if key != "lerf" and key in entry:
                row[f"{label} {ci}"] = _entry_interval(entry[key])
        row["images"] = entry["morf"]["n_images"]
        rows.append(row)
    return rows


def paired_sentences(report: Mapping) -> list[str]:
    """The paired model comparison as text: MoRF AOPC difference, the random-order AOPCs it is confounded with, and the MoRF − random difference that measures the heatmaps."""
    if "paired" not in report:
        return []
    p = report["paired"]
    a, b = p["models"]
    orders = p.get("orders", {a: {"morf": p[a]}, b: {"morf": p[b]}})
    lines = [
        f"Paired comparison on the {p['n_images']} test images both models classify correctly. "
        f"AOPC (MoRF): {a} {p[a]['final']:.3f}, {b} {p[b]['final']:.3f}, "
        f"difference {a} − {b} = {_entry_interval(p['difference'])}."
    ]
    if "random" in orders[a] and "random" in orders[b]:
        lines.append(
            f"This raw AOPC difference mixes the heatmaps with each model's sensitivity to the perturbation itself: "
            f"a random region order already gives AOPC {a} {orders[a]['random']['final']:.3f}, "
            f"{b} {orders[b]['random']['final']:.3f}."
        )
    if "morf_minus_random_difference" in p:
        lines.append(
            f"The heatmaps are measured by MoRF − random (the AOPC a heatmap adds over a random order on the same "
            f"images): {a} {_entry_interval(orders[a]['morf_minus_random'])}, "
            f"{b} {_entry_interval(orders[b]['morf_minus_random'])}; paired difference {a} − {b} = "
            f"{_entry_interval(p['morf_minus_random_difference'])}."
        )
    return lines


def _ci_sign(entry: Mapping) -> int:
    """+1 when the interval lies above 0, -1 below 0, 0 when it contains 0."""
    return 1 if entry["final_low"] > 0 else (-1 if entry["final_high"] < 0 else 0)


def aopc_conclusions(report: Mapping, classification: Mapping[str, Mapping[str, float]], recall_tolerance: float = 0.01) -> dict:
    """Whether this run supports the paper's claim (the better-generalizing model has the better AOPC), as sentences computed from the numbers.

    The better-generalizing model is the one with the higher macro test recall; recalls within
    ``recall_tolerance`` make the claim impossible to judge by accuracy. AOPC is compared on the images
    both models classify correctly (paired intervals), then the caveats: AOPC also measures the model's
    sensitivity to the perturbation (the random-order AOPC), and the heatmaps' own quality is MoRF − random.
    Returns ``verdict`` ("holds", "does not hold", "cannot be judged"), ``better_generalizing`` and
    ``better_aopc`` (model names or None), ``better_heatmaps`` (the model whose MoRF − random is higher
    with an interval excluding 0, else None) and ``sentences``.
    References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images"; Samek et al., IEEE TNNLS 2017.
    """
    if not recall_tolerance >= 0:
        raise ValueError(f"recall_tolerance must be non-negative, got {recall_tolerance!r}")
    names = list(report["paired"]["models"]) if "paired" in report else list(report["models"])[:2]
    if len(names) != 2:
        raise ValueError(f"aopc_conclusions needs two models in the report, got {list(report['models'])}")
    for name in names:
        if name not in classification:
            raise ValueError(f"classification has no metrics for model {name!r}")
    a, b = names
    recall = {n: float(classification[n]["recall"]) for n in names}
    f1 = {n: float(classification[n]["f1"]) for n in names}
    if "paired" in report:
        p = report["paired"]
        src = p.get("orders", {a: {"morf": p[a]}, b: {"morf": p[b]}})
        where = f"on the {p['n_images']} test images both models classify correctly"
        morf_diff, heat_diff = p["difference"], p.get("morf_minus_random_difference")
        rand_diff = p.get("order_differences", {}).get("random")
    else:
        src = report["models"]
        where = "on each model's own correctly classified test images (no image is classified correctly by both)"
        morf_diff = heat_diff = rand_diff = None
    morf = {n: src[n]["morf"]["final"] for n in names}
    sentences = []

    # 1. the paper's claim: accuracy first, then raw AOPC
    better_aopc = a if morf[a] > morf[b] else (b if morf[b] > morf[a] else None)
    if morf_diff is not None and _ci_sign(morf_diff) == 0:
        aopc_text = (f"AOPC (MoRF) {a} {morf[a]:.3f} vs {b} {morf[b]:.3f} {where}; the paired difference "
                     f"{_entry_interval(morf_diff)} does not exclude 0")
    elif morf_diff is not None:
        aopc_text = (f"AOPC (MoRF) {a} {morf[a]:.3f} vs {b} {morf[b]:.3f} {where}, paired difference "
                     f"{a} − {b} = {_entry_interval(morf_diff)}")
    else:
        aopc_text = f"AOPC (MoRF) {a} {morf[a]:.3f} vs {b} {morf[b]:.3f} {where}"
    if abs(recall[a] - recall[b]) <= recall_tolerance:
        verdict, better_gen = "cannot be judged", None
        sentences.append(
            f"The paper's claim (the better-generalizing model has the better AOPC) cannot be judged by accuracy "
            f"on this run: macro test recall is {recall[a]:.3f} for {a} and {recall[b]:.3f} for {b} (F1 {f1[a]:.3f} "
            f"and {f1[b]:.3f}), within {recall_tolerance:g} of each other, so neither model generalizes better."
        )
        sentences.append(f"For the record, {aopc_text}.")
    else:
        better_gen = a if recall[a] > recall[b] else b
        other = b if better_gen == a else a
        verdict = "holds" if better_aopc == better_gen else "does not hold"
        qualifier = ""
        if verdict == "holds" and morf_diff is not None and _ci_sign(morf_diff) == 0:
            qualifier = " only as a point estimate"
        sentences.append(
            f"{better_gen} generalizes better (macro test recall {recall[better_gen]:.3f} vs {recall[other]:.3f}, "
            f"F1 {f1[better_gen]:.3f} vs {f1[other]:.3f}) and "
            f"{'has' if verdict == 'holds' else 'does not have'} the higher AOPC: {aopc_text}. "
            f"The paper's claim {verdict} on this run{qualifier}."
        )

    # 2. caveat: sensitivity to the perturbation, measured by the random order
    if all("random" in src[n] for n in names):
        rand = {n: src[n]["random"]["final"] for n in names}
        text = (f"Caveat: AOPC also grows with a model's sensitivity to the perturbation itself; a random region "
                f"order already gives AOPC {a} {rand[a]:.3f} and {b} {rand[b]:.3f}")
        if rand_diff is not None and _ci_sign(rand_diff) != 0:
            text += (f" (paired difference {_entry_interval(rand_diff)}), so the raw AOPC comparison between "
                     f"the models is confounded by how each reacts to the noise")
        sentences.append(text + ".")

    # 3. the heatmaps' own score: MoRF - random
    better_heat = None
    if all("morf_minus_random" in src[n] for n in names):
        per_model = []
        for n in names:
            entry = src[n]["morf_minus_random"]
            judgement = {1: "better than a random order", 0: "no better than a random order",
                         -1: "worse than a random order"}[_ci_sign(entry)]
            per_model.append(f"{n} {_entry_interval(entry)} ({judgement})")
        text = "The heatmaps themselves are measured by MoRF − random: " + "; ".join(per_model)
        if heat_diff is not None:
            sign = _ci_sign(heat_diff)
            better_heat = {1: a, -1: b, 0: None}[sign]
            text += f"; paired difference {a} − {b} = {_entry_interval(heat_diff)}"
            if better_heat is None:
                text += ", so neither model's heatmaps are distinguishably better"
            else:
                text += f", so {better_heat}'s heatmaps are better"
                if better_gen is not None:
                    text += " (the better-generalizing model's)" if better_heat == better_gen else " (not the better-generalizing model's)"
        sentences.append(text + ".")
    return {
        "verdict": verdict,
        "better_generalizing": better_gen,
        "better_aopc": better_aopc,
        "better_heatmaps": better_heat,
        "sentences": sentences,
    }


def write_summary(
    paths,
    rows: list[dict],
    report: Mapping | None = None,
    title: str | None = None,
    notes: str = "",
    conclusions: Mapping | None = None,
) -> dict:
    """Write the final table to ``paths.report / "summary.md"`` and ``paths.metrics / "summary.json"``; return both paths.

    Under the table: the paired model comparison (:func:`paired_sentences`), ``notes``, and the sentences of
    ``conclusions`` (:func:`aopc_conclusions`) when given. ``title`` defaults to "Study summary (<profile> profile)".
    """
    from .config import atomic_path, save_json
    from .reporting import markdown_table

    title = title or f"Study summary ({paths.profile} profile)"
    lines = [f"# {title}", "", markdown_table(rows)]
    if report is not None:
        paired = paired_sentences(report)
        if paired:
            lines += [" ".join(paired), ""]
    if notes:
        lines += [notes, ""]
    if conclusions is not None:
        lines += ["## Conclusions", ""] + [f"- {s}" for s in conclusions["sentences"]] + [""]
    md_path = paths.report / "summary.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines))
    payload = {"profile": paths.profile, "rows": rows}
    keys = ("final", "final_low", "final_high", "n_images")
    if report is not None:
        payload["aopc"] = {
            name: {order: {k: entry[order][k] for k in keys} for order in AOPC_LABELS if order in entry}
            | {"selection": entry.get("selection", "")}
            for name, entry in report["models"].items()
        }
    if report is not None and "paired" in report:
        p = report["paired"]
        payload["paired_models"] = p["models"]
        payload["paired_difference"] = {k: p["difference"][k] for k in (*keys, "share_positive")}
        for other in ("random", "lerf"):
            key = f"morf_minus_{other}_difference"
            if key in p:
                payload[f"paired_{key}"] = {k: p[key][k] for k in (*keys, "share_positive")}
    if conclusions is not None:
        payload["conclusions"] = dict(conclusions)
    json_path = save_json(payload, paths.metrics / "summary.json")
    return {"markdown": md_path, "json": json_path}
