"""Tests of helpers.data.phantoms: the synthetic X-ray simulator and the dataset it writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.common.config import CLASS_NAMES, DATASET_DIRNAME
from helpers.data import phantoms
from helpers.data.layout import DatasetError


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


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
    assert not [p for p in phantom_dataset.parent.iterdir() if p.name.startswith(".")]


def test_synthesize_same_seed_same_bytes_and_reuse(tmp_path):
    a = phantoms.synthesize_dataset(tmp_path / "a", per_class=2, image_size=32, seed=5, mask_size=48, progress=False)
    b = phantoms.synthesize_dataset(tmp_path / "b", per_class=2, image_size=32, seed=5, mask_size=48, progress=False)
    c = phantoms.synthesize_dataset(tmp_path / "c", per_class=2, image_size=32, seed=6, mask_size=48, progress=False)
    digest_a = _digest(a)
    assert len(digest_a) == 4 * 2 * 3 + 1 and digest_a == _digest(b)
    images_a = {k: v for k, v in digest_a.items() if "/images/" in k}
    images_c = {k: v for k, v in _digest(c).items() if "/images/" in k}
    assert images_a.keys() == images_c.keys() and all(images_a[k] != images_c[k] for k in images_a)
    stamp = (a / "COVID" / "images" / "COVID-1.png").stat().st_mtime_ns
    again = phantoms.synthesize_dataset(
        tmp_path / "a", per_class=2, image_size=32, seed=5, mask_size=48, progress=False
    )
    assert again == a and (a / "COVID" / "images" / "COVID-1.png").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="other parameters.*per_class"):
        phantoms.synthesize_dataset(tmp_path / "a", per_class=3, image_size=32, seed=5, mask_size=48, progress=False)
    foreign = tmp_path / "foreign" / DATASET_DIRNAME
    foreign.mkdir(parents=True)
    with pytest.raises(DatasetError, match="not a synthetic dataset"):
        phantoms.synthesize_dataset(tmp_path / "foreign", per_class=2, image_size=32, progress=False)
    with pytest.raises(DatasetError, match="per_class"):
        phantoms.synthesize_dataset(tmp_path / "d", per_class=0, image_size=32, progress=False)


@pytest.mark.parametrize("name", ["COVID", "Lung_Opacity", "Viral Pneumonia"])
def test_finding_is_inside_the_lesion_mask(name):
    for n in range(1, 6):
        with_finding = phantoms.render_phantom(name, 0, n, image_size=96, mask_size=96)
        without = phantoms.render_phantom(name, 0, n, image_size=96, mask_size=96, finding=False)
        np.testing.assert_array_equal(with_finding["lung_mask"], without["lung_mask"])
        diff = np.abs(with_finding["image"].astype(float) - without["image"].astype(float))
        mask = with_finding["lesion_mask"] > 0
        assert mask.any() and not without["lesion_mask"].any()
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert diff[grown].sum() / diff.sum() > 0.85  # the finding's intensity lies inside the mask
        assert diff[mask].mean() > 12  # and is clearly visible there (grey levels)
        assert not (mask & (with_finding["lung_mask"][:, :, 0] == 0)).any()  # findings lie in the lungs


def test_normal_has_no_finding_and_classes_differ_in_location():
    normal = phantoms.render_phantom("Normal", 0, 1, image_size=64)
    assert not normal["lesion_mask"].any()
    np.testing.assert_array_equal(
        normal["image"], phantoms.render_phantom("Normal", 0, 1, image_size=64, finding=False)["image"]
    )
    # Average lesion maps: COVID lower-lateral, Viral Pneumonia perihilar (medial), Lung_Opacity one-sided.
    maps = {
        name: np.mean([phantoms.render_phantom(name, 0, n, 64)["lesion_mask"] > 0 for n in range(1, 41)], axis=0)
        for name in ("COVID", "Lung_Opacity", "Viral Pneumonia")
    }
    u = (np.arange(64) + 0.5) / 64
    lateral = np.abs(u - 0.5)[None, :] * np.ones((64, 1))
    centre = {k: (m * lateral).sum() / m.sum() for k, m in maps.items()}
    assert centre["COVID"] > centre["Viral Pneumonia"] + 0.03
    per_image_sides = [
        [
            (phantoms.render_phantom("Lung_Opacity", 0, n, 64)["lesion_mask"][:, half] > 0).any()
            for half in (slice(0, 32), slice(32, 64))
        ]
        for n in range(1, 21)
    ]
    assert all(sum(sides) == 1 for sides in per_image_sides)
    covid_sides = [
        [
            (phantoms.render_phantom("COVID", 0, n, 64)["lesion_mask"][:, half] > 0).any()
            for half in (slice(0, 32), slice(32, 64))
        ]
        for n in range(1, 21)
    ]
    assert all(all(sides) for sides in covid_sides)


def test_global_brightness_does_not_reveal_the_class():
    # A nearest-class-mean classifier on mean image brightness must stay far from the findings' signal.
    means = {
        name: np.array([phantoms.render_phantom(name, 1, n, 48)["image"].mean() for n in range(1, 41)])
        for name in CLASS_NAMES
    }
    train = {k: v[:20].mean() for k, v in means.items()}
    correct = sum(min(train, key=lambda k: abs(train[k] - x)) == name for name in CLASS_NAMES for x in means[name][20:])
    assert correct / 80 < 0.5


def test_confounder_shrinks_viral_pneumonia_chests_only():
    def lung_area(name, confounder):
        return np.mean(
            [
                phantoms.render_phantom(name, 0, n, 32, mask_size=64, confounder=confounder)["lung_mask"][
                    :, :, 0
                ].mean()
                for n in range(1, 11)
            ]
        )

    assert lung_area("Viral Pneumonia", True) < 0.7 * lung_area("Viral Pneumonia", False)
    for name in ("COVID", "Normal"):
        np.testing.assert_array_equal(
            phantoms.render_phantom(name, 0, 1, 32, confounder=True)["image"],
            phantoms.render_phantom(name, 0, 1, 32)["image"],
        )


def test_render_phantom_rejects_bad_parameters():
    with pytest.raises(DatasetError, match="class_name"):
        phantoms.render_phantom("Cat", 0, 1)
    with pytest.raises(DatasetError, match="seed"):
        phantoms.render_phantom("COVID", -1, 1)
    with pytest.raises(DatasetError, match="image_size"):
        phantoms.render_phantom("COVID", 0, 1, image_size=4)


def test_synthesize_per_class_counts_make_an_imbalanced_set(tmp_path):
    counts = [3, 5, 8, 1]  # the real ratios 3616:6012:10192:1345, scaled down
    folder = phantoms.synthesize_dataset(tmp_path / "a", per_class=counts, image_size=16, mask_size=16, progress=False)
    for name, n in zip(CLASS_NAMES, counts):
        assert len(list((folder / name / "images").glob("*.png"))) == n
    by_name = dict(zip(CLASS_NAMES, counts))
    again = phantoms.synthesize_dataset(tmp_path / "a", per_class=by_name, image_size=16, mask_size=16, progress=False)
    assert again == folder  # a dict by class name is the same request as the list
    # the first phantoms of a class are the same files whatever the other classes' counts
    equal = phantoms.synthesize_dataset(tmp_path / "b", per_class=3, image_size=16, mask_size=16, progress=False)
    assert (equal / "COVID" / "images" / "COVID-3.png").read_bytes() == (
        folder / "COVID" / "images" / "COVID-3.png"
    ).read_bytes()
    assert phantoms.synthetic_dir_name(48, counts, 0) == "synthetic-48-3_5_8_1-0"
    assert (
        phantoms.synthetic_dir_name(48, [4, 4, 4, 4], 0) == phantoms.synthetic_dir_name(48, 4, 0) == "synthetic-48-4-0"
    )
    assert phantoms.class_counts(7) == dict.fromkeys(CLASS_NAMES, 7)
    for bad, message in [([1, 2, 3], "4 counts"), ({"COVID": 1}, "missing"), ([1, 2, 3, 0], "per_class")]:
        with pytest.raises(DatasetError, match=message):
            phantoms.class_counts(bad)


def _lines_on_full_canvas(size, lines, thickness):
    """Reference: each line on its own full-size canvas, merged by maximum over the whole image."""
    canvas = np.zeros((size, size), np.float32)
    scale = size * 16
    for u0, v0, u1, v1, value in lines:
        layer = np.zeros_like(canvas)
        cv2.line(
            layer,
            (int(u0 * scale), int(v0 * scale)),
            (int(u1 * scale), int(v1 * scale)),
            1.0,
            thickness,
            cv2.LINE_AA,
            4,
        )
        canvas = np.maximum(canvas, layer * value)
    return canvas


@pytest.mark.parametrize("thickness", [1, 2, 4])
def test_lines_merged_in_their_boxes_equal_full_canvas_drawing(thickness):
    rng = np.random.default_rng(thickness)
    for size in (37, 96, 299):
        lines = [(*rng.uniform(-0.3, 1.3, 4), rng.uniform(0.05, 1.0)) for _ in range(30)]  # some leave the image
        np.testing.assert_array_equal(
            phantoms._draw_lines(size, lines, thickness), _lines_on_full_canvas(size, lines, thickness)
        )


def test_ellipse_on_its_window_equals_the_whole_grid():
    rng = np.random.default_rng(0)
    for size in (31, 128, 299):
        u, v = phantoms._grid(size, size)
        for _ in range(40):
            cx, cy = rng.uniform(-0.3, 1.3, 2)  # centres outside the image too
            rx, ry = rng.uniform(0.01, 0.6, 2)
            for edge in (0.0, 0.03, 0.2):
                _assert_ellipse_as_whole_grid(u, v, cx, cy, rx, ry, edge)
        # degenerate values: zero and negative radii, a centre on a pixel (0/0 = NaN there), a NaN centre
        for cx, cy, rx, ry in [(u[0, 5], 0.5, 0.0, 0.2), (0.5, v[3, 0], 0.2, 0.0), (u[0, 5], v[3, 0], 0.0, 0.0),
                               (0.4, 0.6, -0.2, 0.1), (np.nan, 0.5, 0.2, 0.2)]:  # fmt: skip
            for edge in (0.0, 0.1):
                _assert_ellipse_as_whole_grid(u, v, float(cx), float(cy), rx, ry, edge)


def _assert_ellipse_as_whole_grid(u, v, cx, cy, rx, ry, edge):
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
        full = (r <= 1.0) if edge == 0 else np.clip((1.0 + edge - r) / (2 * edge), 0.0, 1.0)
        got = phantoms._ellipse(u, v, cx, cy, rx, ry, edge)
    np.testing.assert_array_equal(got, full.astype(np.float32))  # NaN where the whole grid has NaN


def test_written_files_decode_to_the_rendered_arrays(tmp_path):
    root = phantoms.synthesize_dataset(tmp_path, per_class=2, image_size=64, mask_size=48, seed=3, progress=False)
    for name in CLASS_NAMES:
        arrays = phantoms.render_phantom(name, 3, 2, image_size=64, mask_size=48)
        for sub, key in (("images", "image"), ("masks", "lung_mask"), ("lesion_masks", "lesion_mask")):
            decoded = cv2.imread(str(root / name / sub / f"{name}-2.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(decoded, arrays[key])
