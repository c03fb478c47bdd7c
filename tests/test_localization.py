"""Tests of helpers.metrics.energy (mask energy) by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.metrics import energy as localization
from helpers.report import heatmap_figures


def test_mask_energy_by_hand():
    heat = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    quadrant = np.zeros((4, 4), bool)
    quadrant[:2, :2] = True
    energy = localization.mask_energy(heat, quadrant)  # one mask for all, heatmaps upsampled to 4x4
    profile = np.array([1.0, 0.75, 0.25, 0.0])  # bilinear upsampling of [1, 0]
    assert energy[0] == pytest.approx(profile[:2].sum() ** 2 / profile.sum() ** 2)
    assert np.isnan(energy[1])
    assert energy[2] == pytest.approx(0.25)
    # Masks of another size (8x8, with a channel axis) are resampled to the requested size (nearest).
    big = np.repeat(np.repeat(quadrant, 2, 0), 2, 1)[None, ..., None].repeat(3, 0)
    np.testing.assert_allclose(localization.mask_energy(heat, big, size=4), energy, equal_nan=True)
    same = localization.mask_energy(heat, quadrant[::2, ::2][None].repeat(3, 0))  # at the heatmap grid: no upsampling
    np.testing.assert_allclose(same, [1.0, np.nan, 0.25], equal_nan=True)
    with pytest.raises(ValueError, match="masks must have shape"):
        localization.mask_energy(heat, np.zeros((2, 4, 4)))


def test_mask_energy_in_chunks_equals_the_whole_stack_at_once():
    """Chunks of 16 images: every share bitwise as one pass over the whole stack gives it."""
    import cv2

    from helpers.explain.maps import resize_stack, upsample

    rng = np.random.default_rng(3)
    heat = rng.normal(size=(300, 5, 5)).astype(np.float32)  # three upsampling groups, the last partial
    heat[7] = -1.0  # all zero after clipping: NaN
    masks = rng.random((300, 24, 24)) > 0.6
    for size in (None, 30):  # at the masks' size, and resampled (nearest) to another
        target = (24, 24) if size is None else (30, 30)
        inside = resize_stack(masks.astype(np.uint8), target, cv2.INTER_NEAREST).astype(bool)
        whole = np.maximum(upsample(heat, target), 0.0).astype(np.float64)
        total, within = whole.sum(axis=(1, 2)), (whole * inside).sum(axis=(1, 2))
        expected = np.where(total > 0, within / np.where(total > 0, total, 1.0), np.nan)
        got = localization.mask_energy(heat, masks, size=size)
        assert np.isnan(got[7]) and got.dtype == np.float64
        # exact on any CPU: both sides upsample in the same call and sum each image's float64 values in the same
        # contiguous reduction; the chunks only split the loop over images
        np.testing.assert_array_equal(got, expected)


def test_mask_energy_summary_by_hand():
    summary = localization.mask_energy_summary([0.2, 0.8, np.nan, 1.0], [0, 0, 1, 2], ("a", "b", "c"))
    assert summary["a"]["n"] == 2 and summary["a"]["mean"] == pytest.approx(0.5)
    assert summary["a"]["share_above_half"] == pytest.approx(0.5)
    assert summary["b"] == {
        "n": 1,
        "n_valid": 0,
        "mean": None,
        "median": None,
        "q25": None,
        "q75": None,
        "share_above_half": None,
    }
    assert summary["all"]["n_valid"] == 3 and summary["all"]["median"] == pytest.approx(0.8)
    json.dumps(summary)


def test_mask_energies_report_and_frame():
    heat = {"vgg16": np.array([[[1.0, 0.0], [0.0, 0.0]]] * 3), "densenet201": np.ones((3, 2, 2))}
    lesion = np.zeros((3, 2, 2), np.uint8)
    lesion[0, 0, 0] = lesion[2, 0, 0] = 1  # image 1 has no lesion
    lung = np.zeros((3, 2, 2), np.uint8)
    lung[:, :, 1] = 1  # right column
    energies = localization.mask_energies(heat, {"lesion": lesion, "lung": lung, "none": np.zeros_like(lung)})
    assert list(energies) == ["lesion", "lung"]  # a kind without any mask is left out
    # the chance level: a uniform map's energy is the mask's area share
    np.testing.assert_allclose(energies["lesion"].pop(localization.UNIFORM), [0.25, np.nan, 0.25], equal_nan=True)
    np.testing.assert_allclose(energies["lung"].pop(localization.UNIFORM), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(energies["lesion"]["vgg16"], [1.0, np.nan, 1.0], equal_nan=True)
    np.testing.assert_allclose(energies["lesion"]["densenet201"], [0.25, np.nan, 0.25], equal_nan=True)
    np.testing.assert_allclose(energies["lung"]["vgg16"], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(energies["lung"]["densenet201"], [0.5, 0.5, 0.5])
    report = localization.mask_energy_report(energies, np.array([0, 0, 1]), ("a", "b"))
    assert report["vgg16"]["lesion"]["a"]["n"] == 2 and report["vgg16"]["lesion"]["a"]["n_valid"] == 1
    assert report["densenet201"]["lung"]["b"]["mean"] == pytest.approx(0.5)
    frame = localization.mask_energy_frame(report)
    assert len(frame) == 2 * 2 * 3  # models x masks x (classes + all)
    row = frame[(frame.model == "densenet201") & (frame["mask"] == "lesion") & (frame["class"] == "a")].iloc[0]
    assert row["mean"] == pytest.approx(0.25) and row["n_valid"] == 1
    import matplotlib.pyplot as plt

    fig = heatmap_figures.plot_mask_energy(energies, np.array([0, 0, 1]), ("a", "b"))
    assert [ax.get_title() for ax in fig.axes] == [
        "Grad-CAM mass inside the lesion mask",
        "Grad-CAM mass inside the lung mask",
    ]
    plt.close(fig)


def test_mask_energy_comparisons_follow_the_interval_rule():
    n = 40
    labels = np.repeat(np.arange(4), 10)
    masks = np.zeros((n, 8, 8), np.uint8)
    masks[:, :4, :] = 1  # the top half: a uniform map puts 0.5 inside
    inside = np.zeros((n, 2, 2), np.float32)
    inside[:, 0, :] = 1.0  # all mass in the top row of the grid: mostly inside
    rng = np.random.default_rng(0)
    noisy = rng.random((n, 2, 2)).astype(np.float32)  # about half inside
    correct = np.arange(n) % 5 != 0  # 8 of every class
    energies = localization.mask_energies({"good": inside, "noisy": noisy}, {"lung": masks}, select={"good": correct})
    assert np.isnan(energies["lung"]["good"][~correct]).all() and np.isfinite(energies["lung"]["noisy"]).all()
    rows = localization.mask_energy_comparisons(energies, labels, ["a", "b", "c", "d"], n_boot=300)
    by = {(r["first"], r["second"], r["class"]): r for r in rows}
    good = by[("good", localization.UNIFORM, "all")]
    expected = energies["lung"]["good"][correct] - energies["lung"][localization.UNIFORM][correct]
    assert good["n"] == 32 and good["estimate"] == pytest.approx(expected.mean())
    assert good["reading"] == "more inside" and good["low"] > 0
    noisy_row = by[("noisy", localization.UNIFORM, "all")]
    assert noisy_row["n"] == 40 and noisy_row["low"] <= noisy_row["estimate"] <= noisy_row["high"]
    if noisy_row["low"] <= 0 <= noisy_row["high"]:
        assert noisy_row["reading"] == "not distinguishable"
    pair = by[("good", "noisy", "b")]
    assert pair["n"] == 8  # paired on the images valid for both
    with pytest.raises(ValueError, match="compares two models, got 3"):
        localization.mask_energy_comparisons(
            {"lung": {**energies["lung"], "third": energies["lung"]["noisy"]}}, labels, ["a", "b", "c", "d"], n_boot=20
        )
