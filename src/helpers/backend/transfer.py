"""Moving batches to the device(s): host arrays without per-shape compiles, padded batches, uint8 to [0, 1], sharding."""

from __future__ import annotations

import numpy as np


def backend() -> str:
    """The Keras backend's name."""
    import keras

    return keras.backend.backend()


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
