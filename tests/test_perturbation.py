"""Tests of helpers.metrics.perturbation: region grid, orders, perturbations and batched curves against slow references."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from helpers.backend import compilation
from helpers.metrics import aopc as sc
from helpers.metrics import perturbation as pt

SIZE = 32


REGION = 4


PATCH = (slice(8, 16), slice(16, 24))


def patch_model(gain=12.0):
    """Class-0 probability = sigmoid(gain * (mean brightness of PATCH - 0.5)); its ideal heatmap is PATCH."""
    inputs = keras.Input((SIZE, SIZE, 1))
    flat = keras.layers.Flatten()(inputs)
    logits = keras.layers.Dense(2, name="logits")(flat)
    outputs = keras.layers.Softmax(name="probabilities")(logits)
    model = keras.Model(inputs, outputs)
    indicator = np.zeros((SIZE, SIZE), np.float32)
    indicator[PATCH] = 1.0
    kernel = np.zeros((SIZE * SIZE, 2), np.float32)
    kernel[:, 0] = gain * indicator.ravel() / indicator.sum()
    model.get_layer("logits").set_weights([kernel, np.array([-gain / 2, 0.0], np.float32)])
    return model


def conv_model(seed):
    """A small random CNN with 3 classes (a second, unrelated model)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.Conv2D(6, 3, strides=2, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    return keras.Model(inputs, outputs)


def make_toy():
    """Six noisy images with a bright patch, the patch model and the ideal (pixel-level) heatmaps."""
    rng = np.random.default_rng(1)
    images = rng.uniform(0.0, 0.3, (6, SIZE, SIZE, 1)).astype(np.float32)
    images[:, PATCH[0], PATCH[1], :] = 1.0
    ideal = np.zeros((6, SIZE, SIZE), np.float32)  # pixel-level ideal heatmap (upsampling path)
    ideal[:, PATCH[0], PATCH[1]] = 1.0
    return {"model": patch_model(), "images": images, "heatmaps": ideal, "classes": np.zeros(6, np.int64)}


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, SIZE, SIZE, 1), dtype=np.uint8)
    heatmaps = rng.permutation(5 * 64).reshape(5, 8, 8).astype(np.float32)  # grid-sized, distinct values
    classes = rng.integers(0, 3, 5)
    return {"images": images, "heatmaps": heatmaps, "classes": classes, "a": conv_model(3), "b": conv_model(4)}


def predict_one(model, image):
    """Probabilities of one (H, W, C) image."""
    return keras.ops.convert_to_numpy(model(image[None].astype(np.float32), training=False))[0]


