"""Shared test fixtures: a small synthetic phantom dataset in the Kaggle layout."""

from __future__ import annotations

import os

import pytest

# Figures are drawn off-screen in tests.
os.environ.setdefault("MPLBACKEND", "Agg")

#: Size of the shared phantom dataset: enough per class for a non-empty 80/10/10 split (9/1/2).
PHANTOM_PER_CLASS = 12
PHANTOM_IMAGE_SIZE = 64


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
