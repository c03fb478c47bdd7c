"""Tests of helpers.metrics.intervals: stratified bootstrap, classification intervals against sklearn, the interval rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score

from helpers.metrics import intervals

NAMES = ["a", "b", "c", "d"]


def _case(n_per_class=50, errors=(3, 0), seed=0):
    """Balanced labels; model 0 misclassifies ``errors[0]`` images of class 1, model 1 ``errors[1]`` of class 2."""
    labels = np.repeat(np.arange(4), n_per_class)
    rng = np.random.default_rng(seed)
    predictions = {}
    for name, cls, k in (("vgg16", 1, errors[0]), ("densenet201", 2, errors[1])):
        pred = labels.copy()
        wrong = rng.choice(np.flatnonzero(labels == cls), size=k, replace=False)
        pred[wrong] = (cls + 1) % 4
        predictions[name] = pred
    return labels, predictions


def test_stratified_indices_keep_class_counts_and_are_seeded():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    draws = intervals.stratified_bootstrap_indices(labels, n_boot=50, seed=3)
    assert draws.shape == (50, 10)
    assert (labels[draws] == labels[None, :]).all()  # every position keeps its class: supports fixed
    assert np.array_equal(draws, intervals.stratified_bootstrap_indices(labels, n_boot=50, seed=3))
    assert not np.array_equal(draws, intervals.stratified_bootstrap_indices(labels, n_boot=50, seed=4))
    assert len(np.unique(draws[:, :3])) == 3  # class 0 draws only its own three images
    with pytest.raises(ValueError):
        intervals.stratified_bootstrap_indices(np.array([]), 10)


def test_classification_intervals_equal_a_per_resample_sklearn_loop():
    labels, predictions = _case(n_per_class=12, errors=(4, 2))
    rng = np.random.default_rng(1)
    predictions["vgg16"][rng.choice(48, 6, replace=False)] = rng.integers(0, 4, 6)  # errors in every class
    n_boot, level = 300, 0.9
    out = intervals.classification_intervals(labels, predictions, NAMES, n_boot=n_boot, seed=7, level=level)
    draws = intervals.stratified_bootstrap_indices(labels, n_boot, seed=7)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    boot, boot_f1 = {}, {}
    for name, pred in predictions.items():
        entry = out["models"][name]
        assert entry["macro_recall"]["estimate"] == pytest.approx(recall_score(labels, pred, average="macro"))
        assert entry["macro_f1"]["estimate"] == pytest.approx(f1_score(labels, pred, average="macro", zero_division=0))
        rec = np.array([recall_score(labels[d], pred[d], average="macro") for d in draws])
        f1 = np.array([f1_score(labels[d], pred[d], average="macro", zero_division=0) for d in draws])
        per_class = np.array([recall_score(labels[d], pred[d], average=None, labels=range(4)) for d in draws])
        boot[name], boot_f1[name] = rec, f1
        assert [entry["macro_recall"]["low"], entry["macro_recall"]["high"]] == pytest.approx(np.quantile(rec, q))
        assert [entry["macro_f1"]["low"], entry["macro_f1"]["high"]] == pytest.approx(np.quantile(f1, q))
        for k, c in enumerate(NAMES):
            e = entry["per_class_recall"][c]
            assert e["estimate"] == pytest.approx(np.mean(pred[labels == k] == k))
            assert [e["low"], e["high"]] == pytest.approx(np.quantile(per_class[:, k], q))
    diff = out["recall_difference"]
    assert out["compared"] == ["vgg16", "densenet201"]
    assert diff["estimate"] == pytest.approx(
        recall_score(labels, predictions["vgg16"], average="macro")
        - recall_score(labels, predictions["densenet201"], average="macro")
    )
    assert [diff["low"], diff["high"]] == pytest.approx(np.quantile(boot["vgg16"] - boot["densenet201"], q))
    f1_diff = out["f1_difference"]  # the same resamples, macro F1 (sklearn's definition)
    assert f1_diff["estimate"] == pytest.approx(
        f1_score(labels, predictions["vgg16"], average="macro", zero_division=0)
        - f1_score(labels, predictions["densenet201"], average="macro", zero_division=0)
    )
    assert [f1_diff["low"], f1_diff["high"]] == pytest.approx(np.quantile(boot_f1["vgg16"] - boot_f1["densenet201"], q))


def test_three_errors_in_200_do_not_decide_but_many_do():
    # the demo's case: 1.000 vs 0.985 on 200 images is within sampling error
    labels, predictions = _case(errors=(3, 0))
    out = intervals.classification_intervals(labels, predictions, NAMES)
    d = out["recall_difference"]
    assert d["estimate"] == pytest.approx(-0.015)
    assert intervals.interval_sign(d["low"], d["high"]) == 0
    # 25 errors in one class of 50: vgg16 is clearly worse
    labels, predictions = _case(errors=(25, 0))
    d = intervals.classification_intervals(labels, predictions, NAMES)["recall_difference"]
    assert d["high"] < 0 and intervals.interval_sign(d["low"], d["high"]) == -1
    # identical predictions: a difference of exactly 0
    same = intervals.classification_intervals(labels, {"x": labels, "y": labels.copy()}, NAMES, n_boot=50)
    assert same["recall_difference"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}


def test_interval_covers_the_true_recall_difference_about_95_percent():
    # two models with known per-image error rates; the paired difference interval should cover the truth ~95%
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    p_wrong = {"x": 0.10, "y": 0.20}
    truth = 0.90 - 0.80  # expected macro recall of x minus that of y
    hits = 0
    trials = 120
    for t in range(trials):
        preds = {}
        for name, p in p_wrong.items():
            wrong = rng.random(labels.size) < p
            preds[name] = np.where(wrong, (labels + 1) % 4, labels)
        d = intervals.classification_intervals(labels, preds, NAMES, n_boot=400, seed=t)["recall_difference"]
        hits += d["low"] <= truth <= d["high"]
    assert 0.85 <= hits / trials <= 1.0


def test_more_than_two_models_need_compare():
    labels, predictions = _case(errors=(3, 1))
    three = {**predictions, "third": labels}
    with pytest.raises(ValueError, match="compares two models, got 3"):
        intervals.classification_intervals(labels, three, NAMES, n_boot=20)
    out = intervals.classification_intervals(labels, three, NAMES, n_boot=20, compare=("third", "vgg16"))
    assert out["compared"] == ["third", "vgg16"] and set(out["models"]) == set(three)
    with pytest.raises(ValueError, match="not among"):
        intervals.classification_intervals(labels, three, NAMES, n_boot=20, compare=("x", "vgg16"))
    one = intervals.classification_intervals(labels, {"vgg16": labels}, NAMES, n_boot=20)
    assert "recall_difference" not in one


def test_interval_sign_and_format():
    assert intervals.interval_sign(0.01, 0.2) == 1
    assert intervals.interval_sign(-0.2, -0.01) == -1
    assert intervals.interval_sign(0.0, 0.2) == 0 and intervals.interval_sign(-0.1, 0.1) == 0
    assert intervals.format_interval({"estimate": 0.5, "low": 0.25, "high": 0.75}) == "0.500 [0.250, 0.750]"


def test_too_few_images_decide_nothing():
    assert intervals.interval_sign(0.1, 0.2, n=intervals.MIN_IMAGES - 1) == 0
    assert intervals.interval_sign(0.1, 0.2, n=intervals.MIN_IMAGES) == 1
