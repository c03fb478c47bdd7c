"""Tests of helpers.backend.device and helpers.backend.initializers: one compiled forward per batch shape, uint8 scaled on the
device, host-drawn initializers, the persistent compilation cache, data-parallel sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import gradcam
from helpers.backend import compilation, device, graph, initializers
from helpers.models import classifiers as models

ROOT = Path(__file__).resolve().parents[1]
JAX_ONLY = pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX compilations")


def small_model(seed=0):
    return models.build_classifier("small_vgg", 32, weights=None, freeze_backbone=True, seed=seed)


def test_predict_equals_the_model_on_host_scaled_images():
    model = small_model()
    x = np.random.default_rng(0).integers(0, 256, (37, 32, 32, 1), dtype=np.uint8)
    reference = np.asarray(model(x.astype(np.float32) / np.float32(255.0), training=False))
    for batch_size in (8, 64):  # several padded batches, and one batch larger than the set
        np.testing.assert_allclose(device.predict(model, x, batch_size), reference, rtol=1e-5, atol=1e-6)
    floats = x.astype(np.float32) / np.float32(255.0)
    np.testing.assert_allclose(device.predict_batches(model, floats, 16), reference, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        device.predict_batches(model, floats * 2.0, 16)
    assert device.predict(model, x[:0], 8).shape == (0, 4)


@JAX_ONLY
def test_one_compilation_per_model_and_batch_size_whatever_the_set_size():
    model = small_model()
    log = device.CompileLog().install()
    rng = np.random.default_rng(1)
    with log.stage("first"):
        device.predict(model, rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8), 16)
    with log.stage("more"):
        for n in (3, 17, 33, 50):  # other set sizes, other partial batches: no new compilation of the forward
            device.predict(model, rng.integers(0, 256, (n, 32, 32, 1), dtype=np.uint8), 16)
    assert log.stats["first"]["count"] >= 1
    assert log.stats["more"]["count"] == 0


def test_host_initializers_draw_the_distribution_and_are_put_back():
    rng = np.random.default_rng(0)
    glorot = keras.initializers.GlorotUniform()
    host = initializers.HostInitializer(glorot, rng)
    values = np.asarray(host((300, 200)))
    limit = np.sqrt(6.0 / (300 + 200))
    assert values.shape == (300, 200) and np.abs(values).max() <= limit
    assert abs(values.std() - limit / np.sqrt(3.0)) < 0.01 * limit  # uniform(-a, a): std a / sqrt(3)
    he = np.asarray(initializers.HostInitializer(keras.initializers.HeNormal(), rng)((3, 3, 64, 500)))
    std = np.sqrt(2.0 / (3 * 3 * 64)) / 0.87962566103423978
    assert np.abs(he).max() <= 2 * std + 1e-6 and abs(he.std() - np.sqrt(2.0 / (3 * 3 * 64))) < 0.02 * he.std()
    np.testing.assert_array_equal(np.asarray(initializers.HostInitializer(keras.initializers.Ones(), rng)((4,))), 1.0)
    # inside the block the layers get host initializers; afterwards their original ones are back (saved configs)
    with initializers.host_initializers(seed=3) as wrapped:
        inputs = keras.Input((8,))
        model = keras.Model(inputs, keras.layers.Dense(5)(inputs))
    assert wrapped and all(isinstance(w, initializers.HostInitializer) for w in wrapped)
    initializers.restore_initializers(model)
    dense = model.layers[-1]
    assert type(dense.kernel_initializer) is keras.initializers.GlorotUniform
    assert type(dense.bias_initializer) is keras.initializers.Zeros


def test_paper_backbones_build_the_same_weights_for_the_same_seed():
    a = models.build_classifier("vgg16", 32, weights=None, seed=5).get_weights()
    b = models.build_classifier("vgg16", 32, weights=None, seed=5).get_weights()
    c = models.build_classifier("vgg16", 32, weights=None, seed=6).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


@JAX_ONLY
def test_building_densenet201_compiles_no_initializer():
    log = device.CompileLog().install()
    with log.stage("build"):
        model = models.build_classifier("densenet201", 32, weights=None, seed=0)
    assert models.parameter_counts(model)["total"] > 18_000_000
    # 62 per-shape random-kernel compilations before; at most a couple of tiny ones remain
    assert log.stats["build"]["count"] <= 3, log.stats


def _run(code: str, env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@JAX_ONLY
def test_the_persistent_cache_serves_a_second_process(tmp_path):
    """A second process compiling the same forward reads it from the cache folder instead of compiling."""
    code = """
        import numpy as np
        from helpers.backend import device
        from helpers.models import classifiers as models
        device.configure_compilation_cache(%r)
        log = device.CompileLog().install()
        model = models.build_classifier("small_vgg", 32, weights=None, seed=0)
        with log.stage("predict"):
            device.predict(model, np.zeros((5, 32, 32, 1), np.uint8), 8)
        s = log.stats["predict"]
        print(s["count"], s["hits"], round(s["seconds"], 4))
    """ % str(tmp_path / "cache")
    from helpers.common.config import CACHE_SETTINGS

    env = {"KERAS_BACKEND": "jax", **CACHE_SETTINGS}  # the study's settings (whatever the caller's shell exports)
    first = _run(code, env).split()
    second = _run(code, env).split()
    assert int(first[1]) == 0 and int(second[1]) == int(second[0]) >= 1  # the rerun compiles nothing itself
    assert any((tmp_path / "cache").iterdir())


@JAX_ONLY
def test_the_compile_log_holds_compilations_outside_the_compiled_forwards(tmp_path):
    """$STUDY_COMPILE_LOG records from the first import on: a Keras `fit` (the U-Net's path) is logged too."""
    code = """
        import numpy as np
        import keras
        from helpers.models import segmentation
        model = segmentation.build_unet(16, base_filters=2, depth=1)
        model.compile(optimizer="adam", loss="mse")
        model.fit(np.zeros((4, 16, 16, 1), np.float32), np.zeros((4, 16, 16, 1), np.float32), verbose=0)
    """
    log = tmp_path / "compile-log.jsonl"
    _run(code, {"KERAS_BACKEND": "jax", "STUDY_COMPILE_LOG": str(log), "STUDY_NOTEBOOK": "02_lung_segmentation"})
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(r["kind"] == "compile" for r in records) >= 1  # the training step, at least
    assert {r["notebook"] for r in records} == {"02_lung_segmentation"}


@JAX_ONLY
def test_data_parallel_on_two_devices_equals_one_device():
    """Forwards and perturbation curves sharded over two (host) devices give one device's numbers."""
    code = """
        import numpy as np, jax
        from helpers.backend import device
        from helpers.metrics import perturbation
        from helpers.models import classifiers as models
        assert len(jax.devices()) == 2, jax.devices()
        model = models.build_classifier("small_vgg", 32, weights=None, seed=0)
        x = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
        heat = np.random.default_rng(1).random((12, 2, 2))
        classes = np.arange(12) % 4
        out = {}
        for parallel in (False, True):
            device.use_data_parallel(parallel)
            out[parallel] = (device.predict(model, x, 8),
                             perturbation.perturbation_curves(model, x, heat, classes, 16, batch_size=10, progress=False))
        np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[True][1], out[False][1], rtol=1e-5, atol=1e-6)
        print("ok")
    """
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert _run(code, env).strip().endswith("ok")


@JAX_ONLY
def test_loading_a_saved_classifier_compiles_nothing(tmp_path):
    model = models.build_classifier("vgg16", 32, weights=None, seed=0)
    model.save(tmp_path / "m.keras")
    log = device.CompileLog().install()
    with log.stage("load"):
        loaded = models.load_classifier(tmp_path / "m.keras")
    assert log.stats["load"]["count"] <= 1, log.stats  # was one compilation per weight shape
    assert all(np.array_equal(u, v) for u, v in zip(model.get_weights(), loaded.get_weights()))
    assert type(loaded.get_layer("backbone").layers[1].kernel_initializer) is keras.initializers.GlorotUniform


def _gradcam_reference(split, x):
    """Grad-CAM of one image by the definition: alpha_k = mean_ij d y_c / d A^k_ij, ReLU(sum_k alpha_k A^k)."""
    a = keras.ops.convert_to_numpy(split.feature_model(x, training=False)).astype(np.float64)
    logits = keras.ops.convert_to_numpy(split.head_model(a.astype(np.float32), training=False))[0]
    c, eps = int(logits.argmax()), 1e-3
    grads = np.zeros_like(a)
    for index in np.ndindex(a.shape[1:]):  # central differences of the class score, one feature at a time
        up, down = a.copy(), a.copy()
        up[(0, *index)] += eps
        down[(0, *index)] -= eps
        f = [
            keras.ops.convert_to_numpy(split.head_model(v.astype(np.float32), training=False))[0, c] for v in (up, down)
        ]
        grads[(0, *index)] = (f[0] - f[1]) / (2 * eps)
    alpha = grads.mean(axis=(1, 2), keepdims=True)
    return np.maximum((alpha * a).sum(axis=-1), 0.0).astype(np.float32)


def test_features_predictions_and_curves_share_one_compiled_backbone():
    from helpers.metrics import perturbation

    model = models.build_classifier("small_vgg", 32, weights=None, seed=0)
    x = np.random.default_rng(4).integers(0, 256, (7, 32, 32, 1), dtype=np.uint8)
    feature_model, _ = models.split_classifier(model)
    reference = keras.ops.convert_to_numpy(feature_model(x.astype(np.float32) / 255.0, training=False))
    np.testing.assert_allclose(device.predict(model, x, 6, output="features"), reference, rtol=1e-5, atol=1e-5)
    probabilities = device.predict(model, x, 6)
    expected = keras.ops.convert_to_numpy(model(x.astype(np.float32) / 255.0, training=False))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    classes = probabilities.argmax(axis=1)
    curves = perturbation.perturbation_curves(
        model, x, None, classes, 8, "mean", order="random", batch_size=6, progress=False
    )
    np.testing.assert_allclose(curves[:, 0], probabilities[np.arange(7), classes], rtol=1e-5, atol=1e-6)
    heat = gradcam(model, x, batch_size=6)  # Grad-CAM differentiates the head only, on the same backbone
    split = graph.split_at(model)
    with_tape = [_gradcam_reference(split, x[i : i + 1].astype(np.float32) / 255.0) for i in range(7)]
    reference = np.concatenate(with_tape)
    np.testing.assert_allclose(heat, reference, rtol=2e-3, atol=1e-3 * float(np.abs(reference).max()))
    keys = [
        k for k in compilation.model_cache(model) if isinstance(k, tuple) and k[0] in ("backbone", "head", "forward")
    ]
    assert sorted(keys) == [("backbone", 6), ("head", 6)]  # one compiled backbone (and a small head) for all four
    assert not [k for k in compilation.model_cache(model) if isinstance(k, tuple) and k[0] == "gradcam"]
    with pytest.raises(ValueError, match="output must be"):
        device.predict(model, x, 6, output="logits")
