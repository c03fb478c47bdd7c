"""Tests of helpers.explain (the registry of heatmap methods) against closed forms, slow loops, numpy and the other backend."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from other_backend import OTHER_BACKEND, run_on_other_backend
from scipy import ndimage
from test_heatmaps import assert_clear_argmax

from helpers import explain as E
from helpers.common import config
from helpers.explain import grad_cam as heatmaps
from helpers.explain import maps as heatmap_arrays
from helpers.explain.base import cell_bounds

SIZE = 16


def gap_model(seed=0, size=SIZE, channels=5, classes=3):
    """Backbone (two convolutions, one pooling) -> GlobalAveragePooling -> Dense logits: the closed-form case."""
    keras.utils.set_random_seed(seed)
    bi = keras.Input((size, size, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(bi)
    x = layers.AveragePooling2D(2, name="pool")(x)
    x = layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv2")(x)
    backbone = keras.Model(bi, x, name=config.FEATURE_LAYER)
    inp = keras.Input((size, size, 1))
    pooled = layers.GlobalAveragePooling2D()(backbone(inp))
    logits = layers.Dense(classes, name=config.LOGITS_LAYER)(pooled)
    model = keras.Model(inp, layers.Softmax(name=config.PROBABILITIES_LAYER)(logits))
    rng = np.random.default_rng(seed + 1)
    model.set_weights([rng.normal(0.05, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def positive_head_model(seed=0, size=SIZE, channels=6, classes=3):
    """Backbone -> Conv1x1(relu, non-negative kernel) -> Flatten -> Dense(non-negative kernel): dy/dA >= 0, varying in space."""
    keras.utils.set_random_seed(seed)
    bi = keras.Input((size, size, 1))
    x = layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu", name="conv1")(bi)
    backbone = keras.Model(bi, x, name=config.FEATURE_LAYER)
    inp = keras.Input((size, size, 1))
    h = layers.Conv2D(4, 1, activation="relu", name="mix")(backbone(inp))
    h = layers.Flatten()(h)
    logits = layers.Dense(classes, name=config.LOGITS_LAYER)(h)
    model = keras.Model(inp, layers.Softmax(name=config.PROBABILITIES_LAYER)(logits))
    rng = np.random.default_rng(seed + 2)
    weights = [rng.normal(0.0, 0.5, w.shape).astype("float32") for w in model.get_weights()]
    weights[2], weights[4] = np.abs(weights[2]), np.abs(weights[4])  # the head's kernels
    weights[3] = np.abs(weights[3])
    model.set_weights(weights)
    return model


def wide_model(seed=0, size=SIZE, channels=24, classes=3):
    """A 4x4 grid of 24 channels (more channels than locations: Eigen-CAM's Gram-matrix branch)."""
    keras.utils.set_random_seed(seed)
    bi = keras.Input((size, size, 1))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(bi)
    x = layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    backbone = keras.Model(bi, x, name=config.FEATURE_LAYER)
    inp = keras.Input((size, size, 1))
    h = layers.Flatten()(backbone(inp))
    logits = layers.Dense(classes, name=config.LOGITS_LAYER)(h)
    return keras.Model(inp, layers.Softmax(name=config.PROBABILITIES_LAYER)(logits))


def images(n=5, seed=0, size=SIZE):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 1)).astype("float32")


@pytest.fixture(scope="module")
def gap():
    return gap_model(seed=3)


def activations(model, x, layer=config.FEATURE_LAYER):
    return np.asarray(model.get_layer(layer).predict(x, verbose=0), np.float64)


def logits_model(model):
    return keras.Model(model.inputs[0], model.get_layer(config.LOGITS_LAYER).output)


