"""Tests of helpers.perturbation: region grid, orders, perturbed copies, batched MoRF curves, AOPC and intervals."""

import cv2
import keras
import numpy as np
import pytest

from helpers import perturbation as pt

SIZE = 32
REGION = 4  # 8 x 8 = 64 regions, L = 64
PATCH = (slice(8, 16), slice(16, 24))  # a 2 x 2 block of regions


# ----------------------------------------------------------------------------------------------------
# Toy models and an independent slow reference
# ----------------------------------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def toy():
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


# ----------------------------------------------------------------------------------------------------
# Region grid and scores
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Orders
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Perturbed copies
# ----------------------------------------------------------------------------------------------------


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


def test_other_perturbations():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (3, 16, 16, 1)).astype(np.float32)
    u = pt.perturbed_images(x, "uniform", seed=1)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.05 and abs(np.corrcoef(u.ravel(), x.ravel())[0, 1]) < 0.1
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


# ----------------------------------------------------------------------------------------------------
# Batched curves against the slow reference
# ----------------------------------------------------------------------------------------------------


def test_curves_equal_slow_reference_mean_perturbation(random_case):
    c = random_case
    x = c["images"].astype(np.float32) / 255.0
    orders = np.argsort(-c["heatmaps"].reshape(5, -1), axis=1)  # distinct values: no ties
    g = np.broadcast_to(x.mean(axis=(1, 2, 3), keepdims=True), x.shape)
    expected = reference_curves(c["a"], x, g, orders, 4, c["classes"])
    for batch_size in (7, 65, 400):
        got = pt.morf_curves(c["a"], c["images"], c["heatmaps"], c["classes"], 4, "mean", batch_size=batch_size, progress=False)
        np.testing.assert_allclose(got, expected, atol=2e-6)
    # several device-resident groups (one image each) give the same numbers
    got = pt.morf_curves(c["a"], c["images"], c["heatmaps"], c["classes"], 4, "mean", batch_size=65, device_budget_bytes=1, progress=False)
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_same_noise_across_models_and_batch_sizes(random_case):
    c = random_case
    x = c["images"].astype(np.float32) / 255.0
    g = pt.perturbed_images(c["images"], "gaussian", 0.1, seed=3)
    orders = np.argsort(-c["heatmaps"].reshape(5, -1), axis=1)
    for model in (c["a"], c["b"]):
        expected = reference_curves(model, x, g, orders, 4, c["classes"])
        for batch_size in (13, 128):
            got = pt.morf_curves(model, c["images"], c["heatmaps"], c["classes"], 4, "gaussian", 0.1, seed=3, batch_size=batch_size, progress=False)
            np.testing.assert_allclose(got, expected, atol=2e-6)
    # a subset scored with its original ids reproduces the full run's rows (LeRF and random too)
    for order in ("lerf", "random"):
        full = pt.morf_curves(c["a"], c["images"], c["heatmaps"], c["classes"], 4, order=order, seed=3, batch_size=16, progress=False)
        part = pt.morf_curves(c["a"], c["images"][1:4], c["heatmaps"][1:4], c["classes"][1:4], 4, order=order, seed=3, batch_size=50, image_ids=[1, 2, 3], progress=False)
        np.testing.assert_allclose(part, full[1:4], atol=2e-6)


def test_step_zero_is_unperturbed_probability_and_last_step_is_g(random_case):
    c = random_case
    x = c["images"].astype(np.float32) / 255.0
    curves = pt.morf_curves(c["b"], c["images"], c["heatmaps"], c["classes"], 5, "uniform", seed=1, batch_size=32, progress=False)
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
        curves = pt.morf_curves(t["model"], t["images"], t["heatmaps"], t["classes"], REGION, "mean", order=order, batch_size=130, progress=False)
        result[order] = pt.aopc(curves)["final"]
        if order == "morf":  # the four patch regions go first: the probability collapses by step 4
            assert curves[:, 0].min() > 0.95 and curves[:, 4].max() < 0.1
    assert result["morf"] > result["random"] + 0.1 > result["lerf"] + 0.2
    # a heatmap pointing away from the patch scores like LeRF
    wrong = 1.0 - t["heatmaps"]
    curves = pt.morf_curves(t["model"], t["images"], wrong, t["classes"], REGION, "mean", progress=False)
    assert pt.aopc(curves)["final"] < result["random"]


