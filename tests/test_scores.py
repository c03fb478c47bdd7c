"""Tests of helpers.metrics.aopc: AOPC by hand, bootstrap intervals, the AOPC report, the ablation."""

from __future__ import annotations

import numpy as np
import pytest
from test_perturbation import REGION
from test_reporting import _final, _report_case

from helpers.metrics import aopc as scores
from helpers.metrics import intervals, perturbation


def test_aopc_hand_computed():
    curves = np.array([[1.0, 0.5, 0.25], [0.8, 0.8, 0.0]])
    result = scores.aopc(curves)
    # image 0: L=1 (0.5)/2, L=2 (0.5 + 0.75)/3; image 1: L=1 0/2, L=2 (0 + 0.8)/3
    np.testing.assert_allclose(result["per_image"], [[0, 0.25, 1.25 / 3], [0, 0, 0.8 / 3]])
    np.testing.assert_allclose(result["aopc"], [0, 0.125, (1.25 + 0.8) / 6])
    assert result["final"] == pytest.approx((1.25 + 0.8) / 6) and result["n_images"] == 2
    masked = scores.aopc(curves, mask=np.array([True, False]))
    np.testing.assert_allclose(masked["aopc"], [0, 0.25, 1.25 / 3])
    assert masked["indices"].tolist() == [0]


def test_masks_and_paired_difference():
    predicted, labels = np.array([0, 1, 2, 1]), np.array([0, 1, 1, 1])
    other = np.array([0, 2, 1, 1])
    a_ok, b_ok = scores.correct_mask(predicted, labels), scores.correct_mask(other, labels)
    assert a_ok.tolist() == [True, True, False, True]
    assert scores.common_mask(a_ok, b_ok).tolist() == [True, False, False, True]
    rng = np.random.default_rng(0)
    ca, cb = rng.random((4, 5)), rng.random((4, 5))
    both = scores.common_mask(a_ok, b_ok)
    diff = scores.paired_difference(ca, cb, both, n_boot=200)
    assert diff["final"] == pytest.approx(scores.aopc(ca, both)["final"] - scores.aopc(cb, both)["final"])
    assert diff["final_low"] <= diff["final"] <= diff["final_high"] and diff["n_images"] == 2


def test_bootstrap_interval():
    values = np.random.default_rng(3).normal(0.5, 0.2, 400)
    ci = intervals.bootstrap_ci(values, n_boot=2000, seed=1)
    assert ci["low"] < ci["mean"] < ci["high"] and ci["mean"] == pytest.approx(values.mean())
    # width matches the normal-theory interval 2 * 1.96 * sd / sqrt(n) within 15 %
    expected = 2 * 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert abs((ci["high"] - ci["low"]) / expected - 1) < 0.15
    assert ci == intervals.bootstrap_ci(values, n_boot=2000, seed=1)
    assert ci["low"] != intervals.bootstrap_ci(values, n_boot=2000, seed=2)["low"]
    # a 2-D input gives per-column intervals, column 1 equal to the 1-D call on the same resamples
    two = intervals.bootstrap_ci(np.stack([values * 2, values], axis=1), n_boot=2000, seed=1)
    assert two["low"][1] == pytest.approx(ci["low"]) and two["high"][0] == pytest.approx(2 * ci["high"])
    summary = scores.aopc_summary(np.random.default_rng(0).random((30, 6)), n_boot=300)
    assert np.all(summary["aopc_low"] <= summary["aopc"] + 1e-12) and np.all(
        summary["aopc"] <= summary["aopc_high"] + 1e-12
    )


def test_paired_difference_of_morf_minus_random_between_models():
    curves, masks = _report_case()
    report = scores.aopc_report(curves, masks, n_boot=300)
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
        _final(curves["vgg16"]["random"], both) - _final(curves["densenet201"]["random"], both)
    )
    # bootstrap over images: per-image contrasts resampled together, so the same interval as a 1-D bootstrap of them
    per_image = [(c["morf"][both] - c["random"][both]) for c in (curves["vgg16"], curves["densenet201"])]
    values = [((x[:, :1] - x).sum(axis=1) / x.shape[1]) for x in per_image]
    ci = intervals.bootstrap_ci(values[0] - values[1], n_boot=300, seed=0)
    assert d["final_low"] == pytest.approx(ci["low"]) and d["final_high"] == pytest.approx(ci["high"])
    with pytest.raises(ValueError, match="one shape"):
        scores.paired_contrast_difference(np.ones((3, 4)), np.ones((3, 4)), np.ones((3, 5)), np.ones((3, 5)))


