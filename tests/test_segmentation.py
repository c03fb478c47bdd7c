"""Tests of helpers.models.segmentation: Dice/IoU in closed form, the U-Net's shape and size, masking, training on phantoms."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from helpers.backend import device
from helpers.common.config import CLASS_NAMES
from helpers.data import dataset, layout
from helpers.models import segmentation

# --------------------------------------------------------------------------------------------------
# Dice and IoU
# --------------------------------------------------------------------------------------------------


def _rectangle(shape=(12, 12), top=2, left=3, height=4, width=6) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top : top + height, left : left + width] = 1
    return mask


def test_dice_and_iou_closed_form_cases():
    empty = np.zeros((12, 12), np.uint8)
    rect = _rectangle()
    shifted = np.roll(rect, 1, axis=1)  # one pixel to the right, still inside the image
    far = _rectangle(top=8, left=0, height=3, width=2)
    pred = np.stack([empty, rect, rect, rect, empty])
    true = np.stack([empty, rect, shifted, far, rect])
    # 4x6 rectangle shifted by one column: overlap 4x5 = 20 px, each 24 px, union 28 px.
    # two empty masks: undefined (NaN), not a perfect score
    np.testing.assert_allclose(segmentation.dice(pred, true), [np.nan, 1.0, 2 * 20 / 48, 0.0, 0.0])
    np.testing.assert_allclose(segmentation.iou(pred, true), [np.nan, 1.0, 20 / 28, 0.0, 0.0])
    # bool masks and a channel axis give the same; a single (H, W) mask is one image
    np.testing.assert_allclose(
        segmentation.dice(pred.astype(bool)[..., None], true[..., None]), segmentation.dice(pred, true)
    )
    assert segmentation.dice(rect, shifted).shape == (1,)


def test_dice_rejects_non_binary_and_mismatched_masks():
    rect = _rectangle()
    with pytest.raises(ValueError, match="binary"):
        segmentation.dice(rect * 255, rect)
    with pytest.raises(ValueError, match="same shape"):
        segmentation.iou(rect, rect[:10])
    # every dtype: 0/1 only (a negative integer, a 2, a fraction, NaN are refused; 0.0/1.0 and int64 pass)
    for bad in (rect.astype(np.int8) - 1, rect + 1, rect * 0.5, np.where(rect, np.nan, 0.0)):
        with pytest.raises(ValueError, match="binary"):
            segmentation.dice(bad, rect)
    with pytest.raises(ValueError, match="values from -1 to 0"):
        segmentation.dice(rect.astype(np.int8) - 1, rect)
    for good in (rect.astype(np.float32), rect.astype(np.int64), rect.astype(bool)):
        assert segmentation.dice(good, rect)[0] == 1.0


def test_soft_dice_loss_and_bce_dice_loss():
    true = np.stack([_rectangle(), np.zeros((12, 12), np.uint8)])[..., None].astype("float32")
    exact = float(keras.ops.convert_to_numpy(segmentation.soft_dice_loss(true, true)))
    assert exact == pytest.approx(0.0, abs=1e-7)  # a perfect mask, and an empty one predicted empty (s / s), lose 0
    half = np.full_like(true, 0.5)
    # image 1: inter 0.5*24 = 12, total 24 + 72 = 96 -> 1 - 25/97; image 2: 1 - 1/73
    expected = np.mean([1 - 25 / 97, 1 - 1 / 73])
    assert float(keras.ops.convert_to_numpy(segmentation.soft_dice_loss(true, half))) == pytest.approx(
        expected, rel=1e-5
    )
    total = float(keras.ops.convert_to_numpy(segmentation.bce_dice_loss(true, half)))
    assert total == pytest.approx(np.log(2.0) + expected, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# The U-Net
# --------------------------------------------------------------------------------------------------


def _unet_parameters(base: int, depth: int) -> int:
    """Parameters of the U-Net from the layer formulas: k*k*c_in*c_out + c_out per (transposed) convolution."""

    def conv(k, c_in, c_out):
        return k * k * c_in * c_out + c_out

    f = [base * 2**i for i in range(depth + 1)]
    total, c_in = 0, 1
    for i in range(depth):
        total += conv(3, c_in, f[i]) + conv(3, f[i], f[i])
        c_in = f[i]
    total += conv(3, f[depth - 1], f[depth]) + conv(3, f[depth], f[depth])
    for i in reversed(range(depth)):
        total += conv(2, f[i + 1], f[i])  # up-convolution
        total += conv(3, 2 * f[i], f[i]) + conv(3, f[i], f[i])  # after the skip concatenation
    return total + conv(1, f[0], 1)


@pytest.mark.parametrize("base, depth", [(4, 2), (8, 3)])
def test_unet_shape_and_parameter_count(base, depth):
    model = segmentation.build_unet(32, base_filters=base, depth=depth, seed=0)
    assert model.count_params() == _unet_parameters(base, depth)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 32, 32, 1)
    out = device.predict(model, np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8), 2)
    assert out.shape == (3, 32, 32, 1) and (out > 0).all() and (out < 1).all()


def test_unet_rejects_a_size_not_divisible_by_two_to_the_depth():
    with pytest.raises(ValueError, match=r"image_size=36 must be divisible by 2\*\*depth = 8"):
        segmentation.build_unet(36, depth=3)
    segmentation.build_unet(36, base_filters=2, depth=2)  # 36 = 4 * 9


def test_unet_same_seed_same_weights_and_save_load(tmp_path):
    a = segmentation.build_unet(16, base_filters=2, depth=2, seed=3)
    b = segmentation.build_unet(16, base_filters=2, depth=2, seed=3)
    c = segmentation.build_unet(16, base_filters=2, depth=2, seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    path = tmp_path / "unet.keras"
    a.save(path)
    loaded = segmentation.load_unet(path)
    x = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    np.testing.assert_array_equal(device.predict(a, x, 2), device.predict(loaded, x, 2))
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a complete .keras file"):
        segmentation.load_unet(path)


# --------------------------------------------------------------------------------------------------
# Resolution changes
# --------------------------------------------------------------------------------------------------


def _identity_model(size: int) -> keras.Model:
    inputs = keras.Input((size, size, 1))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def test_predict_masks_segments_at_a_lower_size_and_upsamples_by_nearest_neighbour(monkeypatch):
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 2, (5, 8, 8)).astype(np.uint8)
    images = (np.kron(coarse, np.ones((4, 4), np.uint8)) * 255)[..., None]  # 32 px, constant 4x4 blocks
    model = _identity_model(8)  # "probability" = the image in [0, 1]
    masks = segmentation.predict_masks(model, images, batch_size=2)
    assert masks.shape == (5, 32, 32) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks, images[..., 0] // 255)
    np.testing.assert_array_equal(segmentation.predict_masks(model, images, 2, output_size=8), coarse)
    np.testing.assert_array_equal(segmentation.predict_masks(model, images / 255.0, 2), masks)
    for chunk in (1, 2, 5):  # thresholded a chunk of whole batches at a time: 2, 2 or 4 images
        monkeypatch.setattr(segmentation, "_THRESHOLD_CHUNK", chunk)
        np.testing.assert_array_equal(segmentation.predict_masks(model, images, 2, output_size=8), coarse)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            segmentation.predict_masks(model, images, bad)


def test_resize_masks_down_by_majority_up_by_nearest():
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, :2, :2] = 1  # one full 2x2 block
    mask[0, 2, 2] = 1  # a quarter of another
    mask[0, :2, 2:] = [[1, 1], [1, 0]]  # three quarters
    np.testing.assert_array_equal(segmentation.resize_masks(mask, 2)[0], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(segmentation.resize_masks(mask[:, :2, :2], 4)[0], np.ones((4, 4)))
    assert segmentation.resize_images(np.zeros((2, 8, 8), np.uint8), 4).shape == (2, 4, 4, 1)


# --------------------------------------------------------------------------------------------------
# Masking the classifier's input
# --------------------------------------------------------------------------------------------------


def test_apply_input_mask_full_mask_is_a_no_op_and_outside_gets_the_fill():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    out = segmentation.apply_input_mask(images, np.ones((2, 16, 16), np.uint8), margin=3)
    assert out.dtype == np.uint8 and out.shape == images.shape and np.array_equal(out, images)
    assert out is not images
    mask = np.zeros((2, 16, 16), np.uint8)
    mask[:, 4:12, 4:12] = 1
    out = segmentation.apply_input_mask(images, mask, margin=0, fill=7)
    np.testing.assert_array_equal(out[:, 4:12, 4:12], images[:, 4:12, 4:12])
    outside = np.ones((16, 16), bool)
    outside[4:12, 4:12] = False
    assert (out[:, outside] == 7).all()
    assert (segmentation.apply_input_mask(images[..., 0], mask * 0)[...] == segmentation.DEFAULT_FILL).all()
    with pytest.raises(ValueError, match="uint8"):
        segmentation.apply_input_mask(images / 255.0, mask)
    with pytest.raises(ValueError, match="must match"):
        segmentation.apply_input_mask(images, mask[:, :8, :8])
    with pytest.raises(ValueError, match="fill"):
        segmentation.apply_input_mask(images, mask, fill=300)


@pytest.mark.parametrize("radius", [1, 3, 5])
def test_dilating_a_single_pixel_covers_the_disk_of_the_margin(radius):
    mask = np.zeros((1, 21, 21), np.uint8)
    mask[0, 10, 10] = 1
    yy, xx = np.mgrid[:21, :21]
    expected = ((yy - 10) ** 2 + (xx - 10) ** 2 <= radius**2).astype(np.uint8)
    np.testing.assert_array_equal(segmentation.dilate_masks(mask, radius)[0], expected)
    corner = np.zeros((1, 21, 21), np.uint8)
    corner[0, 0, 0] = 1  # at the border the disk is clipped, not wrapped or shifted
    np.testing.assert_array_equal(segmentation.dilate_masks(corner, radius)[0], (yy**2 + xx**2 <= radius**2))
    assert segmentation.dilate_masks(np.zeros((0, 5, 5), np.uint8), radius).shape == (0, 5, 5)
    images = np.full((1, 21, 21, 1), 200, np.uint8)
    out = segmentation.apply_input_mask(images, mask, margin=radius, fill=0)[0, :, :, 0]
    np.testing.assert_array_equal(out, expected * 200)


# --------------------------------------------------------------------------------------------------
# Training on phantoms
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_split(phantom_dataset):
    """The shared phantoms' images and lung masks at 32 px, split 80/10/10 (36 / 4 / 8 images)."""
    train, val, test = dataset.balance_and_split(dataset.scan_dataset(phantom_dataset), seed=0)
    out = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        part = dataset.masked_rows(part)
        out[name] = (
            dataset.load_images(part, 32, cache_dir=False, progress=False),
            dataset.load_masks(part, 32, "lung", required=True),
            part["label_index"].to_numpy(),
        )
    return out


