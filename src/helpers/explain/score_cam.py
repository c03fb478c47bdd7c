"""Score-CAM (and Faster Score-CAM), batched on the device: every (image, channel) pair is one masked input.

For the explained layer's output ``A`` (h, w, K): each channel ``A_k`` is upsampled to the image (bilinear, half-pixel
centres, as :func:`helpers.explain.maps.upsample`) and min-max normalised to ``H_k`` in [0, 1] (0 for a constant
channel); the class score ``y^c(x * H_k)`` (pre-softmax, the ``logits`` layer) of each masked image gives the channel
weights ``w = softmax_k(y^c(x * H_k))``, and the map is ``ReLU(sum_k w_k A_k)``. With ``top_n`` only the ``top_n``
channels of highest spatial variance of ``A`` enter (Faster Score-CAM), both in the softmax and in the sum.

The masked inputs of a batch of (image, channel) pairs are built on the device from the images and the
activations (one compiled step) and go through the model's compiled logits, ``batch_size`` pairs at a time.

References: Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
CVPR Workshops; Faster Score-CAM: the top-N-channels-by-variance variant of the Score-CAM authors' repository
(haofanwang/Score-CAM), also described in Wang et al. 2020, "SS-CAM: Smoothed Score-CAM", arXiv:2006.14255.
"""

from __future__ import annotations

import numpy as np

from helpers.backend.compilation import compiled_function
from helpers.backend.transfer import pad_rows, to_device
from helpers.common.checks import check_int
from helpers.explain.base import (
    activations_function,
    chosen_classes,
    explained_split,
    logits_function,
    prepare_classes,
    prepare_images,
    unit_batch,
)
from helpers.explain.maps import bilinear_matrix

__all__ = ["scorecam", "scorecam_weights"]


def _select_function(batch_size: int, shape: tuple, top_n: int):
    """Compiled ``(A, logits, classes) -> (A of the chosen channels, channel indices, explained classes)``."""
    from keras import ops

    h, w, k = shape

    def select(a, logits, classes):
        a = ops.cast(a, "float32")
        chosen = chosen_classes(logits, classes)
        if top_n >= k:
            index = ops.broadcast_to(ops.arange(k, dtype="int32")[None, :], (ops.shape(a)[0], k))
            return a, index, chosen
        variance = ops.var(ops.reshape(a, (-1, h * w, k)), axis=1)
        _, index = ops.top_k(variance, top_n)
        index = ops.cast(index, "int32")
        gathered = ops.take_along_axis(a, ops.broadcast_to(index[:, None, None, :], (ops.shape(a)[0], h, w, top_n)), -1)
        return gathered, index, chosen

    return compiled_function(("scorecam select", int(batch_size), *shape, int(top_n)), select)


