"""Tests of helpers.gradcam against closed-form models, numpy references and the other backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras
from keras import layers

from helpers import config
from helpers import gradcam as G

BACKEND = keras.backend.backend()
OTHER_BACKEND = {"tensorflow": "jax", "jax": "tensorflow"}.get(BACKEND)


# ----------------------------------------------------------------------------------------------
# Models with known answers
# ----------------------------------------------------------------------------------------------


def linear_model(mix, bias, dense_w, dense_b, size=6):
    """Classifier whose feature map is A = x @ mix + bias (1x1 conv) and logits = flatten(A) @ W + b."""
    channels_in, channels = mix.shape
    bi = keras.Input((size, size, channels_in))
    conv = layers.Conv2D(channels, 1, name="mix")
    bb = keras.Model(bi, conv(bi), name=config.FEATURE_LAYER)
    inp = keras.Input((size, size, channels_in))
    x = layers.Flatten()(bb(inp))
    logits = layers.Dense(dense_w.shape[1], name=config.LOGITS_LAYER)
    out = layers.Softmax(name=config.PROBABILITIES_LAYER)(logits(x))
    model = keras.Model(inp, out)
    conv.set_weights([mix.reshape(1, 1, channels_in, channels).astype("float32"), bias.astype("float32")])
    logits.set_weights([dense_w.astype("float32"), dense_b.astype("float32")])
    return model


def linear_case(seed=0, n=5, size=6, channels_in=2, channels=3, classes=4):
    """Random weights and inputs of :func:`linear_model`, chosen so the ReLU of Grad-CAM clips some pixels."""
    rng = np.random.default_rng(seed)
    mix = rng.uniform(0.2, 1.0, (channels_in, channels))
    bias = rng.uniform(0.0, 0.3, channels)
    dense_w = rng.normal(0, 1, (size * size * channels, classes))
    dense_b = rng.normal(0, 0.1, classes)
    x = rng.uniform(0, 1, (n, size, size, channels_in)).astype("float32")
    return linear_model(mix, bias, dense_w, dense_b, size), x, (mix, bias, dense_w, dense_b)


def reference_weights(g, a, method):
    """Channel weights from a gradient map g and feature map a (h, w, K): Grad-CAM's mean, or Grad-CAM++'s closed form."""
    if method == "gradcam":
        return g.mean(axis=(0, 1))
    denom = 2 * g**2 + a.sum(axis=(0, 1)) * g**3
    coeff = np.where(denom != 0, g**2 / np.where(denom != 0, denom, 1), 0)
    return (coeff * np.maximum(g, 0)).sum(axis=(0, 1))


def linear_reference(x, params, classes, method="gradcam"):
    """Closed form: dy^c/dA = W[:, c] reshaped, independent of the input."""
    mix, bias, dense_w, dense_b = (np.asarray(p, np.float64) for p in params)
    a = x.astype(np.float64) @ mix + bias  # (N, h, w, K)
    logits = a.reshape(len(x), -1) @ dense_w + dense_b
    if classes is None:
        classes = logits.argmax(axis=1)
    maps = []
    for i, c in enumerate(classes):
        g = dense_w[:, c].reshape(a.shape[1:])
        weights = reference_weights(g, a[i], method)
        maps.append((a[i] * weights).sum(axis=-1))
    raw = np.stack(maps)
    return np.maximum(raw, 0), raw, np.asarray(classes)


def contract_model(seed=0, size=16, channels=5, classes=4, hidden=8):
    """The study's head on a small conv backbone: backbone -> MaxPool(2) -> Flatten -> Dense relu -> logits."""
    keras.utils.set_random_seed(seed)
    bi = keras.Input((size, size, 1))
    x = layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv1")(bi)
    x = layers.AveragePooling2D(2, name="pool1")(x)
    x = layers.Conv2D(channels, 3, padding="same", activation="tanh", name="conv2")(x)
    bb = keras.Model(bi, x, name=config.FEATURE_LAYER)
    inp = keras.Input((size, size, 1))
    x = layers.MaxPooling2D(2)(bb(inp))
    x = layers.Flatten()(x)
    x = layers.Dense(hidden, activation="relu", name="hidden")(x)
    logits = layers.Dense(classes, name=config.LOGITS_LAYER)(x)
    out = layers.Softmax(name=config.PROBABILITIES_LAYER)(logits)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed + 1)
    model.set_weights([rng.normal(0, 0.6, w.shape).astype("float32") for w in model.get_weights()])
    return model


