"""Bad files are caught before any training: truncated images and masks in the scan, corrupt saved models, odd masks."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from test_training import tiny_model

from helpers.data import dataset
from helpers.data.layout import DatasetError
from helpers.models import classifiers as models
from helpers.models import training
from helpers.study import files as study
from helpers.study import integrity


@pytest.fixture
def copy_of(phantom_dataset, tmp_path):
    """A writable copy of the shared phantom dataset."""
    target = tmp_path / phantom_dataset.name
    shutil.copytree(phantom_dataset, target)
    return target


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("sub", ["images", "masks", "lesion_masks"])
def test_truncated_image_or_mask_is_found_by_the_scan(copy_of, sub):
    bad = sorted((copy_of / "Normal" / sub).glob("*.png"))[3]
    _truncate(bad)  # the PNG header (first 33 bytes) is intact: only a full decode sees it
    with pytest.raises(DatasetError, match=f"{bad}.*truncated or corrupt"):
        dataset.scan_dataset(copy_of)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        frame = dataset.scan_dataset(copy_of, skip_unreadable=True)
    assert frame.attrs["skipped"] == [str(bad)]
    if sub == "images":  # the image is left out; a bad mask leaves its image without that mask
        assert str(bad) not in set(frame["path"]) and len(frame) == 4 * 12 - 1
    else:
        column = "mask_path" if sub == "masks" else "lesion_mask_path"
        assert len(frame) == 48 and str(bad) not in set(frame[column])
        assert (frame[column] == "").sum() == 1


def test_truncated_jpeg_is_found_by_the_scan(copy_of):
    image = sorted((copy_of / "COVID" / "images").glob("*.png"))[0]
    jpeg = image.with_suffix(".jpg")
    cv2.imwrite(str(jpeg), (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    image.unlink()
    _truncate(jpeg, 0.6)
    with pytest.raises(DatasetError, match=f"{jpeg}.*truncated"):
        dataset.scan_dataset(copy_of)


def test_masks_that_do_not_fit_their_image_are_named(copy_of):
    mask = sorted((copy_of / "Viral Pneumonia" / "masks").glob("*.png"))[0]
    cv2.imwrite(str(mask), np.full((40, 64), 255, np.uint8))  # 64 wide, 40 high: not square like its image
    with pytest.warns(UserWarning, match=f"1 mask.*aspect ratio.*{mask.name}"):
        frame = dataset.scan_dataset(copy_of)
    row = frame[frame["mask_path"] == str(mask)]
    with pytest.warns(UserWarning, match=f"not square.*{mask.name}"):
        masks = dataset.load_masks(row, 32, kind="lung")
    assert masks.shape == (1, 32, 32)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_data):
    """A tiny model saved by study.save_training (its bytes are copied per test)."""
    work = tmp_path_factory.mktemp("saved")
    paths = study.study_paths("unit", work_dir=work)
    result = training.train_classifier(tiny_model(), *tiny_data, epochs=1, batch_size=12, progress=False)
    study.save_training(result, paths, "vgg16", weights=None, image_size=tiny_data[0].shape[1])
    return paths


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_model_is_named_with_the_notebook_to_rerun(saved_model, tmp_path, damage):
    shutil.copytree(saved_model.root / "data", tmp_path / "data")
    paths = study.study_paths("unit", work_dir=tmp_path)
    files = study.training_files(paths, "vgg16")
    info = study.load_json(files["info"])
    assert info["sha256"]["model"] == study.lineage.file_digest(files["model"])
    assert study.load_model(paths, "vgg16") is not None  # intact: loads
    data = bytearray(files["model"].read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    files["model"].write_bytes(bytes(data))
    for load in (lambda: study.load_model(paths, "vgg16"), lambda: study.load_training(paths, "vgg16")):
        with pytest.raises(integrity.ModelIntegrityError, match=f"{files['model']}.*SHA-256.*rerun 03_train_vgg16"):
            load()
    if damage == "truncate":  # even without the checksum, a truncated file is not reported as missing
        with pytest.raises(ValueError, match="truncated or corrupt"):
            models.load_classifier(files["model"])


def test_model_of_another_image_size_is_refused(saved_model):
    size = study.load_json(study.training_files(saved_model, "vgg16")["info"])["image_size"]
    with pytest.raises(study.LineageError, match=f"image_size={size}.*image_size={size + 1}"):
        study.load_model(saved_model, "vgg16", image_size=size + 1)
