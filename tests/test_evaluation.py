"""Tests of helpers.models.classification against hand computations and scikit-learn; picks of test images."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from sklearn.metrics import classification_report

from helpers.common import config
from helpers.models import classification as evaluation
from helpers.models import classifiers as models

matplotlib.use("Agg")


NAMES = ["a", "b", "c", "d"]


def one_hot_scores(predicted, n_classes=4):
    scores = np.full((len(predicted), n_classes), 0.1, dtype=np.float32)
    scores[np.arange(len(predicted)), predicted] = 0.7
    return scores


def test_metrics_match_a_hand_computation():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    predicted = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 1])
    m = evaluation.classification_metrics(labels, one_hot_scores(predicted), NAMES)
    # Class a: TP 2, predicted 3, actual 3. b: TP 1, predicted 3, actual 2. c: TP 3, predicted 4, actual 4.
    # d: TP 0, predicted 0, actual 1 (precision undefined -> 0).
    expected = {
        "a": (2 / 3, 2 / 3, 2 / 3, 3),
        "b": (1 / 3, 1 / 2, 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), 2),
        "c": (3 / 4, 3 / 4, 3 / 4, 4),
        "d": (0.0, 0.0, 0.0, 1),
    }
    for name, (p, r, f, s) in expected.items():
        got = m["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx((p, r, f, s))
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["macro_avg"]["recall"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4 + 0) / 4)
    assert m["weighted_avg"]["precision"] == pytest.approx((2 / 3 * 3 + 1 / 3 * 2 + 3 / 4 * 4 + 0) / 10)
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 1, 0, 0]]
    assert m["n"] == 10 and m["macro_avg"]["support"] == 10


def test_metrics_match_a_per_image_loop_and_scikit_learns_report_on_random_predictions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    scores = rng.random((300, 4))
    m = evaluation.classification_metrics(labels, scores, config.CLASS_NAMES)
    predicted = scores.argmax(1)
    for c, name in enumerate(config.CLASS_NAMES):  # counted image by image, independently of scikit-learn
        tp = sum(1 for y, p in zip(labels, predicted) if y == c and p == c)
        fp = sum(1 for y, p in zip(labels, predicted) if y != c and p == c)
        fn = sum(1 for y, p in zip(labels, predicted) if y == c and p != c)
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        got = m["per_class"][name]
        assert got["precision"] == pytest.approx(precision, abs=1e-15) and got["recall"] == pytest.approx(
            recall, abs=1e-15
        )
        assert got["f1"] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-15)
        assert got["support"] == tp + fn
    ref = classification_report(
        labels, scores.argmax(1), labels=range(4), target_names=config.CLASS_NAMES, output_dict=True, zero_division=0
    )
    for name in config.CLASS_NAMES:
        for ours, theirs in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1-score"),
            ("support", "support"),
        ):
            assert m["per_class"][name][ours] == pytest.approx(ref[name][theirs])
    assert m["accuracy"] == pytest.approx(ref["accuracy"])
    for avg in ("macro", "weighted"):
        assert m[f"{avg}_avg"]["f1"] == pytest.approx(ref[f"{avg} avg"]["f1-score"])
        assert m[f"{avg}_avg"]["recall"] == pytest.approx(ref[f"{avg} avg"]["recall"])
        for key in ("precision", "recall", "f1-score", "support"):  # the scikit-learn layout aliases
            assert m[f"{avg} avg"][key] == pytest.approx(ref[f"{avg} avg"][key])
    # Predicted indices give the same report as scores.
    assert evaluation.classification_metrics(labels, scores.argmax(1), config.CLASS_NAMES) == m


@pytest.mark.parametrize(
    "labels, scores, pattern",
    [
        (np.array([0, 1]), np.zeros((2, 3)), "columns"),
        (np.array([0, 5]), np.zeros((2, 4)), "class indices"),
        (np.array([0, 1, 2]), np.zeros((2, 4)), "equal length"),
        (np.zeros((2, 2)), np.zeros((2, 4)), "labels must be"),
    ],
)
def test_metrics_reject_bad_input(labels, scores, pattern):
    with pytest.raises(ValueError, match=pattern):
        evaluation.classification_metrics(labels, scores, NAMES)


def test_predict_probabilities_scales_uint8_in_batches():
    model = models.build_classifier("small_vgg", 32, weights=None, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 1), dtype=np.uint8)
    probs = evaluation.predict_probabilities(model, images, batch_size=2)
    assert probs.shape == (5, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, model.predict(images / 255.0, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        evaluation.predict_probabilities(model, images[:, :16, :16], batch_size=2)


def test_pick_common_example():
    labels = np.array([0, 0, 1, 0, 2])
    preds = {"a": np.array([0, 1, 0, 0, 0]), "b": np.array([1, 0, 0, 0, 0])}
    assert evaluation.pick_common_example(labels, preds, target=0) == (3, "correct")
    assert evaluation.pick_common_example(labels, {"a": np.array([1, 1, 0, 1, 1])}, target=0) == (2, "predicted")
    idx, how = evaluation.pick_common_example(labels, {"a": np.full(5, 2)}, target=1)
    assert (idx, how) == (2, "label")
    with pytest.raises(ValueError, match="class 3"):
        evaluation.pick_common_example(labels, preds, target=3)