def _train(data, seed=0, epochs=8):
    model = segmentation.build_unet(32, base_filters=8, depth=2, seed=seed)
    return segmentation.train_segmentation(
        model, *data["train"][:2], *data["val"][:2], epochs=epochs, batch_size=6, learning_rate=1e-2,
        seed=seed, progress=False,
    )  # fmt: skip


def test_training_on_phantoms_segments_the_lungs_and_is_deterministic(phantom_split):
    first = _train(phantom_split)
    history = first.history
    assert list(history["epoch"]) == list(range(1, 9))
    assert first.best_epoch == int(history["epoch"][history["val_dice"].idxmax()])
    assert first.best_val_dice == history["val_dice"].max() and history["loss"].iloc[-1] < history["loss"].iloc[0]
    images, masks, labels = phantom_split["test"]
    predicted = segmentation.predict_masks(first.model, images, batch_size=6)
    assert predicted.shape == masks.shape
    test_dice = segmentation.dice(predicted, masks)
    assert test_dice.mean() > 0.88, test_dice  # 36 training images, 8 epochs
    # the kept epoch's weights are the model's: its validation Dice is the recorded one
    val_images, val_masks, _ = phantom_split["val"]
    val = segmentation.predict_masks(first.model, val_images, batch_size=6)
    assert segmentation.dice(val, val_masks).mean() == pytest.approx(first.best_val_dice)
    # same seed, same weights; and the first epoch of a longer run is the same epoch
    short, again = _train(phantom_split, epochs=1), _train(phantom_split, epochs=1)
    assert all(np.array_equal(a, b) for a, b in zip(short.model.get_weights(), again.model.get_weights()))
    columns = ["loss", "val_dice", "val_iou"]
    assert short.history[columns].equals(history[columns].iloc[:1])
    np.testing.assert_array_equal(
        segmentation.predict_masks(short.model, images, 6), segmentation.predict_masks(again.model, images, 6)
    )
    info = first.info()
    assert info["best_epoch"] == first.best_epoch and info["settings"]["segmentation_size"] == 32


