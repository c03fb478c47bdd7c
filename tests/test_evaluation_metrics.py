"""Tests of helpers.metrics (ROAD, insertion/deletion, pointing game, similarity, randomisation) against references."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.sparse.linalg as spl
from keras import layers
from other_backend import OTHER_BACKEND, run_on_other_backend
from scipy import stats
from test_cam_methods import gap_model, images
from test_heatmaps import assert_clear_argmax
from test_perturbation import REGION, SIZE, make_toy, predict_one, reference_curves

from helpers.common import config
from helpers.metrics import imputation as imp
from helpers.metrics import insertion as idl
from helpers.metrics import perturbation as pt
from helpers.metrics import pointing, randomisation, road, similarity


def region_masks(heatmaps, counts, order="morf", seed=0, ids=None, size=SIZE, region=REGION):
    """(N, F, H, W) removed pixels by hand: the first ``counts[f]`` regions of the seeded region order."""
    grid = pt.region_grid(size, region)
    orders = pt.region_order(pt.region_scores(heatmaps, size, region), order, seed, ids)
    return np.stack([[np.isin(grid.region_map, o[:k]) for k in counts] for o in orders])


def spsolve_imputation(image, removed):
    """The linear imputation of one (H, W, C) image by a direct sparse solve per channel (float64)."""
    out = image.astype(np.float64).copy()
    for c in range(image.shape[-1]):
        matrix, b, rows, cols = imp.imputation_system(image[..., c], removed)
        out[rows, cols, c] = spl.spsolve(matrix.tocsc(), b)
    return out


# ----------------------------------------------------------------------------------------------------
# ROAD: the imputation
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, solver", [((16, 16), "cg"), ((20, 24), "multigrid")])
def test_road_imputation_equals_a_direct_sparse_solve(shape, solver):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, *shape, 2)).astype(np.float32)
    removed = rng.uniform(size=(3, *shape)) < 0.6
    removed[:, : shape[0] // 2, : shape[1] // 2] = True  # a large hole next to the border
    removed[2] = False
    removed[2, 3:9, 4:12] = True
    imputed, residual = imp.road_impute(x, removed, sigma=0.0, batch_size=2, tol=1e-6, solver=solver)
    error = max(float(np.abs(imputed[i] - spsolve_imputation(x[i], removed[i])).max()) for i in range(3))
    print(f"{solver} {shape}: max |device - spsolve| = {error:.2e}, relative residual {residual.max():.2e}")
    assert error < 1e-4, f"max |device - spsolve| = {error:.2e}"
    assert residual.max() < 1e-5, f"relative residual {residual.max():.2e}"
    np.testing.assert_array_equal(imputed[~removed], x[~removed])  # kept pixels pass through untouched


def test_the_sparse_system_is_rongs_weighted_mean():
    image = np.arange(20.0).reshape(4, 5) / 20
    removed = np.zeros((4, 5), bool)
    removed[0, 0] = removed[2, 2] = True  # a corner (3 neighbours) and an inner pixel, both with kept neighbours only
    matrix, b, rows, cols = imp.imputation_system(image, removed)
    assert matrix.shape == (2, 2) and np.allclose(matrix.toarray(), np.eye(2))
    corner = (image[0, 1] / 6 + image[1, 0] / 6 + image[1, 1] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    inner = (image[1:4, 1:4].sum() - image[2, 2] - image[[1, 1, 3, 3], [1, 3, 1, 3]].sum()) / 6 + image[
        [1, 1, 3, 3], [1, 3, 1, 3]
    ].sum() / 12
    np.testing.assert_allclose(b, [corner, inner], rtol=1e-12)


def test_road_noise_is_seeded_and_only_on_removed_pixels():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.3, 0.7, (2, 16, 16, 1)).astype(np.float32)
    removed = np.zeros((2, 16, 16), bool)
    removed[:, 4:12, 4:12] = True
    clean, _ = imp.road_impute(x, removed, sigma=0.0, tol=1e-6)
    noisy, _ = imp.road_impute(x, removed, sigma=0.01, seed=3, tol=1e-6)
    again, _ = imp.road_impute(x[1:], removed[1:], sigma=0.01, seed=3, image_ids=[1], tol=1e-6)
    noise = imp.road_noise((16, 16, 1), 3, [0, 1])
    np.testing.assert_allclose(noisy[removed], clean[removed] + noise[removed], atol=1e-5)
    np.testing.assert_array_equal(noisy[~removed], x[~removed])
    np.testing.assert_allclose(again[0], noisy[1], atol=1e-5)
    assert 0.008 < noise[removed].std() < 0.012


def test_removed_regions():
    np.testing.assert_array_equal(road.removed_regions(road.FRACTIONS, 81), [8, 16, 24, 32, 41, 49, 57, 65, 73])
    with pytest.raises(ValueError, match="removes them all"):
        road.removed_regions([0.9], 4)
    with pytest.raises(ValueError, match="fractions"):
        road.removed_regions([1.0], 81)


# ----------------------------------------------------------------------------------------------------
# ROAD: curves and scores
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_curves_equal_a_slow_per_image_loop(toy, order):
    x, heat, classes = toy["images"][:4], toy["heatmaps"][:4], toy["classes"][:4]
    fractions = (0.1, 0.5, 0.9)
    counts = road.removed_regions(fractions, pt.region_grid(SIZE, REGION).n_regions)
    curves, residual = road.road_curves(
        toy["model"], x, heat, classes, REGION, order, fractions, seed=2, batch_size=5, return_residual=True, tol=1e-6
    )
    masks = region_masks(heat, counts, order, seed=2)
    expected = np.empty_like(curves)
    for i in range(len(x)):
        for f in range(len(fractions)):
            one, _ = imp.road_impute(x[i : i + 1], masks[i, f][None], seed=2, image_ids=[i], tol=1e-6)
            expected[i, f] = predict_one(toy["model"], one[0])[classes[i]]
    assert residual.shape == curves.shape and residual.max() < 1e-5
    np.testing.assert_allclose(curves, expected, rtol=0, atol=1e-4)


def test_road_ranks_the_ideal_heatmap_above_its_inverse(toy):
    model, x, classes = toy["model"], toy["images"], toy["classes"]
    ideal = road.road_evaluation(model, x, toy["heatmaps"], classes, REGION, n_boot=500)
    inverse = road.road_evaluation(model, x, 1 - toy["heatmaps"], classes, REGION, n_boot=500)
    scores = ideal["scores"]
    by_hand = ((ideal["lerf"] - ideal["morf"]) / 2).mean(axis=1)
    np.testing.assert_allclose(scores["per_image_combined"], by_hand, rtol=1e-12)
    assert scores["combined"]["low"] <= scores["combined"]["mean"] <= scores["combined"]["high"]
    assert scores["combined"]["low"] > 0.2  # removing the patch first flips the class; keeping it does not
    assert inverse["scores"]["combined"]["high"] < 0
    assert ideal["residual"] < 2e-5
    assert ideal["morf"][:, -1].max() < 0.1 and ideal["lerf"][:, 0].min() > 0.9


# ----------------------------------------------------------------------------------------------------
# Insertion and deletion
# ----------------------------------------------------------------------------------------------------


def insertion_reference(model, x, g, orders, region, classes):
    """Slow insertion: start from g and restore the next region of the order from x, predict, repeat (the slow
    deletion loop of test_perturbation with the two images' roles swapped)."""
    return reference_curves(model, g, x, orders, region, classes)


def test_deletion_and_insertion_equal_slow_per_step_loops(toy):
    model, x, heat, classes = toy["model"], toy["images"][:3], toy["heatmaps"][:3], toy["classes"][:3]
    orders = pt.region_order(pt.region_scores(heat, SIZE, REGION), "morf", 1)
    deletion = idl.deletion_curves(model, x, heat, classes, REGION, seed=1, batch_size=9, progress=False)
    g = pt.perturbed_images(x, "gaussian", 0.1, seed=1)
    np.testing.assert_allclose(deletion, reference_curves(model, x, g, orders, REGION, classes), rtol=0, atol=1e-5)
    sigma = idl.insertion_blur_sigma(REGION)
    insertion = idl.insertion_curves(model, x, heat, classes, REGION, seed=1, batch_size=9, progress=False)
    blurred = pt.perturbed_images(x, "blur", blur_sigma=sigma)
    expected = insertion_reference(model, x, blurred, orders, REGION, classes)
    np.testing.assert_allclose(insertion, expected, rtol=0, atol=1e-5)
    steps = np.linspace(0, 1, expected.shape[1])
    np.testing.assert_allclose(idl.curve_auc(insertion), [np.trapezoid(c, steps) for c in expected], atol=1e-5)
    np.testing.assert_allclose(idl.curve_auc(deletion), [np.trapezoid(c, steps) for c in deletion], rtol=1e-12)
    same = pt.perturbation_curves(model, x, heat, classes, REGION, seed=1, batch_size=9, progress=False)
    np.testing.assert_allclose(same, deletion, rtol=0, atol=0)  # the default direction is the study's MoRF


def test_insertion_deletion_summary_ranks_the_ideal_heatmap(toy):
    model, x, classes = toy["model"], toy["images"], toy["classes"]
    # deletion to black (Petsiuk's), insertion from a blur that hides the 8 px patch
    options = dict(n_boot=500, progress=False, deletion_perturbation="mean", fill=0.0, blur_sigma=8.0)
    ideal = idl.insertion_deletion(model, x, toy["heatmaps"], classes, REGION, **options)
    inverse = idl.insertion_deletion(model, x, 1 - toy["heatmaps"], classes, REGION, **options)
    assert ideal["n_images"] == len(x) and ideal["deletion"].shape == (len(x), 65)
    assert ideal["insertion_auc"]["mean"] > inverse["insertion_auc"]["mean"] + 0.2
    assert ideal["deletion_auc"]["mean"] < inverse["deletion_auc"]["mean"] - 0.2
    assert ideal["difference"]["low"] > 0 > inverse["difference"]["high"]
    with pytest.raises(ValueError, match="direction"):
        pt.perturbation_curves(model, x, toy["heatmaps"], classes, REGION, direction="sideways")


# ----------------------------------------------------------------------------------------------------
# Pointing game
# ----------------------------------------------------------------------------------------------------


def test_pointing_game_by_hand():
    heat = np.zeros((5, 4, 4), np.float32)
    heat[0, 1, 1] = 1.0  # maximum at cell (1, 1): pixels 2..3 of an 8 px mask
    heat[1, 3, 3] = 1.0  # maximum in the far corner
    heat[2] = 1.0  # constant: every pixel is a maximum
    heat[4, 0, 0] = 1.0
    masks = np.zeros((5, 4, 4), bool)
    masks[:, :2, :2] = True  # the top-left quarter
    masks[4] = False  # nothing to hit
    hits = pointing.pointing_game(heat, masks)
    np.testing.assert_allclose(hits[:2], [1.0, 0.0])
    assert hits[2] == pytest.approx(0.25)  # tied maxima: the share inside
    assert np.isnan(hits[3]) and np.isnan(hits[4])  # all-zero map, empty mask
    upsampled = pointing.pointing_game(heat[:2], np.kron(masks[:2], np.ones((8, 8), bool)))  # 32 px masks
    np.testing.assert_allclose(upsampled, [1.0, 0.0])
    summary = pointing.pointing_game_summary(hits, masks, n_boot=200)
    assert summary["n"] == 3 and summary["n_nan"] == 2
    assert summary["mean"] == pytest.approx(1.25 / 3) and summary["chance"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------------------------------
# Similarity
# ----------------------------------------------------------------------------------------------------


def test_spearman_equals_scipy():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(4, 9, 9))
    b = a + rng.normal(0, 0.3, a.shape)
    b[1] = np.round(b[1], 1)  # ties
    a[3] = 0.5  # constant: undefined
    rho = similarity.spearman(a, b)
    for i in range(3):
        assert rho[i] == pytest.approx(stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic, rel=1e-10)
    assert np.isnan(rho[3])


def ssim_loop(a, b, data_range=1.0, sigma=1.5):
    """Wang et al. 2004 one window at a time: Gaussian-weighted means, variances and covariance."""
    radius = int(3.5 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(radius, a.shape[0] - radius):
        for j in range(radius, a.shape[1] - radius):
            pa, pb = (
                a[i - radius : i + radius + 1, j - radius : j + radius + 1],
                b[i - radius : i + radius + 1, j - radius : j + radius + 1],
            )
            ma, mb = (weights * pa).sum(), (weights * pb).sum()
            va, vb = (weights * (pa - ma) ** 2).sum(), (weights * (pb - mb) ** 2).sum()
            cov = (weights * (pa - ma) * (pb - mb)).sum()
            values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_equals_a_window_by_window_loop():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(3, 16, 14))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    b[2] = a[2]
    values = similarity.ssim(a, b)
    np.testing.assert_allclose(values, [ssim_loop(a[i], b[i]) for i in range(3)], rtol=1e-10)
    assert values[2] == pytest.approx(1.0) and values[0] < 0.9
    with pytest.raises(ValueError, match="window"):
        similarity.ssim(a[:, :8, :8], b[:, :8, :8])


# ----------------------------------------------------------------------------------------------------
# Model-parameter randomisation
# ----------------------------------------------------------------------------------------------------


def nested(model, path):
    """The layer at "outer/inner"."""
    outer, inner = path.split("/")
    return model.get_layer(outer).get_layer(inner)


def batchnorm_model(seed=0, size=16):
    """Backbone conv -> BN -> ReLU -> conv -> BN -> ReLU, head Flatten -> Dense -> logits (BN goes with its conv)."""
    keras.utils.set_random_seed(seed)
    bi = keras.Input((size, size, 1))
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="conv1")(bi)
    x = layers.ReLU()(layers.BatchNormalization(name="bn1")(x))
    x = layers.Conv2D(6, 3, strides=2, padding="same", name="conv2")(x)
    x = layers.ReLU()(layers.BatchNormalization(name="bn2")(x))
    backbone = keras.Model(bi, x, name=config.FEATURE_LAYER)
    inp = keras.Input((size, size, 1))
    h = layers.Dense(8, activation="relu", name="head_dense")(layers.Flatten()(backbone(inp)))
    logits = layers.Dense(3, name=config.LOGITS_LAYER)(h)
    return keras.Model(inp, layers.Softmax(name=config.PROBABILITIES_LAYER)(logits))