def reference_curves(model, images, g, orders, region_size, classes):
    """Slow MoRF: perturb the next region of one image, predict that image, repeat (plain numpy)."""
    n, h, w, _ = images.shape
    rows, cols = np.arange(h)[:, None] // region_size, np.arange(w)[None, :] // region_size
    grid_w = -(-w // region_size)
    curves = np.zeros((n, orders.shape[1] + 1))
    for i in range(n):
        xk = images[i].copy()
        curves[i, 0] = predict_one(model, xk)[classes[i]]
        for k, region in enumerate(orders[i], start=1):
            inside = (rows == region // grid_w) & (cols == region % grid_w)
            xk[inside] = g[i][inside]
            curves[i, k] = predict_one(model, xk)[classes[i]]
    return curves


@pytest.mark.parametrize("image_size, region_size", [(299, 34), (32, 5), (96, 16), ((10, 13), (3, 4)), (7, 7)])
def test_region_grid_covers_every_pixel_once(image_size, region_size):
    grid = pt.region_grid(image_size, region_size)
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    rh, rw = (region_size, region_size) if isinstance(region_size, int) else region_size
    assert grid.region_map.shape == (h, w) and grid.region_map.dtype == np.int32
    assert grid.grid_shape == (-(-h // rh), -(-w // rw))
    covered = np.zeros((h, w), int)
    for r in range(grid.n_regions):
        ys, xs = np.nonzero(grid.region_map == r)
        gy, gx = divmod(r, grid.grid_shape[1])
        # every region is the raster-order rectangle [gy*rh, min(...)) x [gx*rw, min(...))
        assert ys.min() == gy * rh and ys.max() == min(h, (gy + 1) * rh) - 1
        assert xs.min() == gx * rw and xs.max() == min(w, (gx + 1) * rw) - 1
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        covered[ys, xs] += 1
    assert np.all(covered == 1)


def test_region_grid_paper_size():
    grid = pt.region_grid(299, 34)
    assert grid.grid_shape == (9, 9) and grid.n_regions == 81
    assert list(np.diff(grid.row_bounds)) == [34] * 8 + [27]
    assert grid.region_pixels[-1] == 27 * 27 and grid.region_pixels[0] == 34 * 34


def test_region_scores_grid_and_upsampled():
    rng = np.random.default_rng(0)
    heat = rng.random((3, 7, 7))
    # heatmap of grid shape: its own values in raster order
    assert np.array_equal(pt.region_scores(heat, 35, 5), heat.reshape(3, -1))
    # other shapes: region means of the bilinearly upsampled map (compared with cv2's resize)
    assert np.array_equal(pt.region_scores(heat, 32, 5), heat.reshape(3, -1))  # 7 x 7 grid, last regions 2 px
    scores = pt.region_scores(heat, 32, 6)  # 6 x 6 grid: upsampled path
    grid = pt.region_grid(32, 6)
    for i in range(3):
        up = cv2.resize(heat[i], (32, 32), interpolation=cv2.INTER_LINEAR)
        expected = [up[grid.region_map == r].mean() for r in range(grid.n_regions)]
        np.testing.assert_allclose(scores[i], expected, rtol=1e-6, atol=1e-9)


def _bilinear_reference(cell, size):
    """Bilinear upsampling of one (h, w) map to (size, size), half-pixel centres, edges clamped: a plain loop."""
    h, w = cell.shape
    out = np.zeros((size, size))
    for y in range(size):
        for x in range(size):
            sy = min(max((y + 0.5) * h / size - 0.5, 0.0), h - 1)
            sx = min(max((x + 0.5) * w / size - 0.5, 0.0), w - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            top = (1 - fx) * cell[y0, x0] + fx * cell[y0, x1]
            bottom = (1 - fx) * cell[y1, x0] + fx * cell[y1, x1]
            out[y, x] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize("image_size, region_size", [(12, 4), (10, 4)], ids=["divides", "last-regions-smaller"])
def test_region_scores_upsample_on_a_grid_sized_heatmap(image_size, region_size):
    grid = pt.region_grid(image_size, region_size)
    assert grid.grid_shape == (3, 3)
    heat = np.random.default_rng(1).random((2, 3, 3))
    # "grid" (the default) is unchanged: the heatmap's own cells
    assert np.array_equal(pt.region_scores(heat, image_size, region_size), heat.reshape(2, -1))
    assert np.array_equal(pt.region_scores(heat, image_size, region_size, mode="grid"), heat.reshape(2, -1))
    # "upsample": bilinear to the image, then the mean of each region (hand-computed reference)
    got = pt.region_scores(heat, image_size, region_size, mode="upsample")
    for i in range(2):
        up = _bilinear_reference(heat[i], image_size)
        expected = [up[grid.region_map == r].mean() for r in range(grid.n_regions)]
        np.testing.assert_allclose(got[i], expected, rtol=1e-12, atol=1e-12)
    # one hot cell: "grid" keeps it in its region only, "upsample" spreads some of it to the neighbouring regions
    spike = np.zeros((1, 3, 3))
    spike[0, 1, 1] = 1.0
    as_grid = pt.region_scores(spike, image_size, region_size).reshape(3, 3)
    as_upsampled = pt.region_scores(spike, image_size, region_size, mode="upsample").reshape(3, 3)
    assert as_grid[1, 1] == 1.0 and np.count_nonzero(as_grid) == 1
    assert as_upsampled[1, 1] < 1.0 and as_upsampled.argmax() == 4
    assert min(as_upsampled[0, 1], as_upsampled[1, 0], as_upsampled[0, 0]) > 0
    with pytest.raises(ValueError, match="mode must be one of"):
        pt.region_scores(heat, image_size, region_size, mode="nearest")


def test_curves_pass_region_scores_through(random_case):
    c = random_case
    x = c["images"].astype(np.float32) / 255.0
    g = np.broadcast_to(x.mean(axis=(1, 2, 3), keepdims=True), x.shape)
    upsampled = pt.region_scores(c["heatmaps"], SIZE, 4, mode="upsample")
    orders = np.argsort(-upsampled, axis=1, kind="stable")
    assert not np.array_equal(orders, np.argsort(-c["heatmaps"].reshape(5, -1), axis=1))  # the choice matters here
    expected = reference_curves(c["a"], x, g, orders, 4, c["classes"])
    got = pt.morf_curves(
        c["a"], c["images"], c["heatmaps"], c["classes"], 4, "mean", progress=False, region_scores="upsample"
    )
    np.testing.assert_allclose(got, expected, atol=2e-6)
    with pytest.raises(ValueError, match="region_scores must be one of"):
        pt.morf_curves(c["a"], c["images"], c["heatmaps"], c["classes"], 4, progress=False, region_scores="cells")


def test_orders_follow_scores():
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    assert pt.region_order(scores, "morf").tolist() == [[1, 2, 3, 0], [0, 1, 2, 3]]
    assert pt.region_order(scores, "lerf").tolist() == [[0, 3, 2, 1], [3, 2, 1, 0]]
    steps = pt.step_of_region(pt.region_order(scores, "morf"))
    assert steps.tolist() == [[4, 1, 2, 3], [1, 2, 3, 4]]


def test_ties_are_broken_by_a_seeded_random_order_not_raster():
    tied = np.zeros((200, 36))
    orders = pt.region_order(tied, "morf", seed=0)
    assert all(sorted(o) == list(range(36)) for o in orders)
    assert not any(np.array_equal(o, np.arange(36)) for o in orders)
    # the first region perturbed is spread over the grid, not the top-left corner
    assert len(set(orders[:, 0])) > 20 and np.mean(orders[:, 0] < 6) < 0.4
    assert np.array_equal(orders, pt.region_order(tied, "morf", seed=0))
    assert not np.array_equal(orders, pt.region_order(tied, "morf", seed=1))
    # partial ties: the two top regions come first, in a seeded order that varies across images
    partial = np.zeros((50, 9))
    partial[:, [2, 7]] = 1.0
    firsts = pt.region_order(partial, "morf", seed=3)[:, :2]
    assert all(set(f) == {2, 7} for f in firsts)
    assert 5 < np.sum(firsts[:, 0] == 2) < 45


def test_orders_do_not_depend_on_batching():
    scores = np.round(np.random.default_rng(5).random((10, 16)), 1)  # many ties
    for order in pt.ORDERS:
        full = pt.region_order(scores, order, seed=7)
        part = pt.region_order(scores[4:7], order, seed=7, image_ids=np.arange(4, 7))
        assert np.array_equal(full[4:7], part)
    rand = pt.region_order(scores, "random", seed=7)
    assert len({tuple(r) for r in rand}) == 10


def test_perturbed_images_are_common_random_numbers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, (6, 16, 16, 1)).astype(np.float32)
    g = pt.perturbed_images(x, "gaussian", 0.1, seed=4)
    assert np.array_equal(g, pt.perturbed_images(x, "gaussian", 0.1, seed=4))
    assert np.array_equal(g[2:5], pt.perturbed_images(x[2:5], "gaussian", 0.1, seed=4, image_ids=[2, 3, 4]))
    assert not np.array_equal(g, pt.perturbed_images(x, "gaussian", 0.1, seed=5))
    noise = g - x
    assert abs(noise.std() - 0.1) < 0.01 and abs(noise.mean()) < 0.01
    # noise of different images is independent; doubling sigma doubles the same noise field
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.2
    doubled = pt.perturbed_images(x, "gaussian", 0.2, seed=4)
    np.testing.assert_allclose(doubled, np.clip(x + 2 * noise, 0, 1), atol=1e-6)


@pytest.mark.parametrize("perturbation", pt.PERTURBATIONS)
def test_perturbed_images_are_the_same_bytes_on_any_number_of_threads(perturbation, monkeypatch):
    from helpers.common.parallel import WORKERS_ENV

    x = np.random.default_rng(3).uniform(0.0, 1.0, (20, 24, 24, 1)).astype(np.float32)
    monkeypatch.setattr(pt, "_THREADED_PIXELS", 0)  # threads even for these few pixels
    copies = {}
    for workers in ("1", "3"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        copies[workers] = pt.perturbed_images(x, perturbation, 0.3, seed=2, blur_sigma=2.0)
    assert copies["1"].tobytes() == copies["3"].tobytes()
    # each image is its own serial computation: the same as perturbing it alone
    for i in (0, 7, 19):
        alone = pt.perturbed_images(x[i : i + 1], perturbation, 0.3, seed=2, image_ids=[i], blur_sigma=2.0)
        assert alone.tobytes() == copies["3"][i : i + 1].tobytes()


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_sigma_is_refused(sigma):
    with pytest.raises(ValueError, match="sigma must be a non-negative number"):
        pt.perturbed_images(np.zeros((1, 8, 8, 1), np.float32), "gaussian", sigma)


def test_other_perturbations():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (3, 16, 16, 1)).astype(np.float32)
    u = pt.perturbed_images(x, "uniform", seed=1)
    assert (
        0 <= u.min()
        and u.max() <= 1
        and abs(u.mean() - 0.5) < 0.05
        and abs(np.corrcoef(u.ravel(), x.ravel())[0, 1]) < 0.1
    )
    m = pt.perturbed_images(x, "mean")
    np.testing.assert_allclose(m[:, 0, 0, 0], x.mean(axis=(1, 2, 3)), rtol=1e-6)
    assert np.all(m == m[:, :1, :1, :])
    assert np.all(pt.perturbed_images(x, "mean", fill=0.25) == 0.25)
    b = pt.perturbed_images(x, "blur", blur_sigma=2.0)
    assert b.std() < 0.5 * x.std() and abs(b.mean() - x.mean()) < 0.02
    flat = np.full((1, 16, 16, 1), 0.4, np.float32)
    np.testing.assert_allclose(pt.perturbed_images(flat, "blur"), flat, atol=1e-6)
    # clipping to [0, 1]
    assert pt.perturbed_images(np.ones((1, 8, 8), np.float32), "gaussian", 0.5).max() <= 1.0


def test_curves_equal_slow_reference_mean_perturbation(random_case):
    c = random_case
    x = c["images"].astype(np.float32) / 255.0
    orders = np.argsort(-c["heatmaps"].reshape(5, -1), axis=1)  # distinct values: no ties
    g = np.broadcast_to(x.mean(axis=(1, 2, 3), keepdims=True), x.shape)
    expected = reference_curves(c["a"], x, g, orders, 4, c["classes"])
    for batch_size in (7, 65, 400):
        got = pt.morf_curves(
            c["a"], c["images"], c["heatmaps"], c["classes"], 4, "mean", batch_size=batch_size, progress=False
        )
        np.testing.assert_allclose(got, expected, atol=2e-6)
    # several device-resident groups (one image each) give the same numbers
    got = pt.morf_curves(
        c["a"],
        c["images"],
        c["heatmaps"],
        c["classes"],
        4,
        "mean",
        batch_size=65,
        device_budget_bytes=1,
        progress=False,
    )
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_curves_and_predictions_share_one_compiled_forward_per_batch_size(random_case):
    from helpers.backend import device

    c = random_case
    model = conv_model(5)
    probabilities = device.predict(model, c["images"], 41)
    curves = pt.morf_curves(model, c["images"], c["heatmaps"], c["classes"], 4, "mean", batch_size=41, progress=False)
    np.testing.assert_allclose(curves[:, 0], probabilities[np.arange(5), c["classes"]], atol=1e-6)
    # the model itself is compiled once (predictions and curves); the perturbed batches are built by a model-free function
    compiled = [key for key in compilation.model_cache(model) if isinstance(key, tuple) and key[0] == "forward"]
    assert compiled == [("forward", 41)]
    pt.morf_curves(model, c["images"], c["heatmaps"], c["classes"], 4, "mean", batch_size=82, progress=False)
    compiled = [key for key in compilation.model_cache(model) if isinstance(key, tuple) and key[0] == "forward"]
    assert compiled == [("forward", 41), ("forward", 82)]


def test_same_noise_across_models_and_batch_sizes(random_case):
    c = random_case
    x = c["images"].astype(np.float32) / 255.0
    g = pt.perturbed_images(c["images"], "gaussian", 0.1, seed=3)
    orders = np.argsort(-c["heatmaps"].reshape(5, -1), axis=1)
    for model in (c["a"], c["b"]):
        expected = reference_curves(model, x, g, orders, 4, c["classes"])
        for batch_size in (13, 128):
            got = pt.morf_curves(
                model,
                c["images"],
                c["heatmaps"],
                c["classes"],
                4,
                "gaussian",
                0.1,
                seed=3,
                batch_size=batch_size,
                progress=False,
            )
            np.testing.assert_allclose(got, expected, atol=2e-6)
    # a subset scored with its original ids reproduces the full run's rows (LeRF and random too)
    for order in ("lerf", "random"):
        full = pt.morf_curves(
            c["a"], c["images"], c["heatmaps"], c["classes"], 4, order=order, seed=3, batch_size=16, progress=False
        )
        part = pt.morf_curves(
            c["a"],
            c["images"][1:4],
            c["heatmaps"][1:4],
            c["classes"][1:4],
            4,
            order=order,
            seed=3,
            batch_size=50,
            image_ids=[1, 2, 3],
            progress=False,
        )
        np.testing.assert_allclose(part, full[1:4], atol=2e-6)


def test_step_zero_is_unperturbed_probability_and_last_step_is_g(random_case):
    c = random_case
    x = c["images"].astype(np.float32) / 255.0
    curves = pt.morf_curves(
        c["b"], c["images"], c["heatmaps"], c["classes"], 5, "uniform", seed=1, batch_size=32, progress=False
    )
    assert curves.shape == (5, pt.region_grid(SIZE, 5).n_regions + 1)  # 7 x 7 regions at 5 px, last ones 2 px
    probs = keras.ops.convert_to_numpy(c["b"](x))
    np.testing.assert_allclose(curves[:, 0], probs[np.arange(5), c["classes"]], atol=2e-6)
    g = pt.perturbed_images(c["images"], "uniform", seed=1)
    probs_g = keras.ops.convert_to_numpy(c["b"](g))
    np.testing.assert_allclose(curves[:, -1], probs_g[np.arange(5), c["classes"]], atol=2e-6)


def test_ideal_heatmap_ranks_morf_over_random_over_lerf(toy):
    t = toy
    result = {}
    for order in ("morf", "random", "lerf"):
        curves = pt.morf_curves(
            t["model"],
            t["images"],
            t["heatmaps"],
            t["classes"],
            REGION,
            "mean",
            order=order,
            batch_size=130,
            progress=False,
        )
        result[order] = sc.aopc(curves)["final"]
        if order == "morf":  # the four patch regions go first: the probability collapses by step 4
            assert curves[:, 0].min() > 0.95 and curves[:, 4].max() < 0.1
    assert result["morf"] > result["random"] + 0.1 > result["lerf"] + 0.2
    # a heatmap pointing away from the patch scores like LeRF
    wrong = 1.0 - t["heatmaps"]
    curves = pt.morf_curves(t["model"], t["images"], wrong, t["classes"], REGION, "mean", progress=False)
    assert sc.aopc(curves)["final"] < result["random"]


def test_bad_arguments_give_clear_errors(random_case):
    c = random_case
    args = (c["a"], c["images"], c["heatmaps"], c["classes"])
    with pytest.raises(ValueError, match="region_size"):
        pt.region_grid(32, 33)
    with pytest.raises(ValueError, match="region_size"):
        pt.morf_curves(*args, 40, progress=False)
    with pytest.raises(ValueError, match="region_size"):
        pt.region_grid(32, 0)
    with pytest.raises(ValueError, match="image_size"):
        pt.region_grid(-3, 2)
    with pytest.raises(ValueError, match="heatmaps"):
        pt.morf_curves(c["a"], c["images"], c["heatmaps"][:3], c["classes"], 4, progress=False)
    with pytest.raises(ValueError, match="classes"):
        pt.morf_curves(c["a"], c["images"], c["heatmaps"], c["classes"][:2], 4, progress=False)
    with pytest.raises(ValueError, match="classes"):
        pt.morf_curves(c["a"], c["images"], c["heatmaps"], c["classes"] + 3, 4, progress=False)
    with pytest.raises(ValueError, match="perturbation"):
        pt.morf_curves(*args, 4, perturbation="salt", progress=False)
    with pytest.raises(ValueError, match="order"):
        pt.morf_curves(*args, 4, order="best", progress=False)
    with pytest.raises(ValueError, match="heatmaps are required"):
        pt.morf_curves(c["a"], c["images"], None, c["classes"], 4, progress=False)
    with pytest.raises(ValueError, match="images"):
        pt.morf_curves(c["a"], c["images"].astype(np.float32), c["heatmaps"], c["classes"], 4, progress=False)
    with pytest.raises(ValueError, match="images have shape"):
        pt.morf_curves(c["a"], np.zeros((5, 16, 16, 1), np.uint8), c["heatmaps"], c["classes"], 4, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        pt.morf_curves(*args, 4, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="image_ids"):
        pt.morf_curves(*args, 4, image_ids=[0, 1], progress=False)
    with pytest.raises(ValueError, match="mask"):
        sc.aopc(np.ones((3, 4)), mask=np.zeros(3, bool))


def mean_fill(images, rngs):
    """A custom perturbation: every image replaced by its own mean (the built-in "mean", written as a callable)."""
    assert len(rngs) == len(images)
    return np.stack([np.full_like(image, image.mean()) for image in images])


def test_callable_perturbation_reproduces_the_built_in_mean(random_case):
    c = random_case
    np.testing.assert_array_equal(
        pt.perturbed_images(c["images"], mean_fill, seed=3), pt.perturbed_images(c["images"], "mean", seed=3)
    )
    args = (c["a"], c["images"], c["heatmaps"], c["classes"], 4)
    for order in ("morf", "random"):
        builtin = pt.perturbation_curves(*args, "mean", order=order, batch_size=33, progress=False)
        custom = pt.perturbation_curves(*args, mean_fill, order=order, batch_size=33, progress=False)
        np.testing.assert_array_equal(custom, builtin)
    assert pt.morf_curves is pt.perturbation_curves


def test_callable_perturbation_gets_per_image_generators_and_is_checked(random_case):
    c = random_case

    def noise(images, rngs):
        return np.clip(images + np.stack([0.1 * r.standard_normal(images.shape[1:]) for r in rngs]), 0, 1)

    # the same image id gets the same generator whatever the batch: subsets reproduce the full run
    full = pt.perturbed_images(c["images"], noise, seed=1)
    part = pt.perturbed_images(c["images"][[3, 1]], noise, seed=1, image_ids=[3, 1])
    np.testing.assert_array_equal(part, full[[3, 1]])
    with pytest.raises(ValueError, match="shape"):
        pt.perturbed_images(c["images"], lambda images, rngs: images[:, :4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pt.perturbed_images(c["images"], lambda images, rngs: images + 2.0)
    with pytest.raises(ValueError, match="perturbation must be one of"):
        pt.perturbed_images(c["images"], "salt")
