"""The predicted lung masks of notebook 02 as files, and what load_split gives the classifiers with input_mask="lung"."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.data import dataset
from helpers.models.segmentation import DEFAULT_FILL, apply_input_mask
from helpers.study import files as study
from helpers.study import integrity, lung_files, split_files


@pytest.fixture
def split_paths(tmp_path, phantom_dataset):
    paths = study.study_paths("unit", work_dir=tmp_path)
    train, val, test = dataset.balance_and_split(dataset.scan_dataset(phantom_dataset), seed=0)
    split_files.write_manifest([train, val, test], paths.split_manifest, paths=paths)
    return paths, {"train": train, "val": val, "test": test}


def test_masks_round_trip_and_masked_split(split_paths):
    paths, frames = split_paths
    # the dataset's own lung masks stand in for predictions: the masked images keep the lungs, grey elsewhere
    truth = {split: dataset.load_masks(frame, 32, kind="lung") for split, frame in frames.items()}
    lung_files.save_lung_masks(paths, truth)
    np.testing.assert_array_equal(lung_files.load_lung_masks(paths, "val", 32, len(frames["val"])), truth["val"])
    plain, labels = study.load_split(paths, "test", 32, progress=False)
    masked, masked_labels = study.load_split(paths, "test", 32, progress=False, input_mask="lung", mask_margin=0)
    np.testing.assert_array_equal(labels, masked_labels)
    inside = truth["test"].astype(bool)
    np.testing.assert_array_equal(masked[..., 0][inside], plain[..., 0][inside])
    assert (masked[..., 0][~inside] == DEFAULT_FILL).all()
    np.testing.assert_array_equal(masked, apply_input_mask(plain, truth["test"], margin=0))
    # a margin keeps a ring around the lungs
    wide, _ = study.load_split(paths, "test", 32, progress=False, input_mask="lung", mask_margin=2)
    assert (wide != DEFAULT_FILL).sum() > (masked != DEFAULT_FILL).sum()
    with pytest.raises(ValueError, match="input_mask must be one of"):
        study.load_split(paths, "test", 32, input_mask="lungs")


def test_missing_or_mismatched_masks_name_the_file_and_notebook(split_paths):
    paths, frames = split_paths
    path = lung_files.lung_masks_path(paths)
    with pytest.raises(FileNotFoundError, match=f"{path} does not exist.*02_lung_segmentation"):
        study.load_split(paths, "test", 32, input_mask="lung")
    lung_files.save_lung_masks(paths, {s: dataset.load_masks(f, 16, kind="lung") for s, f in frames.items()})
    with pytest.raises(ValueError, match="masks of shape .*16, 16.*at 32x32: rerun 02_lung_segmentation"):
        study.load_split(paths, "test", 32, input_mask="lung")
    with pytest.raises(ValueError, match=r"missing for the split\(s\) \['val'\]"):
        lung_files.save_lung_masks(paths, {"train": np.zeros((1, 4, 4)), "test": np.zeros((1, 4, 4))})


def test_segmenter_round_trip_checks_its_sha256(tmp_path):
    import pandas as pd

    from helpers.models.segmentation import build_unet, predict_masks

    paths = study.study_paths("unit", work_dir=tmp_path)
    model = build_unet(16, base_filters=2, depth=2, seed=3)
    history = pd.DataFrame({"epoch": [1], "loss": [0.5], "val_dice": [0.9]})
    files = lung_files.save_segmenter(paths, model, history, {"best_epoch": 1})
    loaded, info = lung_files.load_segmenter(paths)
    assert info["best_epoch"] == 1 and info["sha256"]["model"] == lineage_digest(files["model"])
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    np.testing.assert_array_equal(predict_masks(loaded, images), predict_masks(model, images))
    files["model"].write_bytes(files["model"].read_bytes()[:-10])  # truncated
    with pytest.raises(integrity.ModelIntegrityError, match="lung_unet.keras does not match the SHA-256.*02_lung_seg"):
        lung_files.load_segmenter(paths)
    files["info"].unlink()
    with pytest.raises(FileNotFoundError, match="lung_unet_training.json does not exist: run 02_lung_segmentation"):
        lung_files.load_segmenter(paths)


def lineage_digest(path):
    from helpers.study import lineage

    return lineage.file_digest(path)


@pytest.mark.parametrize("mixed_precision", [False, "mixed_bfloat16"])
def test_segment_and_report_under_a_dtype_policy_restores_the_global_one(split_paths, mixed_precision):
    import keras

    from helpers.steps import segmentation as segmentation_report

    paths, parts = split_paths
    before = keras.config.dtype_policy().name
    run = segmentation_report.segment_and_report(
        profile="unit",
        work_dir=str(paths.root),
        report_dir="",
        seed=0,
        image_size=64,
        segmentation_size=16,
        unet_filters=2,
        unet_depth=1,
        unet_epochs=1,
        unet_batch_size=16,
        unet_learning_rate=0.003,
        n_bootstrap=20,
        mixed_precision=mixed_precision,
    )
    policy = "float32" if mixed_precision is False else mixed_precision
    assert keras.config.dtype_policy().name == before == "float32"
    saved = study.load_metrics_file(paths, "segmentation")["settings"]
    assert saved["dtype_policy"] == policy and f"dtype policy {policy}" in run.setup_text
    assert {layer.dtype_policy.name for layer in run.result.model.layers if layer.name.endswith("conv1")} == {policy}
    assert run.result.model.get_layer("mask").compute_dtype == "float32"  # probabilities stay float32
    masks = lung_files.load_lung_masks(paths, "test", 64, len(parts["test"]))
    assert masks.shape[1:] == (64, 64) and set(np.unique(masks)) <= {0, 1}
