"""Grad-CAM and Grad-CAM++ heatmaps of Keras classifiers on any backend, with display helpers.

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

import weakref
from dataclasses import dataclass, field

import numpy as np

from . import config

#: Grad-CAM variants understood by :func:`gradcam`.
METHODS: tuple[str, ...] = ("gradcam", "gradcam++")


# ----------------------------------------------------------------------------------------------
# Splitting a functional classifier into feature map and head
# ----------------------------------------------------------------------------------------------


@dataclass
class _Split:
    """How to get the feature map and the logits of one model for one target layer."""

    layer_name: str
    feature_model: object = None  # images -> feature map
    head_model: object = None  # feature map -> logits
    dual_call: object = None  # images -> (feature map, logits); TensorFlow fallback
    num_classes: int = 0
    functions: dict = field(default_factory=dict)


_SPLITS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _keras():
    import keras

    return keras


def _graph_nodes(model):
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if not nodes_by_depth:
        return []
    return [node for depth in sorted(nodes_by_depth) for node in nodes_by_depth[depth]]


def _node_of(model, layer):
    """The call node of ``layer`` inside ``model``'s own graph (a layer may have nodes in other graphs)."""
    own = [node for node in _graph_nodes(model) if node.operation is layer]
    if len(own) == 1:
        return own[0]
    if len(own) > 1:
        raise ValueError(f"layer {layer.name!r} is called {len(own)} times in model {model.name!r}: "
                         "its feature map is ambiguous; pick a layer called once")
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) >= 1:
        return nodes[0]
    raise ValueError(f"layer {layer.name!r} is not connected in model {model.name!r}")


def _single(tensors, what):
    tensors = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
    if len(tensors) != 1:
        raise ValueError(f"{what} must have exactly one input and one output tensor, got {len(tensors)}")
    return tensors[0]


def _is_functional(layer):
    keras = _keras()
    return isinstance(layer, keras.Model) and bool(_graph_nodes(layer))


def _layer_names(model, prefix=""):
    names = []
    for layer in model.layers:
        names.append(prefix + layer.name)
        if _is_functional(layer):
            names.extend(_layer_names(layer, prefix + layer.name + "/"))
    return names


def _find_layer(model, name):
    """Return the chain ``[outer, ..., target]`` of layers leading to ``name`` ("a/b" or a plain name)."""
    parts = str(name).split("/")
    if len(parts) > 1:
        chain, current = [], model
        for part in parts:
            try:
                layer = current.get_layer(part)
            except ValueError:
                chain = None
                break
            chain.append(layer)
            current = layer
        if chain:
            return chain
    try:
        return [model.get_layer(name)]
    except ValueError:
        pass
    for layer in model.layers:
        if _is_functional(layer):
            try:
                return [layer, *_find_layer(layer, name)]
            except ValueError:
                continue
    available = _layer_names(model)
    raise ValueError(f"layer {name!r} not found in model {model.name!r}; available layers: "
                     + ", ".join(available))


def _out_tensor(model, layer):
    return _single(_node_of(model, layer).output_tensors, f"layer {layer.name!r}")


def _in_tensor(model, layer):
    return _single(_node_of(model, layer).input_tensors, f"layer {layer.name!r}")


def _compose(first, second, input_shape):
    """A model ``second(first(x))`` over a fresh input; either part may be None (identity)."""
    keras = _keras()
    x = inp = keras.Input(batch_shape=input_shape)
    if first is not None:
        x = first(x)
    if second is not None:
        x = second(x)
    return keras.Model(inp, x)


def _submodel(inputs, outputs):
    keras = _keras()
    if inputs is outputs:
        return None
    return keras.Model(inputs, outputs)


