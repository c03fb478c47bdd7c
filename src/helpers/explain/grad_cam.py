"""Grad-CAM and Grad-CAM++ heatmaps of Keras classifiers on any backend (heatmaps as arrays: :mod:`helpers.explain.maps`).

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
:func:`helpers.explain.maps.normalize` and :func:`helpers.explain.maps.upsample` are for display and for comparing with masks.

References: Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV; Chattopadhyay et al. 2018, "Grad-CAM++: Generalized
Gradient-based Visual Explanations for Deep Convolutional Networks", WACV.
"""

from __future__ import annotations

import numpy as np

from helpers.backend.compilation import backend, compiled
from helpers.backend.graph import split_at
from helpers.backend.transfer import pad_rows
from helpers.common import config
from helpers.common.checks import check_int, check_unit_range

#: The two Grad-CAM variants :func:`gradcam` computes (``method``).
VARIANTS: tuple[str, ...] = ("gradcam", "gradcam++")

__all__ = [
    "VARIANTS",
    "gradcam",
    "gradcam_plus_plus",
    "class_score_gradient",
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
    """The compiled backbone of :func:`helpers.backend.device.features` when Grad-CAM explains the backbone's own output."""
    if batch_size is None or split.dual_call is not None or split.layer_name != config.FEATURE_LAYER:
        return None
    from helpers.backend.device import features

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
    if method not in VARIANTS:
        raise ValueError(f"method must be one of {VARIANTS}, got {method!r}")
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
        from helpers.common.progress import tqdm

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
