"""The cross-backend tests' one subprocess: a script run under the other Keras backend (TensorFlow <-> JAX)."""

from __future__ import annotations

import os
import subprocess
import sys

import keras

#: The backend the cross-backend tests compare with (None when the current one is neither TensorFlow nor JAX).
OTHER_BACKEND = {"tensorflow": "jax", "jax": "tensorflow"}.get(keras.backend.backend())


def run_on_other_backend(script: str, timeout: float = 300) -> None:
    """Run ``script`` with ``python -c`` under :data:`OTHER_BACKEND`; fail the test with its stderr when it fails."""
    env = dict(os.environ, KERAS_BACKEND=OTHER_BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