def _build_split(model, layer_name):
    keras = _keras()
    try:
        logits_layer = model.get_layer(config.LOGITS_LAYER)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named {config.LOGITS_LAYER!r} (the pre-softmax "
                         "class scores); available layers: " + ", ".join(_layer_names(model))) from None
    if not model.inputs or len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} must be a functional model with one image input")
    chain = _find_layer(model, layer_name)
    if len(chain) > 2:
        raise ValueError(f"layer {layer_name!r} is nested {len(chain) - 1} models deep; only layers of the "
                         "model or of a model nested directly in it are supported")
    x_in = model.inputs[0]
    logits = _out_tensor(model, logits_layer)
    num_classes = int(logits.shape[-1])
    split = _Split(layer_name=layer_name, num_classes=num_classes)
    is_tf = keras.backend.backend() == "tensorflow"
    if len(chain) == 1:
        feature = _out_tensor(model, chain[0])
        if len(feature.shape) != 4:
            raise ValueError(f"layer {layer_name!r} outputs shape {tuple(feature.shape)}; Grad-CAM needs a "
                             "4-D feature map (batch, h, w, channels)")
        try:
            split.feature_model = keras.Model(x_in, feature)
            split.head_model = keras.Model(feature, logits)
        except ValueError as err:  # the logits depend on more than this layer's output
            if not is_tf:
                raise ValueError(f"the logits of model {model.name!r} do not depend on layer {layer_name!r} "
                                 f"alone ({err}); such layers are supported on the TensorFlow backend only") from err
            split.feature_model = split.head_model = None
            dual = keras.Model(x_in, [feature, logits])
            split.dual_call = lambda x: dual(x, training=False)
        return split
    # A layer inside a nested functional model (e.g. a block of the backbone).
    outer, inner = chain
    outer_in, outer_out = _in_tensor(model, outer), _out_tensor(model, outer)
    inner_in, inner_out = _single(outer.inputs, f"model {outer.name!r}"), _out_tensor(outer, inner)
    nested_out = _single(outer.outputs, f"model {outer.name!r}")
    if len(inner_out.shape) != 4:
        raise ValueError(f"layer {layer_name!r} outputs shape {tuple(inner_out.shape)}; Grad-CAM needs a "
                         "4-D feature map (batch, h, w, channels)")
    pre = _submodel(x_in, outer_in)
    post = keras.Model(outer_out, logits)
    try:
        lower = _submodel(inner_in, inner_out)
        upper = _submodel(inner_out, nested_out)
        split.feature_model = _compose(pre, lower, tuple(x_in.shape))
        split.head_model = _compose(upper, post, tuple(inner_out.shape))
    except ValueError as err:
        if not is_tf:
            raise ValueError(f"the output of {outer.name!r} does not depend on layer {layer_name!r} alone "
                             f"({err}); such layers are supported on the TensorFlow backend only") from err
        split.feature_model = split.head_model = None
        both = keras.Model(inner_in, [inner_out, nested_out])

        def dual_call(x):
            z = pre(x, training=False) if pre is not None else x
            a, f = both(z, training=False)
            return a, post(f, training=False)

        split.dual_call = dual_call
    return split


def _get_split(model, layer_name):
    per_model = _SPLITS.setdefault(model, {})
    if layer_name not in per_model:
        per_model[layer_name] = _build_split(model, layer_name)
    return per_model[layer_name]


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


def _batch_function(split, method):
    """A callable ``(x float32 (B,H,W,C), classes int32 (B,), -1 = predicted) -> (maps, classes)``."""
    if method in split.functions:
        return split.functions[method]
    keras = _keras()
    backend = keras.backend.backend()
    num_classes = split.num_classes
    if backend == "tensorflow":
        import tensorflow as tf

        def run(x, classes):
            if split.dual_call is None:
                a = split.feature_model(x, training=False)
                with tf.GradientTape() as tape:
                    tape.watch(a)
                    logits = split.head_model(a, training=False)
                    chosen = _chosen_classes(logits, classes)
                    score = tf.reduce_sum(tf.cast(logits, tf.float32) * tf.one_hot(chosen, num_classes))
            else:
                with tf.GradientTape() as tape:
                    a, logits = split.dual_call(x)
                    chosen = _chosen_classes(logits, classes)
                    score = tf.reduce_sum(tf.cast(logits, tf.float32) * tf.one_hot(chosen, num_classes))
            grads = tape.gradient(score, a)
            return _combine(a, grads, method), chosen

        compiled = tf.function(run, reduce_retracing=True)

        def call(x, classes):
            maps, chosen = compiled(tf.convert_to_tensor(x), tf.convert_to_tensor(classes))
            return maps.numpy(), chosen.numpy()

    elif backend == "jax":
        import jax

        feature_model, head_model = split.feature_model, split.head_model

        def run(feature_vars, head_vars, x, classes):
            a, _ = feature_model.stateless_call(*feature_vars, x, training=False)

            def head(feature_map):
                out, _ = head_model.stateless_call(*head_vars, feature_map, training=False)
                return out

            logits, vjp = jax.vjp(head, a)
            chosen = _chosen_classes(logits, classes)
            (grads,) = vjp(jax.nn.one_hot(chosen, num_classes, dtype=logits.dtype))
            return _combine(a, grads, method), chosen

        compiled = jax.jit(run)

        def variables(m):
            return ([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables])

        def call(x, classes):
            maps, chosen = compiled(variables(feature_model), variables(head_model), x, classes)
            return np.asarray(maps), np.asarray(chosen)

    else:
        raise NotImplementedError(f"Grad-CAM supports the tensorflow and jax backends, not {backend!r}")
    split.functions[method] = call
    return call


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def _check_images(model, images):
    images = np.asarray(images)
    expected = tuple(model.inputs[0].shape[1:])
    if images.ndim == len(expected) and expected[-1] == 1:
        images = images[..., None]
    if images.ndim != len(expected) + 1 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
        raise ValueError(f"images must have shape (N, {', '.join(str(e) for e in expected)}) for model "
                         f"{model.name!r}, got {images.shape}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    if images.dtype == np.uint8:
        return images, 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    lo, hi = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"float images must lie in [0, 1], got values in [{lo}, {hi}] (pass uint8 to scale by 1/255)")
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