def _masked_inputs_function(batch_size: int, image_shape: tuple, grid: tuple, n_channels: int):
    """Compiled ``(x (G, H, W, C), A (G, h, w, Kp), start) -> x[img] * H_k`` for pairs ``start .. start + batch_size - 1``.

    Pairs are image-major (pair p = image p // Kp, channel p % Kp); pairs past the group repeat its last image.
    """
    from keras import ops

    height, width, _ = image_shape
    h, w = grid
    rows = bilinear_matrix(height, h).astype(np.float32)
    cols = bilinear_matrix(width, w).astype(np.float32)

    def build(x, a, start):
        groups = ops.shape(a)[0]
        pair = start + ops.arange(batch_size, dtype="int32")
        img = ops.minimum(pair // n_channels, groups - 1)
        channel = pair % n_channels
        flat = ops.reshape(ops.transpose(a, (0, 3, 1, 2)), (-1, h, w))
        maps = ops.take(flat, img * n_channels + channel, axis=0)
        up = ops.einsum("Hh,bhw->bHw", ops.convert_to_tensor(rows), maps)
        up = ops.einsum("bHw,Ww->bHW", up, ops.convert_to_tensor(cols))
        low = ops.min(up, axis=(1, 2), keepdims=True)
        span = ops.max(up, axis=(1, 2), keepdims=True) - low
        varies = span > 0
        masks = ops.where(varies, (up - low) / ops.where(varies, span, 1.0), 0.0)
        return ops.take(x, img, axis=0) * masks[..., None]

    key = ("scorecam inputs", int(batch_size), *map(int, image_shape), *map(int, grid), int(n_channels))
    return compiled_function(key, build)


def _combine_function(batch_size: int, n_channels: int):
    """Compiled ``(A (B, h, w, Kp), scores (B, Kp)) -> (ReLU(sum_k softmax(scores)_k A_k), weights)``."""
    from keras import ops

    def combine(a, scores):
        weights = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        return ops.relu(ops.sum(a * weights[:, None, None, :], axis=-1)), weights

    return compiled_function(("scorecam combine", int(batch_size), int(n_channels)), combine)


def scorecam_weights(
    model, images, classes=None, layer=None, batch_size: int = 32, top_n: int | None = None, progress: bool = False
) -> dict:
    """Score-CAM's maps and everything behind them: ``maps`` (N, h, w), ``weights``, ``scores``, ``channels`` (N, Kp), ``classes``.

    ``scores[i, j]`` is the explained class's pre-softmax score of image i masked by its channel ``channels[i, j]``
    (all K channels in order, or the ``top_n`` of highest activation variance), ``weights`` their softmax over j.
    References: Wang et al. 2020 (CVPR Workshops), Score-CAM.
    """
    from keras import ops

    batch_size = check_int("batch_size", batch_size, 1)
    split = explained_split(model, layer)
    x = prepare_images(model, images)
    wanted = prepare_classes(classes, len(x), split.num_classes)
    grid_shape = tuple(int(d) for d in split.feature_model.output.shape[1:])
    k = grid_shape[-1]
    n_channels = k if top_n is None else min(check_int("top_n", top_n, 1), k)
    activations = activations_function(model, split, batch_size)
    logits_of = logits_function(model, split, batch_size)
    select = _select_function(batch_size, grid_shape, n_channels)
    build = _masked_inputs_function(batch_size, x.shape[1:], grid_shape[:2], n_channels)
    combine = _combine_function(batch_size, n_channels)

    n = len(x)
    out = {
        "maps": np.empty((n, *grid_shape[:2]), np.float32),
        "weights": np.empty((n, n_channels), np.float32),
        "scores": np.empty((n, n_channels), np.float32),
        "channels": np.empty((n, n_channels), np.int32),
        "classes": np.empty(n, np.int32),
    }
    bar = None
    if progress:
        from helpers.common.progress import tqdm

        bar = tqdm(total=n, desc=f"{model.name}: scorecam ({split.layer_name})", unit="img")
    for first in range(0, n, batch_size):
        last = min(n, first + batch_size)
        real = last - first
        xb = to_device(unit_batch(x, first, last, batch_size))
        a, logits = activations(xb)
        a_sel, channels, chosen = select(a, logits, to_device(pad_rows(wanted[first:last], batch_size)))
        chosen_host = np.asarray(ops.convert_to_numpy(chosen))
        pairs = real * n_channels
        outputs = [logits_of(build(xb, a_sel, to_device(np.int32(s)))) for s in range(0, pairs, batch_size)]
        pair_logits = np.concatenate([np.asarray(ops.convert_to_numpy(o), np.float32) for o in outputs])[:pairs]
        explained = np.repeat(chosen_host[:real], n_channels)
        scores = pair_logits[np.arange(pairs), explained].reshape(real, n_channels)
        maps, weights = combine(a_sel, to_device(pad_rows(scores, batch_size)))
        out["maps"][first:last] = np.asarray(ops.convert_to_numpy(maps))[:real]
        out["weights"][first:last] = np.asarray(ops.convert_to_numpy(weights))[:real]
        out["scores"][first:last] = scores
        out["channels"][first:last] = np.asarray(ops.convert_to_numpy(channels))[:real]
        out["classes"][first:last] = chosen_host[:real]
        if bar is not None:
            bar.update(real)
    if bar is not None:
        bar.close()
    return out


def scorecam(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False, top_n=None):
    """Score-CAM: channel weights from the class score of the image masked by each upsampled, normalised channel.

    ``top_n``: only the ``top_n`` channels of highest activation variance (Faster Score-CAM). See :func:`scorecam_weights`.
    References: Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR Workshops.
    """
    result = scorecam_weights(model, images, classes, layer, batch_size, top_n, progress)
    return (result["maps"], result["classes"]) if return_classes else result["maps"]
