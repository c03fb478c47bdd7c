"""Tests of helpers.data.dataset: the Kaggle-layout scan, the balanced split, decoding, the image cache, masks."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers.common import config
from helpers.common.config import CLASS_NAMES, DATASET_DIRNAME
from helpers.data import dataset as ds
from helpers.data import layout
from helpers.data.layout import DatasetError

PAPER_SIZES = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}


def _paths_frame(sizes: dict[str, int]) -> pd.DataFrame:
    """A frame of made-up paths (no files) with the given number of rows per class."""
    rows = [
        {"path": f"/nowhere/{name}/images/{name}-{n}.png", "label": name}
        for name in CLASS_NAMES
        for n in range(1, sizes[name] + 1)
    ]
    return pd.DataFrame(rows)


def test_split_gives_the_paper_counts():
    train, val, test = ds.balance_and_split(_paths_frame(PAPER_SIZES), seed=0)
    assert (len(train), len(val), len(test)) == (4304, 536, 540)
    for part, expected in zip((train, val, test), (1076, 134, 135)):
        assert part.groupby("label").size().to_dict() == {name: expected for name in CLASS_NAMES}
    assert list(train.columns[:6]) == list(layout.MANIFEST_COLUMNS)
    assert set(train["split"]) == {"train"} and set(val["split"]) == {"val"} and set(test["split"]) == {"test"}
    assert (train["label_index"] == train["label"].map(CLASS_NAMES.index)).all()
    counts = ds.class_counts(train, val, test)
    assert counts.loc["Total"].tolist() == [4304, 536, 540, 5380]
    assert counts.loc["COVID"].tolist() == [1076, 134, 135, 1345]


def test_split_sizes_match_integer_floor_reference():
    for n in range(10, 400):
        assert ds.split_sizes(n) == ((8 * n) // 10, n // 10, n - (8 * n) // 10 - n // 10)
    assert ds.split_sizes(1345) == (1076, 134, 135)
    assert ds.split_sizes(100, (0.7, 0.15, 0.15)) == (70, 15, 15)


def test_split_is_deterministic_disjoint_and_order_independent():
    frame = _paths_frame({"COVID": 60, "Lung_Opacity": 45, "Normal": 80, "Viral Pneumonia": 50})
    first = ds.balance_and_split(frame, seed=3)
    again = ds.balance_and_split(frame.sample(frac=1.0, random_state=1), seed=3)
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    used = [set(part["path"]) for part in first]
    assert not (used[0] & used[1] or used[0] & used[2] or used[1] & used[2])
    assert sum(len(u) for u in used) == 4 * 45
    other = ds.balance_and_split(frame, seed=4)
    assert set(other[0]["path"]) != used[0]
    # The down-sampled class keeps all its images, the others a seeded subset.
    assert sum(p.startswith("/nowhere/Lung_Opacity/") for u in used for p in u) == 45


@pytest.mark.parametrize("sampling", ["class_weight", "oversample"])
def test_split_with_every_image_keeps_the_balanced_val_and_test(sampling):
    frame = _paths_frame(PAPER_SIZES)
    down = ds.balance_and_split(frame, seed=0)
    train, val, test = ds.balance_and_split(frame, seed=0, sampling=sampling)
    # validation and test: the very rows down-sampling gives (134 / 135 per class)
    pd.testing.assert_frame_equal(val, down[1])
    pd.testing.assert_frame_equal(test, down[2])
    # training: every other image, the down-sampled training rows first
    expected = {name: PAPER_SIZES[name] - 134 - 135 for name in CLASS_NAMES}
    assert train.groupby("label").size().to_dict() == expected
    assert expected == {"COVID": 3347, "Lung_Opacity": 5743, "Normal": 9923, "Viral Pneumonia": 1076}
    assert len(train) == 21165 - 536 - 540 == 20089
    assert set(train["split"]) == {"train"}
    for name in CLASS_NAMES:
        ours, theirs = train[train["label"] == name], down[0][down[0]["label"] == name]
        assert ours["path"].iloc[: len(theirs)].tolist() == theirs["path"].tolist()
    used = [set(part["path"]) for part in (train, val, test)]
    assert not (used[0] & used[1] or used[0] & used[2] or used[1] & used[2])
    assert sum(len(u) for u in used) == len(frame)
    # per_class sizes validation and test; training still takes the rest
    small = _paths_frame({"COVID": 40, "Lung_Opacity": 60, "Normal": 100, "Viral Pneumonia": 30})
    train, val, test = ds.balance_and_split(small, seed=1, per_class=20, sampling=sampling)
    assert val.groupby("label").size().tolist() == [2] * 4 and test.groupby("label").size().tolist() == [2] * 4
    assert train.groupby("label").size().to_dict() == {
        "COVID": 36,
        "Lung_Opacity": 56,
        "Normal": 96,
        "Viral Pneumonia": 26,
    }


def test_split_unknown_sampling_is_refused():
    with pytest.raises(DatasetError, match="sampling must be one of"):
        ds.balance_and_split(_paths_frame({name: 30 for name in CLASS_NAMES}), sampling="undersample")


def test_split_per_class_and_bad_parameters():
    frame = _paths_frame({name: 30 for name in CLASS_NAMES})
    train, val, test = ds.balance_and_split(frame, per_class=20)
    assert (len(train), len(val), len(test)) == (64, 8, 8)
    with pytest.raises(DatasetError, match="per_class=31 exceeds"):
        ds.balance_and_split(frame, per_class=31)
    for bad in [(0.8, 0.1), (0.8, 0.2, 0.1), (1.0, 0.0, 0.0), (0.9, -0.1, 0.2), "abc"]:
        with pytest.raises(DatasetError, match="fractions"):
            ds.balance_and_split(frame, fractions=bad)
    with pytest.raises(DatasetError, match="leave a split empty"):
        ds.balance_and_split(_paths_frame({name: 5 for name in CLASS_NAMES}))
    with pytest.raises(DatasetError, match="unknown labels"):
        ds.balance_and_split(pd.DataFrame({"path": ["a.png"], "label": ["Cat"]}))


def test_scan_phantoms(phantom_dataset):
    frame = ds.scan_dataset(phantom_dataset.parent)
    assert list(frame.columns) == ["path", "label", "label_index", "mask_path", "lesion_mask_path"]
    assert len(frame) == 48 and frame.attrs["skipped"] == []
    assert frame["label"].tolist() == [name for name in CLASS_NAMES for _ in range(12)]
    assert frame["label_index"].tolist() == [i for i in range(4) for _ in range(12)]
    assert frame["label_index"].dtype == np.int64
    numbers = [int(Path(p).stem.rsplit("-", 1)[1]) for p in frame["path"][:12]]
    assert numbers == list(range(1, 13))  # natural order: 2 before 10
    assert all(Path(p).is_file() for p in frame["mask_path"]) and all(
        Path(p).is_file() for p in frame["lesion_mask_path"]
    )
    pd.testing.assert_frame_equal(frame, ds.scan_dataset(phantom_dataset))


def _real_layout(root: Path, per_class: int = 3) -> Path:
    """A miniature of the Kaggle download: 299x299 images (some RGB), 256x256 RGB masks, metadata beside."""
    dataset = root / DATASET_DIRNAME
    rng = np.random.default_rng(0)
    for name in CLASS_NAMES:
        (dataset / name / "images").mkdir(parents=True)
        (dataset / name / "masks").mkdir()
        for n in range(1, per_class + 1):
            image = rng.integers(0, 256, (299, 299), dtype=np.uint8)
            if n % 2 == 0:
                image = np.stack([image, np.roll(image, 1, 0), np.roll(image, 1, 1)], axis=2)
            cv2.imwrite(str(dataset / name / "images" / f"{name}-{n}.png"), image)
            mask = np.zeros((256, 256, 3), dtype=np.uint8)
            mask[60:200, 40:110] = 255
            cv2.imwrite(str(dataset / name / "masks" / f"{name}-{n}.png"), mask)
        (dataset / f"{name}.metadata.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    (dataset / "README.md.txt").write_text("COVID-19 Radiography Database\n")
    return dataset


def test_scan_real_layout(tmp_path):
    dataset = _real_layout(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = ds.scan_dataset(tmp_path)
    assert len(frame) == 12
    assert (
        frame.loc[frame["label"] == "Viral Pneumonia", "path"]
        .iloc[0]
        .endswith("Viral Pneumonia/images/Viral Pneumonia-1.png")
    )
    assert (frame["mask_path"] != "").all() and (frame["lesion_mask_path"] == "").all()
    pd.testing.assert_frame_equal(frame, ds.scan_dataset(dataset))
    images = ds.load_images(frame, 64, cache_dir=False, progress=False)
    assert images.shape == (12, 64, 64, 1)
    lungs = ds.load_masks(frame, 299, kind="lung")
    assert lungs.shape == (12, 299, 299) and set(np.unique(lungs)) == {0, 1}
    expected = cv2.resize(
        np.pad(np.ones((140, 70), np.uint8), ((60, 56), (40, 146))), (299, 299), interpolation=cv2.INTER_NEAREST
    )
    np.testing.assert_array_equal(lungs[0], expected)
    assert not ds.load_masks(frame, 32, kind="lesion").any()


def test_scan_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "missing")):
        ds.scan_dataset(tmp_path / "missing")
    dataset = _real_layout(tmp_path / "r")
    (dataset / "Viral Pneumonia").rename(dataset / "Viral_Pneumonia")
    with pytest.raises(DatasetError, match="Viral Pneumonia is missing.*rename 'Viral_Pneumonia' to 'Viral Pneumonia'"):
        ds.scan_dataset(dataset)
    (dataset / "Viral_Pneumonia").rename(dataset / "Viral Pneumonia")
    # an unzip that nests the dataset folder twice is read from its inner folder, by the scan and the runner alike
    twice = tmp_path / "twice" / DATASET_DIRNAME / DATASET_DIRNAME
    twice.parent.mkdir(parents=True)
    dataset.rename(twice)
    assert layout.layout_problem(tmp_path / "twice") is None
    assert layout.resolve_dataset_dir(tmp_path / "twice") == twice
    assert len(ds.scan_dataset(tmp_path / "twice")) > 0
    twice.rename(dataset)
    for image in (dataset / "Normal" / "images").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match=f"{dataset / 'Normal' / 'images'} holds no readable images"):
        ds.scan_dataset(dataset)


@pytest.mark.parametrize(
    "bad_name, content, message",
    [
        ("COVID-9.png", b"this is not a png at all, just some text bytes", "is not a PNG"),
        ("COVID-9.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + b"\x00" * 17, "checksum"),
        ("notes.txt", b"written by hand", "is not an image"),
    ],
)
def test_scan_unreadable_file_raises_or_is_skipped(tmp_path, bad_name, content, message):
    dataset = _real_layout(tmp_path)
    bad = dataset / "COVID" / "images" / bad_name
    bad.write_bytes(content)
    with pytest.raises(DatasetError, match=f"{bad}.*{message}"):
        ds.scan_dataset(dataset)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        frame = ds.scan_dataset(dataset, skip_unreadable=True)
    assert frame.attrs["skipped"] == [str(bad)] and len(frame) == 12


def test_truncated_image_fails_at_decode_naming_the_path(tmp_path):
    dataset = _real_layout(tmp_path)
    path = dataset / "COVID" / "images" / "COVID-1.png"
    frame = ds.scan_dataset(dataset)
    path.write_bytes(path.read_bytes()[:60])  # valid header, data cut off (after the scan, which would see it)
    with pytest.raises(DatasetError, match=str(path)):
        ds.load_images(frame, 32, cache_dir=False, progress=False)
    with pytest.raises(DatasetError, match=f"{path} cannot be decoded"):
        ds.scan_dataset(dataset)


def _reference_gray(path: str, size: int) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR).astype(np.float64)
    gray = np.clip(np.rint(0.114 * bgr[:, :, 0] + 0.587 * bgr[:, :, 1] + 0.299 * bgr[:, :, 2]), 0, 255).astype(np.uint8)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def test_load_images_values_cache_and_invalidation(tmp_path, monkeypatch):
    _real_layout(tmp_path / "raw")
    frame = ds.scan_dataset(tmp_path / "raw")
    cache = tmp_path / "cache"
    images = ds.load_images(frame, 40, cache_dir=cache, progress=False)
    assert images.shape == (12, 40, 40, 1) and images.dtype == np.uint8
    for i, path in enumerate(frame["path"]):
        reference = _reference_gray(path, 40)
        assert np.abs(images[i, :, :, 0].astype(int) - reference.astype(int)).max() <= 1, path
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and not list(cache.glob(".*"))
    np.testing.assert_array_equal(np.load(files[0]), images)

    decodes = []
    real_imread = cv2.imread
    monkeypatch.setattr(ds.cv2, "imread", lambda *a, **k: decodes.append(a[0]) or real_imread(*a, **k))
    np.testing.assert_array_equal(ds.load_images(frame, 40, cache_dir=cache, progress=False), images)
    assert decodes == []  # served from the cache
    ds.load_images(frame, 24, cache_dir=cache, progress=False)
    assert len(decodes) == 12 and len(list(cache.glob("*.npy"))) == 2  # another size, another entry

    changed = frame["path"].iloc[3]
    cv2.imwrite(changed, np.full((299, 299), 7, np.uint8))
    decodes.clear()
    updated = ds.load_images(frame, 40, cache_dir=cache, progress=False)
    assert len(decodes) == 12 and (updated[3] == 7).all()
    np.testing.assert_array_equal(np.delete(updated, 3, axis=0), np.delete(images, 3, axis=0))


def test_load_images_default_cache_dir_and_corrupt_cache(tmp_path, monkeypatch, phantom_dataset):
    monkeypatch.setenv(config.ROOT_ENV, str(tmp_path))
    frame = ds.scan_dataset(phantom_dataset).iloc[:5]
    images = ds.load_images(frame, 16, progress=False)
    (cached,) = (tmp_path / "data" / "processed" / "cache").glob("*.npy")
    cached.write_bytes(b"garbage")  # a damaged cache entry is rebuilt, not trusted
    np.testing.assert_array_equal(ds.load_images(frame, 16, progress=False), images)
    np.testing.assert_array_equal(np.load(cached), images)
    with pytest.raises(DatasetError, match="image_size"):
        ds.load_images(frame, 0)


def test_load_masks_phantoms(phantom_dataset):
    frame = ds.scan_dataset(phantom_dataset)
    lesion = ds.load_masks(frame, 64)
    assert lesion.shape == (48, 64, 64) and lesion.dtype == np.uint8 and set(np.unique(lesion)) <= {0, 1}
    normal = (frame["label"] == "Normal").to_numpy()
    assert not lesion[normal].any() and all(m.any() for m in lesion[~normal])
    direct = cv2.imread(frame["lesion_mask_path"].iloc[0], cv2.IMREAD_GRAYSCALE) > 127
    np.testing.assert_array_equal(lesion[0], direct)
    small = ds.load_masks(frame, 32, kind="lung")
    np.testing.assert_array_equal(
        small[0],
        cv2.resize(
            cv2.imread(frame["mask_path"].iloc[0], cv2.IMREAD_GRAYSCALE), (32, 32), interpolation=cv2.INTER_NEAREST
        )
        > 127,
    )
    empty = frame.iloc[:2].assign(lesion_mask_path="")
    assert not ds.load_masks(empty, 8).any()
    with pytest.raises(DatasetError, match="kind"):
        ds.load_masks(frame, 8, kind="heart")


def test_scan_old_layout_without_images_subfolder(tmp_path):
    dataset = tmp_path / DATASET_DIRNAME
    for name in CLASS_NAMES:
        (dataset / name).mkdir(parents=True)
        for n in (10, 2, 1):
            cv2.imwrite(str(dataset / name / f"{name} ({n}).png"), np.full((20, 20), n, np.uint8))
        (dataset / name / "metadata.xlsx").write_bytes(b"PK")
    frame = ds.scan_dataset(tmp_path)
    assert [Path(p).name for p in frame["path"][:3]] == ["COVID (1).png", "COVID (2).png", "COVID (10).png"]
    assert (frame["mask_path"] == "").all() and len(frame) == 12


def test_scan_corrupt_mask_raises_or_is_dropped(tmp_path):
    dataset = _real_layout(tmp_path)
    mask = dataset / "Normal" / "masks" / "Normal-2.png"
    mask.write_bytes(b"broken")
    with pytest.raises(DatasetError, match=str(mask)):
        ds.scan_dataset(dataset)
    with pytest.warns(UserWarning, match="skipped 1"):
        frame = ds.scan_dataset(dataset, skip_unreadable=True)
    row = frame[frame["path"].str.endswith("Normal-2.png")].iloc[0]
    assert row["mask_path"] == "" and frame.attrs["skipped"] == [str(mask)] and len(frame) == 12