def test_randomisation_stages_cascade_from_the_logits_down():
    stages = randomisation.randomisation_stages(batchnorm_model(), backbone_layers=2)
    assert stages == [
        ("logits", ("logits",)),
        ("head_dense", ("head_dense",)),
        ("backbone/conv2", ("backbone/bn2", "backbone/conv2")),
        ("backbone/conv1", ("backbone/bn1", "backbone/conv1")),
    ]
    assert [s for s, _ in randomisation.randomisation_stages(gap_model(), backbone_layers=1)] == [
        "logits",
        "backbone/conv2",
    ]


def test_randomised_weights_differ_and_the_same_seed_draws_the_same():
    model = batchnorm_model(seed=1)
    trained = [np.array(w) for w in model.get_weights()]
    paths = ("backbone/bn2", "backbone/conv2")
    first, second, other = (randomisation.randomised_copy(model) for _ in range(3))
    changed = randomisation.randomise_layers(first, paths, seed=4, stage=2)
    randomisation.randomise_layers(second, paths, seed=4, stage=2)
    randomisation.randomise_layers(other, paths, seed=5, stage=2)
    assert set(changed.values()) == {1.0} and len(changed) == 6  # kernel, bias; gamma, beta, moving mean, variance
    for path in paths:
        for a, b, c, t in zip(*(nested(m, path).get_weights() for m in (first, second, other, model))):
            np.testing.assert_array_equal(a, b)  # same seed, same draws
            assert not np.any(a == t) and not np.allclose(a, c)
    variance = nested(first, "backbone/bn2").moving_variance
    assert np.all(keras.ops.convert_to_numpy(variance) >= 0)
    for a, b in zip(model.get_weights(), trained):  # the trained model is never touched
        np.testing.assert_array_equal(a, b)
    untouched = nested(first, "backbone/conv1").get_weights()
    np.testing.assert_array_equal(untouched[0], nested(model, "backbone/conv1").get_weights()[0])


