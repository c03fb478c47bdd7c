"""Internal helpers shared by the computation modules: validators, atomic file writes, per-model compilation.

* validators: :func:`check_int`, :func:`check_seed`, :func:`check_pair`, :func:`check_unit_range`,
  :func:`to_unit_range` and :func:`image_array` (images to float32 in [0, 1]);
* atomic writes and JSON/NPZ files (:func:`atomic_path`, :func:`save_json`, ...), re-exported by ``helpers.study``;
* :func:`compiled`: the one per-backend compile of a function of a model (jitted ``stateless_call`` on JAX,
  ``tf.function`` on TensorFlow), cached weakly per model and key; :func:`compiled_function` for model-free ones;
* :func:`split_at`: the one split of a functional classifier at a feature layer into feature map and logits;
* :func:`to_device`, :func:`to_unit`, :func:`shard_batch`: moving batches to the device(s).

Nothing here imports keras at module level, plotting code or study files.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .config import FEATURE_LAYER, LOGITS_LAYER, ROOT_ENV

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


def format_value(value) -> str:
    """A number with 3 decimals, never "-0.000"."""
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    """Render a list of dicts as a GitHub-flavoured markdown table."""
    if not rows:
        return ""
    columns = columns or list(rows[0].keys())

    def cell(value):
        if isinstance(value, float):
            return floatfmt.format(value)
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(col, "")) for col in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def progress_bar(iterable, enabled: bool, desc: str, total: int | None = None, unit: str = "img"):
    """``iterable`` wrapped in the package's progress bar when ``enabled``."""
    if not enabled:
        return iterable
    from .progress import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit)


# ----------------------------------------------------------------------------------------------------
# Files: project root, atomic writes, JSON and NPZ
# ----------------------------------------------------------------------------------------------------


def find_project_root(start: str | os.PathLike | None = None, checkout: bool = False) -> Path:
    """The study's root: ``$STUDY_WORK_DIR``, else the nearest parent of ``start`` (default: the working folder) holding ``params/`` and ``pyproject.toml``, else (with ``checkout``) the checkout this package runs from, else ``start``."""  # noqa: E501
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    here = Path(start or Path.cwd()).resolve()
    package_checkout = Path(__file__).resolve().parents[2]  # <root>/src/helpers/_core.py in a checkout install
    for candidate in [here, *here.parents] + ([package_checkout] if checkout else []):
        if (candidate / "params").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    return here


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600 files; give the result the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _to_jsonable(obj.item())  # so NaN/inf numpy scalars become null too
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (set, frozenset)):
        return sorted((_to_jsonable(v) for v in obj), key=str)
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    return str(obj)  # anything else (e.g. a complex number, bytes): its text rather than a failed save


def save_json(obj, path: str | os.PathLike) -> Path:
    """Write ``obj`` (numpy values allowed) as indented, key-sorted JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_to_jsonable(obj), indent=2, sort_keys=True) + "\n")
    return path


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the notebook that writes it first")
    return path


def load_json(path: str | os.PathLike):
    """Read a JSON file, naming it in the error when it is missing."""
    return json.loads(_existing(path).read_text())


def save_npz(path: str | os.PathLike, **arrays) -> Path:
    """Write arrays to a compressed ``.npz`` atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_npz(path: str | os.PathLike, keys=None) -> dict:
    """Read the arrays of an ``.npz`` into a dict (all, or those of ``keys`` it holds), naming the file when it is missing."""
    wanted = None if keys is None else ({keys} if isinstance(keys, str) else set(keys))
    with np.load(_existing(path), allow_pickle=False) as data:
        return {key: data[key] for key in data.files if wanted is None or key in wanted}


# ----------------------------------------------------------------------------------------------------
# Per-model caches and compilation
# ----------------------------------------------------------------------------------------------------

_PER_MODEL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model_cache(model) -> dict:
    """The cache of one model (held weakly: it goes with the model)."""
    return _PER_MODEL.setdefault(model, {})


def backend() -> str:
    """The Keras backend's name."""
    import keras

    return keras.backend.backend()


