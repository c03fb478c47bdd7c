"""Tests of helpers.explain.grad_cam (Grad-CAM, Grad-CAM++) against closed-form models, numpy references and the other backend."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from other_backend import OTHER_BACKEND, run_on_other_backend

from helpers.common import config
from helpers.explain import grad_cam as heatmaps
from helpers.explain import maps as heatmap_arrays
from helpers.metrics import energy as localization

BACKEND = keras.backend.backend()


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


def assert_clear_argmax(model, x, margin=1e-3):
    """The explained classes are argmaxes of float32 logits: tests compare them with a float64 reference exactly,
    which holds on any machine only if no image is near a tie (top two logits more than ``margin`` apart)."""
    logits_model = keras.Model(model.input, model.get_layer(config.LOGITS_LAYER).output)
    logits = np.sort(keras.ops.convert_to_numpy(logits_model(x, training=False)), axis=1)
    assert (logits[:, -1] - logits[:, -2]).min() > margin


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
        masks[i, r : r + 12, c : c + 12] = True
        images[i, r : r + 12, c : c + 12, 0] = rng.uniform(0.9, 1.0, (12, 12))
    return images, masks


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_closed_form_linear_model(method):
    model, x, params = linear_case(seed=1, n=6)
    expected, raw, predicted = linear_reference(x, params, None, method)
    heat, classes = heatmaps.gradcam(model, x, method=method, return_classes=True)
    assert heat.dtype == np.float32 and heat.shape == (6, 6, 6)
    assert_clear_argmax(model, x)
    np.testing.assert_array_equal(classes, predicted)
    np.testing.assert_allclose(heat, expected, rtol=1e-4, atol=1e-5)
    if method == "gradcam":
        assert (raw < -1e-3).any() and (raw > 1e-3).any(), "the case must exercise the ReLU clip"
        assert (heat[raw < -1e-3] == 0).all()


def test_closed_form_given_classes_and_single_int():
    model, x, params = linear_case(seed=2, n=4)
    wanted = np.array([3, 0, 2, 1])
    np.testing.assert_allclose(
        heatmaps.gradcam(model, x, classes=wanted), linear_reference(x, params, wanted)[0], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        heatmaps.gradcam(model, x, classes=2), linear_reference(x, params, [2] * 4)[0], rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_contract_head_matches_numpy_backprop(method):
    model = contract_model(seed=3)
    x = np.random.default_rng(3).uniform(0, 1, (5, 16, 16, 1)).astype("float32")
    expected, predicted = contract_reference(model, x, method=method)
    heat, classes = heatmaps.gradcam(model, x, method=method, return_classes=True)
    assert_clear_argmax(model, x)
    np.testing.assert_array_equal(classes, predicted)
    assert expected.max() > 0
    np.testing.assert_allclose(heat, expected, rtol=2e-4, atol=1e-6 * expected.max())


@pytest.mark.parametrize(
    "backbone",
    [
        "small_vgg",
        pytest.param(
            "small_densenet",
            marks=pytest.mark.skipif(
                BACKEND == "jax",
                reason="building small_densenet takes ~30 s on the JAX CPU backend; covered on TensorFlow",
            ),
        ),
    ],
)
def test_study_classifier_matches_numpy_backprop(backbone):
    """The study's classifier (preprocessing, nested backbone with BatchNorm, the paper's head) at 64 px."""
    models = pytest.importorskip("helpers.models.classifiers")
    model = models.build_classifier(backbone, image_size=64, weights=None, seed=9)
    rng = np.random.default_rng(9)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    feature_model, _ = models.split_classifier(model)  # adds a second call node to the backbone layer
    x = rng.uniform(0, 1, (4, 64, 64, 1)).astype("float32")
    a = feature_model.predict(x, verbose=0)
    pool = models.head_pool_size(a.shape[1])
    assert_clear_argmax(model, x)
    for method in ("gradcam", "gradcam++"):
        expected, predicted = head_reference(
            a, model.get_layer("head_dense"), model.get_layer(config.LOGITS_LAYER), pool, method=method
        )
        heat, classes = heatmaps.gradcam(model, x, method=method, return_classes=True)
        np.testing.assert_array_equal(classes, predicted)
        assert heat.shape == a.shape[:3] and expected.max() > 0
        np.testing.assert_allclose(heat, expected, rtol=1e-3, atol=1e-5 * expected.max())


def test_batched_equals_one_by_one_and_uint8():
    model = contract_model(seed=4)
    rng = np.random.default_rng(4)
    x8 = rng.integers(0, 256, (11, 16, 16, 1), dtype=np.uint8)
    batched = heatmaps.gradcam(model, x8, batch_size=7, progress=True)
    single = heatmaps.gradcam(model, x8, batch_size=1)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-7)
    loop = np.concatenate([heatmaps.gradcam(model, x8[i : i + 1]) for i in range(len(x8))])
    np.testing.assert_allclose(batched, loop, rtol=1e-5, atol=1e-7)
    as_float = heatmaps.gradcam(model, (x8 / 255.0).astype("float32")[..., 0], batch_size=32)  # (N, H, W) accepted
    np.testing.assert_allclose(batched, as_float, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        batched, contract_reference(model, x8.astype("float32") / 255)[0], rtol=2e-4, atol=1e-6 * batched.max()
    )


def test_lesion_detector_lands_on_lesion():
    model = lesion_model()
    images, masks = phantoms(n=6)
    heat = heatmaps.gradcam(model, images, classes=0)
    assert heat.shape == (6, 8, 8) and (heat.max(axis=(1, 2)) > 0).all()
    energy = localization.mask_energy(heat, masks)  # at the image size: bilinear upsampling spills a little
    assert energy.shape == (6,)
    assert (energy > 0.8).all(), energy
    np.testing.assert_allclose(localization.mask_energy(heat, masks, size=8), 1.0, atol=1e-6)  # on the grid: all inside
    # A map that ignores the lesion scores far lower: the anatomy channel spread everywhere.
    flat = localization.mask_energy(np.ones_like(heat), masks)
    np.testing.assert_allclose(flat, masks.mean(axis=(1, 2)), rtol=1e-6)
    assert (energy > flat + 0.5).all()


def test_inner_layers():
    model = contract_model(seed=5)
    x = np.random.default_rng(5).uniform(0, 1, (3, 16, 16, 1)).astype("float32")
    default = heatmaps.gradcam(model, x)
    # The backbone's last layer is the backbone output: same maps under both spellings.
    np.testing.assert_allclose(heatmaps.gradcam(model, x, layer="conv2"), default, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(heatmaps.gradcam(model, x, layer="backbone/conv2"), default, rtol=1e-5, atol=1e-7)
    inner = heatmaps.gradcam(model, x, layer="pool1")
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
        heat = heatmaps.gradcam(model, x, layer="a", classes=c)
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
    np.savez(tmp_path / "inputs.npz", *model.get_weights(), x=x)
    script = f"""