# ----------------------------------------------------------------------------------------------------
# AOPC and statistics
# ----------------------------------------------------------------------------------------------------


def test_aopc_hand_computed():
    curves = np.array([[1.0, 0.5, 0.25], [0.8, 0.8, 0.0]])
    result = pt.aopc(curves)
    # image 0: L=1 (0.5)/2, L=2 (0.5 + 0.75)/3; image 1: L=1 0/2, L=2 (0 + 0.8)/3
    np.testing.assert_allclose(result["per_image"], [[0, 0.25, 1.25 / 3], [0, 0, 0.8 / 3]])
    np.testing.assert_allclose(result["aopc"], [0, 0.125, (1.25 + 0.8) / 6])
    assert result["final"] == pytest.approx((1.25 + 0.8) / 6) and result["n_images"] == 2
    masked = pt.aopc(curves, mask=np.array([True, False]))
    np.testing.assert_allclose(masked["aopc"], [0, 0.25, 1.25 / 3])
    assert masked["indices"].tolist() == [0]


def test_masks_and_paired_difference():
    predicted, labels = np.array([0, 1, 2, 1]), np.array([0, 1, 1, 1])
    other = np.array([0, 2, 1, 1])
    a_ok, b_ok = pt.correct_mask(predicted, labels), pt.correct_mask(other, labels)
    assert a_ok.tolist() == [True, True, False, True]
    assert pt.common_mask(a_ok, b_ok).tolist() == [True, False, False, True]
    rng = np.random.default_rng(0)
    ca, cb = rng.random((4, 5)), rng.random((4, 5))
    both = pt.common_mask(a_ok, b_ok)
    diff = pt.paired_difference(ca, cb, both, n_boot=200)
    assert diff["final"] == pytest.approx(pt.aopc(ca, both)["final"] - pt.aopc(cb, both)["final"])
    assert diff["final_low"] <= diff["final"] <= diff["final_high"] and diff["n_images"] == 2


def test_bootstrap_interval():
    values = np.random.default_rng(3).normal(0.5, 0.2, 400)
    ci = pt.bootstrap_ci(values, n_boot=2000, seed=1)
    assert ci["low"] < ci["mean"] < ci["high"] and ci["mean"] == pytest.approx(values.mean())
    # width matches the normal-theory interval 2 * 1.96 * sd / sqrt(n) within 15 %
    expected = 2 * 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert abs((ci["high"] - ci["low"]) / expected - 1) < 0.15
    assert ci == pt.bootstrap_ci(values, n_boot=2000, seed=1)
    assert ci["low"] != pt.bootstrap_ci(values, n_boot=2000, seed=2)["low"]
    # a 2-D input gives per-column intervals, column 1 equal to the 1-D call on the same resamples
    two = pt.bootstrap_ci(np.stack([values * 2, values], axis=1), n_boot=2000, seed=1)
    assert two["low"][1] == pytest.approx(ci["low"]) and two["high"][0] == pytest.approx(2 * ci["high"])
    summary = pt.aopc_summary(np.random.default_rng(0).random((30, 6)), n_boot=300)
    assert np.all(summary["aopc_low"] <= summary["aopc"] + 1e-12) and np.all(summary["aopc"] <= summary["aopc_high"] + 1e-12)


def _report_case():
    """Random curves for two models with overlapping correct masks (6, 6 of 8; 4 in common)."""
    rng = np.random.default_rng(0)
    curves = {m: {o: rng.random((8, 5)) for o in ("morf", "random", "lerf")} for m in ("vgg16", "densenet201")}
    masks = {"vgg16": np.arange(8) < 6, "densenet201": np.arange(8) > 1}
    return curves, masks


def _final(curves, mask):
    """Independent AOPC after the last step: mean over the masked images of sum_k (f0 - fk) / (L+1)."""
    c = curves[mask]
    return float(np.mean((c[:, :1] - c).sum(axis=1) / c.shape[1]))


def _parse(cell):
    """'value [low, high]' -> (value, low, high)."""
    value, rest = cell.split(" [")
    low, high = rest.rstrip("]").split(", ")
    return float(value), float(low), float(high)