def close_up_to_scale(a, b, rtol=1e-4):
    """Two stacks agree up to one positive factor per image (least squares), within rtol of the map's maximum."""
    for x, y in zip(a, b):
        if not y.any():  # an all-zero map (the ReLU clipped everything) has no scale: the other must be zero too
            assert np.abs(x).max() <= rtol * max(float(np.abs(a).max()), 1e-12)
            continue
        scale = float((x * y).sum() / (y * y).sum())
        assert scale > 0
        np.testing.assert_allclose(x, scale * y, rtol=0, atol=rtol * max(float(np.abs(x).max()), 1e-12))


# ----------------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------------


def test_registry_holds_every_method_and_names_them_on_error(gap):
    assert E.METHODS == tuple(E.BUILTIN) == (
        "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam", "sobel", "random",
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown heatmap method 'gradcam3'; known methods: .*eigencam.*scorecam"):
        E.heatmap("gradcam3", gap, images(2))
    for name in E.METHODS:
        function = E.get_method(name)
        assert function.__doc__.strip().splitlines()[0]
        assert "References" in function.__doc__


def test_a_method_of_your_own_is_one_function_and_one_registration(gap):
    from helpers.explain import registry

    @E.register("brightness")
    def brightness(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False):
        """The image itself on the feature grid (a test method)."""
        return np.asarray(images)[..., 0]

    try:
        assert "brightness" in E.method_names() and E.get_method("brightness") is brightness
        assert E.heatmap("brightness", gap, images(3)).shape == (3, SIZE, SIZE)
        with pytest.raises(ValueError, match="already registered"):
            E.register("gradcam")(brightness)
    finally:
        registry.REGISTRY.pop("brightness", None)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam", "sobel", "random"])  # fmt: skip
def test_every_method_returns_the_gradcam_stack(gap, method):
    x = images(5)
    maps, classes = E.heatmap(method, gap, x, batch_size=2, return_classes=True)
    reference = heatmaps.gradcam(gap, x)
    assert maps.dtype == np.float32 and maps.shape == reference.shape == (5, 8, 8)
    assert (maps >= 0).all() and np.isfinite(maps).all()
    expected = logits_model(gap).predict(x, verbose=0).argmax(axis=1)
    assert_clear_argmax(gap, x)  # two forward paths agree on the class exactly only away from a tie
    np.testing.assert_array_equal(classes, expected)
    inner = E.heatmap(method, gap, x, layer="backbone/conv1", batch_size=4)  # another layer: its own grid
    assert inner.shape == (5, SIZE, SIZE)


def test_method_heatmaps_runs_several_methods_with_their_options(gap):
    x = images(3)
    maps = E.method_heatmaps(["hirescam", "sobel"], gap, x, options={"sobel": {"grid": (4, 4)}})
    assert list(maps) == ["hirescam", "sobel"] and maps["hirescam"].shape == (3, 8, 8)
    assert maps["sobel"].shape == (3, 4, 4)
    with pytest.raises(ValueError, match="not run"):
        E.method_heatmaps(["hirescam"], gap, x, options={"sobel": {}})


def test_gradcam_entries_are_the_existing_functions(gap):
    x = images(4)
    np.testing.assert_allclose(E.heatmap("gradcam", gap, x), heatmaps.gradcam(gap, x), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(E.heatmap("gradcam++", gap, x), heatmaps.gradcam_plus_plus(gap, x), rtol=1e-6, atol=1e-9)


def test_batch_size_does_not_change_the_maps(gap):
    x = images(5, seed=4)
    for method in ("hirescam", "scorecam", "eigencam", "sobel"):
        one = E.heatmap(method, gap, x, batch_size=5)
        two = E.heatmap(method, gap, x, batch_size=2)
        np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-6 * max(float(one.max()), 1e-12))


# ----------------------------------------------------------------------------------------------------
# Closed forms and independent references
# ----------------------------------------------------------------------------------------------------


def test_gradcam_hirescam_xgradcam_coincide_before_global_average_pooling(gap):
    x = images(6, seed=1)
    a = activations(gap, x)
    w = np.asarray(gap.get_layer(config.LOGITS_LAYER).get_weights()[0], np.float64)
    classes = np.array([0, 1, 2, 0, 1, 2])
    # closed form: dy^c/dA = W[:, c] / (h w) at every location, so all three are ReLU(sum_k W_kc A_k) / (h w)
    closed = np.maximum(np.einsum("nhwk,kn->nhw", a, w[:, classes]), 0) / (a.shape[1] * a.shape[2])
    assert (closed.max(axis=(1, 2)) > 0).sum() >= 4 and (closed == 0).any(), "the case must exercise the ReLU"
    for method in ("gradcam", "hirescam", "xgradcam"):
        maps = E.heatmap(method, gap, x, classes=classes)
        close_up_to_scale(maps, closed, rtol=2e-4)
        np.testing.assert_allclose(maps, closed, rtol=1e-4, atol=1e-5 * closed.max())


def test_layercam_equals_hirescam_when_the_gradients_are_non_negative():
    model = positive_head_model(seed=5)
    x = images(5, seed=5)
    layer_cam = E.heatmap("layercam", model, x)
    hires = E.heatmap("hirescam", model, x)
    assert hires.max() > 0
    np.testing.assert_allclose(layer_cam, hires, rtol=1e-5, atol=1e-6 * hires.max())
    grad = E.heatmap("gradcam", model, x)  # the gradient varies over space here: Grad-CAM is another map
    assert np.abs(grad / grad.max() - hires / hires.max()).max() > 1e-2


def scorecam_loop(model, x, classes, top_n=None):
    """Score-CAM one (image, channel) at a time: cv2 upsampling, min-max, the masked image's logit, softmax."""
    a = activations(model, x)
    logits_of = logits_model(model)
    weights, maps, channels_out, scores_out = [], [], [], []
    for i in range(len(x)):
        k = a.shape[-1]
        channels = np.arange(k)
        if top_n is not None:
            variance = a[i].reshape(-1, k).var(axis=0)
            channels = np.argsort(-variance, kind="stable")[:top_n]
        scores = []
        for channel in channels:
            up = heatmap_arrays.upsample(a[i, :, :, channel].astype(np.float32), x.shape[1:3]).astype(np.float64)
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            masked = (x[i] * mask[..., None]).astype(np.float32)
            scores.append(float(logits_of(masked[None], training=False)[0, classes[i]]))
        scores = np.asarray(scores)
        w = np.exp(scores - scores.max())
        w /= w.sum()
        weights.append(w)
        channels_out.append(channels)
        scores_out.append(scores)
        maps.append(np.maximum((a[i][..., channels] * w).sum(axis=-1), 0))
    return np.stack(weights), np.stack(maps), np.stack(channels_out), np.stack(scores_out)


@pytest.mark.parametrize("top_n", [None, 3])
def test_scorecam_weights_equal_a_per_channel_loop(gap, top_n):
    x = images(4, seed=2)
    result = E.scorecam_weights(gap, x, batch_size=3, top_n=top_n)  # pairs straddle batches and images
    weights, maps, channels, scores = scorecam_loop(gap, x, result["classes"], top_n)
    np.testing.assert_array_equal(result["channels"], channels)
    np.testing.assert_allclose(result["scores"], scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["weights"], weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result["maps"], maps, rtol=1e-4, atol=1e-5 * maps.max())
    np.testing.assert_allclose(E.heatmap("scorecam", gap, x, top_n=top_n), result["maps"], rtol=1e-6, atol=1e-9)


def eigencam_numpy(a):
    """First principal component of the centred activations by numpy's SVD, signed by its correlation with their sum."""
    out = []
    for sample in a:
        h, w, k = sample.shape
        x = sample.reshape(-1, k)
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        total = x.sum(axis=1)
        if np.dot(projection, total - total.mean()) < 0:
            projection = -projection
        out.append(np.maximum(projection, 0).reshape(h, w))
    return np.stack(out)


@pytest.mark.parametrize("case", ["covariance", "gram"])
def test_eigencam_equals_numpy_svd(case):
    model = gap_model(seed=6) if case == "covariance" else wide_model(seed=6)  # 8x8 grid of 5, or 4x4 of 24
    x = images(5, seed=6)
    expected = eigencam_numpy(activations(model, x))
    maps = E.heatmap("eigencam", model, x)
    assert expected.max() > 0
    np.testing.assert_allclose(maps, expected, rtol=1e-3, atol=1e-4 * expected.max())


def test_sobel_is_scipys_edge_magnitude_pooled_and_model_independent(gap):
    x = images(3, seed=7)
    gray = x[..., 0].astype(np.float64)
    magnitude = [
        np.hypot(ndimage.sobel(g, axis=1, mode="mirror"), ndimage.sobel(g, axis=0, mode="mirror")) for g in gray
    ]
    rows, cols = cell_bounds(SIZE, 8), cell_bounds(SIZE, 8)
    expected = np.array(
        [
            [[m[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].mean() for j in range(8)] for i in range(8)]
            for m in magnitude
        ]
    )
    maps = E.heatmap("sobel", gap, x)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(E.heatmap("sobel", gap_model(seed=9), x), maps, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(E.sobel(None, x, grid=(8, 8)), maps, rtol=1e-6, atol=1e-7)
    assert list(cell_bounds(299, 9)) == [0, 34, 68, 102, 136, 170, 204, 238, 272, 299]  # the study's regions


def test_random_map_is_seeded_per_image(gap):
    x = images(4)
    a = E.heatmap("random", gap, x, seed=1)
    np.testing.assert_array_equal(a, E.heatmap("random", gap, x, seed=1))
    assert not np.allclose(a, E.heatmap("random", gap, x, seed=2))
    subset = E.random_map(gap, x[2:], seed=1, image_ids=[2, 3])
    np.testing.assert_array_equal(subset, a[2:])


def test_errors(gap):
    x = images(2)
    with pytest.raises(ValueError, match="images must have shape"):
        E.heatmap("hirescam", gap, images(2, size=12))
    with pytest.raises(ValueError, match="classes must lie in"):
        E.heatmap("scorecam", gap, x, classes=[0, 7])
    with pytest.raises(ValueError, match="not found"):
        E.heatmap("eigencam", gap, x, layer="nope")
    with pytest.raises(ValueError, match="floats in"):
        E.heatmap("layercam", gap, x * 2)
    with pytest.raises(ValueError, match="grid"):
        E.sobel(None, x)


# ----------------------------------------------------------------------------------------------------
# The other backend
# ----------------------------------------------------------------------------------------------------


@pytest.mark.skipif(OTHER_BACKEND is None, reason="needs tensorflow or jax as the current backend")
def test_every_method_gives_the_same_maps_on_the_other_backend(tmp_path):
    model = gap_model(seed=8)
    x = images(4, seed=8)
    np.savez(tmp_path / "inputs.npz", *model.get_weights(), x=x)
    script = f"""
import sys, numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_cam_methods as T
from helpers import explain as E
data = np.load({str(tmp_path / "inputs.npz")!r})
model = T.gap_model(seed=8)
model.set_weights([data[f"arr_{{i}}"] for i in range(len(model.get_weights()))])
maps = {{m: E.heatmap(m, model, data["x"], batch_size=3) for m in E.METHODS}}
maps["scorecam top 2"] = E.heatmap("scorecam", model, data["x"], top_n=2)
np.savez({str(tmp_path / "out.npz")!r}, **maps)
"""
    run_on_other_backend(script)
    other = np.load(tmp_path / "out.npz")
    for method in E.METHODS:
        here = E.heatmap(method, model, x)
        assert here.max() > 0, method
        # float32 convolutions and reductions differ in the last bits between backends
        np.testing.assert_allclose(other[method], here, rtol=1e-3, atol=1e-4 * here.max(), err_msg=method)
    here = E.heatmap("scorecam", model, x, top_n=2)
    np.testing.assert_allclose(other["scorecam top 2"], here, rtol=1e-3, atol=1e-4 * here.max())