def test_train_segmentation_checks_its_inputs(phantom_split):
    x, m, _ = phantom_split["train"]
    model = segmentation.build_unet(16, base_filters=2, depth=1, seed=0)
    with pytest.raises(ValueError, match="differ in size"):
        segmentation.train_segmentation(model, x, m[:, :16, :16], x, m, epochs=1)
    with pytest.raises(ValueError, match="binary"):
        segmentation.train_segmentation(model, x, m * 255, x, m, epochs=1)
    with pytest.raises(ValueError, match="equal in number"):
        segmentation.train_segmentation(model, x, m[:3], x, m, epochs=1)


# --------------------------------------------------------------------------------------------------
# Summary and masks on disk
# --------------------------------------------------------------------------------------------------


def test_segmentation_summary_per_class_means_and_intervals():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    d = np.array([0.9, 0.8, 0.7, 1.0, 1.0, 1.0, 0.5, 0.6])
    summary = segmentation.segmentation_summary(d, d / 2, labels, n_boot=500, seed=1)
    covid = summary["classes"]["COVID"]
    assert covid["n"] == 3 and covid["dice"]["estimate"] == pytest.approx(0.8)
    assert 0.7 - 1e-12 <= covid["dice"]["low"] < 0.8 < covid["dice"]["high"] <= 0.9 + 1e-12
    assert covid["iou"]["estimate"] == pytest.approx(0.4)
    ones = summary["classes"][CLASS_NAMES[1]]["dice"]
    assert ones == {"estimate": 1.0, "low": 1.0, "high": 1.0}
    assert summary["classes"][CLASS_NAMES[3]] == {"n": 0, "dice": None, "iou": None}
    assert summary["all"]["dice"]["estimate"] == pytest.approx(d.mean()) and summary["all"]["n"] == 8
    assert summary == segmentation.segmentation_summary(d, d / 2, labels, n_boot=500, seed=1)
    with pytest.raises(ValueError, match="equal"):
        segmentation.segmentation_summary(d, d[:3], labels)