def test_report_and_summary(tmp_path):
    from helpers import config

    curves, masks = _report_case()
    report = pt.aopc_report(curves, masks, n_boot=100)
    assert report["paired"]["n_images"] == 4
    assert report["models"]["vgg16"]["selection"] == "correctly classified"
    # a model with no correctly classified image falls back to all images, and says so
    fallback = pt.aopc_report(curves, {"vgg16": np.zeros(8, bool), "densenet201": masks["densenet201"]}, n_boot=50)
    assert fallback["models"]["vgg16"]["morf"]["n_images"] == 8 and "paired" not in fallback
    assert fallback["models"]["vgg16"]["selection"].startswith("all images")
    assert report["models"]["vgg16"]["morf"]["n_images"] == 6
    rows = pt.summary_rows(report, {"vgg16": {"recall": 0.86, "f1": 0.85}, "densenet201": {"recall": 0.88, "f1": 0.88}})
    assert [r["model"] for r in rows] == ["vgg16", "densenet201"] and rows[0]["macro test recall"] == 0.86
    assert rows[1]["macro test F1"] == 0.88
    # MoRF - random and MoRF - LeRF equal differences of independently computed AOPC finals on the same images
    for row in rows:
        name, mask = row["model"], masks[row["model"]]
        morf = _final(curves[name]["morf"], mask)
        assert _parse(row["AOPC (MoRF) [95% CI]"])[0] == pytest.approx(morf, abs=6e-4)
        assert _parse(row["random-order AOPC [95% CI]"])[0] == pytest.approx(_final(curves[name]["random"], mask), abs=6e-4)
        value, low, high = _parse(row["MoRF − random [95% CI]"])
        assert value == pytest.approx(morf - _final(curves[name]["random"], mask), abs=6e-4) and low <= value <= high
        assert _parse(row["MoRF − LeRF [95% CI]"])[0] == pytest.approx(morf - _final(curves[name]["lerf"], mask), abs=6e-4)
        assert row["images"] == 6
    paths = config.study_paths("unit", work_dir=tmp_path, report_dir=tmp_path / "report")
    written = pt.write_summary(paths, rows, report)
    text = written["markdown"].read_text()
    assert text.startswith("# Study summary (unit profile)\n") and "Profile:" not in text
    assert "| model | macro test recall | macro test F1 |" in text and "MoRF − random [95% CI]" in text
    assert f"{report['models']['vgg16']['morf']['final']:.3f}" in text
    heat = report["paired"]["morf_minus_random_difference"]
    assert f"paired difference vgg16 − densenet201 = {heat['final']:.3f}" in text
    assert "The heatmaps are measured by MoRF − random" in text
    saved = config.load_json(written["json"])
    assert saved["rows"][1]["model"] == "densenet201"
    assert saved["aopc"]["vgg16"]["morf"]["final"] == pytest.approx(report["models"]["vgg16"]["morf"]["final"])
    assert saved["aopc"]["vgg16"]["morf_minus_lerf"]["final"] == pytest.approx(
        report["models"]["vgg16"]["morf_minus_lerf"]["final"])
    assert saved["paired_difference"]["n_images"] == 4
    assert saved["paired_morf_minus_random_difference"]["final"] == pytest.approx(heat["final"])


def test_paired_difference_of_morf_minus_random_between_models():
    curves, masks = _report_case()
    report = pt.aopc_report(curves, masks, n_boot=300)
    p = report["paired"]
    both = masks["vgg16"] & masks["densenet201"]
    expected = {}
    for name in ("vgg16", "densenet201"):
        expected[name] = _final(curves[name]["morf"], both) - _final(curves[name]["random"], both)
        assert p["orders"][name]["morf_minus_random"]["final"] == pytest.approx(expected[name])
        assert p["orders"][name]["random"]["n_images"] == 4
    d = p["morf_minus_random_difference"]
    assert d["final"] == pytest.approx(expected["vgg16"] - expected["densenet201"]) and d["n_images"] == 4
    assert d["final_low"] <= d["final"] <= d["final_high"]
    assert p["order_differences"]["random"]["final"] == pytest.approx(
        _final(curves["vgg16"]["random"], both) - _final(curves["densenet201"]["random"], both))
    # bootstrap over images: per-image contrasts resampled together, so the same interval as a 1-D bootstrap of them
    per_image = [(c["morf"][both] - c["random"][both]) for c in (curves["vgg16"], curves["densenet201"])]
    values = [((x[:, :1] - x).sum(axis=1) / x.shape[1]) for x in per_image]
    ci = pt.bootstrap_ci(values[0] - values[1], n_boot=300, seed=0)
    assert d["final_low"] == pytest.approx(ci["low"]) and d["final_high"] == pytest.approx(ci["high"])
    with pytest.raises(ValueError, match="one shape"):
        pt.paired_contrast_difference(np.ones((3, 4)), np.ones((3, 4)), np.ones((3, 5)), np.ones((3, 5)))


