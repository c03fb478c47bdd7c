"""Running models on the accelerator: one compiled function per model and batch shape, a persistent compilation
cache, data-parallel sharding over several devices, and compilation statistics.

Every stage of the study (backbone features, test predictions, Grad-CAM, perturbation curves) calls a model on
batches of one fixed size: the last, partial batch is padded, so each (model, batch size) compiles once, and
test predictions and perturbation curves share that one compilation (:func:`forward`). Images go to the device
as uint8 and are scaled to [0, 1] there (a quarter of float32's traffic; the division is exact, so results equal
scaling on the host).

On JAX the compiled function is one ``jax.jit`` of the model's ``stateless_call``; on TensorFlow a
``tf.function`` with a fixed input signature; other backends run eagerly. JAX compilations are also kept on disk
(:func:`configure_compilation_cache`), so each notebook's kernel and every rerun reuse them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from helpers.backend.compilation import backend, compiled, compiled_function, model_cache
from helpers.backend.graph import split_at
from helpers.backend.transfer import pad_rows, to_unit
from helpers.common.checks import check_unit_range, to_unit_range
from helpers.common.config import CACHE_ENV, CACHE_SETTINGS, COMPILE_LOG_ENV, FEATURE_LAYER, NOTEBOOK_ENV


def _backbone_and_head(model):
    """(backbone part: images -> feature map, head part: feature map -> outputs) of a classifier with a feature layer, else None."""
    cache = model_cache(model)
    if "backbone and head" not in cache:
        parts = None
        try:
            split = split_at(model, FEATURE_LAYER)
            if split.feature_model is not None and len(model.outputs) == 1:
                import keras

                parts = (split.feature_model, keras.Model(split.feature_tensor, model.outputs[0]))
        except ValueError:  # no feature layer, or outputs that need more than the feature map: one whole forward
            parts = None
        cache["backbone and head"] = parts
    return cache["backbone and head"]


def _scaled(function, dtype: str):
    """``function`` of float32 batches, taking uint8 batches (scaled to [0, 1] on the device by a small compiled step) when ``dtype`` is uint8."""
    if str(dtype) != "uint8":
        return function
    scale = compiled_function("to_unit", to_unit)
    return lambda x: function(scale(x))


def features(model, batch_size: int, dtype: str = "uint8"):
    """The compiled ``batch -> feature map`` of a classifier's backbone (``config.FEATURE_LAYER``), batches of ``batch_size``.

    The same compiled backbone as :func:`forward`: cached features for the head, predictions and perturbation curves
    compile the backbone once per batch size.
    """
    parts = _backbone_and_head(model)
    if parts is None:
        raise ValueError(
            f"model {model.name!r} has no feature layer {FEATURE_LAYER!r} whose feature map alone gives its output"
        )
    backbone = compiled(model, ("backbone", int(batch_size)), lambda calls, x: calls[0](to_unit(x)), parts[:1])
    return _scaled(backbone, dtype)


def forward(model, batch_size: int, dtype: str = "uint8"):
    """The compiled ``batch -> model outputs`` of ``model`` for batches of ``batch_size`` images of ``dtype``.

    Compiled once per batch size, on float32 input; a uint8 batch is scaled to [0, 1] on the device by a small
    compiled function first. A classifier with a feature layer runs as its compiled backbone (:func:`features`) then
    its compiled head (small), so cached features, predictions on uint8 images and curves on perturbed float images
    (built on the device) share one compilation of the backbone; other models compile as one function.
    """
    parts = _backbone_and_head(model)
    if parts is None:
        whole = compiled(model, ("forward", int(batch_size)), lambda calls, x: calls[0](to_unit(x)))
        return _scaled(whole, dtype)
    backbone = features(model, batch_size, "float32")
    head = compiled(model, ("head", int(batch_size)), lambda calls, a: calls[0](a), parts[1:])
    return _scaled(lambda x: head(backbone(x)), dtype)


#: Batches :func:`predict` dispatches ahead of the one it is reading back (at most this many + 1 on the device).
_IN_FLIGHT = 4


def predict(model, images, batch_size: int = 64, desc: str | None = None, output: str = "outputs") -> np.ndarray:
    """Model outputs (float32) of ``images`` (uint8 0-255 or float in [0, 1]), one compiled forward for every batch.

    The last batch is padded to ``batch_size`` (never compiled again); uint8 images are scaled on the device.
    ``output="features"`` gives the backbone's feature map instead (:func:`features`), from the same compilation.
    """
    from keras import ops

    from helpers.common.progress import tqdm

    if output not in ("outputs", "features"):
        raise ValueError(f"output must be 'outputs' or 'features', got {output!r}")
    x = np.asarray(images) if not hasattr(images, "shape") else images
    n = len(x)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dtype = "uint8" if x.dtype == np.uint8 else "float32"
    size = int(batch_size)  # also for fewer images: one compiled shape per model, whatever the set's size
    fn = (features if output == "features" else forward)(model, size, dtype)
    if n == 0:
        shape = model.output_shape if output == "outputs" else _backbone_and_head(model)[0].output_shape
        return np.zeros((0, *shape[1:]), dtype=np.float32)
    batches = [(start, min(n, start + size)) for start in range(0, n, size)]
    in_flight, done = [], []  # a few batches queued on the device while the oldest is read back
    with tqdm(total=len(batches), desc=desc, unit="batch", leave=False, disable=not desc) as bar:
        for start, stop in batches:
            batch = np.asarray(x[start:stop])
            batch = batch if dtype == "uint8" else batch.astype(np.float32, copy=False)
            in_flight.append(fn(pad_rows(batch, size)))  # dispatched asynchronously
            while len(in_flight) > _IN_FLIGHT or (in_flight and stop == n):
                done.append(np.asarray(ops.convert_to_numpy(in_flight.pop(0)), dtype=np.float32))
                bar.update(1)  # the bar counts finished batches, not dispatched ones
    return np.concatenate(done)[:n]


def predict_batches(
    model, x, batch_size: int = 64, transform=to_unit_range, desc: str | None = None, output: str = "outputs"
) -> np.ndarray:
    """Run ``model`` over ``x`` in batches, returning one float32 array: one compiled forward for every batch (the last padded).

    With the default ``transform`` uint8 images are scaled to [0, 1] on the device and float images must already be
    in [0, 1]; ``transform=None`` passes ``x`` as it is (e.g. backbone features); another callable is applied to
    each batch on the host first. ``output="features"``: the backbone's feature map (:func:`predict`).
    """
    if transform is to_unit_range:
        if x.dtype != np.uint8 and len(x):
            check_unit_range(x, "images")
    elif transform is not None and len(x):
        x = np.concatenate([transform(x[s : s + batch_size]) for s in range(0, len(x), batch_size)])
    return predict(model, x, batch_size, desc=desc, output=output)


# ----------------------------------------------------------------------------------------------------
# Persistent compilation cache
# ----------------------------------------------------------------------------------------------------


def configure_compilation_cache(folder: str | os.PathLike | None) -> Path | None:
    """Keep JAX compilations in ``folder`` (created) so later processes reuse them; returns the folder, None when off or not JAX.

    Also sets ``JAX_COMPILATION_CACHE_DIR`` so kernels started from this process inherit it. TensorFlow runs its
    graphs without ahead-of-time XLA compilation and has no such cache.
    """
    if not folder:
        return None
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(folder)
    for key, value in CACHE_SETTINGS.items():
        os.environ.setdefault(key, value)
    if backend() != "jax":
        return folder
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
    )
    jax.config.update(
        "jax_persistent_cache_min_entry_size_bytes", int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"])
    )
    return folder


# ----------------------------------------------------------------------------------------------------
# Several devices
# ----------------------------------------------------------------------------------------------------


def use_data_parallel(enabled: bool | None = None):
    """Shard every batch across all devices with ``keras.distribution.DataParallel`` (JAX); None: only when there are several.

    Returns the distribution set, or None. Models keep replicated weights; batches split along the first axis,
    and results gather back in order, so they equal one device's.
    """
    import keras

    if backend() != "jax":
        return None
    import jax

    devices = jax.devices()
    if enabled is None:
        enabled = len(devices) > 1
    if not enabled:
        keras.distribution.set_distribution(None)
        return None
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return distribution


# ----------------------------------------------------------------------------------------------------
# Compilation statistics (benchmarks)
# ----------------------------------------------------------------------------------------------------

_LOGGING = False


def log_compilations_to_file() -> bool:
    """When ``$STUDY_COMPILE_LOG`` names a file, append one JSON line per JAX compilation or persistent-cache hit to it."""
    global _LOGGING
    target = os.environ.get(COMPILE_LOG_ENV)
    if _LOGGING or not target or backend() != "jax":
        return _LOGGING
    import json

    from jax import monitoring

    notebook = os.environ.get(NOTEBOOK_ENV, "")

    def write(record):
        with open(target, "a") as f:
            f.write(json.dumps({"notebook": notebook, **record}) + "\n")

    def on_duration(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            write({"kind": "compile", "seconds": float(seconds)})

    def on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            write({"kind": "cache_hit"})

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    _LOGGING = True
    return True


class CompileLog:
    """Counts backend compilations and their seconds while active (JAX), optionally per named stage.

    ``with log.stage("train"): ...`` attributes compilations to a stage; ``log.rows()`` gives per-stage
    ``count``, ``seconds``, ``over_half_second`` (compilations over 0.5 s) and persistent-cache ``hits``.
    """

    def __init__(self):
        self.current = "other"
        self.stats: dict[str, dict] = {}
        self._installed = False

    def _entry(self) -> dict:
        return self.stats.setdefault(self.current, {"count": 0, "seconds": 0.0, "over_half_second": 0, "hits": 0})

    def install(self) -> "CompileLog":
        """Start listening to JAX's compilation events (no-op on other backends)."""
        if self._installed or backend() != "jax":
            return self
        from jax import monitoring

        def on_duration(event, seconds, **kwargs):
            if event == "/jax/core/compile/backend_compile_duration":
                entry = self._entry()
                entry["count"] += 1
                entry["seconds"] += float(seconds)
                entry["over_half_second"] += int(seconds > 0.5)

        def on_event(event, **kwargs):
            if event == "/jax/compilation_cache/cache_hits":
                self._entry()["hits"] += 1

        monitoring.register_event_duration_secs_listener(on_duration)
        monitoring.register_event_listener(on_event)
        self._installed = True
        return self

    @contextlib.contextmanager
    def stage(self, name: str):
        """Attribute compilations inside the block to ``name``."""
        previous, self.current = self.current, name
        self._entry()
        try:
            yield
        finally:
            self.current = previous

    def total(self) -> dict:
        """Sum over stages."""
        out = {"count": 0, "seconds": 0.0, "over_half_second": 0, "hits": 0}
        for entry in self.stats.values():
            for key in out:
                out[key] += entry[key]
        return out


# A benchmark's compile log ($STUDY_COMPILE_LOG) starts when a notebook's kernel first imports this module (every
# compiled path imports it), so it holds Keras' own steps too (the U-Net's `fit`). Only in kernels: the runner's own
# process must not load Keras.
if os.environ.get(NOTEBOOK_ENV):
    log_compilations_to_file()
