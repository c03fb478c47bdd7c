"""Building networks without compiling their initializers: standard Keras initializers drawn on the host.

Keras draws each variable's initial value with a device kernel; on the JAX backend every distinct weight shape is
one XLA compilation (62 for DenseNet201, seconds each on a GPU). Inside :func:`host_initializers` the standard
initializers (zeros, ones, constants, uniform/normal/truncated normal, Glorot/He/LeCun variance scaling) draw the
same distributions with NumPy from a seeded generator and copy the values to the device, which compiles nothing;
:func:`restore_initializers` then puts the original initializer objects back on every layer, so saved models keep
their usual configuration.

References: Glorot & Bengio 2010; He et al. 2015 (variance scaling).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from helpers.backend.transfer import to_device


class HostInitializer(keras.initializers.Initializer):
    """Stand-in for a standard Keras initializer while a network is built: draws the same distribution with NumPy.

    Keras initializers run one device kernel per variable shape; on the JAX backend each distinct shape is a
    separate XLA compilation (62 for DenseNet201). Drawing on the host and copying the values costs no
    compilation. :func:`host_initializers` puts the original initializer back on every layer afterwards, so
    saved models keep their usual configuration.
    """

    def __init__(self, original, rng: np.random.Generator):
        self.original, self.rng = original, rng

    def __call__(self, shape, dtype=None):
        """Draw a tensor of ``shape`` on the host with the original initializer's distribution."""
        shape = tuple(int(d) for d in shape)
        values = _host_values(self.original, shape, self.rng).astype(
            keras.backend.standardize_dtype(dtype or "float32")
        )
        return to_device(values)

    def get_config(self):
        """The original initializer's configuration."""
        return self.original.get_config()


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """Fan-in and fan-out of a weight shape, as Keras computes them."""
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


def _host_values(init, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values of ``init`` (a standard Keras initializer) for ``shape``, drawn with NumPy."""
    inits = keras.initializers
    if isinstance(init, inits.Zeros):
        return np.zeros(shape)
    if isinstance(init, inits.Ones):
        return np.ones(shape)
    if isinstance(init, inits.Constant):
        return np.full(shape, float(init.value))
    if isinstance(init, inits.RandomUniform):
        return rng.uniform(init.minval, init.maxval, size=shape)
    if isinstance(init, inits.TruncatedNormal):
        return init.mean + init.stddev * _truncated_normal(rng, shape)
    if isinstance(init, inits.RandomNormal):
        return rng.normal(init.mean, init.stddev, size=shape)
    # VarianceScaling and its named forms (Glorot, He, LeCun)
    fan_in, fan_out = _fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[init.mode]
    scale = init.scale / max(1.0, n)
    if init.distribution == "truncated_normal":
        return (np.sqrt(scale) / 0.87962566103423978) * _truncated_normal(rng, shape)
    if init.distribution == "untruncated_normal":
        return rng.normal(0.0, np.sqrt(scale), size=shape)
    limit = np.sqrt(3.0 * scale)
    return rng.uniform(-limit, limit, size=shape)


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal values redrawn until they lie within two standard deviations."""
    values = rng.standard_normal(size=shape)
    bad = np.abs(values) > 2.0
    while bad.any():
        values[bad] = rng.standard_normal(size=int(bad.sum()))
        bad = np.abs(values) > 2.0
    return values


_HOST_TYPES = (
    keras.initializers.Zeros,
    keras.initializers.Ones,
    keras.initializers.Constant,
    keras.initializers.RandomUniform,
    keras.initializers.RandomNormal,
    keras.initializers.TruncatedNormal,
    keras.initializers.VarianceScaling,
)


@contextlib.contextmanager
def host_initializers(seed: int | None = None):
    """Build networks inside this block with their standard initializers drawn on the host (NumPy), seeded by ``seed``.

    Yields a list that collects the layers built; on exit every layer gets its original initializer objects back.
    """
    from keras.src import initializers as keras_initializers

    rng = np.random.default_rng(None if seed is None else np.random.SeedSequence([int(seed), 0x1417]))
    original_get = keras_initializers.get
    wrapped: list[HostInitializer] = []

    def get(identifier):
        init = original_get(identifier)
        if type(init) in _HOST_TYPES or (isinstance(init, _HOST_TYPES) and type(init).__module__.startswith("keras.")):
            init = HostInitializer(init, rng)
            wrapped.append(init)
        return init

    keras_initializers.get = get
    try:
        yield wrapped
    finally:
        keras_initializers.get = original_get


def restore_initializers(model: keras.Model) -> None:
    """Put back the original initializers that :func:`host_initializers` wrapped, on every layer of ``model``."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for attr, value in list(vars(layer).items()):
            if isinstance(value, HostInitializer):
                setattr(layer, attr, value.original)