def test_aopc_and_ablation_tables():
    curves, masks = _report_case()
    report = pt.aopc_report(curves, masks, n_boot=100)
    rows = pt.aopc_table(report)
    assert [r["model"] for r in rows] == ["vgg16", "densenet201", "vgg16 − densenet201 (paired, both correct)"]
    assert _parse(rows[0]["LeRF AOPC [95% CI]"])[0] == pytest.approx(_final(curves["vgg16"]["lerf"], masks["vgg16"]), abs=6e-4)
    both = masks["vgg16"] & masks["densenet201"]
    paired = rows[2]
    assert paired["images"] == 4
    assert _parse(paired["AOPC (MoRF) [95% CI]"])[0] == pytest.approx(
        _final(curves["vgg16"]["morf"], both) - _final(curves["densenet201"]["morf"], both), abs=6e-4)
    heat = [_final(curves[m]["morf"], both) - _final(curves[m]["random"], both) for m in ("vgg16", "densenet201")]
    assert _parse(paired["MoRF − random [95% CI]"])[0] == pytest.approx(heat[0] - heat[1], abs=6e-4)
    ablation = [{"model": "m", "setting": "mean", "aopc_morf": 0.4, "aopc_random": 0.1, "morf_minus_random": 0.3,
                 "morf_minus_random_low": 0.2, "morf_minus_random_high": 0.35, "n_images": 7, "level": 0.9}]
    table = pt.ablation_table(ablation)
    assert table == [{"model": "m", "perturbation": "mean", "AOPC (MoRF)": 0.4, "random-order AOPC": 0.1,
                      "MoRF − random [90% CI]": "0.300 [0.200, 0.350]", "images": 7}]
    tiny = pt.ablation_table([{**ablation[0], "morf_minus_random": -1e-6, "morf_minus_random_low": -0.02}])
    assert tiny[0]["MoRF − random [90% CI]"] == "0.000 [-0.020, 0.350]"  # no "-0.000"


def _conclusion_report(morf_a, morf_b, rand_a, rand_b, n=40, steps=5, seed=0):
    """aopc_report of :func:`_conclusion_curves` with every image correct."""
    curves = _conclusion_curves(morf_a, morf_b, rand_a, rand_b, n, steps, seed)
    return pt.aopc_report(curves, {m: np.ones(n, bool) for m in curves}, n_boot=300)


def _conclusion_curves(morf_a, morf_b, rand_a, rand_b, n=40, steps=5, seed=0):
    """Two models whose per-image curves give AOPC finals near the given values (small per-image noise)."""
    rng = np.random.default_rng(seed)

    def curves_with(final):
        # f0 = 1, f_k = 1 - d for k >= 1 gives AOPC = L * d / (L + 1)
        d = final * steps / (steps - 1) + rng.normal(0, 0.01, n)
        c = np.ones((n, steps))
        c[:, 1:] -= d[:, None]
        return c

    curves = {"vgg16": {"morf": curves_with(morf_a), "random": curves_with(rand_a)},
              "densenet201": {"morf": curves_with(morf_b), "random": curves_with(rand_b)}}
    return curves