def gradcam(model, images, classes=None, layer=None, batch_size: int = 32, method: str = "gradcam",
            progress: bool = False, return_classes: bool = False):
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
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not getattr(model, "inputs", None):
        raise ValueError("model must be a functional Keras model (with inputs and named layers)")
    layer_name = config.FEATURE_LAYER if layer is None else str(layer)
    images, scale = _check_images(model, images)
    split = _get_split(model, layer_name)
    wanted = _check_classes(classes, images.shape[0], split.num_classes)
    run = _batch_function(split, method)

    n = images.shape[0]
    chunk = min(int(batch_size), n)
    heatmaps = None
    explained = np.empty(n, dtype=np.int32)
    bar = None
    if progress:
        from .progress import tqdm

        bar = tqdm(total=n, desc=f"{method} ({layer_name})", unit="img")
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        x = images[start:stop].astype(np.float32) / np.float32(scale)
        c = wanted[start:stop]
        if stop - start < chunk:  # pad the last chunk: one compiled shape for every batch
            pad = chunk - (stop - start)
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)])
            c = np.concatenate([c, np.zeros(pad, np.int32)])
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


def _as_stack(heatmaps):
    arr = np.asarray(heatmaps, dtype=np.float32)
    if arr.ndim == 2:
        return arr[None], True
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"heatmaps must have shape (N, h, w) or (h, w), got {np.shape(heatmaps)}")
    return arr, False


def _size(size):
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


_CV2_CHANNELS = 128


def _resize_stack(stack, size, interpolation):
    """Resize (N, h, w) to (N, H, W) with cv2, up to 128 images per call (the channel limit of OpenCV 5)."""
    import cv2

    height, width = size
    if stack.shape[1:] == (height, width):
        return stack.copy()
    out = np.empty((stack.shape[0], height, width), dtype=stack.dtype)
    for start in range(0, stack.shape[0], _CV2_CHANNELS):
        part = np.ascontiguousarray(np.moveaxis(stack[start:start + _CV2_CHANNELS], 0, -1))
        resized = cv2.resize(part, (width, height), interpolation=interpolation)
        if resized.ndim == 2:
            resized = resized[..., None]
        out[start:start + _CV2_CHANNELS] = np.moveaxis(resized, -1, 0)
    return out


def upsample(heatmaps, size):
    """Bilinear resize (half-pixel centres, edge clamped; cv2.INTER_LINEAR) of (N, h, w) or (h, w) to ``size``."""
    import cv2

    stack, single = _as_stack(heatmaps)
    out = _resize_stack(stack, _size(size), cv2.INTER_LINEAR)
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


def _gray(image):
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