def test_perturbation_ablation_on_the_toy_model(toy):
    t = toy
    settings = [("mean", 0.1), ("mean", 0.3), ("gaussian", 0.5), ("blur", 0.1)]
    rows = scores.perturbation_ablation(
        t["model"],
        t["images"],
        t["heatmaps"],
        t["classes"],
        REGION,
        settings,
        batch_size=130,
        n_boot=200,
        progress=False,
    )
    assert [r["setting"] for r in rows] == ["mean", "gaussian σ=0.5", "blur σ=1 px"]  # sigma unused by mean: run once
    mean_row = rows[0]
    curves = perturbation.morf_curves(
        t["model"], t["images"], t["heatmaps"], t["classes"], REGION, "mean", progress=False
    )
    # the ablation scored at batch size 130, morf_curves at its default: float32 probabilities of another batch
    # shape may differ in the last bits, and AOPC averages them, so 1e-6 covers that noise many times over
    assert mean_row["aopc_morf"] == pytest.approx(scores.aopc(curves)["final"], rel=0, abs=1e-6)
    assert mean_row["morf_minus_random_low"] > 0  # the ideal heatmap beats a random order
    # the mean of per-image differences against the difference of the means: float64 rounding only
    assert mean_row["morf_minus_random"] == pytest.approx(
        mean_row["aopc_morf"] - mean_row["aopc_random"], rel=0, abs=1e-12
    )


def test_ablation_reuses_precomputed_curves(toy, monkeypatch):
    t = toy
    settings = [("mean", 0.1), ("gaussian", 0.5)]
    args = (t["model"], t["images"], t["heatmaps"], t["classes"], REGION, settings)
    fresh = scores.perturbation_ablation(*args, batch_size=130, n_boot=200, progress=False)
    given = {
        o: perturbation.morf_curves(
            t["model"],
            t["images"],
            t["heatmaps"] if o == "morf" else None,
            t["classes"],
            REGION,
            "gaussian",
            sigma=0.5,
            order=o,
            progress=False,
        )
        for o in ("morf", "random")
    }
    scored, summarised = [], []
    real = scores.perturbation_curves
    monkeypatch.setattr(
        scores, "perturbation_curves", lambda *a, **k: scored.append(k["perturbation"]) or real(*a, **k)
    )
    real_summary = scores.aopc_summary
    monkeypatch.setattr(scores, "aopc_summary", lambda c, *a, **k: summarised.append(c) or real_summary(c, *a, **k))
    reused = scores.perturbation_ablation(
        *args, batch_size=130, n_boot=200, progress=False, precomputed={("gaussian", 0.5): given}
    )
    assert scored == ["mean", "mean"]  # the Gaussian setting was not scored again
    # the given arrays themselves were summarised, as they are: the Gaussian row is exactly their AOPC
    assert [c is given[o] for c, o in zip(summarised[2:], ("morf", "random"))] == [True, True]
    gaussian = reused[1]
    assert gaussian["aopc_morf"] == real_summary(given["morf"], None, 200, 0)["final"]
    assert gaussian["aopc_random"] == real_summary(given["random"], None, 200, 0)["final"]
    assert reused[0] == fresh[0]  # the mean setting: the same computation run again
    # the given curves were scored at morf_curves' default batch size, the fresh ones at 130: float32
    # probabilities of another batch shape may differ in the last bits (6e-10 seen on an AVX2 CPU), and AOPC,
    # its interval bounds and the MoRF - random contrast are averages of them, so 1e-6 is far above that noise
    # and far below any difference between settings
    assert rows_close(gaussian, fresh[1], abs_tol=1e-6)
    with pytest.raises(ValueError, match="precomputed curves"):
        scores.perturbation_ablation(*args, progress=False, precomputed={("gaussian", 0.5): {"morf": given["morf"]}})
    # orders {"morf", "lerf"} (no random baseline): a clear error up front, not KeyError 'random'
    morf_lerf = {"morf": given["morf"], "lerf": given["morf"]}
    with pytest.raises(ValueError, match=r"need 'morf' and 'random'.*\['lerf', 'morf'\]"):
        scores.perturbation_ablation(*args, progress=False, precomputed={("gaussian", 0.5): morf_lerf})


def rows_close(row: dict, other: dict, abs_tol: float) -> bool:
    """Two ablation rows: the same keys, labels and counts, and every float within ``abs_tol``."""
    assert row.keys() == other.keys()
    for key, value in row.items():
        if isinstance(value, float):
            assert value == pytest.approx(other[key], rel=0, abs=abs_tol), key
        else:
            assert value == other[key], key
    return True


def test_sample_indices():
    mask = np.arange(20) % 3 == 0
    picked = scores.sample_indices(mask, 4, seed=1)
    assert len(picked) == 4 and np.all(mask[picked]) and np.all(np.diff(picked) > 0)
    assert np.array_equal(picked, scores.sample_indices(mask, 4, seed=1))
    assert np.array_equal(scores.sample_indices(mask, 0), np.flatnonzero(mask))