def test_conclusions_follow_the_numbers():
    low, high = {"recall": 0.86, "f1": 0.86}, {"recall": 0.88, "f1": 0.88}
    # densenet201: better recall, higher AOPC and larger MoRF - random -> the claim holds
    report = _conclusion_report(0.45, 0.49, 0.30, 0.30)
    c = pt.aopc_conclusions(report, {"vgg16": low, "densenet201": high})
    assert c["verdict"] == "holds" and c["better_generalizing"] == "densenet201" == c["better_aopc"]
    assert c["better_heatmaps"] == "densenet201"
    assert "The paper's claim holds on this run." in c["sentences"][0]
    # swap the models' accuracy: the verdict flips
    swapped = pt.aopc_conclusions(report, {"vgg16": high, "densenet201": low})
    assert swapped["verdict"] == "does not hold" and swapped["better_generalizing"] == "vgg16"
    assert "The paper's claim does not hold on this run." in swapped["sentences"][0]
    # swap the models' AOPC numbers instead: the verdict flips too
    mirrored = pt.aopc_conclusions(_conclusion_report(0.49, 0.45, 0.30, 0.30), {"vgg16": low, "densenet201": high})
    assert mirrored["verdict"] == "does not hold" and mirrored["better_aopc"] == "vgg16"
    # equal recall (the demo's phantoms): cannot be judged by accuracy
    tie = pt.aopc_conclusions(report, {"vgg16": {"recall": 1.0, "f1": 1.0}, "densenet201": {"recall": 1.0, "f1": 1.0}})
    assert tie["verdict"] == "cannot be judged" and tie["better_generalizing"] is None
    assert "cannot be judged by accuracy" in tie["sentences"][0]
    # higher AOPC only from noise sensitivity: raw AOPC says densenet201, MoRF - random says vgg16
    confounded_report = _conclusion_report(0.10, 0.60, 0.02, 0.55)
    confounded = pt.aopc_conclusions(confounded_report, {"vgg16": low, "densenet201": high})
    assert confounded["verdict"] == "holds" and confounded["better_heatmaps"] == "vgg16"
    text = " ".join(confounded["sentences"])
    assert "confounded" in text and "not the better-generalizing model's" in text
    for name in ("vgg16", "densenet201"):  # the random-order AOPCs are quoted
        final = _final(_conclusion_curves(0.10, 0.60, 0.02, 0.55)[name]["random"], np.ones(40, bool))
        assert f"{name} {final:.3f}" in text
    # a heatmap no better than random is called so
    flat = pt.aopc_conclusions(_conclusion_report(0.30, 0.40, 0.30, 0.30), {"vgg16": low, "densenet201": high})
    assert "vgg16 " in flat["sentences"][-1] and "(no better than a random order)" in flat["sentences"][-1]
    with pytest.raises(ValueError, match="classification"):
        pt.aopc_conclusions(report, {"vgg16": low})


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------


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
        pt.aopc(np.ones((3, 4)), mask=np.zeros(3, bool))


# ----------------------------------------------------------------------------------------------------
# Ablation, inputs of notebook 06, figures
# ----------------------------------------------------------------------------------------------------


def test_perturbation_ablation_on_the_toy_model(toy):
    t = toy
    settings = [("mean", 0.1), ("mean", 0.3), ("gaussian", 0.5), ("blur", 0.1)]
    rows = pt.perturbation_ablation(t["model"], t["images"], t["heatmaps"], t["classes"], REGION, settings,
                                    batch_size=130, n_boot=200, progress=False)
    assert [r["setting"] for r in rows] == ["mean", "gaussian σ=0.5", "blur σ=1 px"]  # sigma unused by mean: run once
    mean_row = rows[0]
    curves = pt.morf_curves(t["model"], t["images"], t["heatmaps"], t["classes"], REGION, "mean", progress=False)
    assert mean_row["aopc_morf"] == pytest.approx(pt.aopc(curves)["final"])
    assert mean_row["morf_minus_random_low"] > 0  # the ideal heatmap beats a random order
    assert mean_row["morf_minus_random"] == pytest.approx(mean_row["aopc_morf"] - mean_row["aopc_random"])


def test_ablation_reuses_precomputed_curves(toy, monkeypatch):
    t = toy
    settings = [("mean", 0.1), ("gaussian", 0.5)]
    args = (t["model"], t["images"], t["heatmaps"], t["classes"], REGION, settings)
    fresh = pt.perturbation_ablation(*args, batch_size=130, n_boot=200, progress=False)
    given = {o: pt.morf_curves(t["model"], t["images"], t["heatmaps"] if o == "morf" else None, t["classes"], REGION,
                               "gaussian", sigma=0.5, order=o, progress=False) for o in ("morf", "random")}
    scored = []
    real = pt.morf_curves
    monkeypatch.setattr(pt, "morf_curves", lambda *a, **k: scored.append(k["perturbation"]) or real(*a, **k))
    reused = pt.perturbation_ablation(*args, batch_size=130, n_boot=200, progress=False,
                                      precomputed={("gaussian", 0.5): given})
    assert scored == ["mean", "mean"]  # the Gaussian setting was not scored again
    assert reused == fresh
    with pytest.raises(ValueError, match="precomputed curves"):
        pt.perturbation_ablation(*args, progress=False, precomputed={("gaussian", 0.5): {"morf": given["morf"]}})


