"""Shared test fixtures: a small synthetic phantom dataset in the Kaggle layout."""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

import pytest

# Figures are drawn off-screen in tests.
os.environ.setdefault("MPLBACKEND", "Agg")

#: Size of the shared phantom dataset: enough per class for a non-empty 80/10/10 split (9/1/2).
PHANTOM_PER_CLASS = 12
PHANTOM_IMAGE_SIZE = 64


#: Imports through which a test may run a Keras computation: a test file importing any of them (directly or through
#: another test module) is marked ``keras`` and runs under every backend; the others run once (``make test``).
KERAS_IMPORTS = (
    "keras", "tensorflow", "jax", "helpers.backend", "helpers.explain", "helpers.models", "helpers.steps",
    "helpers.metrics.perturbation", "helpers.metrics.aopc", "helpers.metrics.road", "helpers.metrics.imputation",
    "helpers.metrics.insertion", "helpers.metrics.randomisation", "helpers.metrics.pointing", "helpers.study.files",
    "helpers.study.lung_files", "helpers.study.integrity", "helpers.report.explorer", "helpers.report.figures",
    "helpers.report.heatmap_figures",
)  # fmt: skip
TESTS = Path(__file__).resolve().parent


@functools.cache
def may_run_keras(path: Path) -> bool:
    """Whether the test file at ``path`` imports anything of :data:`KERAS_IMPORTS` (``helpers``' public names count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    for name in names:
        if name == "helpers" or name.startswith(KERAS_IMPORTS):
            return True
        other = TESTS / f"{name.split('.')[0]}.py"
        if name.startswith("test_") and other.is_file() and may_run_keras(other):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    """Mark ``keras`` every test of a file that may run a Keras computation (:func:`may_run_keras`)."""
    for item in items:
        if may_run_keras(Path(item.fspath)):
            item.add_marker(pytest.mark.keras)


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory):
    """Path of a synthetic dataset folder (``COVID-19_Radiography_Dataset``): 12 phantoms per class at 64 px, seed 0."""
    from helpers.data.phantoms import synthesize_dataset

    root = tmp_path_factory.mktemp("phantoms")
    return synthesize_dataset(
        root, per_class=PHANTOM_PER_CLASS, image_size=PHANTOM_IMAGE_SIZE, seed=0, mask_size=64, progress=False
    )


@pytest.fixture(scope="module")
def toy():
    """The patch model of test_perturbation with images and ideal heatmaps (shared by the curve and AOPC tests)."""
    from test_perturbation import make_toy

    return make_toy()


@pytest.fixture(scope="module")
def tiny_data():
    """Quadrant images of test_training (shared by the training and the study-file tests)."""
    from test_training import make_tiny_data

    return make_tiny_data()