def overlay(image, heatmap, alpha: float = 0.4, cmap: str = "jet"):
    """RGB float image ``(1 - alpha) * image + alpha * cmap(normalize(upsample(heatmap)))`` in [0, 1]."""
    import matplotlib

    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    base = _gray(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must have shape (h, w), got {heat.shape}")
    heat = normalize(upsample(heat, base.shape[:2]))
    colours = matplotlib.colormaps[cmap](heat)[..., :3].astype(np.float32)
    return np.clip((1.0 - alpha) * base + alpha * colours, 0.0, 1.0)


def mask_energy(heatmaps, masks, size=None):
    """Share of each heatmap's mass inside its binary mask, (N,) float; NaN where a heatmap is all zero.

    Heatmaps (N, h, w) are upsampled bilinearly to ``size`` (default: the masks' size) and clipped at
    0; masks (N, H, W[, 1]) or one (H, W) mask for all, nonzero = inside, resampled (nearest) when
    their size differs from ``size``. An all-zero mask with a nonzero heatmap gives 0.
    References: Wang et al., "Score-CAM", CVPR Workshops 2020 (the energy-based pointing game).
    """
    import cv2

    stack, _ = _as_stack(heatmaps)
    m = np.asarray(masks)
    if m.ndim == 4 and m.shape[-1] in (1, 3):
        m = m.max(axis=-1)
    if m.ndim == 2:
        m = np.broadcast_to(m, (stack.shape[0], *m.shape))
    if m.ndim != 3 or m.shape[0] != stack.shape[0]:
        raise ValueError(f"masks must have shape (N, H, W) or (H, W) with N = {stack.shape[0]} heatmaps, got {np.shape(masks)}")
    target = _size(size) if size is not None else tuple(m.shape[1:])
    inside = _resize_stack((m != 0).astype(np.uint8), target, cv2.INTER_NEAREST).astype(bool)
    heat = np.maximum(upsample(stack, target), 0.0).astype(np.float64)
    total = heat.sum(axis=(1, 2))
    within = (heat * inside).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, within / np.where(total > 0, total, 1.0), np.nan)
    return share.astype(np.float64)


def mask_energy_summary(energy, labels, class_names=config.CLASS_NAMES) -> dict:
    """Per-class statistics of mask energies: n, n_valid (non-NaN), mean, median, q25, q75, share above 0.5."""
    energy = np.asarray(energy, dtype=np.float64)
    labels = np.asarray(labels)
    if energy.shape != labels.shape:
        raise ValueError(f"energy {energy.shape} and labels {labels.shape} must have the same shape")
    out = {}
    for index, name in enumerate(class_names):
        values = energy[labels == index]
        valid = values[np.isfinite(values)]
        stats = {"n": int(values.size), "n_valid": int(valid.size)}
        if valid.size:
            stats.update(mean=float(valid.mean()), median=float(np.median(valid)),
                         q25=float(np.quantile(valid, 0.25)), q75=float(np.quantile(valid, 0.75)),
                         share_above_half=float(np.mean(valid > 0.5)))
        else:
            stats.update(mean=None, median=None, q25=None, q75=None, share_above_half=None)
        out[name] = stats
    valid = energy[np.isfinite(energy)]
    out["all"] = {"n": int(energy.size), "n_valid": int(valid.size),
                  "mean": float(valid.mean()) if valid.size else None,
                  "median": float(np.median(valid)) if valid.size else None}
    return out


#: Name of the chance-level entry of :func:`mask_energies`: a uniform heatmap, whose mask energy is the mask's area share.
UNIFORM = "uniform map"


def mask_energies(heatmaps: dict, masks: dict, size=None, baseline: bool = True) -> dict:
    """Mask energy of every model's heatmaps for every mask kind: ``{kind: {model: (N,)}}``.

    ``heatmaps``: {model: (N, h, w)}; ``masks``: {kind: (N, H, W)}, e.g. {"lesion": ..., "lung": ...}.
    Rows whose mask is empty (no lesion, no lung mask) get NaN: there is nothing to compare with. A kind
    whose masks are all empty (e.g. lesion masks of real images) is left out. ``baseline`` adds the
    entry :data:`UNIFORM` (a constant heatmap: the mask's share of the image, the chance level).
    """
    out = {}
    for kind, mask in masks.items():
        mask = np.asarray(mask)
        empty = ~(mask.reshape(mask.shape[0], -1) != 0).any(axis=1)
        if empty.all():
            continue
        out[kind] = {}
        items = list(heatmaps.items())
        if baseline and items:
            items.append((UNIFORM, np.ones_like(np.asarray(items[0][1], dtype=np.float32))))
        for name, heat in items:
            energy = mask_energy(heat, mask, size=size)
            energy[empty] = np.nan
            out[kind][name] = energy
    return out