def compiled(model, key, body: Callable, parts=None) -> Callable:
    """Compile ``body(calls, *args)`` once per ``model`` and ``key``; ``calls[i](inputs)`` runs ``parts[i]`` (default: the model).

    On JAX the whole body is one jitted function of the parts' variables (``stateless_call``), on TensorFlow a
    ``tf.function``; other backends run eagerly. Every part is held weakly (the cache must not keep the model
    alive); parts other than the model must be kept alive by the caller (e.g. in :func:`split_at`'s cache).
    """
    cache = _model_cache(model)
    if key in cache:
        return cache[key]
    refs = [weakref.ref(part) for part in (parts if parts is not None else (model,))]
    del model, parts
    if backend() == "jax":
        import jax

        @jax.jit
        def _jitted(variables, *args):
            def stateless(ref, trainable, non_trainable):
                return lambda inputs: ref().stateless_call(trainable, non_trainable, inputs, training=False)[0]

            calls = tuple(stateless(ref, *v) for ref, v in zip(refs, variables))
            return body(calls, *args)

        def function(*args):
            variables = [
                ([v.value for v in r().trainable_variables], [v.value for v in r().non_trainable_variables])
                for r in refs
            ]
            return _jitted(variables, *(shard_batch(to_device(a)) for a in args))

    else:

        def function(*args):
            calls = tuple((lambda inputs, r=r: r()(inputs, training=False)) for r in refs)
            return body(calls, *args)

        if backend() == "tensorflow":
            import tensorflow as tf

            function = tf.function(function, reduce_retracing=True)
    cache[key] = function
    return function


_FUNCTIONS: dict = {}


def compiled_function(key, body: Callable) -> Callable:
    """Compile ``body(*args)``, a function of arrays and no model, once per ``key`` (small device-side work).

    On JAX a ``jax.jit`` (host arrays go to the device without a per-shape compilation), on TensorFlow a
    ``tf.function``; other backends run it eagerly. Used to prepare a batch on the device before the one compiled
    forward of a model, so that the forward is shared instead of compiled again with the preparation inside.
    """
    if key in _FUNCTIONS:
        return _FUNCTIONS[key]
    if backend() == "jax":
        import jax

        jitted = jax.jit(body)

        def function(*args):
            return jitted(*(to_device(a) for a in args))

    elif backend() == "tensorflow":
        import tensorflow as tf

        function = tf.function(body, reduce_retracing=True)
    else:
        function = body
    _FUNCTIONS[key] = function
    return function


# ----------------------------------------------------------------------------------------------------
# Splitting a functional classifier into feature map and head
# ----------------------------------------------------------------------------------------------------


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
    cache = _model_cache(model)
    key = ("split", str(layer_name))
    if key not in cache:
        cache[key] = _build_split(model, str(layer_name))
    return cache[key]


# ----------------------------------------------------------------------------------------------------
# Moving data to the device
# ----------------------------------------------------------------------------------------------------


def to_device(value):
    """Host arrays and scalars to the device without a per-shape compilation (``jnp.asarray`` compiles one on JAX)."""
    if not isinstance(value, (np.ndarray, np.generic)):
        return value
    if backend() == "jax":
        import jax

        return jax.device_put(value)
    from keras import ops

    return ops.convert_to_tensor(value)


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with zero rows appended up to ``rows`` rows (one compiled shape for a partial last batch)."""
    if len(array) >= rows:
        return array
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])


def to_unit(x):
    """Scale a uint8 batch to float32 [0, 1] inside a compiled graph (exact, as on the host); floats pass as float32."""
    from keras import ops

    if "uint8" in str(x.dtype):
        return ops.cast(x, "float32") / np.float32(255.0)
    return ops.cast(x, "float32")


def shard_batch(x):
    """Place a batch on the devices of the current Keras data-parallel distribution (split along axis 0); else unchanged."""
    if backend() != "jax" or len(getattr(x, "shape", ())) == 0:
        return x
    import keras

    distribution = keras.distribution.distribution()
    if distribution is None:
        return x
    n_devices = distribution.device_mesh.devices.size
    if x.shape[0] % n_devices:
        return x
    import jax

    return jax.device_put(x, distribution.get_data_layout(x.shape).backend_layout)
