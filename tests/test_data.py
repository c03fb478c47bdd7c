"""Tests of helpers.data: phantoms, scanning, the balanced split, the image cache and the manifest."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers import config, data
from helpers.config import CLASS_NAMES, DATASET_DIRNAME
from helpers.data import DatasetError

PAPER_SIZES = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}


def _paths_frame(sizes: dict[str, int]) -> pd.DataFrame:
    """A frame of made-up paths (no files) with the given number of rows per class."""
    rows = [{"path": f"/nowhere/{name}/images/{name}-{n}.png", "label": name}
            for name in CLASS_NAMES for n in range(1, sizes[name] + 1)]
    return pd.DataFrame(rows)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# balance_and_split
# ------------------------------------------------------------------------------------------------


def test_split_gives_the_paper_counts():
    train, val, test = data.balance_and_split(_paths_frame(PAPER_SIZES), seed=0)
    assert (len(train), len(val), len(test)) == (4304, 536, 540)
    for part, expected in zip((train, val, test), (1076, 134, 135)):
        assert part.groupby("label").size().to_dict() == {name: expected for name in CLASS_NAMES}
    assert list(train.columns[:6]) == list(data.MANIFEST_COLUMNS)
    assert set(train["split"]) == {"train"} and set(val["split"]) == {"val"} and set(test["split"]) == {"test"}
    assert (train["label_index"] == train["label"].map(CLASS_NAMES.index)).all()
    counts = data.class_counts(train, val, test)
    assert counts.loc["Total"].tolist() == [4304, 536, 540, 5380]
    assert counts.loc["COVID"].tolist() == [1076, 134, 135, 1345]


def test_split_sizes_match_integer_floor_reference():
    for n in range(10, 400):
        assert data.split_sizes(n) == ((8 * n) // 10, n // 10, n - (8 * n) // 10 - n // 10)
    assert data.split_sizes(1345) == (1076, 134, 135)
    assert data.split_sizes(100, (0.7, 0.15, 0.15)) == (70, 15, 15)


def test_split_is_deterministic_disjoint_and_order_independent():
    frame = _paths_frame({"COVID": 60, "Lung_Opacity": 45, "Normal": 80, "Viral Pneumonia": 50})
    first = data.balance_and_split(frame, seed=3)
    again = data.balance_and_split(frame.sample(frac=1.0, random_state=1), seed=3)
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b)
    used = [set(part["path"]) for part in first]
    assert not (used[0] & used[1] or used[0] & used[2] or used[1] & used[2])
    assert sum(len(u) for u in used) == 4 * 45
    other = data.balance_and_split(frame, seed=4)
    assert set(other[0]["path"]) != used[0]
    # The down-sampled class keeps all its images, the others a seeded subset.
    assert sum(p.startswith("/nowhere/Lung_Opacity/") for u in used for p in u) == 45


def test_split_per_class_and_bad_parameters():
    frame = _paths_frame({name: 30 for name in CLASS_NAMES})
    train, val, test = data.balance_and_split(frame, per_class=20)
    assert (len(train), len(val), len(test)) == (64, 8, 8)
    with pytest.raises(DatasetError, match="per_class=31 exceeds"):
        data.balance_and_split(frame, per_class=31)
    for bad in [(0.8, 0.1), (0.8, 0.2, 0.1), (1.0, 0.0, 0.0), (0.9, -0.1, 0.2), "abc"]:
        with pytest.raises(DatasetError, match="fractions"):
            data.balance_and_split(frame, fractions=bad)
    with pytest.raises(DatasetError, match="leave a split empty"):
        data.balance_and_split(_paths_frame({name: 5 for name in CLASS_NAMES}))
    with pytest.raises(DatasetError, match="unknown labels"):
        data.balance_and_split(pd.DataFrame({"path": ["a.png"], "label": ["Cat"]}))


# ------------------------------------------------------------------------------------------------
# Phantoms
# ------------------------------------------------------------------------------------------------


def test_synthesize_layout_and_masks(phantom_dataset):
    assert phantom_dataset.name == DATASET_DIRNAME
    for name in CLASS_NAMES:
        images = sorted((phantom_dataset / name / "images").iterdir())
        assert len(images) == 12 and (phantom_dataset / name / "images" / f"{name}-12.png").is_file()
        image = cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (64, 64) and image.dtype == np.uint8
        mask = cv2.imread(str(phantom_dataset / name / "masks" / images[0].name), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (64, 64, 3) and set(np.unique(mask)) == {0, 255}
        lesion = cv2.imread(str(phantom_dataset / name / "lesion_masks" / images[0].name), cv2.IMREAD_UNCHANGED)
        assert lesion.shape == (64, 64)
        assert (lesion.max() == 0) == (name == "Normal")
    assert not [p for p in phantom_dataset.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_synthesize_same_seed_same_bytes_and_reuse(tmp_path):
    a = data.synthesize_dataset(tmp_path / "a", per_class=2, image_size=32, seed=5, mask_size=48, progress=False)
    b = data.synthesize_dataset(tmp_path / "b", per_class=2, image_size=32, seed=5, mask_size=48, progress=False)
    c = data.synthesize_dataset(tmp_path / "c", per_class=2, image_size=32, seed=6, mask_size=48, progress=False)
    digest_a = _digest(a)
    assert len(digest_a) == 4 * 2 * 3 + 1 and digest_a == _digest(b)
    images_a = {k: v for k, v in digest_a.items() if "/images/" in k}
    images_c = {k: v for k, v in _digest(c).items() if "/images/" in k}
    assert images_a.keys() == images_c.keys() and all(images_a[k] != images_c[k] for k in images_a)
    stamp = (a / "COVID" / "images" / "COVID-1.png").stat().st_mtime_ns
    again = data.synthesize_dataset(tmp_path / "a", per_class=2, image_size=32, seed=5, mask_size=48, progress=False)
    assert again == a and (a / "COVID" / "images" / "COVID-1.png").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="other parameters.*per_class"):
        data.synthesize_dataset(tmp_path / "a", per_class=3, image_size=32, seed=5, mask_size=48, progress=False)
    foreign = tmp_path / "foreign" / DATASET_DIRNAME
    foreign.mkdir(parents=True)
    with pytest.raises(DatasetError, match="not a synthetic dataset"):
        data.synthesize_dataset(tmp_path / "foreign", per_class=2, image_size=32, progress=False)
    with pytest.raises(DatasetError, match="per_class"):
        data.synthesize_dataset(tmp_path / "d", per_class=0, image_size=32, progress=False)


@pytest.mark.parametrize("name", ["COVID", "Lung_Opacity", "Viral Pneumonia"])
def test_finding_is_inside_the_lesion_mask(name):
    for n in range(1, 6):
        with_finding = data.render_phantom(name, 0, n, image_size=96, mask_size=96)
        without = data.render_phantom(name, 0, n, image_size=96, mask_size=96, finding=False)
        np.testing.assert_array_equal(with_finding["lung_mask"], without["lung_mask"])
        diff = np.abs(with_finding["image"].astype(float) - without["image"].astype(float))
        mask = with_finding["lesion_mask"] > 0
        assert mask.any() and not without["lesion_mask"].any()
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert diff[grown].sum() / diff.sum() > 0.85  # the finding's intensity lies inside the mask
        assert diff[mask].mean() > 12  # and is clearly visible there (grey levels)
        assert not (mask & (with_finding["lung_mask"][:, :, 0] == 0)).any()  # findings lie in the lungs


def test_normal_has_no_finding_and_classes_differ_in_location():
    normal = data.render_phantom("Normal", 0, 1, image_size=64)
    assert not normal["lesion_mask"].any()
    np.testing.assert_array_equal(normal["image"], data.render_phantom("Normal", 0, 1, image_size=64, finding=False)["image"])
    # Average lesion maps: COVID lower-lateral, Viral Pneumonia perihilar (medial), Lung_Opacity one-sided.
    maps = {name: np.mean([data.render_phantom(name, 0, n, 64)["lesion_mask"] > 0 for n in range(1, 41)], axis=0)
            for name in ("COVID", "Lung_Opacity", "Viral Pneumonia")}
    u = (np.arange(64) + 0.5) / 64
    lateral = np.abs(u - 0.5)[None, :] * np.ones((64, 1))
    centre = {k: (m * lateral).sum() / m.sum() for k, m in maps.items()}
    assert centre["COVID"] > centre["Viral Pneumonia"] + 0.03
    per_image_sides = [
        [(data.render_phantom("Lung_Opacity", 0, n, 64)["lesion_mask"][:, half] > 0).any() for half in (slice(0, 32), slice(32, 64))]
        for n in range(1, 21)]
    assert all(sum(sides) == 1 for sides in per_image_sides)
    covid_sides = [[(data.render_phantom("COVID", 0, n, 64)["lesion_mask"][:, half] > 0).any() for half in (slice(0, 32), slice(32, 64))]
                   for n in range(1, 21)]
    assert all(all(sides) for sides in covid_sides)


def test_global_brightness_does_not_reveal_the_class():
    # A nearest-class-mean classifier on mean image brightness must stay far from the findings' signal.
    means = {name: np.array([data.render_phantom(name, 1, n, 48)["image"].mean() for n in range(1, 41)]) for name in CLASS_NAMES}
    train = {k: v[:20].mean() for k, v in means.items()}
    correct = sum(min(train, key=lambda k: abs(train[k] - x)) == name for name in CLASS_NAMES for x in means[name][20:])
    assert correct / 80 < 0.5


def test_confounder_shrinks_viral_pneumonia_chests_only():
    def lung_area(name, confounder):
        return np.mean([data.render_phantom(name, 0, n, 32, mask_size=64, confounder=confounder)["lung_mask"][:, :, 0].mean()
                        for n in range(1, 11)])

    assert lung_area("Viral Pneumonia", True) < 0.7 * lung_area("Viral Pneumonia", False)
    for name in ("COVID", "Normal"):
        np.testing.assert_array_equal(data.render_phantom(name, 0, 1, 32, confounder=True)["image"],
                                      data.render_phantom(name, 0, 1, 32)["image"])


def test_render_phantom_rejects_bad_parameters():
    with pytest.raises(DatasetError, match="class_name"):
        data.render_phantom("Cat", 0, 1)
    with pytest.raises(DatasetError, match="seed"):
        data.render_phantom("COVID", -1, 1)
    with pytest.raises(DatasetError, match="image_size"):
        data.render_phantom("COVID", 0, 1, image_size=4)


# ------------------------------------------------------------------------------------------------
# scan_dataset
# ------------------------------------------------------------------------------------------------


def test_scan_phantoms(phantom_dataset):
    frame = data.scan_dataset(phantom_dataset.parent)
    assert list(frame.columns) == ["path", "label", "label_index", "mask_path", "lesion_mask_path"]
    assert len(frame) == 48 and frame.attrs["skipped"] == []
    assert frame["label"].tolist() == [name for name in CLASS_NAMES for _ in range(12)]
    assert frame["label_index"].tolist() == [i for i in range(4) for _ in range(12)]
    assert frame["label_index"].dtype == np.int64
    numbers = [int(Path(p).stem.rsplit("-", 1)[1]) for p in frame["path"][:12]]
    assert numbers == list(range(1, 13))  # natural order: 2 before 10
    assert all(Path(p).is_file() for p in frame["mask_path"]) and all(Path(p).is_file() for p in frame["lesion_mask_path"])
    pd.testing.assert_frame_equal(frame, data.scan_dataset(phantom_dataset))


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
        frame = data.scan_dataset(tmp_path)
    assert len(frame) == 12
    assert frame.loc[frame["label"] == "Viral Pneumonia", "path"].iloc[0].endswith("Viral Pneumonia/images/Viral Pneumonia-1.png")
    assert (frame["mask_path"] != "").all() and (frame["lesion_mask_path"] == "").all()
    pd.testing.assert_frame_equal(frame, data.scan_dataset(dataset))
    images = data.load_images(frame, 64, cache_dir=False, progress=False)
    assert images.shape == (12, 64, 64, 1)
    lungs = data.load_masks(frame, 299, kind="lung")
    assert lungs.shape == (12, 299, 299) and set(np.unique(lungs)) == {0, 1}
    expected = cv2.resize(np.pad(np.ones((140, 70), np.uint8), ((60, 56), (40, 146))), (299, 299), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(lungs[0], expected)
    assert not data.load_masks(frame, 32, kind="lesion").any()


def test_scan_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "missing")):
        data.scan_dataset(tmp_path / "missing")
    dataset = _real_layout(tmp_path / "r")
    (dataset / "Viral Pneumonia").rename(dataset / "Viral_Pneumonia")
    with pytest.raises(DatasetError, match="Viral Pneumonia is missing.*found 'Viral_Pneumonia'"):
        data.scan_dataset(dataset)
    (dataset / "Viral_Pneumonia").rename(dataset / "Viral Pneumonia")
    for image in (dataset / "Normal" / "images").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match=f"{dataset / 'Normal' / 'images'} holds no readable images"):
        data.scan_dataset(dataset)


@pytest.mark.parametrize("bad_name, content, message", [
    ("COVID-9.png", b"this is not a png at all, just some text bytes", "is not a PNG"),
    ("COVID-9.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + b"\x00" * 17, "checksum"),
    ("notes.txt", b"written by hand", "is not an image"),
])
def test_scan_unreadable_file_raises_or_is_skipped(tmp_path, bad_name, content, message):
    dataset = _real_layout(tmp_path)
    bad = dataset / "COVID" / "images" / bad_name
    bad.write_bytes(content)
    with pytest.raises(DatasetError, match=f"{bad}.*{message}"):
        data.scan_dataset(dataset)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        frame = data.scan_dataset(dataset, skip_unreadable=True)
    assert frame.attrs["skipped"] == [str(bad)] and len(frame) == 12


def test_truncated_image_fails_at_decode_naming_the_path(tmp_path):
    dataset = _real_layout(tmp_path)
    path = dataset / "COVID" / "images" / "COVID-1.png"
    path.write_bytes(path.read_bytes()[:60])  # valid header, data cut off
    frame = data.scan_dataset(dataset)
    with pytest.raises(DatasetError, match=str(path)):
        data.load_images(frame, 32, cache_dir=False, progress=False)


# ------------------------------------------------------------------------------------------------
# load_images, load_masks
# ------------------------------------------------------------------------------------------------


def _reference_gray(path: str, size: int) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR).astype(np.float64)
    gray = np.clip(np.rint(0.114 * bgr[:, :, 0] + 0.587 * bgr[:, :, 1] + 0.299 * bgr[:, :, 2]), 0, 255).astype(np.uint8)
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)


def test_load_images_values_cache_and_invalidation(tmp_path, monkeypatch):
    _real_layout(tmp_path / "raw")
    frame = data.scan_dataset(tmp_path / "raw")
    cache = tmp_path / "cache"
    images = data.load_images(frame, 40, cache_dir=cache, progress=False)
    assert images.shape == (12, 40, 40, 1) and images.dtype == np.uint8
    for i, path in enumerate(frame["path"]):
        reference = _reference_gray(path, 40)
        assert np.abs(images[i, :, :, 0].astype(int) - reference.astype(int)).max() <= 1, path
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and not list(cache.glob(".*"))
    np.testing.assert_array_equal(np.load(files[0]), images)

    decodes = []
    real_imread = cv2.imread
    monkeypatch.setattr(data.cv2, "imread", lambda *a, **k: decodes.append(a[0]) or real_imread(*a, **k))
    np.testing.assert_array_equal(data.load_images(frame, 40, cache_dir=cache, progress=False), images)
    assert decodes == []  # served from the cache
    data.load_images(frame, 24, cache_dir=cache, progress=False)
    assert len(decodes) == 12 and len(list(cache.glob("*.npy"))) == 2  # another size, another entry

    changed = frame["path"].iloc[3]
    cv2.imwrite(changed, np.full((299, 299), 7, np.uint8))
    decodes.clear()
    updated = data.load_images(frame, 40, cache_dir=cache, progress=False)
    assert len(decodes) == 12 and (updated[3] == 7).all()
    np.testing.assert_array_equal(np.delete(updated, 3, axis=0), np.delete(images, 3, axis=0))


def test_load_images_default_cache_dir_and_corrupt_cache(tmp_path, monkeypatch, phantom_dataset):
    monkeypatch.setenv(config.ROOT_ENV, str(tmp_path))
    frame = data.scan_dataset(phantom_dataset).iloc[:5]
    images = data.load_images(frame, 16, progress=False)
    (cached,) = (tmp_path / "data" / "processed" / "cache").glob("*.npy")
    cached.write_bytes(b"garbage")  # a damaged cache entry is rebuilt, not trusted
    np.testing.assert_array_equal(data.load_images(frame, 16, progress=False), images)
    np.testing.assert_array_equal(np.load(cached), images)
    with pytest.raises(DatasetError, match="image_size"):
        data.load_images(frame, 0)


def test_load_masks_phantoms(phantom_dataset):
    frame = data.scan_dataset(phantom_dataset)
    lesion = data.load_masks(frame, 64)
    assert lesion.shape == (48, 64, 64) and lesion.dtype == np.uint8 and set(np.unique(lesion)) <= {0, 1}
    normal = (frame["label"] == "Normal").to_numpy()
    assert not lesion[normal].any() and all(m.any() for m in lesion[~normal])
    direct = cv2.imread(frame["lesion_mask_path"].iloc[0], cv2.IMREAD_GRAYSCALE) > 127
    np.testing.assert_array_equal(lesion[0], direct)
    small = data.load_masks(frame, 32, kind="lung")
    np.testing.assert_array_equal(small[0], cv2.resize(cv2.imread(frame["mask_path"].iloc[0], cv2.IMREAD_GRAYSCALE), (32, 32),
                                                       interpolation=cv2.INTER_NEAREST) > 127)
    empty = frame.iloc[:2].assign(lesion_mask_path="")
    assert not data.load_masks(empty, 8).any()
    with pytest.raises(DatasetError, match="kind"):
        data.load_masks(frame, 8, kind="heart")


# ------------------------------------------------------------------------------------------------
# Manifest, load_split, notebook helpers
# ------------------------------------------------------------------------------------------------


def test_manifest_round_trip_and_load_split(tmp_path, phantom_dataset):
    paths = config.study_paths("unit", work_dir=tmp_path)
    frame = data.scan_dataset(phantom_dataset)
    train, val, test = data.balance_and_split(frame, seed=0)
    assert (len(train), len(val), len(test)) == (36, 4, 8)
    data.write_manifest([train, val, test], paths.split_manifest)
    manifest = data.read_manifest(paths.split_manifest)
    pd.testing.assert_frame_equal(manifest, pd.concat([train, val, test], ignore_index=True)[list(data.MANIFEST_COLUMNS)])
    images, labels = data.load_split(paths, "test", 32, progress=False)
    assert images.shape == (8, 32, 32, 1) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, test["label_index"].to_numpy())
    np.testing.assert_array_equal(images, data.load_images(test, 32, cache_dir=False, progress=False))
    assert len(list(paths.cache.glob("*.npy"))) == 1
    with pytest.raises(DatasetError, match="split must be"):
        data.load_split(paths, "holdout", 32)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none.csv")):
        data.read_manifest(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,COVID\n")
    with pytest.raises(DatasetError, match=f"{bad} lacks the columns"):
        data.read_manifest(bad)
    bad.write_text("path,label,label_index,mask_path,lesion_mask_path,split\na.png,COVID,2,,,train\n")
    with pytest.raises(DatasetError, match="label_index"):
        data.read_manifest(bad)
    bad.write_text("path,label,label_index,mask_path,lesion_mask_path,split\na.png,COVID,0,,,holdout\n")
    with pytest.raises(DatasetError, match="holdout"):
        data.read_manifest(bad)
    with pytest.raises(DatasetError, match="lack the columns"):
        data.write_manifest([pd.DataFrame({"path": ["a"]})], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_dataset_from_parameters(tmp_path, phantom_dataset):
    paths = config.study_paths("unit", work_dir=tmp_path)
    made = data.dataset_from_parameters(paths, "synthetic", synthetic_per_class=2, synthetic_size=32, seed=1,
                                        confounder=True, progress=False)
    assert made == paths.raw / "synthetic-32-2-1-confounder" / DATASET_DIRNAME and len(data.scan_dataset(made)) == 8
    assert data.dataset_from_parameters(paths, "kaggle", data_dir=phantom_dataset.parent) == phantom_dataset
    with pytest.raises(DatasetError, match="data_dir"):
        data.dataset_from_parameters(paths, "kaggle")
    with pytest.raises(DatasetError, match="source"):
        data.dataset_from_parameters(paths, "web")


def test_figures(phantom_dataset):
    import matplotlib.pyplot as plt

    frame = data.scan_dataset(phantom_dataset)
    fig = data.plot_examples(frame, image_size=32, seed=0)
    assert [ax.get_title() for ax in fig.axes] == list(CLASS_NAMES)
    plt.close(fig)
    fig = data.plot_masks_overlay(frame, image_size=48, seed=0)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "lesion mask (overlay)"
    assert fig.axes[0].get_title().split(":")[0] != "Normal"
    plt.close(fig)
    fig = data.plot_masks_overlay(frame[frame["label"] == "Normal"])
    assert fig.axes[2].get_title() == "no lesion mask" and fig.axes[1].get_title() == "lung mask (outline)"
    plt.close(fig)


def test_scan_old_layout_without_images_subfolder(tmp_path):
    dataset = tmp_path / DATASET_DIRNAME
    for name in CLASS_NAMES:
        (dataset / name).mkdir(parents=True)
        for n in (10, 2, 1):
            cv2.imwrite(str(dataset / name / f"{name} ({n}).png"), np.full((20, 20), n, np.uint8))
        (dataset / name / "metadata.xlsx").write_bytes(b"PK")
    frame = data.scan_dataset(tmp_path)
    assert [Path(p).name for p in frame["path"][:3]] == ["COVID (1).png", "COVID (2).png", "COVID (10).png"]
    assert (frame["mask_path"] == "").all() and len(frame) == 12


def test_scan_corrupt_mask_raises_or_is_dropped(tmp_path):
    dataset = _real_layout(tmp_path)
    mask = dataset / "Normal" / "masks" / "Normal-2.png"
    mask.write_bytes(b"broken")
    with pytest.raises(DatasetError, match=str(mask)):
        data.scan_dataset(dataset)
    with pytest.warns(UserWarning, match="skipped 1"):
        frame = data.scan_dataset(dataset, skip_unreadable=True)
    row = frame[frame["path"].str.endswith("Normal-2.png")].iloc[0]
    assert row["mask_path"] == "" and frame.attrs["skipped"] == [str(mask)] and len(frame) == 12
