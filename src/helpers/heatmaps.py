"""Grad-CAM and Grad-CAM++ heatmaps of Keras classifiers on any backend; upsampling, normalization, overlays as arrays.

The heatmap of class ``c`` for one image is computed from the feature map ``A`` (h, w, K) of a
chosen layer (by default the classifier's ``backbone`` output) and the gradient of the class score
``y^c`` *before* the softmax (the ``logits`` layer):

* Grad-CAM: ``alpha_k = mean_ij dy^c/dA^k_ij`` and ``L = ReLU(sum_k alpha_k A^k)``.
* Grad-CAM++: ``w_k = sum_ij a^kc_ij ReLU(dy^c/dA^k_ij)`` with the closed-form coefficients
  ``a^kc_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)`` (``g = dy^c/dA^k_ij``, from the exponential of the
  score), and ``L = ReLU(sum_k w_k A^k)``.

The feature map is computed once per batch and only the head (feature map -> logits) is
differentiated, which is exact because the feature map is the head's only input. The gradient is
the one backend-specific step (``tf.GradientTape`` on TensorFlow, ``jax.vjp`` of a stateless call on
JAX); the rest is ``keras.ops``. Heatmaps stay raw (non-negative, at the feature-map resolution);
:func:`normalize` and :func:`upsample` are for display and for comparing with masks.

References: Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV; Chattopadhyay et al. 2018, "Grad-CAM++: Generalized
Gradient-based Visual Explanations for Deep Convolutional Networks", WACV.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import config
from ._core import backend, check_int, check_pair, check_unit_range, compiled, pad_rows, split_at
from .parameters import METHODS  # the Grad-CAM variants (one declaration, shared with the runner)

__all__ = [
    "METHODS",
    "gradcam",
    "gradcam_plus_plus",
    "class_score_gradient",
    "upsample",
    "normalize",
    "jet",
    "gray_to_rgb",
    "overlay",
]


# ----------------------------------------------------------------------------------------------
# The per-batch computation
# ----------------------------------------------------------------------------------------------


def _combine(a, grads, method):
    """Heatmaps (B, h, w) from a feature map and the gradient of the class score (keras.ops only)."""
    from keras import ops

    a = ops.cast(a, "float32")
    grads = ops.cast(grads, "float32")
    if method == "gradcam":
        weights = ops.mean(grads, axis=(1, 2))
    else:
        g2 = grads * grads
        g3 = g2 * grads
        total = ops.sum(a, axis=(1, 2), keepdims=True)
        denom = 2.0 * g2 + total * g3
        nonzero = ops.not_equal(denom, 0.0)
        coeff = ops.where(nonzero, g2 / ops.where(nonzero, denom, ops.ones_like(denom)), ops.zeros_like(denom))
        weights = ops.sum(coeff * ops.relu(grads), axis=(1, 2))
    return ops.relu(ops.sum(a * weights[:, None, None, :], axis=-1))


def _chosen_classes(logits, classes):
    from keras import ops

    predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.where(classes < 0, predicted, classes)


def class_score_gradient(head, a, classes, num_classes):
    """Logits of ``head(a)``, the explained classes and d(class score)/d``a`` (the one backend-specific step)."""
    if backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(a)
            logits = head(a)
            chosen = _chosen_classes(logits, classes)
            score = tf.reduce_sum(tf.cast(logits, tf.float32) * tf.one_hot(chosen, num_classes))
        return tape.gradient(score, a), chosen
    import jax

    logits, vjp = jax.vjp(head, a)
    chosen = _chosen_classes(logits, classes)
    (grads,) = vjp(jax.nn.one_hot(chosen, num_classes, dtype=logits.dtype))
    return grads, chosen


def _batch_function(model, split, method, batch_size: int | None = None):
    """A callable ``(x float32 (B,H,W,C), classes int32 (B,), -1 = predicted) -> (maps, classes)`` as numpy arrays."""
    if backend() not in ("tensorflow", "jax"):
        raise NotImplementedError(f"Grad-CAM supports the tensorflow and jax backends, not {backend()!r}")
    num_classes = split.num_classes

    def body(calls, x, classes):
        if split.dual_call is None:
            features, head = calls
            a = features(x)
            grads, chosen = class_score_gradient(head, a, classes, num_classes)
        else:  # TensorFlow only: the logits depend on more than the feature map
            import tensorflow as tf

            with tf.GradientTape() as tape:
                a, logits = split.dual_call(x)
                chosen = _chosen_classes(logits, classes)
                score = tf.reduce_sum(tf.cast(logits, tf.float32) * tf.one_hot(chosen, num_classes))
            grads = tape.gradient(score, a)
        return _combine(a, grads, method), chosen

    shared = _shared_backbone(model, split, batch_size)
    if shared is not None:  # the backbone compiled once for every stage; only the head is differentiated here

        def head_body(calls, a, classes):
            grads, chosen = class_score_gradient(calls[0], a, classes, num_classes)
            return _combine(a, grads, method), chosen

        head = compiled(model, ("gradcam head", split.layer_name, method), head_body, (split.head_model,))
        function = lambda x, classes: head(shared(x), classes)  # noqa: E731
    else:
        parts = (split.feature_model, split.head_model) if split.dual_call is None else (model,)
        function = compiled(model, ("gradcam", split.layer_name, method), body, parts)

    def call(x, classes):
        from keras import ops

        maps, chosen = function(ops.convert_to_tensor(x), ops.convert_to_tensor(classes))
        return np.asarray(ops.convert_to_numpy(maps)), np.asarray(ops.convert_to_numpy(chosen))

    return call


def _shared_backbone(model, split, batch_size: int | None):
    """The compiled backbone of :func:`helpers.device.features` when Grad-CAM explains the backbone's own output."""
    if batch_size is None or split.dual_call is not None or split.layer_name != config.FEATURE_LAYER:
        return None
    from .device import features

    try:
        return features(model, int(batch_size), "float32")
    except ValueError:  # no backbone whose feature map alone gives the output: the whole model is compiled
        return None


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def _check_images(model, images):
    images = np.asarray(images)
    expected = tuple(model.inputs[0].shape[1:])
    if images.ndim == len(expected) and expected[-1] == 1:
        images = images[..., None]
    if images.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
        raise ValueError(
            f"images must have shape (N, {', '.join(str(e) for e in expected)}) for model "
            f"{model.name!r}, got {images.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    if images.dtype == np.uint8:
        return images, 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    check_unit_range(images, "images")
    return images, 1.0


def _check_classes(classes, n, num_classes):
    if classes is None:
        return np.full(n, -1, dtype=np.int32)
    arr = np.asarray(classes)
    if arr.ndim == 0:
        arr = np.full(n, int(arr))
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"classes must be None, one int or {n} ints (one per image), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"classes must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(f"classes must lie in [0, {num_classes - 1}] for this model, got {arr[bad][:5].tolist()}")
    return arr.astype(np.int32)


def gradcam(
    model,
    images,
    classes=None,
    layer=None,
    batch_size: int = 32,
    method: str = "gradcam",
    progress: bool = False,
    return_classes: bool = False,
):
    """Raw Grad-CAM (or Grad-CAM++) heatmaps (N, h, w) float32 of a functional classifier, batched.

    ``images``: (N, H, W, C) or (N, H, W) for one-channel models, uint8 (scaled by 1/255) or float in
    [0, 1]. ``classes``: None explains the predicted class (argmax of the logits), else one int or one
    per image. ``layer``: None uses ``config.FEATURE_LAYER`` (the backbone output); a name (also
    "backbone/<inner>" or an inner layer's plain name) selects another 4-D feature map. The class
    score is the ``config.LOGITS_LAYER`` output. ``method``: "gradcam" or "gradcam++".
    With ``return_classes=True`` returns ``(heatmaps, explained_classes)``.

    References: Selvaraju et al. 2017 (ICCV), Grad-CAM; Chattopadhyay et al. 2018 (WACV), Grad-CAM++.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_int("batch_size", int(batch_size), 1)
    if not getattr(model, "inputs", None):
        raise ValueError("model must be a functional Keras model (with inputs and named layers)")
    layer_name = config.FEATURE_LAYER if layer is None else str(layer)
    images, scale = _check_images(model, images)
    split = split_at(model, layer_name)
    wanted = _check_classes(classes, images.shape[0], split.num_classes)
    run = _batch_function(model, split, method, int(batch_size))

    n = images.shape[0]
    chunk = int(batch_size)  # one compiled shape whatever the number of images (the last chunk is padded)
    heatmaps = None
    explained = np.empty(n, dtype=np.int32)
    bar = None
    if progress:
        from .progress import tqdm

        bar = tqdm(total=n, desc=f"{model.name}: {method} ({layer_name})", unit="img")
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        x = images[start:stop].astype(np.float32) / np.float32(scale)
        c = wanted[start:stop]
        x, c = pad_rows(x, chunk), pad_rows(c, chunk)  # pad the last chunk: one compiled shape for every batch
        maps, chosen = run(x, c)
        if heatmaps is None:
            heatmaps = np.empty((n, *maps.shape[1:]), dtype=np.float32)
        heatmaps[start:stop] = maps[: stop - start]
        explained[start:stop] = chosen[: stop - start]
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()
    return (heatmaps, explained) if return_classes else heatmaps


def gradcam_plus_plus(
    model, images, classes=None, layer=None, batch_size: int = 32, progress: bool = False, return_classes: bool = False
):
    """Raw Grad-CAM++ heatmaps (N, h, w) float32: :func:`gradcam` with ``method="gradcam++"``.

    References: Chattopadhyay et al. 2018 (WACV), Grad-CAM++.
    """
    return gradcam(model, images, classes, layer, batch_size, "gradcam++", progress, return_classes)


# ----------------------------------------------------------------------------------------------
# Upsampling, normalization and overlays (arrays)
# ----------------------------------------------------------------------------------------------


def _as_stack(heatmaps):
    arr = np.asarray(heatmaps, dtype=np.float32)
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"heatmaps must have shape (N, h, w) or (h, w), got {np.shape(heatmaps)}")
    return arr, False


_CV2_CHANNELS = 128


def _resize_stack(stack, size, interpolation):
    """Resize (N, h, w) to (N, H, W) with cv2, up to 128 images per call (the channel limit of OpenCV 5)."""
    import cv2

    height, width = size
    if stack.shape[1:] == (height, width):
        return stack.copy()
    out = np.empty((stack.shape[0], height, width), dtype=stack.dtype)
    for start in range(0, stack.shape[0], _CV2_CHANNELS):
        part = np.ascontiguousarray(np.moveaxis(stack[start : start + _CV2_CHANNELS], 0, -1))
        resized = cv2.resize(part, (width, height), interpolation=interpolation)
        if resized.ndim == 2:
            resized = resized[..., None]
        out[start : start + _CV2_CHANNELS] = np.moveaxis(resized, -1, 0)
    return out


def upsample(heatmaps, size):
    """Bilinear resize (half-pixel centres, edge clamped; cv2.INTER_LINEAR) of (N, h, w) or (h, w) to ``size``."""
    import cv2

    stack, single = _as_stack(heatmaps)
    out = _resize_stack(stack, check_pair(size, "size"), cv2.INTER_LINEAR)
    return out[0] if single else out


def normalize(heatmaps):
    """Scale each heatmap to [0, 1] by its maximum after clipping negatives (display only; all-zero maps stay zero)."""
    stack, single = _as_stack(heatmaps)
    stack = np.maximum(stack, 0.0)
    peak = stack.reshape(stack.shape[0], -1).max(axis=1) if stack.size else np.zeros(0, np.float32)
    out = np.zeros_like(stack)
    ok = peak > 0
    out[ok] = stack[ok] / peak[ok, None, None]
    return out[0] if single else out


def gray_to_rgb(image):
    """An image (H, W), (H, W, 1) or (H, W, 3), uint8 or float, as RGB float32 in [0, 1]."""
    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W), (H, W, 1) or (H, W, 3), got {np.shape(image)}")
    return np.clip(img, 0.0, 1.0)


# matplotlib's "jet" colour map: (x, value below, value above) per channel, sampled at 256 levels.
_JET = {
    "red": ((0.0, 0, 0), (0.35, 0, 0), (0.66, 1, 1), (0.89, 1, 1), (1, 0.5, 0.5)),
    "green": ((0.0, 0, 0), (0.125, 0, 0), (0.375, 1, 1), (0.64, 1, 1), (0.91, 0, 0), (1, 0, 0)),
    "blue": ((0.0, 0.5, 0.5), (0.11, 1, 1), (0.34, 1, 1), (0.65, 0, 0), (1, 0, 0)),
}
_JET_LEVELS = 256


def _segment_table(segments, n: int) -> np.ndarray:
    """A piecewise-linear colour channel sampled at ``n`` levels (as matplotlib's LinearSegmentedColormap)."""
    table = np.asarray(segments, dtype=float)
    x, below, above = table[:, 0] * (n - 1), table[:, 1], table[:, 2]
    levels = (n - 1) * np.linspace(0, 1, n)
    ind = np.searchsorted(x, levels)[1:-1]
    distance = (levels[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
    inner = distance * (below[ind] - above[ind - 1]) + above[ind - 1]
    return np.clip(np.concatenate([[above[0]], inner, [below[-1]]]), 0.0, 1.0)


_JET_TABLE = np.stack([_segment_table(_JET[c], _JET_LEVELS) for c in ("red", "green", "blue")], axis=-1)


def jet(values) -> np.ndarray:
    """RGB colours (..., 3) float64 of values in [0, 1] under matplotlib's ``jet`` map (256 levels), without matplotlib."""
    index = np.asarray(values, dtype=float) * _JET_LEVELS
    index = np.clip(np.where(index == _JET_LEVELS, _JET_LEVELS - 1, index), -1, _JET_LEVELS)
    index = np.nan_to_num(index, nan=0).astype(int)
    return _JET_TABLE[np.clip(index, 0, _JET_LEVELS - 1)]


def overlay(image, heatmap, alpha: float = 0.4, cmap: str | Callable = "jet"):
    """RGB float image ``(1 - alpha) * image + alpha * cmap(normalize(upsample(heatmap)))`` in [0, 1].

    ``cmap``: ``"jet"`` or a callable mapping values in [0, 1] to RGB(A) colours (e.g. ``matplotlib.colormaps[name]``).
    """
    if not callable(cmap) and cmap != "jet":
        raise ValueError(f"cmap must be 'jet' or a callable colour map (e.g. matplotlib.colormaps[name]), got {cmap!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    base = gray_to_rgb(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must have shape (h, w), got {heat.shape}")
    heat = normalize(upsample(heat, base.shape[:2]))
    colours = (jet if cmap == "jet" else cmap)(heat)[..., :3].astype(np.float32)
    return np.clip((1.0 - alpha) * base + alpha * colours, 0.0, 1.0)
