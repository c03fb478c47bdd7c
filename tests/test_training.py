"""Tests of helpers.models.training: the fast path, the checkpoint criterion, metrics against references."""

from __future__ import annotations

import keras
import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, recall_score

from helpers.common import checks as _core
from helpers.common import config
from helpers.models import classifiers as models
from helpers.models import training

matplotlib.use("Agg")


SIZE = 32


CLASSES = config.CLASS_NAMES


def quadrant_images(n, seed):
    """uint8 images whose class c has a bright quadrant c on a noisy background: learnable, known answer."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    rng.shuffle(labels)
    images = rng.integers(0, 90, (n, SIZE, SIZE, 1)).astype(np.uint8)
    half = SIZE // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, r * half : (r + 1) * half, q * half : (q + 1) * half] += 150
    return images, labels


def make_tiny_data():
    """Quadrant images: 72 for training, 24 for validation."""
    x_train, y_train = quadrant_images(72, 0)
    x_val, y_val = quadrant_images(24, 1)
    return x_train, y_train, x_val, y_val


def tiny_model(freeze=True, seed=1, backbone="small_vgg"):
    return models.build_classifier(backbone, SIZE, weights=None, freeze_backbone=freeze, seed=seed)


def test_fast_path_matches_full_frozen_model(tiny_data):
    results = {}
    for cache in (True, False):
        model = tiny_model(freeze=True, backbone="small_densenet")  # frozen BatchNormalization included
        results[cache] = training.train_classifier(
            model,
            *tiny_data,
            epochs=3,
            batch_size=16,
            learning_rate=3e-3,
            seed=4,
            use_feature_cache=cache,
            progress=False,
        )
    fast, full = results[True], results[False]
    assert fast.settings["feature_cache"] and not full.settings["feature_cache"]
    assert fast.timings["features_s"] > 0 and full.timings["features_s"] == 0
    columns = [c for c in fast.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(fast.history[columns], full.history[columns], rtol=1e-4, atol=1e-5)
    assert fast.chosen_epoch == full.chosen_epoch
    for u, v in zip(fast.model.get_weights(), full.model.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
    # The backbone was frozen: its weights are those it was built with.
    reference = tiny_model(freeze=True, backbone="small_densenet").get_layer("backbone").get_weights()
    for u, v in zip(reference, fast.model.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(u, v)


def test_same_seed_same_history_and_checkpoint_is_the_best_epoch(tiny_data):
    x_train, y_train, x_val, y_val = tiny_data
    kwargs = dict(epochs=3, batch_size=12, learning_rate=3e-3, seed=7, progress=False)
    first = training.train_classifier(tiny_model(), *tiny_data, **kwargs)
    second = training.train_classifier(tiny_model(), *tiny_data, **kwargs)
    pd.testing.assert_frame_equal(first.history.drop(columns="seconds"), second.history.drop(columns="seconds"))
    other = training.train_classifier(tiny_model(), *tiny_data, **{**kwargs, "seed": 8})
    assert not np.allclose(first.history["loss"], other.history["loss"])

    history = first.history
    assert list(history["epoch"]) == [1, 2, 3]
    disease = history[[training.recall_column("val", c) for c in config.DISEASE_CLASSES]].mean(axis=1).to_numpy()
    np.testing.assert_allclose(history[training.CRITERION_COLUMN], disease)
    assert first.chosen_epoch == int(np.flatnonzero(disease == disease.max())[0]) + 1  # ties: the earliest

    # The restored weights are the chosen epoch's: retraining for exactly that many epochs gives them.
    again = training.train_classifier(tiny_model(), *tiny_data, **{**kwargs, "epochs": first.chosen_epoch})
    for u, v in zip(first.model.get_weights(), again.model.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    # The recorded validation recalls and loss are those of the restored model (independent computation).
    probs = first.model.predict(x_val.astype("float32") / 255.0, verbose=0)
    expected = recall_score(y_val, probs.argmax(1), labels=range(4), average=None, zero_division=0)
    np.testing.assert_allclose([first.val_recalls[c] for c in CLASSES], expected, atol=1e-6)
    assert first.chosen_row["val_loss"] == pytest.approx(log_loss(y_val, probs, labels=range(4)), rel=1e-4)


def test_training_metrics_against_an_unchanging_model(tiny_data):
    """With a vanishing learning rate the model does not move: the epoch's running metrics are the initial model's."""
    x_train, y_train, x_val, y_val = tiny_data
    model = tiny_model()
    probs = model.predict(x_train.astype("float32") / 255.0, verbose=0)
    result = training.train_classifier(model, *tiny_data, epochs=1, batch_size=12, learning_rate=1e-12, progress=False)
    row = result.history.iloc[0]
    expected = recall_score(y_train, probs.argmax(1), labels=range(4), average=None, zero_division=0)
    np.testing.assert_allclose([row[training.recall_column("train", c)] for c in CLASSES], expected, atol=1e-6)
    assert row["loss"] == pytest.approx(log_loss(y_train, probs, labels=range(4)), rel=1e-4)


def test_unfrozen_training_learns_and_augment_disables_cache(tiny_data):
    calls = []

    def augment(batch, rng):
        calls.append(batch.shape)
        assert batch.dtype == np.float32 and 0.0 <= batch.min() and batch.max() <= 1.0
        return batch

    result = training.train_classifier(
        tiny_model(freeze=False, backbone="small_vgg"),
        *tiny_data,
        epochs=6,
        batch_size=12,
        learning_rate=3e-3,
        augment=augment,
        progress=False,
    )
    assert not result.settings["feature_cache"]
    assert len(calls) == 6 * 6
    assert result.history[training.CRITERION_COLUMN].max() >= 0.9
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"y_train": np.full(72, 4)}, "class indices"),
        ({"x_train": np.zeros((72, 16, 16, 1), np.uint8)}, "x_train must have shape"),
        ({"y_val": np.zeros(3, int)}, "differ in length"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"class_names": ("a", "b")}, "class_names"),
        ({"y_val": np.full(24, 2)}, "no example of COVID"),
    ],
)
def test_bad_arguments_raise_before_training(tiny_data, change, pattern):
    x_train, y_train, x_val, y_val = tiny_data
    kwargs = dict(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, epochs=1, progress=False)
    kwargs.update(change)
    with pytest.raises(ValueError, match=pattern):
        training.train_classifier(tiny_model(), **kwargs)


def test_precision_and_gpu_options():
    try:
        assert training.configure_precision(True) == "mixed_float16"
        assert keras.config.dtype_policy().name == "mixed_float16"
        assert training.configure_precision("mixed_bfloat16") == "mixed_bfloat16"
        with pytest.raises(ValueError, match="mixed_precision"):
            training.configure_precision("fp8")
    finally:
        assert training.configure_precision(False) == "float32"


def test_gpu_memory_growth_is_set_on_every_gpu_it_can(monkeypatch):
    if keras.backend.backend() != "tensorflow":
        assert training.enable_gpu_memory_growth() == []
        return
    import types

    import tensorflow as tf

    gpus = [types.SimpleNamespace(name="/physical_device:GPU:0"), types.SimpleNamespace(name="/physical_device:GPU:1")]
    calls = []

    def set_growth(device, enabled):
        calls.append((device.name, enabled))
        if device.name.endswith("1"):
            raise RuntimeError("Physical devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", set_growth)
    assert training.enable_gpu_memory_growth() == ["/physical_device:GPU:0"]
    assert calls == [("/physical_device:GPU:0", True), ("/physical_device:GPU:1", True)]


def test_float_images_outside_the_unit_range_are_rejected():
    from helpers.models import classifiers as models

    model = models.build_classifier("small_vgg", image_size=32, weights=None, seed=0)
    x = np.random.default_rng(0).random((8, 32, 32, 1)).astype(np.float32)
    y = np.arange(8) % 4
    with pytest.raises(ValueError, match=r"x_train holds floats in \[.*\]: float images must be in \[0, 1\]"):
        training.train_classifier(model, x * 255, y, x, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="float images must be in"):
        _core.to_unit_range(x * 255)
    np.testing.assert_array_equal(
        _core.to_unit_range((x * 255).astype(np.uint8)), (x * 255).astype(np.uint8).astype(np.float32) / 255
    )


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="compiled head epochs run on the JAX backend")
def test_compiled_head_epochs_equal_the_train_on_batch_loop(tiny_data, monkeypatch):
    """One compiled call per epoch (lax.scan over padded batches) gives the per-batch loop's history and weights."""
    results = {}
    for compiled in (True, False):
        monkeypatch.setattr(training, "compiled_epochs_available", lambda fit_model, c=compiled: c)
        model = tiny_model(freeze=True, backbone="small_densenet")
        # 72 images in batches of 16: the last batch is partial (8 real rows, 8 padded with zero weight)
        results[compiled] = training.train_classifier(
            model, *tiny_data, epochs=4, batch_size=16, learning_rate=3e-3, seed=4, progress=False
        )
    fast, loop = results[True], results[False]
    columns = [c for c in fast.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(fast.history[columns], loop.history[columns], rtol=1e-5, atol=1e-6)
    assert fast.chosen_epoch == loop.chosen_epoch
    for u, v in zip(fast.model.get_weights(), loop.model.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def imbalanced_quadrants(counts, seed, signal=90):
    """Quadrant images with ``counts`` examples per class (the minority last, as Viral Pneumonia is)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), counts)
    rng.shuffle(labels)
    images = rng.integers(0, 120, (len(labels), SIZE, SIZE, 1)).astype(np.uint8)
    half = SIZE // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        images[i, r * half : (r + 1) * half, q * half : (q + 1) * half] += signal
    return images, labels


def test_class_weight_and_oversample_raise_the_minority_recall():
    """The real imbalance (3616:6012:10192:1345) scaled to 27:45:76:10; the same seed, model and batches."""
    x_train, y_train = imbalanced_quadrants([27, 45, 76, 10], 0)
    x_val, y_val = imbalanced_quadrants([20] * 4, 1)
    minority = {}
    for sampling in training.SAMPLINGS:
        result = training.train_classifier(
            tiny_model(freeze=True),
            x_train,
            y_train,
            x_val,
            y_val,
            epochs=5,
            batch_size=16,
            learning_rate=1e-2,
            seed=0,
            progress=False,
            sampling=sampling,
        )
        predicted = result.model.predict(x_val.astype(np.float32) / 255, verbose=0).argmax(axis=1)
        minority[sampling] = float(np.mean(predicted[y_val == 3] == 3))
        assert ("sampling" in result.settings) == (sampling != "downsample")
    assert minority["downsample"] <= 0.1  # unweighted: the 10-image class is never predicted
    assert minority["class_weight"] >= 0.9 and minority["oversample"] >= 0.9


def test_inverse_frequency_weights_and_oversampled_indices():
    labels = np.array([0] * 6 + [1] * 3 + [3] * 1)
    weights = training.inverse_frequency_weights(labels, 4)
    np.testing.assert_allclose(weights, [10 / 18, 10 / 9, 0.0, 10 / 3], rtol=1e-6)
    assert np.isclose(weights[labels].mean(), 1.0)
    idx = training.oversampled_indices(labels, np.random.default_rng(0))
    assert np.bincount(labels[idx], minlength=4).tolist() == [6, 6, 0, 6]
    assert set(range(len(labels))) <= set(idx.tolist())  # every image at least once
    again = training.oversampled_indices(labels, np.random.default_rng(0))
    np.testing.assert_array_equal(idx, again)
    with pytest.raises(ValueError, match="sampling must be one of"):
        training.train_classifier(tiny_model(), *make_tiny_data(), epochs=1, sampling="smote", progress=False)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="compiled head epochs run on the JAX backend")
@pytest.mark.parametrize("sampling", ["class_weight", "oversample"])
def test_compiled_head_epochs_support_the_samplings(sampling, monkeypatch):
    x_train, y_train = imbalanced_quadrants([27, 45, 76, 10], 0)
    x_val, y_val = imbalanced_quadrants([20] * 4, 1)
    results = {}
    for compiled in (True, False):
        monkeypatch.setattr(training, "compiled_epochs_available", lambda fit_model, c=compiled: c)
        results[compiled] = training.train_classifier(
            tiny_model(freeze=True, backbone="small_densenet"),
            x_train, y_train, x_val, y_val,
            epochs=3, batch_size=16, learning_rate=3e-3, seed=4, progress=False, sampling=sampling,
        )  # fmt: skip
    fast, loop = results[True], results[False]
    columns = [c for c in fast.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(fast.history[columns], loop.history[columns], rtol=1e-5, atol=1e-6)
    for u, v in zip(fast.model.get_weights(), loop.model.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