def test_randomisation_keeps_the_edge_map_and_breaks_gradcam():
    model = gap_model(seed=3)
    x = images(12, seed=11)
    result = randomisation.randomisation_test(
        model, x, methods=("gradcam", "sobel"), seed=0, n_boot=300, keep=2, backbone_layers=2
    )
    assert result["stages"] == ["logits", "backbone/conv2", "backbone/conv1"]
    assert all(share == 1.0 for stage in result["changed"].values() for share in stage.values())
    edge = result["methods"]["sobel"]
    np.testing.assert_allclose(edge["spearman"], 1.0, atol=1e-12)
    np.testing.assert_allclose(edge["ssim"], 1.0, atol=1e-9)
    grad = result["methods"]["gradcam"]
    assert grad["maps"].shape == (4, 2, 8, 8) and grad["spearman"].shape == (3, 12)
    explained = grad["summary"][1]  # backbone/conv2, the explained layer's own weights random
    assert explained["stage"] == "backbone/conv2"
    assert explained["spearman"]["mean"] < 0.3 and explained["ssim"]["mean"] < 0.3
    assert explained["spearman"]["low"] <= explained["spearman"]["mean"] <= explained["spearman"]["high"]
    assert_clear_argmax(model, x)  # two forward paths agree on the class exactly only away from a tie
    np.testing.assert_array_equal(result["classes"], model.predict(x, verbose=0).argmax(axis=1))