def test_missing_lung_masks_are_an_error_naming_the_image_or_a_counted_skip(phantom_dataset, tmp_path, capsys):
    frame = dataset.scan_dataset(phantom_dataset).iloc[:6].copy()
    frame.loc[frame.index[1], "mask_path"] = ""
    frame.loc[frame.index[3], "mask_path"] = str(tmp_path / "gone.png")
    named = [str(frame["path"].iloc[1]), str(frame["path"].iloc[3])]
    with pytest.raises(layout.DatasetError, match="2 image\\(s\\) have no lung mask") as err:
        dataset.masked_rows(frame)
    assert all(path in str(err.value) for path in named)
    with pytest.raises(layout.DatasetError, match=str(frame["path"].iloc[1])):
        dataset.load_masks(frame, 16, "lung", required=True)
    kept = dataset.masked_rows(frame, skip_missing=True)
    assert "note: left out 2 image" in capsys.readouterr().out  # a note for the reader, not a warning
    assert len(kept) == 4 and kept.attrs["skipped_masks"] == named
    assert dataset.load_masks(kept, 16, "lung", required=True).reshape(4, -1).max(axis=1).tolist() == [1] * 4
    # without required, rows with no mask path still give zeros (the lesion masks of Normal images)
    frame.loc[frame.index[3], "mask_path"] = ""
    assert dataset.load_masks(frame, 16, "lung")[[1, 3]].max() == 0
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    frame.loc[frame.index[0], "mask_path"] = str(tmp_path / "bad.png")
    with pytest.raises(layout.DatasetError, match="bad.png"):
        dataset.load_masks(frame, 16, "lung")


def test_an_epoch_gives_the_weights_of_a_train_on_batch_loop():
    """The epoch runner (``fit`` on JAX) takes exactly the steps of a per-batch loop over the same order."""
    import keras

    from helpers.common.checks import to_unit_range
    from helpers.models.segmentation import _train_epoch, bce_dice_loss, build_unet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
    masks = (rng.random((40, 16, 16)) > 0.5).astype(np.uint8)
    x, y = to_unit_range(images), masks[..., None].astype(np.float32)  # the whole set scaled at once
    order = rng.permutation(40)[:32]
    weights = []
    for source in ("uint8", "float32", "loop"):
        model = build_unet(16, base_filters=2, depth=2, seed=1)
        twin = keras.Model(model.inputs, model.outputs)
        twin.compile(optimizer=keras.optimizers.Adam(1e-2), loss=bce_dice_loss)
        if source == "loop":
            for k in range(0, 32, 8):
                twin.train_on_batch(x[order[k : k + 8]], y[order[k : k + 8]])
        else:  # batches gathered and scaled one at a time, from uint8 images or from floats in [0, 1]
            _train_epoch(twin, images if source == "uint8" else x, masks, order, 8)
        weights.append(model.get_weights())
    # exact: every source feeds the same float32 batches (uint8 / 255 is exact elementwise) through the one compiled
    # training step, so the steps are the same computation; any difference would mean other steps were taken
    for other in weights[1:]:
        for a, b in zip(weights[0], other):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="whole batches of 8"):
        _train_epoch(twin, images, masks, order[:30], 8)
