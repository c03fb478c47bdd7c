"""The study's constants: class names, layer names of the classifier contract, environment variable names.

Paths and files are in :mod:`helpers.study.files`.
"""

from __future__ import annotations

import os

#: Class folders of the COVID-19 Radiography Database, in the study's label order.
CLASS_NAMES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
#: The three disease classes whose mean validation recall picks the checkpoint.
DISEASE_CLASSES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Viral Pneumonia")
#: Folder name of the dataset inside a download (Kaggle layout).
DATASET_DIRNAME = "COVID-19_Radiography_Dataset"
#: Environment variable that overrides the project root (the folder holding data/ and reports/).
ROOT_ENV = "STUDY_WORK_DIR"

#: The study's two model slots, in the paper's order (the demo and smoke profiles put small backbones in them).
MODEL_SLOTS: tuple[str, ...] = ("vgg16", "densenet201")

#: The profile whose numbers can be compared with the paper's (real data, ImageNet backbones, 299 px).
PAPER_PROFILE = "paper"

#: Name of the classifier's nested backbone layer; its output is the Grad-CAM feature map.
FEATURE_LAYER = "backbone"
#: Name of the classifier's pre-softmax Dense layer (the class scores yᶜ).
LOGITS_LAYER = "logits"
#: Name of the classifier's softmax output layer.
PROBABILITIES_LAYER = "probabilities"

__all__ = [
    "CLASS_NAMES",
    "DISEASE_CLASSES",
    "DATASET_DIRNAME",
    "ROOT_ENV",
    "MODEL_SLOTS",
    "PAPER_PROFILE",
    "FEATURE_LAYER",
    "LOGITS_LAYER",
    "PROBABILITIES_LAYER",
]

#: Environment variable of JAX's persistent compilation cache folder (the runner points it at ``data/cache/jax``).
CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
#: JAX persistent-cache settings used unless the environment sets them: keep every compilation, however quick (a
#: study compiles dozens of small functions of the same shapes in every notebook; kept, a rerun compiles nothing).
CACHE_SETTINGS = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
#: Environment variable naming the notebook a kernel runs (set by the runner; recorded in compile logs).
NOTEBOOK_ENV = "STUDY_NOTEBOOK"
#: Environment variable: a JSON-lines file to which every process appends its JAX compilations (benchmarks).
COMPILE_LOG_ENV = "STUDY_COMPILE_LOG"

#: Environment variable: the number of threads TensorFlow's kernels use within and between operations
#: (``auto``: TensorFlow's own choice, one per core).
THREADS_ENV = "STUDY_THREADS"
#: Threads per operation unless ``$STUDY_THREADS`` says otherwise. A fixed count makes TensorFlow split its reductions
#: the same way on every machine (with one thread per core, a one-core and a two-core machine train different models
#: from the same seed); two threads run at full speed on the two-core machines the demo is sized for.
DEFAULT_THREADS = 2
#: TensorFlow's own variables, read once when its runtime starts.
TF_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def thread_count() -> int | None:
    """Threads per TensorFlow operation from ``$STUDY_THREADS`` (default :data:`DEFAULT_THREADS`); None for ``auto``."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw.lower() == "auto":
        return None
    if not raw:
        return DEFAULT_THREADS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${THREADS_ENV} must be a positive int or 'auto', got {raw!r}")
    return value


def pin_threads() -> dict[str, str]:
    """Set TensorFlow's thread counts to :func:`thread_count` unless the environment sets them; return the values in force.

    Runs when ``helpers`` is imported (before Keras starts TensorFlow in a notebook) and in the runner, whose kernels
    inherit the environment; it has no effect on a TensorFlow runtime that has already started.
    """
    count = thread_count()
    if count is not None:
        for name in TF_THREAD_VARIABLES:
            os.environ.setdefault(name, str(count))
    return {name: os.environ[name] for name in (THREADS_ENV, *TF_THREAD_VARIABLES) if name in os.environ}