def test_sample_indices():
    mask = np.arange(20) % 3 == 0
    picked = pt.sample_indices(mask, 4, seed=1)
    assert len(picked) == 4 and np.all(mask[picked]) and np.all(np.diff(picked) > 0)
    assert np.array_equal(picked, pt.sample_indices(mask, 4, seed=1))
    assert np.array_equal(pt.sample_indices(mask, 0), np.flatnonzero(mask))


def test_load_model_outputs_checks_consistency(tmp_path):
    from helpers import config

    paths = config.study_paths("unit", work_dir=tmp_path, report_dir=tmp_path / "report")
    labels, predicted = np.array([0, 1, 2, 3]), np.array([0, 1, 1, 3])
    config.save_npz(paths.processed / "predictions_m.npz", probabilities=np.eye(4), labels=labels, predicted=predicted)
    config.save_npz(paths.processed / "heatmaps_m.npz", heatmaps=np.zeros((4, 3, 3)), classes=predicted,
                    method=np.array("gradcam++"))
    out = pt.load_model_outputs(paths, "m", n_images=4)
    assert out["correct"].tolist() == [True, True, False, True] and out["heatmaps"].shape == (4, 3, 3)
    assert out["method"] == "gradcam++"
    with pytest.raises(ValueError, match="predictions_m.npz"):
        pt.load_model_outputs(paths, "m", n_images=5)
    # an image explained for another class than predicted (a near-tie) is not counted as correct
    explained = np.array([0, 2, 1, 3])
    config.save_npz(paths.processed / "heatmaps_m.npz", heatmaps=np.zeros((4, 3, 3)), classes=explained,
                    method=np.array("gradcam"))
    with pytest.warns(UserWarning, match="1 test image"):
        out = pt.load_model_outputs(paths, "m")
    assert out["correct"].tolist() == [True, False, False, True]
    config.save_npz(paths.processed / "heatmaps_m.npz", heatmaps=np.zeros((3, 3, 3)), classes=predicted[:3],
                    method=np.array("gradcam"))
    with pytest.raises(ValueError, match="heatmaps_m.npz"):
        pt.load_model_outputs(paths, "m")
    with pytest.raises(FileNotFoundError, match="predictions_x.npz"):
        pt.load_model_outputs(paths, "x")


def test_figures_draw_the_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    curves = {"a": np.sort(rng.random((12, 6)), axis=1)[:, ::-1], "b": rng.random((12, 6))}
    summaries = {k: pt.aopc_summary(c, n_boot=100) for k, c in curves.items()}
    fig = pt.plot_aopc(summaries, baselines={"a": summaries["b"]})
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), summaries["a"]["aopc"])
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_ylabel() and fig.axes[0].get_legend() is not None
    fig2 = pt.plot_curves(curves, n_boot=100)
    np.testing.assert_allclose(fig2.axes[0].get_lines()[1].get_ydata(), curves["b"].mean(axis=0))
    rows = [{"model": m, "setting": s, "perturbation": s, "sigma": None, "morf_minus_random": v,
             "morf_minus_random_low": v - 0.1, "morf_minus_random_high": v + 0.1, "n_images": 48}
            for m, s, v in [("a", "mean", 0.2), ("a", "blur", 0.0), ("b", "mean", -0.05), ("b", "blur", -1e-5)]]
    fig3 = pt.plot_ablation(rows)
    ax3 = fig3.axes[0]
    assert [p.get_height() for p in ax3.patches] == pytest.approx([0.2, 0.0, -0.05, -1e-5])
    assert sorted(t.get_text() for t in ax3.texts) == sorted(["0.200", "0.000", "-0.050", "0.000"])  # 0 is labelled
    zero_marks = [line for line in ax3.get_lines() if np.allclose(line.get_ydata(), 0) and len(line.get_xdata()) == 2
                  and line.get_linewidth() == 3]
    assert len(zero_marks) == 2  # the two invisible bars are marked on the zero line
    assert "n = 48" in ax3.get_title()
    plt.close("all")
