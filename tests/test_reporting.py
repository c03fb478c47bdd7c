"""Tests of helpers.report.tables: tables, computed conclusions and the study summary."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from test_evaluation import NAMES

from helpers.metrics import aopc as scores
from helpers.metrics import intervals
from helpers.models import classification as evaluation
from helpers.report import tables as reporting
from helpers.report import verdicts
from helpers.study import files as study

matplotlib.use("Agg")


def test_compact_comparison_against_hand_values():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    a = evaluation.classification_metrics(labels, np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 1]), NAMES)
    b = evaluation.classification_metrics(labels, labels, NAMES)
    table = reporting.compact_comparison({"vgg16": a, "densenet201": b}, paper={"vgg16": {"recall": 0.86, "f1": 0.85}})
    assert list(table.index) == [*NAMES, "macro avg", "macro avg, paper", "accuracy"]
    assert list(table.columns) == [
        ("vgg16", "recall"),
        ("vgg16", "F1"),
        ("densenet201", "recall"),
        ("densenet201", "F1"),
    ]
    # Recall and F1 of class b by hand: TP 1 of 2 actual, 3 predicted.
    assert table.loc["b", ("vgg16", "recall")] == pytest.approx(1 / 2)
    assert table.loc["b", ("vgg16", "F1")] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert table.loc["macro avg", ("vgg16", "recall")] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4 + 0) / 4)
    assert table.loc["accuracy", ("vgg16", "F1")] == pytest.approx(6 / 10)
    assert np.isnan(table.loc["accuracy", ("vgg16", "recall")])
    assert table.loc["macro avg, paper", ("vgg16", "F1")] == 0.85
    assert table.loc["macro avg, paper"].isna().sum() == 2  # densenet201 has no paper value here
    assert (table[("densenet201", "F1")].dropna() == 1.0).all()
    plain = reporting.compact_comparison({"vgg16": a})
    assert "macro avg, paper" not in plain.index and len(plain) == len(NAMES) + 2
    with pytest.raises(ValueError, match="empty"):
        reporting.compact_comparison({})
    other = evaluation.classification_metrics(labels, labels, ["w", "x", "y", "z"])
    with pytest.raises(ValueError, match="different class names"):
        reporting.compact_comparison({"vgg16": a, "densenet201": other})


def test_paper_comparison_caveat():
    assert reporting.paper_comparison_caveat("paper") == ""
    for profile in ("demo", "smoke", "unit"):
        caveat = reporting.paper_comparison_caveat(profile)
        assert f"'{profile}'" in caveat and "not comparable" in caveat and "phantoms" in caveat
    with pytest.raises(ValueError, match="profile"):
        reporting.paper_comparison_caveat("")
    assert reporting.PAPER_RESULTS == {
        "vgg16": {"recall": 0.86, "f1": 0.86},
        "densenet201": {"recall": 0.88, "f1": 0.88},
    }


def _report_case():
    """Random curves for two models with overlapping correct masks (6, 6 of 8; 4 in common)."""
    rng = np.random.default_rng(0)
    curves = {m: {o: rng.random((8, 5)) for o in ("morf", "random", "lerf")} for m in ("vgg16", "densenet201")}
    masks = {"vgg16": np.arange(8) < 6, "densenet201": np.arange(8) > 1}
    return curves, masks


def _final(curves, mask):
    """Independent AOPC after the last step: mean over the masked images of sum_k (f0 - fk) / (L+1)."""
    c = curves[mask]
    return float(np.mean((c[:, :1] - c).sum(axis=1) / c.shape[1]))


def _parse(cell):
    """'value [low, high]' -> (value, low, high)."""
    value, rest = cell.split(" [")
    low, high = rest.rstrip("]").split(", ")
    return float(value), float(low), float(high)


def test_report_and_summary(tmp_path):

    curves, masks = _report_case()
    report = scores.aopc_report(curves, masks, n_boot=100)
    assert report["paired"]["n_images"] == 4
    assert report["models"]["vgg16"]["selection"] == "correctly classified"
    # a model with no correctly classified image falls back to all images, and says so
    fallback = scores.aopc_report(curves, {"vgg16": np.zeros(8, bool), "densenet201": masks["densenet201"]}, n_boot=50)
    assert fallback["models"]["vgg16"]["morf"]["n_images"] == 8 and "paired" not in fallback
    assert fallback["models"]["vgg16"]["selection"].startswith("all images")
    assert report["models"]["vgg16"]["morf"]["n_images"] == 6
    labels = np.repeat(np.arange(4), 10)
    wrong = labels.copy()
    wrong[:3] = 1  # vgg16 misses 3 of the 10 COVID images
    classification = intervals.classification_intervals(
        labels, {"vgg16": wrong, "densenet201": labels}, NAMES, n_boot=200
    )
    rows = verdicts.summary_rows(report, classification)
    assert [r["model"] for r in rows] == ["vgg16", "densenet201"]
    value, low, high = _parse(rows[0]["macro test recall [95% CI]"])
    assert value == pytest.approx(0.925, abs=6e-4) and low < value <= high
    assert _parse(rows[1]["macro test F1 [95% CI]"]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="classification_intervals"):
        verdicts.summary_rows(report, {"vgg16": {"recall": 0.9, "f1": 0.9}})
    # MoRF - random and MoRF - LeRF equal differences of independently computed AOPC finals on the same images
    for row in rows:
        name, mask = row["model"], masks[row["model"]]
        morf = _final(curves[name]["morf"], mask)
        assert _parse(row["AOPC (MoRF) [95% CI]"])[0] == pytest.approx(morf, abs=6e-4)
        assert _parse(row["random-order AOPC [95% CI]"])[0] == pytest.approx(
            _final(curves[name]["random"], mask), abs=6e-4
        )
        value, low, high = _parse(row["MoRF − random [95% CI]"])
        assert value == pytest.approx(morf - _final(curves[name]["random"], mask), abs=6e-4) and low <= value <= high
        assert _parse(row["MoRF − LeRF [95% CI]"])[0] == pytest.approx(
            morf - _final(curves[name]["lerf"], mask), abs=6e-4
        )
        assert row["images"] == 6
    paths = study.study_paths("unit", work_dir=tmp_path, report_dir=tmp_path / "report")
    written = verdicts.write_summary(paths, rows, report, classification=classification)
    text = written["markdown"].read_text()
    assert text.startswith("# Study summary (unit profile)\n") and "Profile:" not in text
    assert (
        "| model | macro test recall [95% CI] | macro test F1 [95% CI] |" in text and "MoRF − random [95% CI]" in text
    )
    assert "| recall a [95% CI] |" in text and "Paired comparison of vgg16 and densenet201" in text
    assert f"{report['models']['vgg16']['morf']['final']:.3f}" in text
    heat = report["paired"]["morf_minus_random_difference"]
    assert f"paired difference vgg16 − densenet201 = {heat['final']:.3f}" in text
    assert "The heatmaps are measured by MoRF − random" in text
    saved = study.load_json(written["json"])
    assert saved["rows"][1]["model"] == "densenet201"
    assert saved["aopc"]["vgg16"]["morf"]["final"] == pytest.approx(report["models"]["vgg16"]["morf"]["final"])
    assert saved["aopc"]["vgg16"]["morf_minus_lerf"]["final"] == pytest.approx(
        report["models"]["vgg16"]["morf_minus_lerf"]["final"]
    )
    assert saved["paired_difference"]["n_images"] == 4
    assert saved["classification"]["models"]["vgg16"]["per_class_recall"]["a"]["estimate"] == pytest.approx(0.7)
    assert saved["paired_morf_minus_random_difference"]["final"] == pytest.approx(heat["final"])


def test_aopc_and_ablation_tables():
    curves, masks = _report_case()
    report = scores.aopc_report(curves, masks, n_boot=100)
    rows = reporting.aopc_table(report)
    assert [r["model"] for r in rows] == ["vgg16", "densenet201", "vgg16 − densenet201 (paired, both correct)"]
    assert _parse(rows[0]["LeRF AOPC [95% CI]"])[0] == pytest.approx(
        _final(curves["vgg16"]["lerf"], masks["vgg16"]), abs=6e-4
    )
    both = masks["vgg16"] & masks["densenet201"]
    paired = rows[2]
    assert paired["images"] == 4
    assert _parse(paired["AOPC (MoRF) [95% CI]"])[0] == pytest.approx(
        _final(curves["vgg16"]["morf"], both) - _final(curves["densenet201"]["morf"], both), abs=6e-4
    )
    heat = [_final(curves[m]["morf"], both) - _final(curves[m]["random"], both) for m in ("vgg16", "densenet201")]
    assert _parse(paired["MoRF − random [95% CI]"])[0] == pytest.approx(heat[0] - heat[1], abs=6e-4)
    ablation = [
        {
            "model": "m",
            "setting": "mean",
            "aopc_morf": 0.4,
            "aopc_random": 0.1,
            "morf_minus_random": 0.3,
            "morf_minus_random_low": 0.2,
            "morf_minus_random_high": 0.35,
            "n_images": 7,
            "level": 0.9,
        }
    ]
    table = reporting.ablation_table(ablation)
    assert table == [
        {
            "model": "m",
            "perturbation": "mean",
            "AOPC (MoRF)": 0.4,
            "random-order AOPC": 0.1,
            "MoRF − random [90% CI]": "0.300 [0.200, 0.350]",
            "images": 7,
        }
    ]
    tiny = reporting.ablation_table([{**ablation[0], "morf_minus_random": -1e-6, "morf_minus_random_low": -0.02}])
    assert tiny[0]["MoRF − random [90% CI]"] == "0.000 [-0.020, 0.350]"


def _conclusion_report(morf_a, morf_b, rand_a, rand_b, n=40, steps=5, seed=0):
    """aopc_report of :func:`_conclusion_curves` with every image correct."""
    curves = _conclusion_curves(morf_a, morf_b, rand_a, rand_b, n, steps, seed)
    return scores.aopc_report(curves, {m: np.ones(n, bool) for m in curves}, n_boot=300)


def _conclusion_curves(morf_a, morf_b, rand_a, rand_b, n=40, steps=5, seed=0):
    """Two models whose per-image curves give AOPC finals near the given values (small per-image noise)."""
    rng = np.random.default_rng(seed)

    def curves_with(final):
        # f0 = 1, f_k = 1 - d for k >= 1 gives AOPC = L * d / (L + 1)
        d = final * steps / (steps - 1) + rng.normal(0, 0.01, n)
        c = np.ones((n, steps))
        c[:, 1:] -= d[:, None]
        return c

    curves = {
        "vgg16": {"morf": curves_with(morf_a), "random": curves_with(rand_a)},
        "densenet201": {"morf": curves_with(morf_b), "random": curves_with(rand_b)},
    }
    return curves


def _classification(errors_a, errors_b, n_per_class=50, n_boot=500):
    """classification_intervals of vgg16 and densenet201 missing the first ``errors_*`` images of class 1."""
    labels = np.repeat(np.arange(4), n_per_class)
    predictions = {}
    for name, k in (("vgg16", errors_a), ("densenet201", errors_b)):
        pred = labels.copy()
        pred[np.flatnonzero(labels == 1)[:k]] = 0
        predictions[name] = pred
    return intervals.classification_intervals(labels, predictions, NAMES, n_boot=n_boot)


def test_conclusions_follow_the_numbers():
    low, high = _classification(25, 5), _classification(5, 25)  # densenet201 better / vgg16 better
    # densenet201: clearly better recall, higher AOPC and larger MoRF - random -> the claim holds
    report = _conclusion_report(0.45, 0.49, 0.30, 0.30)
    c = verdicts.aopc_conclusions(report, low)
    assert c["verdict"] == "holds" and c["better_generalizing"] == "densenet201" == c["better_aopc"]
    assert c["better_heatmaps"] == "densenet201" and c["models"] == ["vgg16", "densenet201"]
    assert c["recall_difference"] == {k: low["recall_difference"][k] for k in ("estimate", "low", "high")}
    assert c["recall_difference"]["high"] < 0
    assert c["sentences"][0].startswith("The paper's claim (the better-generalizing model has the better AOPC) holds")
    assert c["reason"] in c["sentences"][0] and "excludes 0" in c["reason"]
    # swap the models' accuracy: the verdict flips
    swapped = verdicts.aopc_conclusions(report, high)
    assert swapped["verdict"] == "does not hold" and swapped["better_generalizing"] == "vgg16"
    assert "does not hold on this run" in swapped["sentences"][0]
    # swap the models' AOPC numbers instead: the verdict flips too
    mirrored = verdicts.aopc_conclusions(_conclusion_report(0.49, 0.45, 0.30, 0.30), low)
    assert mirrored["verdict"] == "does not hold" and mirrored["better_aopc"] == "vgg16"
    # the demo's case: 3 misclassified of 200 (1.000 vs 0.985) is within sampling error -> cannot be judged
    demo = _classification(3, 0)
    assert demo["recall_difference"]["estimate"] == pytest.approx(0.015 * -1)
    tie = verdicts.aopc_conclusions(report, demo)
    assert tie["verdict"] == "cannot be judged" and tie["better_generalizing"] is None
    assert "includes 0, so neither model generalizes distinguishably better" in tie["reason"]
    # recall decided but AOPC difference within noise: cannot be judged either, better_aopc None
    close = verdicts.aopc_conclusions(_conclusion_report(0.450, 0.451, 0.30, 0.30), low)
    assert close["verdict"] == "cannot be judged" and close["better_aopc"] is None
    assert close["better_generalizing"] == "densenet201" and "paired AOPC difference" in close["reason"]
    # higher AOPC only from noise sensitivity: raw AOPC says densenet201, MoRF - random says vgg16
    confounded_report = _conclusion_report(0.10, 0.60, 0.02, 0.55)
    confounded = verdicts.aopc_conclusions(confounded_report, low)
    assert confounded["verdict"] == "holds" and confounded["better_heatmaps"] == "vgg16"
    text = " ".join(confounded["sentences"])
    assert "confounded" in text and "not the better-generalizing model's" in text
    for name in ("vgg16", "densenet201"):  # the random-order AOPCs are quoted
        final = _final(_conclusion_curves(0.10, 0.60, 0.02, 0.55)[name]["random"], np.ones(40, bool))
        assert f"{name} {final:.3f}" in text
    # a heatmap no better than random is called so
    flat = verdicts.aopc_conclusions(_conclusion_report(0.30, 0.40, 0.30, 0.30), low)
    assert "vgg16 " in flat["sentences"][-1] and "(no better than a random order)" in flat["sentences"][-1]
    assert set(verdicts.VERDICTS) >= {c["verdict"], swapped["verdict"], tie["verdict"]}
    with pytest.raises(ValueError, match="classification_intervals"):
        verdicts.aopc_conclusions(report, {"vgg16": {"recall": 0.9}})
    reversed_pair = intervals.classification_intervals(
        np.zeros(4, int), {"densenet201": np.zeros(4, int), "vgg16": np.zeros(4, int)}, NAMES, n_boot=10
    )
    with pytest.raises(ValueError, match="compares"):
        verdicts.aopc_conclusions(report, reversed_pair)


def test_aopc_report_names_its_pair_and_rejects_more_than_two():
    curves, masks = _report_case()
    three = {**curves, "third": curves["vgg16"]}
    masks3 = {**masks, "third": masks["vgg16"]}
    with pytest.raises(ValueError, match="compares two models, got 3"):
        scores.aopc_report(three, masks3, n_boot=20)
    report = scores.aopc_report(three, masks3, n_boot=20, compare=("third", "densenet201"))
    assert report["paired"]["models"] == ["third", "densenet201"] and set(report["models"]) == set(three)
    # MoRF and LeRF only: no random baseline anywhere, and nothing asks for one
    no_random = {m: {o: c[o] for o in ("morf", "lerf")} for m, c in curves.items()}
    r = scores.aopc_report(no_random, masks, n_boot=20)
    assert "morf_minus_random" not in r["models"]["vgg16"] and "morf_minus_lerf" in r["models"]["vgg16"]
    conclusions = verdicts.aopc_conclusions(r, _classification(3, 0, n_boot=50))
    assert not any("random order" in s for s in conclusions["sentences"])
    assert reporting.aopc_table(r) and verdicts.paired_sentences(r)


def test_a_handful_of_images_decides_nothing():
    # one image in common: its bootstrap interval is a point, which must not crown a model
    curves, masks = _report_case()
    report = scores.aopc_report(curves, masks, n_boot=50)
    assert report["paired"]["n_images"] == 4
    c = verdicts.aopc_conclusions(report, _classification(2, 0, n_per_class=2, n_boot=50))  # 8 test images
    assert c["verdict"] == "cannot be judged" and c["better_generalizing"] is None
    assert c["better_aopc"] is None and c["better_heatmaps"] is None
    assert "too few for an interval" in c["reason"]
