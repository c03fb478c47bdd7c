"""Tests for helpers.models.classifiers: the paper's parameter counts, feature grids, preprocessing, saving and errors."""

import h5py
import keras
import numpy as np
import pytest

from helpers.common import choices, config
from helpers.models import classifiers as models


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 1)).astype("float32")


@pytest.mark.parametrize(
    "backbone, total, trainable, channels, output_layer",
    [
        ("vgg16", 14_846_084, 131_396, 512, "block5_pool"),
        ("densenet201", 18_813_828, 491_844, 1920, "relu"),
    ],
)
def test_paper_parameter_counts_and_grid(backbone, total, trainable, channels, output_layer):
    model = models.build_classifier(backbone, 299, num_classes=4, weights=None, freeze_backbone=True)
    counts = models.parameter_counts(model)
    assert counts["total"] == total
    assert counts["trainable"] == trainable
    assert model.count_params() == total
    base = model.get_layer(models.feature_layer_name(model))
    assert base.output.shape[1:] == (9, 9, channels)
    assert base.layers[-1].name == output_layer
    assert model.get_layer("head_pool").pool_size == (4, 4)
    assert model.get_layer(config.LOGITS_LAYER).units == 4


@pytest.mark.parametrize("backbone", choices.DEMO_BACKBONES)
def test_small_backbones_have_stride_16(backbone):
    model = models.build_classifier(backbone, 96, weights=None, freeze_backbone=False, seed=0)
    base = model.get_layer(config.FEATURE_LAYER)
    assert base.output.shape[1:3] == (6, 6)
    assert model.get_layer("head_pool").pool_size == (3, 3)
    # Unfrozen: only BatchNormalization moving statistics (2 per channel) are non-trainable.
    bn_channels = sum(
        layer.gamma.shape[0] for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert models.parameter_counts(model)["non_trainable"] == 2 * bn_channels
    assert model.get_layer("backbone").trainable


def test_head_pool_size_rule():
    assert [models.head_pool_size(g) for g in (1, 2, 3, 4, 6, 8, 9, 10, 20)] == [1, 1, 1, 2, 3, 4, 4, 4, 4]


def test_normalization_matches_keras_applications():
    rgb = np.random.default_rng(1).random((2, 5, 5, 3)).astype("float32")
    rgb[..., 0] *= 0.5  # make the channels differ so a missing RGB->BGR flip would show
    caffe = keras.ops.convert_to_numpy(models.BackboneNormalization("caffe")(rgb))
    expected = keras.applications.vgg16.preprocess_input(rgb * 255.0)
    np.testing.assert_allclose(caffe, keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-3)
    torch = keras.ops.convert_to_numpy(models.BackboneNormalization("torch")(rgb))
    expected = keras.applications.densenet.preprocess_input(rgb * 255.0)
    np.testing.assert_allclose(torch, keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)
    tf_mode = keras.ops.convert_to_numpy(models.BackboneNormalization("tf")(rgb))
    np.testing.assert_allclose(tf_mode, rgb * 2 - 1, atol=1e-6)
    gray = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
    rgb3 = keras.ops.convert_to_numpy(models.GrayscaleToRGB()(gray))
    assert rgb3.shape == (1, 2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb3[..., c], gray[..., 0])


@pytest.mark.parametrize("backbone", choices.DEMO_BACKBONES)
def test_safe_mode_reload_predicts_identically(tmp_path, backbone):
    model = models.build_classifier(backbone, 32, weights=None, freeze_backbone=False, seed=3)
    x = _images()
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), before)
    np.testing.assert_array_equal(models.load_classifier(path).predict(x, verbose=0), before)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in reloaded.layers)
    assert models.feature_layer_name(reloaded) == config.FEATURE_LAYER


def test_same_seed_same_weights_different_seed_differs():
    a = models.build_classifier("small_densenet", 32, weights=None, freeze_backbone=False, seed=5)
    b = models.build_classifier("small_densenet", 32, weights=None, freeze_backbone=False, seed=5)
    c = models.build_classifier("small_densenet", 32, weights=None, freeze_backbone=False, seed=6)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert not all(np.array_equal(u, v) for u, v in zip(a.get_weights(), c.get_weights()))