def head_reference(a, hidden, logits_layer, pool=2, classes=None, method="gradcam"):
    """Numpy backward pass through MaxPool(pool) -> Flatten -> Dense relu -> Dense (independent of gradcam)."""
    a = np.asarray(a, np.float64)
    w1, b1 = (np.asarray(v, np.float64) for v in hidden.get_weights())
    w2, b2 = (np.asarray(v, np.float64) for v in logits_layer.get_weights())
    n, h, w, k = a.shape
    p = pool
    windows = a.reshape(n, h // p, p, w // p, p, k).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // p, w // p, k, p * p)
    pooled = windows.max(axis=-1)
    z1 = pooled.reshape(n, -1) @ w1 + b1
    logits = np.maximum(z1, 0) @ w2 + b2
    classes = logits.argmax(axis=1) if classes is None else np.asarray(classes)
    maps = []
    for i, c in enumerate(classes):
        d_pooled = (w1 @ (w2[:, c] * (z1[i] > 0))).reshape(h // p, w // p, k)
        onehot = np.eye(p * p)[windows[i].argmax(axis=-1)]  # route each window's gradient to its maximum
        g = (onehot * d_pooled[..., None]).reshape(h // p, w // p, k, p, p).transpose(0, 3, 1, 4, 2).reshape(h, w, k)
        weights = reference_weights(g, a[i], method)
        maps.append(np.maximum((a[i] * weights).sum(axis=-1), 0))
    return np.stack(maps), classes


def contract_reference(model, x, classes=None, method="gradcam"):
    """:func:`head_reference` on the feature map of :func:`contract_model` (its backbone takes the image directly)."""
    a = model.get_layer(config.FEATURE_LAYER).predict(x, verbose=0)
    return head_reference(a, model.get_layer("hidden"), model.get_layer(config.LOGITS_LAYER), 2, classes, method)


def lesion_model(size=32, stride=4):
    """A 'lesion detector': channel 0 = ReLU(x - 0.75) (only lesions are that bright), channel 1 = x (anatomy).

    The logit of class 0 is the mean of channel 0 (class 1 its negative), so only the lesion carries evidence.
    """
    bi = keras.Input((size, size, 1))
    conv = layers.Conv2D(2, 1, activation="relu", name="detect")
    x = layers.AveragePooling2D(stride, name="grid")(conv(bi))
    bb = keras.Model(bi, x, name=config.FEATURE_LAYER)
    inp = keras.Input((size, size, 1))
    x = layers.GlobalAveragePooling2D()(bb(inp))
    dense = layers.Dense(2, name=config.LOGITS_LAYER)
    out = layers.Softmax(name=config.PROBABILITIES_LAYER)(dense(x))
    model = keras.Model(inp, out)
    conv.set_weights([np.array([[[[1.0, 1.0]]]], "float32"), np.array([-0.75, 0.0], "float32")])
    dense.set_weights([np.array([[10.0, -10.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
    return model


def phantoms(n=6, size=32, seed=0):
    """Noisy 'anatomy' in [0, 0.6] with a bright 12x12 lesion on the 4-px grid; returns images and lesion masks."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.6, (n, size, size, 1)).astype("float32")
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        r, c = 4 * rng.integers(0, (size - 12) // 4 + 1, 2)
        masks[i, r:r + 12, c:c + 12] = True
        images[i, r:r + 12, c:c + 12, 0] = rng.uniform(0.9, 1.0, (12, 12))
    return images, masks


# ----------------------------------------------------------------------------------------------
# Grad-CAM numbers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_closed_form_linear_model(method):
    model, x, params = linear_case(seed=1, n=6)
    expected, raw, predicted = linear_reference(x, params, None, method)
    heat, classes = G.gradcam(model, x, method=method, return_classes=True)
    assert heat.dtype == np.float32 and heat.shape == (6, 6, 6)
    np.testing.assert_array_equal(classes, predicted)
    np.testing.assert_allclose(heat, expected, rtol=1e-4, atol=1e-5)
    if method == "gradcam":
        assert (raw < -1e-3).any() and (raw > 1e-3).any(), "the case must exercise the ReLU clip"
        assert (heat[raw < -1e-3] == 0).all()


def test_closed_form_given_classes_and_single_int():
    model, x, params = linear_case(seed=2, n=4)
    wanted = np.array([3, 0, 2, 1])
    np.testing.assert_allclose(G.gradcam(model, x, classes=wanted), linear_reference(x, params, wanted)[0],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(G.gradcam(model, x, classes=2), linear_reference(x, params, [2] * 4)[0],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_contract_head_matches_numpy_backprop(method):
    model = contract_model(seed=3)
    x = np.random.default_rng(3).uniform(0, 1, (5, 16, 16, 1)).astype("float32")
    expected, predicted = contract_reference(model, x, method=method)
    heat, classes = G.gradcam(model, x, method=method, return_classes=True)
    np.testing.assert_array_equal(classes, predicted)
    assert expected.max() > 0
    np.testing.assert_allclose(heat, expected, rtol=2e-4, atol=1e-6 * expected.max())


@pytest.mark.parametrize("backbone", [
    "small_vgg",
    pytest.param("small_densenet", marks=pytest.mark.skipif(
        BACKEND == "jax", reason="building small_densenet takes ~30 s on the JAX CPU backend; covered on TensorFlow")),
])
def test_study_classifier_matches_numpy_backprop(backbone):
    """The study's classifier (preprocessing, nested backbone with BatchNorm, the paper's head) at 64 px."""
    models = pytest.importorskip("helpers.models")
    model = models.build_classifier(backbone, image_size=64, weights=None, seed=9)
    rng = np.random.default_rng(9)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    feature_model, _ = models.split_classifier(model)  # adds a second call node to the backbone layer
    x = rng.uniform(0, 1, (4, 64, 64, 1)).astype("float32")
    a = feature_model.predict(x, verbose=0)
    pool = models.head_pool_size(a.shape[1])
    for method in ("gradcam", "gradcam++"):
        expected, predicted = head_reference(a, model.get_layer("head_dense"), model.get_layer(config.LOGITS_LAYER),
                                             pool, method=method)
        heat, classes = G.gradcam(model, x, method=method, return_classes=True)
        np.testing.assert_array_equal(classes, predicted)
        assert heat.shape == a.shape[:3] and expected.max() > 0
        np.testing.assert_allclose(heat, expected, rtol=1e-3, atol=1e-5 * expected.max())


def test_batched_equals_one_by_one_and_uint8():
    model = contract_model(seed=4)
    rng = np.random.default_rng(4)
    x8 = rng.integers(0, 256, (11, 16, 16, 1), dtype=np.uint8)
    batched = G.gradcam(model, x8, batch_size=7, progress=True)
    single = G.gradcam(model, x8, batch_size=1)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-7)
    loop = np.concatenate([G.gradcam(model, x8[i:i + 1]) for i in range(len(x8))])
    np.testing.assert_allclose(batched, loop, rtol=1e-5, atol=1e-7)
    as_float = G.gradcam(model, (x8 / 255.0).astype("float32")[..., 0], batch_size=32)  # (N, H, W) accepted
    np.testing.assert_allclose(batched, as_float, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(batched, contract_reference(model, x8.astype("float32") / 255)[0], rtol=2e-4,
                               atol=1e-6 * batched.max())


def test_lesion_detector_lands_on_lesion():
    model = lesion_model()
    images, masks = phantoms(n=6)
    heat = G.gradcam(model, images, classes=0)
    assert heat.shape == (6, 8, 8) and (heat.max(axis=(1, 2)) > 0).all()
    energy = G.mask_energy(heat, masks)  # at the image size: bilinear upsampling spills a little
    assert energy.shape == (6,)
    assert (energy > 0.8).all(), energy
    np.testing.assert_allclose(G.mask_energy(heat, masks, size=8), 1.0, atol=1e-6)  # on the grid: all inside
    # A map that ignores the lesion scores far lower: the anatomy channel spread everywhere.
    flat = G.mask_energy(np.ones_like(heat), masks)
    np.testing.assert_allclose(flat, masks.mean(axis=(1, 2)), rtol=1e-6)
    assert (energy > flat + 0.5).all()


def test_inner_layers():
    model = contract_model(seed=5)
    x = np.random.default_rng(5).uniform(0, 1, (3, 16, 16, 1)).astype("float32")
    default = G.gradcam(model, x)
    # The backbone's last layer is the backbone output: same maps under both spellings.
    np.testing.assert_allclose(G.gradcam(model, x, layer="conv2"), default, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(G.gradcam(model, x, layer="backbone/conv2"), default, rtol=1e-5, atol=1e-7)
    inner = G.gradcam(model, x, layer="pool1")
    assert inner.shape == (3, 8, 8) and inner.min() >= 0


@pytest.mark.skipif(BACKEND != "tensorflow", reason="layers with side branches are a TensorFlow-only path")
def test_layer_with_side_branch_tensorflow():
    """A layer whose output is concatenated with an earlier tensor: checked against a full-model tape."""
    import tensorflow as tf

    keras.utils.set_random_seed(6)
    bi = keras.Input((8, 8, 1))
    a = layers.Conv2D(3, 3, padding="same", activation="relu", name="a")(bi)
    b = layers.Conv2D(3, 3, padding="same", activation="relu", name="b")(a)
    bb = keras.Model(bi, layers.Concatenate()([a, b]), name=config.FEATURE_LAYER)
    inp = keras.Input((8, 8, 1))
    flatten, dense = layers.Flatten(), layers.Dense(3, name=config.LOGITS_LAYER)
    model = keras.Model(inp, layers.Softmax(name=config.PROBABILITIES_LAYER)(dense(flatten(bb(inp)))))
    x = np.random.default_rng(6).uniform(0, 1, (4, 8, 8, 1)).astype("float32")
    probe = keras.Model(bi, [a, bb.outputs[0]])
    positive = 0
    for c in range(3):
        heat = G.gradcam(model, x, layer="a", classes=c)
        with tf.GradientTape() as tape:
            fa, fb = probe(x)
            score = tf.reduce_sum(dense(flatten(fb))[:, c])
        g = tape.gradient(score, fa).numpy()
        expected = np.maximum((fa.numpy() * g.mean(axis=(1, 2))[:, None, None, :]).sum(-1), 0)
        np.testing.assert_allclose(heat, expected, rtol=1e-4, atol=1e-6)
        positive += int((expected > 0).sum())
    assert positive > 0


@pytest.mark.skipif(OTHER_BACKEND is None, reason="needs tensorflow or jax as the current backend")
def test_other_backend_gives_same_maps(tmp_path):
    model = contract_model(seed=7)
    x = np.random.default_rng(7).uniform(0, 1, (5, 16, 16, 1)).astype("float32")
    np.savez(tmp_path / "inputs.npz", x=x, *model.get_weights())
    script = f"""
import sys, numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_gradcam as T
from helpers import gradcam as G
data = np.load({str(tmp_path / "inputs.npz")!r})
model = T.contract_model(seed=7)
model.set_weights([data[f"arr_{{i}}"] for i in range(len(model.get_weights()))])
np.savez({str(tmp_path / "out.npz")!r}, cam=G.gradcam(model, data["x"], batch_size=2),
         pp=G.gradcam(model, data["x"], method="gradcam++"))
"""
    env = dict(os.environ, KERAS_BACKEND=OTHER_BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    other = np.load(tmp_path / "out.npz")
    here = G.gradcam(model, x)
    assert here.max() > 0
    # float32 convolutions differ slightly between backends; the weighted sum of channels cancels
    np.testing.assert_allclose(other["cam"], here, rtol=1e-3, atol=1e-4 * here.max())
    pp = G.gradcam(model, x, method="gradcam++")
    np.testing.assert_allclose(other["pp"], pp, rtol=1e-3, atol=1e-4 * pp.max())


def test_errors():
    model, x, _ = linear_case(seed=8, n=3)
    with pytest.raises(ValueError, match="'nope' not found.*backbone/mix"):
        G.gradcam(model, x, layer="nope")
    with pytest.raises(ValueError, match="images must have shape"):
        G.gradcam(model, x[..., :1])
    with pytest.raises(ValueError, match="images must have shape"):
        G.gradcam(model, x[0])
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 3\]"):
        G.gradcam(model, x, classes=[0, 4, 1])
    with pytest.raises(ValueError, match=r"classes must lie"):
        G.gradcam(model, x, classes=-1)
    with pytest.raises(ValueError, match="one per image"):
        G.gradcam(model, x, classes=[0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        G.gradcam(model, x * 3)
    with pytest.raises(ValueError, match="method"):
        G.gradcam(model, x, method="cam")
    with pytest.raises(ValueError, match="4-D feature map"):
        G.gradcam(model, x, layer=next(lay.name for lay in model.layers if isinstance(lay, layers.Flatten)))
    plain = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    with pytest.raises(ValueError, match="no layer named 'logits'"):
        G.gradcam(plain, np.zeros((1, 4), "float32"), layer="dense")


# ----------------------------------------------------------------------------------------------
# Display helpers and files
# ----------------------------------------------------------------------------------------------


def test_upsample_by_hand():
    np.testing.assert_allclose(G.upsample(np.array([[0.0, 1.0]]), (1, 4)), [[0, 0.25, 0.75, 1]], atol=1e-6)
    heat = np.array([[0.0, 1.0], [2.0, 3.0]])
    rows, cols = np.array([0, 0.5, 1.5, 2]), np.array([0, 0.25, 0.75, 1])
    up = G.upsample(np.stack([heat, 2 * heat]), 4)
    assert up.shape == (2, 4, 4)
    np.testing.assert_allclose(up[0], np.add.outer(rows, cols), atol=1e-6)
    np.testing.assert_allclose(up[1], 2 * np.add.outer(rows, cols), atol=1e-6)
    many = np.random.default_rng(0).uniform(size=(300, 3, 3)).astype("float32")  # several cv2 calls
    big = G.upsample(many, (6, 9))
    assert big.shape == (300, 6, 9)
    for i in (0, 127, 128, 299):
        np.testing.assert_allclose(big[i], G.upsample(many[i], (6, 9)), atol=1e-6)


def test_normalize_by_hand():
    out = G.normalize(np.array([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[-1.0, 0.5], [0.25, 0.0]]]))
    np.testing.assert_allclose(out[0], [[0, 0.5], [0.25, 1]])
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_allclose(out[2], [[0, 1], [0.5, 0]])
    np.testing.assert_allclose(G.normalize(np.array([[3.0, 6.0]])), [[0.5, 1.0]])


def test_overlay_by_hand():
    import matplotlib

    image = np.linspace(0, 1, 16, dtype="float32").reshape(4, 4)
    heat = np.array([[0.0, 1.0], [2.0, 4.0]])
    colours = matplotlib.colormaps["jet"](G.normalize(G.upsample(heat, 4)))[..., :3]
    grey = np.repeat(image[..., None], 3, -1)
    np.testing.assert_allclose(G.overlay(image, heat, alpha=0.0), grey, atol=1e-6)
    np.testing.assert_allclose(G.overlay(image[..., None], heat, alpha=1.0), colours, atol=1e-6)
    mixed = G.overlay((image * 255).round().astype(np.uint8), heat, alpha=0.25)
    np.testing.assert_allclose(mixed, 0.75 * np.round(grey * 255) / 255 + 0.25 * colours, atol=1e-6)
    assert mixed.shape == (4, 4, 3) and mixed.dtype == np.float32
    with pytest.raises(ValueError, match="alpha"):
        G.overlay(image, heat, alpha=1.5)


def test_mask_energy_by_hand():
    heat = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    quadrant = np.zeros((4, 4), bool)
    quadrant[:2, :2] = True
    energy = G.mask_energy(heat, quadrant)  # one mask for all, heatmaps upsampled to 4x4
    profile = np.array([1.0, 0.75, 0.25, 0.0])  # bilinear upsampling of [1, 0]
    assert energy[0] == pytest.approx(profile[:2].sum() ** 2 / profile.sum() ** 2)
    assert np.isnan(energy[1])
    assert energy[2] == pytest.approx(0.25)
    # Masks of another size (8x8, with a channel axis) are resampled to the requested size (nearest).
    big = np.repeat(np.repeat(quadrant, 2, 0), 2, 1)[None, ..., None].repeat(3, 0)
    np.testing.assert_allclose(G.mask_energy(heat, big, size=4), energy, equal_nan=True)
    same = G.mask_energy(heat, quadrant[::2, ::2][None].repeat(3, 0))  # at the heatmap grid: no upsampling
    np.testing.assert_allclose(same, [1.0, np.nan, 0.25], equal_nan=True)
    with pytest.raises(ValueError, match="masks must have shape"):
        G.mask_energy(heat, np.zeros((2, 4, 4)))


def test_mask_energy_summary_by_hand():
    summary = G.mask_energy_summary([0.2, 0.8, np.nan, 1.0], [0, 0, 1, 2], ("a", "b", "c"))
    assert summary["a"]["n"] == 2 and summary["a"]["mean"] == pytest.approx(0.5)
    assert summary["a"]["share_above_half"] == pytest.approx(0.5)
    assert summary["b"] == {"n": 1, "n_valid": 0, "mean": None, "median": None, "q25": None, "q75": None,
                            "share_above_half": None}
    assert summary["all"]["n_valid"] == 3 and summary["all"]["median"] == pytest.approx(0.8)
    json.dumps(summary)


def test_save_and_load_heatmaps(tmp_path):
    paths = config.study_paths("unit", work_dir=tmp_path, report_dir=tmp_path / "report")
    heat = np.random.default_rng(0).uniform(size=(3, 2, 2)).astype("float32")
    path = G.save_heatmaps(paths, "vgg16", heat, np.array([0, 3, 1]), "gradcam++")
    assert path == paths.processed / "heatmaps_vgg16.npz"
    back = G.load_heatmaps(paths, "vgg16")
    np.testing.assert_array_equal(back["heatmaps"], heat)
    np.testing.assert_array_equal(back["classes"], [0, 3, 1])
    assert back["method"] == "gradcam++"
    with pytest.raises(FileNotFoundError, match="heatmaps_densenet201.npz"):
        G.load_heatmaps(paths, "densenet201")
    with pytest.raises(ValueError, match="classes"):
        G.save_heatmaps(paths, "vgg16", heat, [0, 1], "gradcam")


def test_gallery_indices_and_plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    predicted = np.array([0, 1, 0, 1, 0, 2, 2, 0])
    picks = G.gallery_indices(labels, predicted, per_class=1, seed=0, num_classes=4)
    assert picks[0][0].tolist() in ([0], [2]) and picks[0][1].tolist() == [1]
    assert picks[2][1].size == 0 and picks[3][0].size == 0 and picks[3][1].tolist() == [7]
    again = G.gallery_indices(labels, predicted, per_class=1, seed=0, num_classes=4)
    assert all(np.array_equal(a, b) for c in picks for a, b in zip(picks[c], again[c]))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(8, 8, 8, 1)).astype("float32")
    heat = {"vgg16": rng.uniform(size=(8, 2, 2)), "densenet201": rng.uniform(size=(8, 4, 4))}
    fig = G.plot_gradcam_pair(images[0], {k: v[0] for k, v in heat.items()}, title="t", class_name="COVID")
    assert [ax.get_title() for ax in fig.axes[:3]] == ["test image (COVID)", "vgg16: Grad-CAM 2x2",
                                                       "densenet201: Grad-CAM 4x4"]
    fig2 = G.plot_overlays(images[0], {k: v[0] for k, v in heat.items()}, alphas=[0.2, 0.8],
                           title="test image #0, true class COVID")
    assert len(fig2.axes) == 5  # 2 models x 2 alphas + the colour bar
    colourbar = [ax for ax in fig2.axes if not ax.images]
    assert len(colourbar) == 1 and "normalized" in colourbar[0].get_ylabel()
    assert fig2._suptitle.get_text().startswith("Figure 7: Grad-CAM overlays of test image #0, true class COVID")
    fig3 = G.plot_gallery(images, heat, labels, {"vgg16": predicted, "densenet201": labels}, per_class=1)
    assert len(fig3.axes) == 2 * 4 * 2
    fig4 = G.plot_mask_energy({"vgg16": rng.uniform(size=8), "densenet201": np.full(8, np.nan)}, labels)
    assert fig4.axes[0].get_ylabel().startswith("share of heatmap mass")
    for f in (fig, fig2, fig3, fig4):
        plt.close(f)


def test_describe_example_and_figure_titles():
    names = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    assert G.describe_example(42, 0, {"vgg16": 0, "densenet201": 0}, names) == \
        "test image #42, true class COVID, predicted COVID by both models"
    assert G.describe_example(3, 2, {"vgg16": 0, "densenet201": 2}, names) == \
        "test image #3, true class Normal, predicted COVID by vgg16, Normal by densenet201"
    assert G.describe_example(3, 2, {"vgg16": 1}, names) == "test image #3, true class Normal, predicted Lung_Opacity by vgg16"
    assert G.figure_title("overlays", 7) == "Figure 7: overlays" and G.figure_title("gallery") == "gallery"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = G.plot_gradcam_pair(np.zeros((8, 8, 1)), {"vgg16": np.ones((2, 2))}, title="Grad-CAM of x")
    assert fig._suptitle.get_text() == "Figure 6: Grad-CAM of x"
    plt.close(fig)


def _gallery_case():
    """Hand-made labels and predictions: vgg16 errs on class 0 (two images) and class 3, densenet201 only on class 0."""
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    vgg = np.array([0, 1, 2, 0, 1, 1, 2, 2, 3, 0])
    dense = np.array([0, 0, 3, 0, 1, 1, 2, 2, 3, 3])
    return labels, {"vgg16": vgg, "densenet201": dense}


def test_gallery_columns_and_error_free_classes():
    names = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    labels, preds = _gallery_case()
    # Slow reference: count wrong images per (model, class) by a loop.
    wrong = {m: [sum(1 for y, p in zip(labels, pred) if y == c and p != c) for c in range(4)] for m, pred in preds.items()}
    assert wrong == {"vgg16": [2, 0, 0, 1], "densenet201": [1, 0, 0, 0]}
    for per_class, expected in ((1, (1, 1)), (2, (2, 2)), (3, (3, 2))):
        picks = {m: G.gallery_indices(labels, p, per_class, seed=0, num_classes=4) for m, p in preds.items()}
        assert G.gallery_columns(picks) == expected
    assert G.classes_without_errors(labels, preds, names) == {
        "vgg16": ["Lung_Opacity", "Normal"], "densenet201": ["Lung_Opacity", "Normal", "Viral Pneumonia"]}
    assert G.no_error_note(labels, preds, names) == (
        "No misclassified test images for Lung_Opacity, Normal (both models); Viral Pneumonia (densenet201).")
    perfect = {m: labels for m in preds}
    picks = {m: G.gallery_indices(labels, p, 2, seed=0, num_classes=4) for m, p in perfect.items()}
    assert G.gallery_columns(picks) == (2, 0)  # no wrong column at all
    assert G.no_error_note(labels, perfect, names) == "No misclassified test images: every prediction is correct for both models."
    assert G.no_error_note(labels, {"vgg16": (labels + 1) % 4}, names) == ""


def test_gallery_drops_empty_wrong_columns():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    labels, preds = _gallery_case()
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(10, 8, 8, 1)).astype("float32")
    heat = {m: rng.uniform(size=(10, 2, 2)) for m in preds}
    # 4 classes x 2 models rows; 2 correct + 2 wrong columns (vgg16 has two COVID errors).
    fig = G.plot_gallery(images, heat, labels, preds, class_names=names, per_class=2)
    assert len(fig.axes) == 8 * 4
    shown = sum(1 for ax in fig.axes if ax.images)
    correct = {m: [min(2, int(((labels == c) & (p == c)).sum())) for c in range(4)] for m, p in preds.items()}
    errors = {m: [min(2, int(((labels == c) & (p != c)).sum())) for c in range(4)] for m, p in preds.items()}
    assert shown == sum(map(sum, correct.values())) + sum(map(sum, errors.values()))
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert notes.count("no misclassified\nNormal image") == 2 and notes.count("no misclassified\nViral Pneumonia image") == 1
    assert "Lung_Opacity, Normal (both models)" in fig._suptitle.get_text()
    plt.close(fig)
    # Every prediction right: the wrong half disappears and the title says so.
    fig = G.plot_gallery(images, heat, labels, {m: labels for m in preds}, class_names=names, per_class=2)
    assert len(fig.axes) == 8 * 2 and all(ax.images for ax in fig.axes)
    assert "every prediction is correct" in fig._suptitle.get_text()
    plt.close(fig)


def test_mask_energy_ylim_and_layout():
    assert G.mask_energy_ylim({"a": [0.1, np.nan, 0.4], "uniform map": [0.05, 0.2]}) == pytest.approx((0.0, 0.45))
    assert G.mask_energy_ylim([0.0, 1.0]) == pytest.approx((-0.02, 1.02))
    assert G.mask_energy_ylim({"a": [np.nan]}) == (-0.02, 1.02)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.array([0, 0, 1, 1, 2, 2])
    lesion = {"vgg16": np.array([0.3, 0.5, 0.2, 0.1, np.nan, np.nan]),
              G.UNIFORM: np.array([0.04, 0.06, 0.05, 0.05, np.nan, np.nan])}
    lung = {"vgg16": np.array([0.3, 0.5, 0.2, 0.1, 0.4, 0.45]), G.UNIFORM: np.full(6, 0.35)}
    fig = G.plot_mask_energy({"lesion": lesion, "lung": lung}, labels, ("a", "b", "c"))
    top, bottom = fig.axes[:2]
    assert top.get_position().y0 > bottom.get_position().y1  # stacked in rows
    assert top.get_ylim() == pytest.approx((0.04 - 0.05, 0.5 + 0.05))
    assert bottom.get_ylim()[0] <= 0.1 and bottom.get_ylim()[1] >= 0.5
    texts = {t.get_text(): t.get_position()[0] for t in top.texts}
    assert texts == {"no lesion mask": 2}  # class "c" (index 2) has no lesion mask
    assert not bottom.texts
    plt.close(fig)


def test_mask_energies_report_and_frame():
    heat = {"vgg16": np.array([[[1.0, 0.0], [0.0, 0.0]]] * 3), "densenet201": np.ones((3, 2, 2))}
    lesion = np.zeros((3, 2, 2), np.uint8)
    lesion[0, 0, 0] = lesion[2, 0, 0] = 1  # image 1 has no lesion
    lung = np.zeros((3, 2, 2), np.uint8)
    lung[:, :, 1] = 1  # right column
    energies = G.mask_energies(heat, {"lesion": lesion, "lung": lung, "none": np.zeros_like(lung)})
    assert list(energies) == ["lesion", "lung"]  # a kind without any mask is left out
    # the chance level: a uniform map's energy is the mask's area share
    np.testing.assert_allclose(energies["lesion"].pop(G.UNIFORM), [0.25, np.nan, 0.25], equal_nan=True)
    np.testing.assert_allclose(energies["lung"].pop(G.UNIFORM), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(energies["lesion"]["vgg16"], [1.0, np.nan, 1.0], equal_nan=True)
    np.testing.assert_allclose(energies["lesion"]["densenet201"], [0.25, np.nan, 0.25], equal_nan=True)
    np.testing.assert_allclose(energies["lung"]["vgg16"], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(energies["lung"]["densenet201"], [0.5, 0.5, 0.5])
    report = G.mask_energy_report(energies, np.array([0, 0, 1]), ("a", "b"))
    assert report["vgg16"]["lesion"]["a"]["n"] == 2 and report["vgg16"]["lesion"]["a"]["n_valid"] == 1
    assert report["densenet201"]["lung"]["b"]["mean"] == pytest.approx(0.5)
    frame = G.mask_energy_frame(report)
    assert len(frame) == 2 * 2 * 3  # models x masks x (classes + all)
    row = frame[(frame.model == "densenet201") & (frame["mask"] == "lesion") & (frame["class"] == "a")].iloc[0]
    assert row["mean"] == pytest.approx(0.25) and row["n_valid"] == 1
    import matplotlib.pyplot as plt

    fig = G.plot_mask_energy(energies, np.array([0, 0, 1]), ("a", "b"))
    assert [ax.get_title() for ax in fig.axes] == ["Grad-CAM mass inside the lesion mask",
                                                   "Grad-CAM mass inside the lung mask"]
    plt.close(fig)


def test_pick_common_example():
    labels = np.array([0, 0, 1, 0, 2])
    preds = {"a": np.array([0, 1, 0, 0, 0]), "b": np.array([1, 0, 0, 0, 0])}
    assert G.pick_common_example(labels, preds, target=0) == (3, "correct")
    assert G.pick_common_example(labels, {"a": np.array([1, 1, 0, 1, 1])}, target=0) == (2, "predicted")
    idx, how = G.pick_common_example(labels, {"a": np.full(5, 2)}, target=1)
    assert (idx, how) == (2, "label")
    with pytest.raises(ValueError, match="class 3"):
        G.pick_common_example(labels, preds, target=3)