def mask_energy_report(energies: dict, labels, class_names=config.CLASS_NAMES) -> dict:
    """Per-class statistics (:func:`mask_energy_summary`) of :func:`mask_energies`: ``{model: {kind: {class: stats}}}``."""
    report: dict = {}
    for kind, per_model in energies.items():
        for name, energy in per_model.items():
            report.setdefault(name, {})[kind] = mask_energy_summary(energy, labels, class_names)
    return report


def mask_energy_frame(report: dict):
    """The report of :func:`mask_energy_report` as a long pandas DataFrame (model, mask, class, n_valid, mean, median, q25, q75)."""
    import pandas as pd

    rows = []
    for name, kinds in report.items():
        for kind, classes in kinds.items():
            for class_name, stats in classes.items():
                rows.append({"model": name, "mask": kind, "class": class_name, "n": stats["n"],
                             "n_valid": stats["n_valid"], "mean": stats["mean"], "median": stats["median"],
                             "q25": stats.get("q25"), "q75": stats.get("q75")})
    return pd.DataFrame(rows)


def pick_common_example(labels, predictions: dict, target: int = 0, seed: int = 0):
    """Index of a test image of class ``target`` that every model predicts as ``target`` (seeded choice).

    Falls back to an image every model predicts as ``target`` whatever its label, then to one of class
    ``target``; returns ``(index, how)`` with ``how`` in {"correct", "predicted", "label"}; raises if none.
    """
    labels = np.asarray(labels)
    agree = np.ones(labels.shape, bool)
    for pred in predictions.values():
        agree &= np.asarray(pred) == target
    rng = np.random.default_rng(seed)
    for how, candidates in (("correct", agree & (labels == target)), ("predicted", agree), ("label", labels == target)):
        idx = np.flatnonzero(candidates)
        if idx.size:
            return int(rng.choice(idx)), how
    raise ValueError(f"no test image has class {target} or is predicted as class {target} by every model")


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def heatmaps_path(paths, model_name: str):
    """``paths.processed / "heatmaps_<model_name>.npz"`` (written by notebook 05, read by 06)."""
    return paths.processed / f"heatmaps_{model_name}.npz"


def save_heatmaps(paths, model_name: str, heatmaps, classes, method: str = "gradcam"):
    """Write raw heatmaps (N, h, w), the explained classes (N,) and the method to ``heatmaps_<model_name>.npz``."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    classes = np.asarray(classes)
    if heatmaps.ndim != 3 or classes.shape != (heatmaps.shape[0],):
        raise ValueError(f"heatmaps must be (N, h, w) and classes (N,), got {heatmaps.shape} and {classes.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return config.save_npz(heatmaps_path(paths, model_name), heatmaps=heatmaps,
                           classes=classes.astype(np.int64), method=np.array(method))


def load_heatmaps(paths, model_name: str) -> dict:
    """Read ``heatmaps_<model_name>.npz``: ``heatmaps`` (N, h, w) float32, ``classes`` (N,), ``method`` str."""
    data = config.load_npz(heatmaps_path(paths, model_name))
    data["method"] = str(data["method"])
    return data


# ----------------------------------------------------------------------------------------------
# Figures (notebook 05)
# ----------------------------------------------------------------------------------------------


def _show_image(ax, image):
    ax.imshow(_gray(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def figure_title(title: str, figure: int | None = None) -> str:
    """``"Figure N: title"`` for the paper's figures (``figure`` given), else ``title`` unchanged."""
    return f"Figure {int(figure)}: {title}" if figure is not None else title


def describe_example(index: int, label: int, predictions: dict, class_names=config.CLASS_NAMES) -> str:
    """One line naming a test image, its true class and each model's prediction.

    E.g. "test image #42, true class COVID, predicted COVID by both models" or "..., predicted COVID by
    vgg16, Normal by densenet201". ``predictions``: {model: predicted class index of this image}.
    """
    predicted = {name: class_names[int(c)] for name, c in predictions.items()}
    text = f"test image #{int(index)}, true class {class_names[int(label)]}"
    if not predicted:
        return text
    values = set(predicted.values())
    if len(values) == 1:
        who = "both models" if len(predicted) == 2 else ("all models" if len(predicted) > 2 else next(iter(predicted)))
        return f"{text}, predicted {values.pop()} by {who}"
    return f"{text}, predicted " + ", ".join(f"{c} by {name}" for name, c in predicted.items())