def test_seeded_uniform_limits_and_reproducibility():
    conv = models.SeededUniform(2.0, "fan_in", seed=3)((3, 3, 8, 16))
    conv = keras.ops.convert_to_numpy(conv)
    limit = np.sqrt(6.0 / (3 * 3 * 8))  # He uniform: fan-in 72
    assert conv.shape == (3, 3, 8, 16) and np.abs(conv).max() <= limit and np.abs(conv).max() > 0.95 * limit
    dense = keras.ops.convert_to_numpy(models.SeededUniform(1.0, "fan_avg", seed=3)((100, 50)))
    assert np.abs(dense).max() <= np.sqrt(6.0 / 150) and dense.std() == pytest.approx(np.sqrt(2.0 / 150), rel=0.05)
    again = keras.ops.convert_to_numpy(models.SeededUniform(2.0, "fan_in", seed=3)((3, 3, 8, 16)))
    np.testing.assert_array_equal(conv, again)
    assert models.SeededUniform.from_config(models.SeededUniform(2.0, "fan_in", 3).get_config()).seed == 3


def test_backbone_weights_file_round_trips(tmp_path):
    source = models.build_classifier("small_vgg", 32, weights=None, seed=1)
    path = tmp_path / "backbone.weights.h5"
    source.get_layer(config.FEATURE_LAYER).save_weights(path)
    loaded = models.build_classifier("small_vgg", 32, weights=str(path), seed=2)
    for u, v in zip(source.get_layer("backbone").get_weights(), loaded.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(u, v)
    assert not loaded.get_layer("backbone").trainable


def test_legacy_h5_backbone_file_loads(tmp_path):
    """The layout of the '*_notop.h5' files keras.applications downloads, written here with h5py."""
    source = models.build_classifier("small_vgg", 32, weights=None, seed=1).get_layer("backbone")
    path = tmp_path / "small_vgg_notop.h5"
    with h5py.File(path, "w") as f:
        with_weights = [layer for layer in source.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in with_weights]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in with_weights:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            group.attrs["weight_names"] = names
            for name, w in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=w)
    loaded = models.build_classifier("small_vgg", 32, weights=path, seed=2)
    for u, v in zip(source.get_weights(), loaded.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(u, v)


def test_split_classifier_shares_weights_and_gives_logits():
    model = models.build_classifier("small_densenet", 32, weights=None, freeze_backbone=True, seed=0)
    feature_model, head_model = models.split_classifier(model)
    x = _images(4)
    features = feature_model.predict(x, verbose=0)
    assert features.shape == (4, 2, 2, int(model.get_layer("backbone").output.shape[-1]))
    logits = head_model.predict(features, verbose=0)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(exp / exp.sum(axis=1, keepdims=True), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # Changing the classifier's logits layer changes the head model: the weights are shared.
    dense = model.get_layer(config.LOGITS_LAYER)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + 1.0])
    np.testing.assert_allclose(head_model.predict(features, verbose=0), logits + 1.0, rtol=1e-5, atol=1e-5)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet50.*vgg16, densenet201, small_vgg, small_densenet"):
        models.build_classifier("resnet50", 64, weights=None)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"backbone": "vgg16", "image_size": 16}, ValueError, "too small.*at least 32"),
        ({"backbone": "small_vgg", "image_size": 8}, ValueError, "too small.*at least 16"),
        ({"backbone": "small_vgg", "image_size": 32.5}, TypeError, "image_size"),
        ({"backbone": "small_vgg", "image_size": 32, "num_classes": 1}, ValueError, "num_classes"),
        ({"backbone": "small_vgg", "image_size": 32, "weights": "imagenet"}, ValueError, "no ImageNet weights"),
        ({"backbone": "vgg16", "image_size": 32, "weights": "/nonexistent/w.h5"}, FileNotFoundError, "nonexistent"),
    ],
)
def test_impossible_arguments_raise_clear_errors(kwargs, error, pattern):
    kwargs.setdefault("weights", None)
    with pytest.raises(error, match=pattern):
        models.build_classifier(**kwargs)


def test_load_classifier_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        models.load_classifier(tmp_path / "missing.keras")
