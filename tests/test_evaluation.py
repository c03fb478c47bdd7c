"""Tests for helpers.evaluation: metrics against a hand computation and scikit-learn, figures, files."""

import matplotlib
import numpy as np
import pytest
from sklearn.metrics import classification_report

from helpers import config, evaluation, models

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


def test_metrics_match_scikit_learn_on_random_predictions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    scores = rng.random((300, 4))
    m = evaluation.classification_metrics(labels, scores, config.CLASS_NAMES)
    ref = classification_report(labels, scores.argmax(1), labels=range(4), target_names=config.CLASS_NAMES,
                                output_dict=True, zero_division=0)
    for name in config.CLASS_NAMES:
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")):
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


def test_tables_and_figures():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 60)
    a = evaluation.classification_metrics(labels, rng.random((60, 4)), config.CLASS_NAMES)
    b = evaluation.classification_metrics(labels, one_hot_scores(labels), config.CLASS_NAMES)
    frame = evaluation.report_frame(a)
    assert list(frame.index) == [*config.CLASS_NAMES, "accuracy", "macro avg", "weighted avg"]
    assert frame.loc["accuracy", "f1"] == pytest.approx(a["accuracy"])
    assert evaluation.summary_row("vgg16", a)["macro_recall"] == pytest.approx(a["macro_avg"]["recall"])
    fig = evaluation.plot_classification_report(a, title="VGG16")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["precision", "recall", "F1"]
    assert fig.axes[0].get_title() == "VGG16"
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"{a['per_class']['COVID']['recall']:.2f}" in texts and str(a["n"]) in texts
    matplotlib.pyplot.close(fig)
    fig = evaluation.plot_confusion_matrices({"vgg16": a, "densenet201": b})
    assert len([ax for ax in fig.axes if ax.images]) == 2
    matplotlib.pyplot.close(fig)


def test_report_figure_numbers():
    m = evaluation.classification_metrics(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 2]), config.CLASS_NAMES)
    fig = evaluation.plot_classification_report(m, title="vgg16 on the test set", figure=4)
    assert fig.axes[0].get_title() == "Figure 4: vgg16 on the test set"
    matplotlib.pyplot.close(fig)


def test_compact_comparison_against_hand_values():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    a = evaluation.classification_metrics(labels, np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 1]), NAMES)
    b = evaluation.classification_metrics(labels, labels, NAMES)
    table = evaluation.compact_comparison({"vgg16": a, "densenet201": b}, paper={"vgg16": {"recall": 0.86, "f1": 0.85}})
    assert list(table.index) == [*NAMES, "macro avg", "macro avg, paper", "accuracy"]
    assert list(table.columns) == [("vgg16", "recall"), ("vgg16", "F1"), ("densenet201", "recall"), ("densenet201", "F1")]
    # Recall and F1 of class b by hand: TP 1 of 2 actual, 3 predicted.
    assert table.loc["b", ("vgg16", "recall")] == pytest.approx(1 / 2)
    assert table.loc["b", ("vgg16", "F1")] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert table.loc["macro avg", ("vgg16", "recall")] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4 + 0) / 4)
    assert table.loc["accuracy", ("vgg16", "F1")] == pytest.approx(6 / 10)
    assert np.isnan(table.loc["accuracy", ("vgg16", "recall")])
    assert table.loc["macro avg, paper", ("vgg16", "F1")] == 0.85
    assert table.loc["macro avg, paper"].isna().sum() == 2  # densenet201 has no paper value here
    assert (table[("densenet201", "F1")].dropna() == 1.0).all()
    plain = evaluation.compact_comparison({"vgg16": a})
    assert "macro avg, paper" not in plain.index and len(plain) == len(NAMES) + 2
    with pytest.raises(ValueError, match="empty"):
        evaluation.compact_comparison({})
    other = evaluation.classification_metrics(labels, labels, ["w", "x", "y", "z"])
    with pytest.raises(ValueError, match="different class names"):
        evaluation.compact_comparison({"vgg16": a, "densenet201": other})


def test_paper_comparison_caveat():
    assert evaluation.paper_comparison_caveat("paper") == ""
    for profile in ("demo", "smoke", "unit"):
        caveat = evaluation.paper_comparison_caveat(profile)
        assert f"'{profile}'" in caveat and "not comparable" in caveat and "phantoms" in caveat
    with pytest.raises(ValueError, match="profile"):
        evaluation.paper_comparison_caveat("")
    assert evaluation.PAPER_RESULTS == {"vgg16": {"recall": 0.86, "f1": 0.86}, "densenet201": {"recall": 0.88, "f1": 0.88}}


def test_predictions_and_metrics_files_round_trip(tmp_path):
    paths = config.study_paths("unit", work_dir=tmp_path)
    probs = np.random.default_rng(2).random((7, 4)).astype(np.float32)
    labels = np.arange(7) % 4
    path = evaluation.save_predictions(paths, "vgg16", probs, labels)
    assert path == paths.processed / "predictions_vgg16.npz"
    loaded = evaluation.load_predictions(paths, "vgg16")
    np.testing.assert_array_equal(loaded["probabilities"], probs)
    np.testing.assert_array_equal(loaded["labels"], labels)
    np.testing.assert_array_equal(loaded["predicted"], probs.argmax(1))
    metrics = evaluation.classification_metrics(labels, probs, config.CLASS_NAMES)
    assert evaluation.save_metrics(paths, "vgg16", metrics) == paths.metrics / "classification_vgg16.json"
    assert evaluation.load_metrics(paths, "vgg16")["per_class"] == metrics["per_class"]  # JSON floats round-trip exactly
    with pytest.raises(FileNotFoundError, match="predictions_densenet201"):
        evaluation.load_predictions(paths, "densenet201")
