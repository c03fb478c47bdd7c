"""MoRF/LeRF region perturbation: region grid, region scores, orders, perturbation functions, batched curves.

The image is cut into a grid of square regions; the regions are ordered by the heatmap (most relevant
first for MoRF, least relevant first for LeRF, or a seeded random order as the baseline), and step k of
the curve replaces regions 1..k by a perturbed copy of the image. ``f(x^k)``, the model's probability of
the explained class, falls fastest when the heatmap ranks the truly relevant regions first; the area
over that curve, AOPC, scores the heatmap (:mod:`helpers.metrics.aopc`).

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
from dataclasses import dataclass
from typing import Callable

import numpy as np

from helpers.backend.compilation import compiled_function
from helpers.backend.device import forward
from helpers.backend.transfer import pad_rows, to_device, to_unit
from helpers.common.checks import check_int, check_pair, check_seed, check_unit_range, image_array

# Built-in perturbations g (a callable works too) and region orders: one declaration, shared with the runner.
from helpers.common.choices import ORDERS, REGION_SCORES
from helpers.common.parallel import each_index
from helpers.common.seeds import image_rng
from helpers.explain.maps import bilinear_matrix
from helpers.metrics.perturbations import PERTURBATIONS, TABLE

__all__ = [
    "PERTURBATIONS",
    "ORDERS",
    "REGION_SCORES",
    "DIRECTIONS",
    "DEVICE_BUDGET_BYTES",
    "RegionGrid",
    "region_grid",
    "region_scores",
    "region_order",
    "step_of_region",
    "perturbed_images",
    "default_blur_sigma",
    "perturbation_curves",
    "morf_curves",
]

#: Curve directions: "deletion" perturbs the regions in order (MoRF, LeRF); "insertion" starts from the perturbed
#: copy and restores them in order (Petsiuk et al., BMVC 2018).
DIRECTIONS: tuple[str, ...] = ("deletion", "insertion")

#: Device memory (bytes) that one group of resident images (clean copy, perturbed copy, step map) may use.
DEVICE_BUDGET_BYTES = 512 * 2**20
#: Images per device-resident group (rounded up to whole batches of (image, step) pairs; see :func:`_group_size`).
GROUP_IMAGES = 96

#: Pixels from which :func:`perturbed_images` uses threads (below, starting them costs more than they save).
_THREADED_PIXELS = 2**20

# Independent random streams derived from (seed, image id, stream).
_STREAM_NOISE = 1
_STREAM_TIES = 2
_STREAM_RANDOM_ORDER = 3


# ----------------------------------------------------------------------------------------------------
# Region grid and region scores
# ----------------------------------------------------------------------------------------------------


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
    (height, width) = check_pair(image_size, "image_size")
    (rh, rw) = check_pair(region_size, "region_size")
    if rh > height or rw > width:
        raise ValueError(f"region_size {region_size!r} is larger than the image ({height}x{width})")
    gh, gw = math.ceil(height / rh), math.ceil(width / rw)
    row_bounds = np.minimum(np.arange(gh + 1) * rh, height)
    col_bounds = np.minimum(np.arange(gw + 1) * rw, width)
    rows = np.arange(height) // rh
    cols = np.arange(width) // rw
    region_map = (rows[:, None] * gw + cols[None, :]).astype(np.int32)
    return RegionGrid((height, width), (rh, rw), (gh, gw), row_bounds, col_bounds, region_map)


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


def region_scores(heatmaps, image_size, region_size, mode: str = "grid") -> np.ndarray:
    """Score every region, (N, R): ``mode="grid"`` takes the heatmap's own cell when its shape is the region grid, else the region mean of the bilinearly upsampled map; ``"upsample"`` always the latter.

    "grid" follows the paper's text: each cell of the 9x9 Grad-CAM map scores its 34 px region of the 299 px image.
    "upsample" resizes the map to the image (bilinear, half-pixel centres) first, so a region's score also takes
    some relevance from its neighbouring cells.
    """
    if mode not in REGION_SCORES:
        raise ValueError(f"mode must be one of {REGION_SCORES}, got {mode!r}")
    grid = region_grid(image_size, region_size)
    heat = _heatmap_array(heatmaps)
    n, h, w = heat.shape
    if mode == "grid" and (h, w) == grid.grid_shape:
        return heat.reshape(n, -1).copy()
    height, width = grid.image_shape
    rows = _region_mean_matrix(grid.row_bounds, height) @ bilinear_matrix(height, h)  # (gh, h)
    cols = _region_mean_matrix(grid.col_bounds, width) @ bilinear_matrix(width, w)  # (gw, w)
    return np.einsum("ah,nhw,bw->nab", rows, heat, cols).reshape(n, -1)


_score_regions = region_scores  # perturbation_curves' keyword ``region_scores`` shadows the function's name there


# ----------------------------------------------------------------------------------------------------
# Seeds, orders and perturbed copies
# ----------------------------------------------------------------------------------------------------


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
    seed = check_seed(seed)
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


#: Signature of a custom perturbation: ``perturbation(images, rngs) -> perturbed``, ``images`` float32
#: (n, H, W, C) in [0, 1] (a copy the function may change), ``rngs`` one generator per image seeded by
#: (seed, image id) only (:func:`image_rng`), the result n perturbed copies of the same shape in [0, 1].
Perturbation = Callable[[np.ndarray, list], np.ndarray]


def _perturbation_name(perturbation) -> str:
    return getattr(perturbation, "__name__", type(perturbation).__name__) if callable(perturbation) else perturbation


def check_perturbation(perturbation, sigma: float, fill, blur_sigma) -> None:
    """Raise a ValueError naming the setting when a perturbation (a name of :data:`PERTURBATIONS` or a callable) or its settings are invalid."""
    if not callable(perturbation) and perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS} or a callable, got {perturbation!r}")
    number = isinstance(sigma, (int, float, np.integer, np.floating)) and not isinstance(sigma, bool)
    if not (number and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    if fill is not None and not 0.0 <= float(fill) <= 1.0:
        raise ValueError(f"fill must be None (the image mean) or a value in [0, 1], got {fill!r}")
    if blur_sigma is not None and not float(blur_sigma) > 0:
        raise ValueError(f"blur_sigma must be positive, got {blur_sigma!r}")


def perturbed_images(
    images,
    perturbation: str | Perturbation = "gaussian",
    sigma: float = 0.1,
    seed: int = 0,
    image_ids=None,
    fill: float | None = None,
    blur_sigma: float = 4.0,
    workers: int | None = None,
) -> np.ndarray:
    """The fixed perturbed copy g(x) of every image, float32 (N, H, W, C) in [0, 1].

    ``"gaussian"``: clip(x + N(0, sigma)) (the paper's); ``"uniform"``: U(0, 1) replacement (Samek et al.);
    ``"mean"``: the image mean, or ``fill``; ``"blur"``: a Gaussian blur of the image (``blur_sigma`` px).
    A callable (:data:`Perturbation`) gets the images and one generator per image; its output is checked
    (shape, values in [0, 1]). Noise comes from a generator seeded by (seed, image id) only: the same image
    gets the same noise whichever model, order or batch size is used (common random numbers), and the same bytes
    on any number of threads: noise is drawn on ``workers`` threads (default :func:`helpers.common.parallel.worker_count`).
    References: Samek et al., IEEE TNNLS 2017; Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images".
    """
    check_perturbation(perturbation, sigma, fill, blur_sigma)
    seed = check_seed(seed)
    x = image_array(images)
    ids = _image_ids(image_ids, len(x))
    if callable(perturbation):
        return _custom_perturbed(perturbation, x, seed, ids)
    out = np.empty_like(x)

    entry = TABLE[perturbation]

    def fill_one(i: int) -> None:  # one image, from its own generator: the same bytes on any number of threads
        rng = image_rng(seed, ids[i], _STREAM_NOISE) if entry.random else None
        out[i] = entry.function(x[i], rng, sigma, fill, blur_sigma)
        np.clip(out[i], 0.0, 1.0, out=out[i])

    # noise on threads (numpy's generators release the GIL) unless too few pixels pay their start; the mean is
    # trivial, and OpenCV's blur has threads of its own
    threaded = entry.random and x.size >= _THREADED_PIXELS
    each_index(fill_one, len(x), workers=workers if threaded else 1)
    return out


def _custom_perturbed(perturbation, x: np.ndarray, seed: int, ids: np.ndarray) -> np.ndarray:
    """Apply a callable perturbation and check what it returns."""
    rngs = [image_rng(seed, i, _STREAM_NOISE) for i in ids]
    name = _perturbation_name(perturbation)
    out = np.asarray(perturbation(x.copy(), rngs))
    if out.shape != x.shape:
        raise ValueError(f"perturbation {name} returned shape {out.shape} for images of shape {x.shape}")
    if not np.issubdtype(out.dtype, np.floating):
        raise ValueError(f"perturbation {name} must return floats in [0, 1], got dtype {out.dtype}")
    if out.size:
        check_unit_range(out, f"the output of perturbation {name}")
    return np.clip(out.astype(np.float32), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------
# Batched perturbation curves
# ----------------------------------------------------------------------------------------------------


def _curve_inputs(batch_size: int, direction: str = "deletion"):
    """Compiled ``(x, g, region_steps, region_map, start, n_steps) -> inputs`` of one batch of (image, step) pairs.

    Pairs ``start .. start + batch_size - 1`` of the group's flattened sequence (image-major, step-minor) are built
    on the device as ``where(step(p) <= k, g[img], x[img])`` (``direction="insertion"``: ``where(step(p) <= k, x[img],
    g[img])``), float32 (B, H, W, C). The per-pixel step ``step(p)`` is gathered on the device from the image's
    per-region steps (``region_steps``, (n, R)) and the pixel-to-region map (``region_map``, (H, W)), so only (n, R)
    integers travel; ``x`` may be uint8 (scaled on the device). No model is compiled here: the batch goes through
    the model's one compiled forward (:func:`helpers.backend.device.forward`), the same one as its predictions.
    """
    from keras import ops

    def build(x, g, region_steps, region_map, start, n_steps):
        pair = start + ops.arange(batch_size, dtype="int32")
        img = ops.minimum(pair // n_steps, ops.shape(x)[0] - 1)
        k = pair % n_steps
        steps = ops.take(ops.take(region_steps, img, axis=0), region_map, axis=1)  # (B, H, W)
        reached = ops.expand_dims(steps <= k[:, None, None], -1)
        clean, perturbed = to_unit(ops.take(x, img, axis=0)), ops.take(g, img, axis=0)
        return ops.where(reached, perturbed, clean) if direction == "deletion" else ops.where(reached, clean, perturbed)

    key = ("curve inputs", int(batch_size)) if direction == "deletion" else ("curve inputs", int(batch_size), direction)
    return compiled_function(key, build)


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


def _group_size(n_steps: int, batch_size: int, bytes_per_image: int, budget: int) -> int:
    """Images per device-resident group: a multiple of lcm(batch, L+1)/(L+1) so batches never straddle groups.

    About :data:`GROUP_IMAGES` images (fewer when ``budget`` bytes hold fewer), whatever the number of images: every
    call with the same model, batch size and image shape (all orders, the ablation's subsets) reuses one compilation.
    """
    unit = math.lcm(batch_size, n_steps) // n_steps
    units = max(1, min(budget // max(1, unit * bytes_per_image), math.ceil(GROUP_IMAGES / unit)))
    return unit * units


def default_blur_sigma(region_size) -> float:
    """Blur width (px) of the ``"blur"`` perturbation when none is given: a quarter of the region side, at least 1."""
    return max(1.0, min(check_pair(region_size, "region_size")) / 4.0)


def perturbation_curves(
    model,
    images,
    heatmaps,
    classes,
    region_size,
    perturbation: str | Perturbation = "gaussian",
    sigma: float = 0.1,
    order: str = "morf",
    seed: int = 0,
    batch_size: int = 128,
    image_ids=None,
    progress: bool = True,
    fill: float | None = None,
    blur_sigma: float | None = None,
    device_budget_bytes: int = DEVICE_BUDGET_BYTES,
    region_scores: str = "grid",
    direction: str = "deletion",
) -> np.ndarray:
    """Perturbation curves f(x^k), k = 0..L, of every image: float64 (N, L+1), f = the model's probability of ``classes[i]``.

    ``images`` uint8 or float in [0, 1], (N, H, W[, C]); ``heatmaps`` (N, h, w) raw relevance (``None`` allowed
    for ``order="random"``); ``classes`` (N,) explained class. The L+1 cumulative inputs of each image are
    built on the device from a per-pixel step index, and (image, step) pairs of consecutive images go
    through the model ``batch_size`` at a time. ``image_ids`` (default 0..N-1) seed the noise and the
    tie-breaking, so a subset scored with its original ids gets the same numbers. ``blur_sigma`` defaults
    to a quarter of the region size. ``perturbation``: a name of :data:`PERTURBATIONS` or a callable
    (:data:`Perturbation`, as Quantus' ``perturb_func``). ``region_scores``: how the heatmap scores the regions,
    ``"grid"`` or ``"upsample"`` (``mode`` of :func:`region_scores`). ``direction``: ``"deletion"`` (step k
    perturbs the first k regions of the order) or ``"insertion"`` (step 0 is the perturbed copy g(x), step k
    restores the first k regions of the order: the insertion curve of Petsiuk et al., with ``perturbation="blur"``).
    References: Samek et al., IEEE TNNLS 2017; Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images";
    Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018 (insertion).
    """
    from keras import ops

    # --- validate everything before heavy work
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if region_scores not in REGION_SCORES:
        raise ValueError(f"region_scores must be one of {REGION_SCORES}, got {region_scores!r}")
    if blur_sigma is None:
        blur_sigma = default_blur_sigma(region_size)
    check_perturbation(perturbation, sigma, fill, blur_sigma)
    seed = check_seed(seed)
    batch_size = check_int("batch_size", batch_size, 1)
    x = image_array(images)
    raw = np.asarray(images)
    raw = raw[..., None] if raw.ndim == 3 else raw  # uint8 images travel as uint8 and are scaled on the device
    n, height, width, channels = x.shape
    if n == 0:
        raise ValueError("images is empty")
    expected = _model_input_shape(model)
    if expected is not None and tuple(expected) != (height, width, channels):
        raise ValueError(
            f"images have shape (H, W, C) = {(height, width, channels)} but the model expects {tuple(expected)}"
        )
    grid = region_grid((height, width), region_size)
    if heatmaps is None:
        if order != "random":
            raise ValueError(f"heatmaps are required for order={order!r} (only 'random' ignores them)")
        scores = np.zeros((n, grid.n_regions))
    else:
        heat = _heatmap_array(heatmaps)
        if len(heat) != n:
            raise ValueError(f"heatmaps has {len(heat)} maps for {n} images")
        scores = _score_regions(heat, (height, width), grid.region_size, mode=region_scores)
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

    bytes_per_image = height * width * channels * (4 + raw.itemsize if raw.dtype == np.uint8 else 8)
    group = _group_size(n_steps, batch_size, bytes_per_image, int(device_budget_bytes))
    build_batch = _curve_inputs(batch_size, direction)
    model_forward = forward(model, batch_size, "float32")
    n_steps_t = to_device(np.int32(n_steps))
    region_map_dev = to_device(region_map.astype(np.int32))
    curves = np.empty((n, n_steps), dtype=np.float64)

    total_batches = sum(math.ceil(min(group, n - s) * n_steps / batch_size) for s in range(0, n, group))
    bar = None
    if progress:
        from helpers.common.progress import tqdm

        kind = "curves" if direction == "deletion" else "insertion curves"
        name = f"{model.name}: {order} {kind} ({_perturbation_name(perturbation)})"
        bar = tqdm(total=total_batches, desc=name, unit="batch")
    pending = []  # every group is dispatched before any is read back: the host prepares the next group meanwhile
    for first in range(0, n, group):
        last = min(n, first + group)
        real = last - first
        padded = group  # every group has one shape (the last one padded): one compilation for every call
        g_host = perturbed_images(
            x[first:last], perturbation, sigma, seed, ids[first:last], fill=fill, blur_sigma=blur_sigma
        )
        region_steps = steps_of_regions[first:last].astype(np.int32)  # (real, R)
        x_host = raw[first:last] if raw.dtype == np.uint8 else x[first:last]
        x_host, g_host = pad_rows(x_host, padded), pad_rows(g_host, padded)
        region_steps = pad_rows(region_steps, padded)
        group_inputs = (to_device(x_host), to_device(g_host), to_device(region_steps), region_map_dev)
        pairs = real * n_steps
        outputs = []
        for start in range(0, pairs, batch_size):
            outputs.append(model_forward(build_batch(*group_inputs, to_device(np.int32(start)), n_steps_t)))
            if bar is not None:
                bar.update(1)
        pending.append((first, last, pairs, outputs))
    for first, last, pairs, outputs in pending:
        probs = np.concatenate([np.asarray(ops.convert_to_numpy(o), dtype=np.float32) for o in outputs])[:pairs]
        explained = np.repeat(classes[first:last], n_steps)  # the class of each pair's image (image-major)
        curves[first:last] = probs[np.arange(pairs), explained].reshape(last - first, n_steps)
    if bar is not None:
        bar.close()
    return curves


#: The curves of the MoRF order (the default); the same function as :func:`perturbation_curves`.
morf_curves = perturbation_curves
