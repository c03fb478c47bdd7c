"""Keras graph surgery: :func:`split_at` splits a functional classifier at a feature layer into feature map and logits."""

from __future__ import annotations

from dataclasses import dataclass

from helpers.backend.compilation import model_cache
from helpers.backend.transfer import backend
from helpers.common.config import FEATURE_LAYER, LOGITS_LAYER


@dataclass
class Split:
    """How to get the feature map and the logits of one model for one target layer."""

    layer_name: str
    feature_model: object = None  # images -> feature map
    head_model: object = None  # feature map -> logits
    dual_call: object = None  # images -> (feature map, logits); TensorFlow fallback
    num_classes: int = 0
    feature_tensor: object = None  # the feature map in the model's own graph (layers of the model itself)


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
        raise ValueError(
            f"layer {layer.name!r} is called {len(own)} times in model {model.name!r}: "
            "its feature map is ambiguous; pick a layer called once"
        )
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
    import keras

    return isinstance(layer, keras.Model) and bool(_graph_nodes(layer))


def layer_names(model, prefix: str = "") -> list[str]:
    """Every layer name of ``model``, nested functional models' layers as ``outer/inner``."""
    names = []
    for layer in model.layers:
        names.append(prefix + layer.name)
        if _is_functional(layer):
            names.extend(layer_names(layer, prefix + layer.name + "/"))
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
    raise ValueError(
        f"layer {name!r} not found in model {model.name!r}; available layers: " + ", ".join(layer_names(model))
    )


def _out_tensor(model, layer):
    return _single(_node_of(model, layer).output_tensors, f"layer {layer.name!r}")


def _in_tensor(model, layer):
    return _single(_node_of(model, layer).input_tensors, f"layer {layer.name!r}")


def _compose(first, second, input_shape):
    """A model ``second(first(x))`` over a fresh input; either part may be None (identity)."""
    import keras

    x = inp = keras.Input(batch_shape=input_shape)
    if first is not None:
        x = first(x)
    if second is not None:
        x = second(x)
    return keras.Model(inp, x)


def _submodel(inputs, outputs):
    import keras

    if inputs is outputs:
        return None
    return keras.Model(inputs, outputs)


def _check_feature_map(tensor, layer_name):
    if len(tensor.shape) != 4:
        raise ValueError(
            f"layer {layer_name!r} outputs shape {tuple(tensor.shape)}; Grad-CAM needs a "
            "4-D feature map (batch, h, w, channels)"
        )


def _require_tensorflow(err: ValueError, problem: str) -> None:
    """Raise unless on TensorFlow, the only backend whose gradient can follow a feature map the head does not take alone."""
    if backend() != "tensorflow":
        raise ValueError(f"{problem} ({err}); such layers are supported on the TensorFlow backend only") from err


def _build_split(model, layer_name) -> Split:
    import keras

    try:
        logits_layer = model.get_layer(LOGITS_LAYER)
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no layer named {LOGITS_LAYER!r} (the pre-softmax "
            "class scores); available layers: " + ", ".join(layer_names(model))
        ) from None
    if not model.inputs or len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} must be a functional model with one image input")
    chain = _find_layer(model, layer_name)
    if len(chain) > 2:
        raise ValueError(
            f"layer {layer_name!r} is nested {len(chain) - 1} models deep; only layers of the "
            "model or of a model nested directly in it are supported"
        )
    x_in = model.inputs[0]
    logits = _out_tensor(model, logits_layer)
    split = Split(layer_name=layer_name, num_classes=int(logits.shape[-1]))
    if len(chain) == 1:
        feature = _out_tensor(model, chain[0])
        _check_feature_map(feature, layer_name)
        split.feature_tensor = feature
        try:
            split.feature_model = keras.Model(x_in, feature)
            split.head_model = keras.Model(feature, logits)
        except ValueError as err:  # the logits depend on more than this layer's output
            _require_tensorflow(err, f"the logits of model {model.name!r} do not depend on layer {layer_name!r} alone")
            split.feature_model = split.head_model = None
            dual = keras.Model(x_in, [feature, logits])
            split.dual_call = lambda x: dual(x, training=False)
        return split
    # A layer inside a nested functional model (e.g. a block of the backbone).
    outer, inner = chain
    outer_in, outer_out = _in_tensor(model, outer), _out_tensor(model, outer)
    inner_in, inner_out = _single(outer.inputs, f"model {outer.name!r}"), _out_tensor(outer, inner)
    nested_out = _single(outer.outputs, f"model {outer.name!r}")
    _check_feature_map(inner_out, layer_name)
    pre = _submodel(x_in, outer_in)
    post = keras.Model(outer_out, logits)
    try:
        lower = _submodel(inner_in, inner_out)
        upper = _submodel(inner_out, nested_out)
        split.feature_model = _compose(pre, lower, tuple(x_in.shape))
        split.head_model = _compose(upper, post, tuple(inner_out.shape))
    except ValueError as err:
        _require_tensorflow(err, f"the output of {outer.name!r} does not depend on layer {layer_name!r} alone")
        split.feature_model = split.head_model = None
        both = keras.Model(inner_in, [inner_out, nested_out])

        def dual_call(x):
            z = pre(x, training=False) if pre is not None else x
            a, f = both(z, training=False)
            return a, post(f, training=False)

        split.dual_call = dual_call
    return split


def split_at(model, layer_name: str = FEATURE_LAYER) -> Split:
    """The model cut at ``layer_name`` (default the ``backbone``; "outer/inner" or an inner layer's plain name too).

    ``feature_model``: images -> the layer's 4-D feature map; ``head_model``: feature map -> the ``logits``
    layer's output. Both share the model's layers (and so its weights). Cached weakly per model and layer.
    """
    cache = model_cache(model)
    key = ("split", str(layer_name))
    if key not in cache:
        cache[key] = _build_split(model, str(layer_name))
    return cache[key]