import sys, numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_heatmaps as T
from helpers.explain import grad_cam as heatmaps
data = np.load({str(tmp_path / "inputs.npz")!r})
model = T.contract_model(seed=7)
model.set_weights([data[f"arr_{{i}}"] for i in range(len(model.get_weights()))])
np.savez({str(tmp_path / "out.npz")!r}, cam=heatmaps.gradcam(model, data["x"], batch_size=2),
         pp=heatmaps.gradcam(model, data["x"], method="gradcam++"))
"""
    run_on_other_backend(script, timeout=120)
    other = np.load(tmp_path / "out.npz")
    here = heatmaps.gradcam(model, x)
    assert here.max() > 0
    # float32 convolutions differ slightly between backends; the weighted sum of channels cancels
    np.testing.assert_allclose(other["cam"], here, rtol=1e-3, atol=1e-4 * here.max())
    pp = heatmaps.gradcam(model, x, method="gradcam++")
    np.testing.assert_allclose(other["pp"], pp, rtol=1e-3, atol=1e-4 * pp.max())


def test_errors():
    model, x, _ = linear_case(seed=8, n=3)
    with pytest.raises(ValueError, match="'nope' not found.*backbone/mix"):
        heatmaps.gradcam(model, x, layer="nope")
    with pytest.raises(ValueError, match="images must have shape"):
        heatmaps.gradcam(model, x[..., :1])
    with pytest.raises(ValueError, match="images must have shape"):
        heatmaps.gradcam(model, x[0])
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 3\]"):
        heatmaps.gradcam(model, x, classes=[0, 4, 1])
    with pytest.raises(ValueError, match=r"classes must lie"):
        heatmaps.gradcam(model, x, classes=-1)
    with pytest.raises(ValueError, match="one per image"):
        heatmaps.gradcam(model, x, classes=[0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        heatmaps.gradcam(model, x * 3)
    with pytest.raises(ValueError, match="method"):
        heatmaps.gradcam(model, x, method="cam")
    with pytest.raises(ValueError, match="4-D feature map"):
        heatmaps.gradcam(model, x, layer=next(lay.name for lay in model.layers if isinstance(lay, layers.Flatten)))
    plain = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    with pytest.raises(ValueError, match="no layer named 'logits'"):
        heatmaps.gradcam(plain, np.zeros((1, 4), "float32"), layer="dense")


def test_upsample_by_hand():
    np.testing.assert_allclose(heatmap_arrays.upsample(np.array([[0.0, 1.0]]), (1, 4)), [[0, 0.25, 0.75, 1]], atol=1e-6)
    heat = np.array([[0.0, 1.0], [2.0, 3.0]])
    rows, cols = np.array([0, 0.5, 1.5, 2]), np.array([0, 0.25, 0.75, 1])
    up = heatmap_arrays.upsample(np.stack([heat, 2 * heat]), 4)
    assert up.shape == (2, 4, 4)
    np.testing.assert_allclose(up[0], np.add.outer(rows, cols), atol=1e-6)
    np.testing.assert_allclose(up[1], 2 * np.add.outer(rows, cols), atol=1e-6)
    many = np.random.default_rng(0).uniform(size=(300, 3, 3)).astype("float32")  # several cv2 calls
    big = heatmap_arrays.upsample(many, (6, 9))
    assert big.shape == (300, 6, 9)
    for i in (0, 127, 128, 299):
        np.testing.assert_allclose(big[i], heatmap_arrays.upsample(many[i], (6, 9)), atol=1e-6)


def test_normalize_by_hand():
    out = heatmap_arrays.normalize(
        np.array([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]], [[-1.0, 0.5], [0.25, 0.0]]])
    )
    np.testing.assert_allclose(out[0], [[0, 0.5], [0.25, 1]])
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_allclose(out[2], [[0, 1], [0.5, 0]])
    np.testing.assert_allclose(heatmap_arrays.normalize(np.array([[3.0, 6.0]])), [[0.5, 1.0]])


def test_overlay_by_hand():
    import matplotlib

    image = np.linspace(0, 1, 16, dtype="float32").reshape(4, 4)
    heat = np.array([[0.0, 1.0], [2.0, 4.0]])
    colours = matplotlib.colormaps["jet"](heatmap_arrays.normalize(heatmap_arrays.upsample(heat, 4)))[..., :3]
    grey = np.repeat(image[..., None], 3, -1)
    np.testing.assert_allclose(heatmap_arrays.overlay(image, heat, alpha=0.0), grey, atol=1e-6)
    np.testing.assert_allclose(heatmap_arrays.overlay(image[..., None], heat, alpha=1.0), colours, atol=1e-6)
    mixed = heatmap_arrays.overlay((image * 255).round().astype(np.uint8), heat, alpha=0.25)
    np.testing.assert_allclose(mixed, 0.75 * np.round(grey * 255) / 255 + 0.25 * colours, atol=1e-6)
    assert mixed.shape == (4, 4, 3) and mixed.dtype == np.float32
    with pytest.raises(ValueError, match="alpha"):
        heatmap_arrays.overlay(image, heat, alpha=1.5)
