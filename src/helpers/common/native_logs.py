"""TensorFlow's start-up lines on a CPU machine (absl, oneDNN, CUDA) kept off the reader's console.

TensorFlow's native libraries write these to file descriptor 2 before ``TF_CPP_MIN_LOG_LEVEL`` applies, so the only
way to drop them is to read what is written there while TensorFlow starts: :func:`filtered_stderr` does that and
passes every other line on unchanged. :data:`NOISE` is also what the runner drops from its kernels' consoles.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

__all__ = ["NOISE", "filtered_stderr", "quiet_import"]

#: Start-up lines of TensorFlow and XLA that say nothing to a reader (absl's log prefix, oneDNN, CUDA on CPU ...).
NOISE = re.compile(
    r"^(?:[IWE]\d{4} [\d:.]+ +\d+ \S+\] .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|.*oneDNN custom operations are on.*|.*TF_ENABLE_ONEDNN_OPTS.*"
    r"|.*Could not find cuda drivers.*|.*failed call to cuInit.*|.*Unable to register cu\w+ factory.*"
    r"|.*This TensorFlow binary is optimized to use available CPU instructions.*"
    r"|.*To enable the following instructions.*rebuild TensorFlow.*)$"
)


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = NOISE):
    """Inside the block, lines written to file descriptor 2 that match ``noise`` are dropped; the others pass on."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to filter
        yield
        return
    read, write = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not noise.match(line.decode(errors="replace").rstrip("\r\n")):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="filtered-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the pump reads to its end and stops
        thread.join(timeout=10)
        os.close(saved)


def quiet_import(name: str):
    """``importlib.import_module(name)``; when that starts TensorFlow, its start-up lines (and those of its first look for
    devices) are dropped (:func:`filtered_stderr`). ``STUDY_NATIVE_LOGS=1`` keeps them."""
    import importlib

    if "tensorflow" in sys.modules or os.environ.get("STUDY_NATIVE_LOGS") == "1":
        return importlib.import_module(name)
    with filtered_stderr():
        module = importlib.import_module(name)
        tensorflow = sys.modules.get("tensorflow")
        if tensorflow is not None:
            with contextlib.suppress(
                Exception
            ):  # CUDA's probe ("failed call to cuInit") happens here, inside the filter
                tensorflow.config.list_physical_devices()
    return module