# ----------------------------------------------------------------------------------------------------
# The other backend
# ----------------------------------------------------------------------------------------------------


@pytest.mark.skipif(OTHER_BACKEND is None, reason="needs tensorflow or jax as the current backend")
def test_road_and_insertion_agree_on_the_other_backend(tmp_path):
    toy = make_toy()
    x, heat, classes = toy["images"], toy["heatmaps"], toy["classes"]
    script = f"""
import sys, numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_perturbation import make_toy, REGION
from helpers.metrics import imputation as imp, insertion as idl, road
toy = make_toy()
removed = np.zeros((2, 24, 20), bool); removed[:, 3:15, 2:12] = True
x = np.random.default_rng(0).uniform(0, 1, (2, 24, 20, 1)).astype("float32")
out = dict(
    imputed=imp.road_impute(x, removed, solver="multigrid")[0],
    road=road.road_curves(toy["model"], toy["images"], toy["heatmaps"], toy["classes"], REGION, "lerf"),
    insertion=idl.insertion_curves(toy["model"], toy["images"], toy["heatmaps"], toy["classes"], REGION, progress=False),
)
np.savez({str(tmp_path / "out.npz")!r}, **out)
"""
    run_on_other_backend(script)
    other = np.load(tmp_path / "out.npz")
    removed = np.zeros((2, 24, 20), bool)
    removed[:, 3:15, 2:12] = True
    x_small = np.random.default_rng(0).uniform(0, 1, (2, 24, 20, 1)).astype("float32")
    np.testing.assert_allclose(other["imputed"], imp.road_impute(x_small, removed, solver="multigrid")[0], atol=1e-4)
    here = road.road_curves(toy["model"], x, heat, classes, REGION, "lerf")
    np.testing.assert_allclose(other["road"], here, atol=1e-4)
    insertion = idl.insertion_curves(toy["model"], x, heat, classes, REGION, progress=False)
    np.testing.assert_allclose(other["insertion"], insertion, atol=1e-5)
