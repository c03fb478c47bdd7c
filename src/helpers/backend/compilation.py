"""The one per-backend compile of a function of a model (a jitted ``stateless_call`` on JAX, a ``tf.function`` on
TensorFlow), cached weakly per model and key; :func:`compiled_function` for functions of no model.
"""

from __future__ import annotations

import logging
import weakref
from typing import Callable

from helpers.backend.transfer import backend, shard_batch, to_device

_FUNCTIONS: dict = {}
_PER_MODEL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _OneTracePerModel(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about this module's functions: each is traced once
    per model and key by design, and TensorFlow counts the traces of every model's function together."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("tf.function retracing" in message and f"<function {_OWN_FUNCTIONS}" in message)


_OWN_FUNCTIONS = "compiled"  # the qualified names of this module's functions start with it
_FILTER = _OneTracePerModel()


def _tf_function(function: Callable) -> Callable:
    """``tf.function(function, reduce_retracing=True)``, without TensorFlow's retracing warning across models."""
    import tensorflow as tf

    logger = logging.getLogger("tensorflow")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return tf.function(function, reduce_retracing=True)


def model_cache(model) -> dict:
    """The cache of one model (held weakly: it goes with the model)."""
    return _PER_MODEL.setdefault(model, {})


def compiled(model, key, body: Callable, parts=None) -> Callable:
    """Compile ``body(calls, *args)`` once per ``model`` and ``key``; ``calls[i](inputs)`` runs ``parts[i]`` (default: the model).

    On JAX the whole body is one jitted function of the parts' variables (``stateless_call``), on TensorFlow a
    ``tf.function``; other backends run eagerly. Every part is held weakly (the cache must not keep the model
    alive); parts other than the model must be kept alive by the caller (e.g. in :func:`split_at`'s cache).
    """
    cache = model_cache(model)
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
            function = _tf_function(function)
    cache[key] = function
    return function


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