def plot_gradcam_pair(image, heatmaps: dict, title: str = "", class_name: str = "", figure: int | None = 6):
    """Figure 6: the image beside each model's raw heatmap at its native grid (one panel per model).

    ``title`` (e.g. from :func:`describe_example`) becomes the suptitle, prefixed "Figure <figure>: "
    unless ``figure`` is None.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(heatmaps), figsize=(3.6 * (1 + len(heatmaps)), 3.6), squeeze=False)
    axes = axes[0]
    _show_image(axes[0], image)
    axes[0].set_title("test image" + (f" ({class_name})" if class_name else ""))
    for ax, (name, heat) in zip(axes[1:], heatmaps.items()):
        heat = np.asarray(heat, dtype=np.float32)
        im = ax.imshow(heat, cmap="jet", interpolation="nearest", vmin=0.0)
        ax.set_title(f"{name}: Grad-CAM {heat.shape[0]}x{heat.shape[1]}")
        step = max(1, int(np.ceil(max(heat.shape) / 10)))
        ax.set_xticks(range(0, heat.shape[1], step))
        ax.set_yticks(range(0, heat.shape[0], step))
        ax.set_xlabel("feature-map column")
        ax.set_ylabel("feature-map row")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="raw Grad-CAM")
    fig.suptitle(figure_title(title or "Grad-CAM at the feature-map grid", figure))
    fig.tight_layout()
    return fig


def plot_overlays(image, heatmaps: dict, alphas=(0.2, 0.4, 0.6, 0.8), cmap: str = "jet", title: str = "",
                  figure: int | None = 7):
    """Figure 7: overlays of each model's heatmap on the image at several alphas (rows: models), with a colour bar.

    ``title`` names the image (e.g. from :func:`describe_example`); the suptitle is prefixed
    "Figure <figure>: " unless ``figure`` is None. The colour bar shows the heatmap scale (normalized per image).
    """
    import matplotlib
    import matplotlib.pyplot as plt

    alphas = list(alphas)
    fig, axes = plt.subplots(len(heatmaps), len(alphas), figsize=(2.8 * len(alphas) + 0.9, 2.9 * len(heatmaps) + 0.4),
                             squeeze=False, layout="constrained")
    for row, (name, heat) in enumerate(heatmaps.items()):
        for col, alpha in enumerate(alphas):
            ax = axes[row, col]
            _show_image(ax, overlay(image, heat, alpha=alpha, cmap=cmap))
            ax.set_title(f"{name}, alpha = {alpha:g}")
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0.0, 1.0), cmap=cmap)
    fig.colorbar(mappable, ax=axes, fraction=0.04, pad=0.02, shrink=0.9,
                 label="Grad-CAM, normalized per image (0 = none, 1 = peak)")
    heading = "Grad-CAM overlays" + (f" of {title}" if title else "")
    fig.suptitle(figure_title(heading, figure) + "\nheatmap upsampled bilinearly, blended as (1 - alpha) image + alpha heatmap")
    return fig


def gallery_indices(labels, predicted, per_class: int, seed: int = 0, num_classes: int | None = None) -> dict:
    """Per class: up to ``per_class`` correct and wrong test indices, drawn with ``seed``: {c: (correct, wrong)}."""
    labels = np.asarray(labels)
    predicted = np.asarray(predicted)
    rng = np.random.default_rng(seed)
    num_classes = int(num_classes if num_classes is not None else labels.max() + 1)
    out = {}
    for c in range(num_classes):
        picks = []
        for hit in (True, False):
            idx = np.flatnonzero((labels == c) & ((predicted == labels) == hit))
            picks.append(np.sort(rng.choice(idx, size=min(per_class, idx.size), replace=False)) if idx.size else idx)
        out[c] = tuple(picks)
    return out


def gallery_columns(picks: dict) -> tuple[int, int]:
    """Columns the gallery needs: (most correct picks, most wrong picks) over every model and class.

    ``picks``: {model: :func:`gallery_indices` result}. Wrong-prediction columns that would stay empty in
    every row are dropped: 0 wrong columns when no model misclassified any image.
    """
    rows = [pair for per_model in picks.values() for pair in per_model.values()]
    return (max((len(correct) for correct, _ in rows), default=0), max((len(wrong) for _, wrong in rows), default=0))


def classes_without_errors(labels, predictions: dict, class_names=config.CLASS_NAMES) -> dict:
    """Per model, the classes (names) with test images none of which it misclassified: {model: [class, ...]}."""
    labels = np.asarray(labels)
    out = {}
    for name, pred in predictions.items():
        pred = np.asarray(pred)
        out[name] = [class_names[c] for c in range(len(class_names))
                     if (labels == c).any() and not (pred[labels == c] != c).any()]
    return out


def no_error_note(labels, predictions: dict, class_names=config.CLASS_NAMES) -> str:
    """A sentence listing the classes without misclassified test images, per model ("" when every class has errors)."""
    error_free = classes_without_errors(labels, predictions, class_names)
    present = [class_names[c] for c in range(len(class_names)) if (np.asarray(labels) == c).any()]
    models = list(error_free)
    if models and all(error_free[m] == present for m in models):
        return "No misclassified test images: every prediction is correct" + (
            f" for {'both models' if len(models) == 2 else 'all models'}" if len(models) > 1 else "") + "."
    common = [c for c in present if all(c in error_free[m] for m in models)]
    parts = []
    if common:
        who = "both models" if len(models) == 2 else ("all models" if len(models) > 2 else models[0])
        parts.append(f"{', '.join(common)} ({who})")
    for m in models:
        own = [c for c in error_free[m] if c not in common]
        if own:
            parts.append(f"{', '.join(own)} ({m})")
    return ("No misclassified test images for " + "; ".join(parts) + ".") if parts else ""


def plot_gallery(images, heatmaps: dict, labels, predictions: dict, class_names=config.CLASS_NAMES,
                 per_class: int = 2, alpha: float = 0.5, seed: int = 0):
    """Gallery of overlays: one row per (class, model), up to ``per_class`` correct then wrong predictions.

    Wrong-prediction columns that no row fills are dropped (:func:`gallery_columns`); a row without
    misclassified images says so in its first wrong slot, and the suptitle lists the error-free classes
    (:func:`no_error_note`).
    """
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    rows = [(c, name) for c in range(len(class_names)) for name in heatmaps]
    picks = {name: gallery_indices(labels, predictions[name], per_class, seed, len(class_names)) for name in heatmaps}
    n_correct, n_wrong = gallery_columns(picks)
    n_correct = max(n_correct, 1)
    cols = n_correct + n_wrong
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols + 0.6, 2.4 * len(rows)), squeeze=False,
                             layout="constrained")
    for r, (c, name) in enumerate(rows):
        correct, wrong = picks[name][c]
        slots = ([("correct", i) for i in correct] + [("correct", None)] * (n_correct - len(correct))
                 + [("wrong", i) for i in wrong] + [("wrong", None)] * (n_wrong - len(wrong)))
        for k, (ax, (kind, idx)) in enumerate(zip(axes[r], slots)):
            ax.set_xticks([])
            ax.set_yticks([])
            if idx is None:
                first_empty = (k == 0 and not len(correct)) if kind == "correct" else (k == n_correct and not len(wrong))
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if first_empty:
                    text = f"no {'correctly classified' if kind == 'correct' else 'misclassified'}\n{class_names[c]} image"
                    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35", fontsize=8)
            else:
                ax.imshow(overlay(images[idx], heatmaps[name][idx], alpha=alpha))
                pred = int(np.asarray(predictions[name])[idx])
                zero = " (zero map)" if not np.asarray(heatmaps[name][idx]).max() > 0 else ""
                ax.set_title(f"#{idx}: pred {class_names[pred]}{zero}", fontsize=7,
                             color="tab:green" if pred == c else "tab:red")
            if k == 0:
                ax.set_ylabel(f"{name}\n{class_names[c]}", fontsize=8)
    if n_wrong:
        heading = f"Grad-CAM gallery: up to {n_correct} correct (green) and {n_wrong} wrong (red) predictions per true class"
    else:
        heading = f"Grad-CAM gallery: {n_correct} correct predictions per true class"
    note = no_error_note(labels, predictions, class_names)
    fig.suptitle(heading + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def mask_energy_ylim(values, margin: float = 0.05) -> tuple[float, float]:
    """Y-limits for mask energies: the finite values' range widened by ``margin`` (of [0, 1]), clipped to [-0.02, 1.02].

    ``values``: any nested sequence or dict of arrays (every plotted value, the uniform map included, so the
    chance level is never cut off). Falls back to (-0.02, 1.02) without finite values.
    """
    arrays = []

    def collect(v):
        if isinstance(v, dict):
            for item in v.values():
                collect(item)
        else:
            arrays.append(np.asarray(v, dtype=np.float64).ravel())

    collect(values)
    finite = np.concatenate(arrays) if arrays else np.zeros(0)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return -0.02, 1.02
    lo, hi = float(finite.min()), float(finite.max())
    return max(-0.02, lo - margin), min(1.02, hi + margin)


def _mask_energy_panel(ax, energies: dict, labels, class_names, mask_kind: str, rng, legend: bool = True):
    names = list(energies)
    width = 0.8 / max(len(names), 1)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    has_values = np.zeros(len(class_names), bool)
    for m, name in enumerate(names):
        colour = "0.55" if name == UNIFORM else colours[m % len(colours)]
        energy = np.asarray(energies[name], dtype=np.float64)
        data, positions = [], []
        for c in range(len(class_names)):
            values = energy[(labels == c) & np.isfinite(energy)]
            if values.size:
                data.append(values)
                positions.append(c + (m - (len(names) - 1) / 2) * width)
                has_values[c] = True
        if data:
            box = ax.boxplot(data, positions=positions, widths=width * 0.8, patch_artist=True, showfliers=False,
                             manage_ticks=False)
            for patch in box["boxes"]:
                patch.set_facecolor(colour)
                patch.set_alpha(0.35)
            for pos, values in zip(positions, data):
                ax.scatter(pos + rng.uniform(-width / 4, width / 4, values.size), values, s=8, color=colour, alpha=0.6)
        ax.plot([], [], color=colour, lw=6, alpha=0.5, label=name)
    lo, hi = mask_energy_ylim(energies)
    ax.set_ylim(lo, hi)
    for c in np.flatnonzero(~has_values):
        # every value missing: without a uniform map (never all zero) the cause cannot be told apart
        text = f"no {mask_kind} mask" if UNIFORM in energies else f"no {mask_kind} mask\nor all-zero maps"
        ax.text(c, (lo + hi) / 2, text, ha="center", va="center", fontsize=11, color="0.4", style="italic")
    ax.set_xticks(range(len(class_names)))
    ax.set_xticklabels(class_names, fontsize=11)
    ax.set_xlim(-0.6, len(class_names) - 0.4)
    ax.tick_params(axis="y", labelsize=11)
    ax.set_xlabel("true class", fontsize=12)
    ax.set_ylabel(f"share of heatmap mass\ninside the {mask_kind} mask", fontsize=12)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"Grad-CAM mass inside the {mask_kind} mask", fontsize=13)
    if legend:
        ax.legend(title="model", fontsize=10, title_fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_mask_energy(energies: dict, labels, class_names=config.CLASS_NAMES, mask_kind: str = "lesion",
                     seed: int = 0):
    """Box plots (with jittered points) of mask energy per class, one box per model; NaN values are skipped.

    ``energies``: {model: (N,)} (one panel titled by ``mask_kind``) or {kind: {model: (N,)}} as returned by
    :func:`mask_energies` (one panel per mask kind, stacked in rows). Each panel's y-range fits its values
    (:func:`mask_energy_ylim`); a class without any mask of that kind says so.
    """
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    if energies and all(isinstance(v, dict) for v in energies.values()):
        panels = list(energies.items())
    else:
        panels = [(mask_kind, energies)]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(panels), 1, figsize=(1.6 * len(class_names) + 3.4, 3.9 * len(panels)), squeeze=False)
    for ax, (kind, per_model) in zip(axes[:, 0], panels):
        _mask_energy_panel(ax, per_model, labels, class_names, kind, rng)
    fig.tight_layout()
    return fig


__all__ = [
    "METHODS", "gradcam", "upsample", "normalize", "overlay", "mask_energy", "mask_energy_summary",
    "UNIFORM", "mask_energies", "mask_energy_report", "mask_energy_frame", "pick_common_example",
    "heatmaps_path", "save_heatmaps", "load_heatmaps", "plot_gradcam_pair", "plot_overlays",
    "gallery_indices", "plot_gallery", "plot_mask_energy", "figure_title", "describe_example",
    "gallery_columns", "classes_without_errors", "no_error_note", "mask_energy_ylim",
]
