"""The study's constants: class names, layer names of the classifier contract, environment variable names.

Paths and files are in :mod:`helpers.study`.
"""

from __future__ import annotations

#: Class folders of the COVID-19 Radiography Database, in the study's label order.
CLASS_NAMES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
#: The three disease classes whose mean validation recall picks the checkpoint.
DISEASE_CLASSES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Viral Pneumonia")
#: Folder name of the dataset inside a download (Kaggle layout).
DATASET_DIRNAME = "COVID-19_Radiography_Dataset"
#: Environment variable that overrides the project root (the folder holding data/ and reports/).
ROOT_ENV = "STUDY_WORK_DIR"

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
