"""Notebook 08's step: Kendall's τ against scipy, the interval rule in its sentences, and the step on a fake study.

The fake study is the explorer's (tests/test_explorer.py: eight test images written through the study's own save
functions) plus two tiny classifiers saved as notebooks 03-04 save them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau
from test_explorer import LABELS, MODELS, PREDICTED, REGION, SEED, SIZE, make_study

from helpers.metrics.agreement import METRICS, kendall_tau, paired_comparisons, rank_agreement
from helpers.metrics.intervals import MIN_IMAGES
from helpers.models import classifiers as models
from helpers.models.training import CRITERION_COLUMN, TrainingResult
from helpers.report.method_tables import agreement_sentence, agreement_table, comparison_sentence
from helpers.steps.methods import evaluate_methods
from helpers.study import files as study

# ----------------------------------------------------------------------------------------------------
# Kendall's τ
# ----------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:After omitting NaNs")  # scipy warns where fewer than two items remain
def test_kendall_tau_is_scipys_tau_b_with_ties_and_missing_values():
    rng = np.random.default_rng(0)
    for trial in range(200):
        k = int(rng.integers(2, 12))
        x, y = rng.integers(0, 4, k).astype(float), rng.integers(0, 4, k).astype(float)  # many ties
        if trial % 3 == 0:
            x[rng.integers(0, k)] = np.nan
        expected = kendalltau(x, y, nan_policy="omit").statistic
        got = kendall_tau(x, y)
        assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected, abs=1e-12), (x, y)
    stack = rng.normal(size=(50, 9)), rng.normal(size=(50, 9))
    np.testing.assert_allclose(kendall_tau(*stack), [kendalltau(a, b).statistic for a, b in zip(*stack)], atol=1e-12)
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert np.isnan(kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # a constant ranking: undefined
    with pytest.raises(ValueError, match="one shape"):
        kendall_tau([1, 2], [1, 2, 3])


def test_rank_agreement_orients_the_metrics_and_resamples_image_sets_apart():
    rng = np.random.default_rng(1)
    quality = np.linspace(0.0, 1.0, 6)  # six methods, known order
    n = 40
    good = {f"m{i}": q + 0.02 * rng.normal(size=n) for i, q in enumerate(quality)}
    values = {
        "morf_minus_random": good,
        "deletion_auc": {m: 1.0 - v for m, v in good.items()},  # lower is better: the same ranking
        "randomisation_ssim": {m: 0.5 + 0.0 * v[:5] + rng.normal(size=5) for m, v in good.items()},  # 5 other images
    }
    higher = {key: next(m.higher_is_better for m in METRICS if m.key == key) for key in values}
    out = rank_agreement(values, higher, {"randomisation_ssim": "rand"}, n_boot=300, seed=0)
    pairs = {(p["first"], p["second"]): p for p in out["pairs"]}
    same = pairs[("morf_minus_random", "deletion_auc")]
    assert same["tau"] == 1.0 and same["low"] == 1.0 and same["n_methods"] == 6 and same["n_images"] == n
    noise = pairs[("morf_minus_random", "randomisation_ssim")]
    assert noise["n_images"] == 5 and noise["low"] < 0 < noise["high"]
    means = {key: [np.mean(v) for v in per.values()] for key, per in values.items()}
    # SSIM after randomisation is better when lower: the point τ is that of the oriented means
    assert noise["tau"] == pytest.approx(-kendalltau(means["morf_minus_random"], means["randomisation_ssim"]).statistic)
    assert noise["tau"] == pytest.approx(kendall_tau(means["deletion_auc"], means["randomisation_ssim"]))
    again = rank_agreement(values, higher, {"randomisation_ssim": "rand"}, n_boot=300, seed=0)
    assert again["pairs"] == out["pairs"]  # seeded
    table = agreement_table(out)
    assert table.loc["AOPC MoRF − random", "deletion AUC"].startswith("1.00 [1.00, 1.00]")
    with pytest.raises(ValueError, match="image set"):
        rank_agreement({"a": {"x": np.ones(4)}, "b": {"x": np.ones(5)}})


# ----------------------------------------------------------------------------------------------------
# The interval rule in the sentences
# ----------------------------------------------------------------------------------------------------


def _row(method, estimate, low, high, n=48, better=None):
    from helpers.metrics.intervals import interval_sign

    return {"method": method, "estimate": estimate, "low": low, "high": high, "n": n,
            "better": interval_sign(low, high, n) if better is None else better}  # fmt: skip


def test_comparison_sentence_names_winners_only_when_the_interval_excludes_zero():
    rows = [_row("sobel", 0.1, 0.05, 0.15), _row("random", 0.2, 0.1, 0.3), _row("hirescam", 0.01, -0.02, 0.04),
            _row("xgradcam", 0.0, -0.01, 0.01), _row("scorecam", -0.03, -0.05, -0.01)]  # fmt: skip
    text = comparison_sentence("vgg16", "gradcam", rows)
    assert text.startswith("vgg16, AOPC MoRF − random on 48 images")
    assert "baselines, Grad-CAM is better than the Sobel edge map (+0.100 [0.050, 0.150]) and the random map" in text
    assert "not distinguishable from HiResCAM and XGrad-CAM (their intervals contain 0)" in text
    assert "worse than Score-CAM (-0.030 [-0.050, -0.010])" in text
    few = comparison_sentence("densenet201", "gradcam", [_row("sobel", 0.3, 0.2, 0.4, n=MIN_IMAGES - 1)])
    assert "cannot be judged on 9 images (fewer than 10)" in few and "better" in few  # "better" only in the question
    assert "is better than" not in few.replace("whether Grad-CAM is better than", "")
    assert "compared with nothing" in comparison_sentence("m", "gradcam", [])
    close = comparison_sentence("m", "gradcam", [_row("sobel", 0.026, 0.0004, 0.063), *rows[1:]])
    assert "the Sobel edge map (+0.026 [0.0004, 0.063])" in close  # a low end above 0 is not printed as 0.000


def test_paired_comparisons_follow_the_direction_of_the_metric():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.4, 30)
    per = {"gradcam": base + 0.1, "sobel": base, "random": base + 0.1 + 0.001 * rng.normal(size=30)}
    higher = {r["method"]: r for r in paired_comparisons(per, "gradcam", True, n_boot=500)}
    lower = {r["method"]: r for r in paired_comparisons(per, "gradcam", False, n_boot=500)}
    assert higher["sobel"]["better"] == 1 and lower["sobel"]["better"] == -1
    assert higher["sobel"]["estimate"] == pytest.approx(0.1) and higher["random"]["better"] == 0
    with_nan = dict(per, sobel=np.where(np.arange(30) < 25, np.nan, base))  # 5 images left: too few to judge
    sobel = paired_comparisons(with_nan, "gradcam", n_boot=100)[0]
    assert sobel["method"] == "sobel" and sobel["n"] == 5 and sobel["low"] > 0 and sobel["better"] == 0
    assert paired_comparisons(per, "eigencam") == []


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"tau": 0.6, "low": 0.2, "high": 0.9, "n_images": 48, "n_methods": 9}, "ROAD and noise-MoRF agree on the ranking of the 9 methods"),
        ({"tau": -0.5, "low": -0.8, "high": -0.1, "n_images": 48, "n_methods": 9}, "rank the 9 methods in opposite orders"),
        ({"tau": 0.2, "low": -0.3, "high": 0.6, "n_images": 48, "n_methods": 9}, "cannot be judged: Kendall's τ 0.20 [-0.30, 0.60] over 48 images, an interval that contains 0"),
        ({"tau": 0.9, "low": 0.5, "high": 1.0, "n_images": 5, "n_methods": 9}, "cannot be judged on 5 images (fewer than 10"),
        ({"tau": 1.0, "low": 1.0, "high": 1.0, "n_images": 48, "n_methods": 2}, "cannot be judged (2 methods ranked"),
        ({"tau": float("nan"), "low": float("nan"), "high": float("nan"), "n_images": 48, "n_methods": 9}, "τ undefined"),
        (None, "were not both run"),
    ],
)  # fmt: skip
def test_agreement_sentence_follows_the_interval_rule(entry, expected):
    assert expected in agreement_sentence("vgg16", entry)


# ----------------------------------------------------------------------------------------------------
# The step on a fake study
# ----------------------------------------------------------------------------------------------------


def _save_classifier(paths, name: str, seed: int) -> None:
    """A tiny untrained classifier saved as notebooks 03-04 save theirs."""
    model = models.build_classifier("small_vgg", SIZE, weights=None, freeze_backbone=False, seed=seed)
    history = pd.DataFrame({"epoch": [1], CRITERION_COLUMN: [0.5], "val_loss": [1.0]})
    result = TrainingResult(model=model, history=history, chosen_epoch=1, val_recalls={}, timings={})
    study.save_training(result, paths, name, weights=None, image_size=SIZE)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    paths = make_study(root)
    for i, name in enumerate(MODELS):
        _save_classifier(paths, name, seed=i + 1)
    run = evaluate_methods(
        profile="fake", work_dir=str(root), report_dir=str(root / "reports" / "fake"), seed=SEED, image_size=SIZE,
        model_names=list(MODELS), region_size=REGION, n_images=0, scorecam_top_n=4, road_fractions=[0.25, 0.5, 0.75],
        randomisation_images=3, randomisation_stages=1, n_bootstrap=50, batch_size=8,
    )  # fmt: skip
    return paths, run


def test_step_writes_the_report_and_scores_every_method(fake):
    paths, run = fake
    payload = json.loads((paths.metrics / "methods.json").read_text())
    markdown = (paths.report / "methods.md").read_text()
    for figure in ("methods_metrics", "methods_randomisation"):
        assert (paths.figures / f"{figure}.png").is_file()
    correct = {m: int(np.sum(PREDICTED[m] == LABELS)) for m in MODELS}
    for name in MODELS:
        result = payload["models"][name]
        assert result["n_images"] == correct[name] and result["selection"] == "correctly classified"
        assert set(result["summaries"]) == {m.key for m in METRICS}  # the fake study has lesion and lung masks
        table = run.tables[name]
        assert list(table.index[:9]) == run.settings["methods"] and table.index[-1] == "chance (mask share)"
        assert table.shape[1] == len(METRICS) and f"## {name}" in markdown
    assert payload["reference"] == "gradcam" and run.reference == "gradcam"
    # five correctly classified images per model: no comparison can be judged
    assert len(run.sentences) == 4 and all("cannot be judged" in s for s in run.sentences)
    assert all(f"- {s}" in markdown for s in run.sentences)


def test_model_independent_maps_survive_randomisation_and_the_rest_is_paired(fake):
    """Sobel and the seeded random map keep similarity 1 under randomisation; AOPC uses the images' study ids."""
    from helpers.explain.registry import heatmap
    from helpers.metrics import perturbation as pt
    from helpers.metrics.aopc import per_image_aopc

    paths, run = fake
    for name in MODELS:
        result = run.results[name]
        for method in ("sobel", "random"):
            for key in ("randomisation_spearman", "randomisation_ssim"):
                np.testing.assert_allclose(result["per_image"][key][method], 1.0, atol=1e-9)
        assert result["randomisation"]["backbone_randomised"]
        assert result["randomisation"]["explained_stage"].startswith("backbone/")
        ids = result["image_ids"]
        model = study.load_model(paths, name, SIZE)
        images, _ = study.load_split(paths, "test", SIZE)
        classes = PREDICTED[name]
        maps = heatmap("gradcam", model, images, classes=classes)  # every test image, as notebook 06 explains them
        curves = {order: pt.perturbation_curves(model, images, maps, classes, REGION, order=order, seed=SEED,
                                                progress=False)[ids] for order in ("morf", "random")}  # fmt: skip
        expected = per_image_aopc(curves["morf"])[:, -1] - per_image_aopc(curves["random"])[:, -1]
        np.testing.assert_allclose(result["per_image"]["morf_minus_random"]["gradcam"], expected, atol=1e-6)
        energy = result["per_image"]["energy_lesion"]["gradcam"]
        assert np.isnan(energy[LABELS[ids] == 2]).all()  # Normal images have no lesion mask: no value
