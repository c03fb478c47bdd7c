"""Tests of helpers.report.reference: the published seed runs of a profile and where a new run falls among them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers.report import reference

ROOT = Path(__file__).resolve().parents[1]
PARAMETERS = {
    "01_data": {"seed": 0, "image_size": 96, "synthetic_per_class": 500, "work_dir": "/a", "report_dir": "/a/r"},
    "07_aopc": {"seed": 0, "region_size": 16, "sigma": 0.1},
}


def _summary(recall_a: float, recall_b: float, morf_a: float, verdict: str = "cannot be judged") -> dict:
    def cls(recall):
        return {"macro_recall": {"estimate": recall}, "macro_f1": {"estimate": recall - 0.01}}

    def curves(morf):
        return {"morf": {"final": morf}, "random": {"final": morf / 2}, "morf_minus_random": {"final": morf / 2}}

    return {
        "profile": "demo",
        "classification": {"models": {"vgg16": cls(recall_a), "densenet201": cls(recall_b)}},
        "aopc": {"vgg16": curves(morf_a), "densenet201": curves(0.6)},
        "conclusions": {"verdict": verdict, "better_heatmaps": "densenet201"},
    }


def _write_report(folder: Path, seed: int, summary: dict, backend: str = "tensorflow") -> Path:
    report = folder / "reports" / "demo"
    (report / "metrics").mkdir(parents=True)
    parameters = {stem: {**values, "seed": seed} for stem, values in PARAMETERS.items()}
    run = {
        "parameters": parameters,
        "environment": {"keras_backend": backend, "device": {"cpu": "test CPU", "cpu_features": ["avx2"]}},
    }
    (report / "run.json").write_text(json.dumps(run))
    (report / "metrics" / "summary.json").write_text(json.dumps(summary))
    return report


@pytest.fixture
def sweep(tmp_path):
    folder = tmp_path / "sweeps" / "seeds"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"name": "seeds"}))
    for seed, (ra, morf, verdict) in enumerate(
        [(1.0, 0.03, "cannot be judged"), (0.98, 0.10, "holds"), (0.99, 0.05, "cannot be judged")]
    ):
        trial = folder / f"t{seed:02d}"
        _write_report(trial, seed, _summary(ra, 1.0, morf, verdict))
        (trial / "trial.json").write_text(json.dumps({"status": "done"}))
    failed = folder / "t03"
    failed.mkdir()
    (failed / "trial.json").write_text(json.dumps({"status": "failed"}))
    return folder


def test_sweep_records_read_every_finished_trial(sweep):
    runs = reference.sweep_records(sweep, "demo")
    assert [run["seed"] for run in runs] == [0, 1, 2]  # the failed trial is left out
    assert runs[1]["values"]["vgg16"] == {
        "test_recall": 0.98,
        "test_f1": 0.97,
        "aopc_morf": 0.10,
        "aopc_random": 0.05,
        "morf_minus_random": 0.05,
    }
    assert runs[1]["verdict"] == "holds" and runs[1]["backend"] == "tensorflow"
    # seeds and folders are not part of what must match between runs
    assert (
        runs[0]["parameters"]
        == runs[2]["parameters"]
        == {
            "01_data": {"image_size": 96, "synthetic_per_class": 500},
            "07_aopc": {"region_size": 16, "sigma": 0.1},
        }
    )


def test_spread_is_median_and_range_of_the_finite_values():
    assert reference.spread([3.0, 1.0, math.nan, 2.0]) == {"n": 3, "median": 2.0, "min": 1.0, "max": 3.0}
    assert reference.spread([4.0, 1.0, 2.0, 3.0])["median"] == 2.5
    assert reference.spread([math.nan, None])["n"] == 0


def test_merge_replaces_the_same_seed_and_backend_and_refuses_other_parameters(sweep):
    runs = reference.sweep_records(sweep, "demo")
    jax = [{**run, "backend": "jax"} for run in runs[:2]]
    merged = reference.merge_runs(runs, jax)
    assert [(r["backend"], r["seed"]) for r in merged] == [
        ("jax", 0),
        ("jax", 1),
        *[("tensorflow", s) for s in range(3)],
    ]
    again = reference.merge_runs(merged, [{**runs[0], "verdict": "holds"}])
    assert len(again) == 5 and next(r for r in again if r["seed"] == 0 and r["backend"] == "tensorflow")["verdict"] == (
        "holds"
    )
    other = {**runs[0], "seed": 9, "parameters": {"07_aopc": {"region_size": 8}}}
    with pytest.raises(ValueError, match=r"other parameters.*07\.region_size=8"):
        reference.merge_runs(runs, [other])


def test_compare_says_which_numbers_fall_outside_the_published_range(sweep):
    published = {"runs": reference.sweep_records(sweep, "demo")}
    params = {stem: {**values, "seed": 7} for stem, values in PARAMETERS.items()}  # another seed: still comparable
    inside = reference.compare(_summary(0.99, 1.0, 0.06), params, "tensorflow", published, "demo")
    assert inside["applies"] and inside["outside"] == []
    assert "10 of 10 headline numbers inside" in inside["line"]
    assert 'verdict "cannot be judged" as in 2 of 3 published runs' in inside["line"]
    # vgg16 AOPC 0.186 is above the published 0.03 to 0.10 (and so are its random-order AOPC and MoRF - random)
    far = reference.compare(_summary(0.99, 1.0, 0.186, "holds"), params, "tensorflow", published, "demo")
    assert far["applies"] and len(far["outside"]) == 3
    assert "vgg16 AOPC (MoRF) 0.186 (published 0.030 to 0.100)" in far["line"]
    assert far["verdict_count"] == 1
    # a value on the edge after rounding to three decimals is inside
    edge = reference.compare(_summary(0.99, 1.0, 0.1004), params, "tensorflow", published, "demo")
    assert edge["outside"] == []
    page = reference.comparison_markdown(far)
    assert "| vgg16 | AOPC (MoRF) | 0.186 | 0.050 [0.030, 0.100] | **no** |" in page


def test_compare_refuses_other_parameters_and_a_missing_reference(sweep):
    published = {"runs": reference.sweep_records(sweep, "demo")}
    changed = {**PARAMETERS, "07_aopc": {**PARAMETERS["07_aopc"], "sigma": 0.2}}
    result = reference.compare(_summary(0.99, 1.0, 0.06), changed, "tensorflow", published, "demo")
    assert not result["applies"] and "07.sigma=0.2 (published: 0.1)" in result["line"]
    # a notebook or parameter the published runs did not have yet is no difference
    newer = {**PARAMETERS, "08_methods": {"methods": ["gradcam"]}, "07_aopc": {**PARAMETERS["07_aopc"], "new": 1}}
    assert reference.compare(_summary(0.99, 1.0, 0.06), newer, "tensorflow", published, "demo")["applies"]
    assert "differ" in reference.comparison_markdown(result)
    missing = reference.compare(_summary(0.99, 1.0, 0.06), PARAMETERS, "tensorflow", None, "paper")
    assert not missing["applies"] and "no published runs of the paper profile" in missing["line"]


def test_compare_prefers_the_runs_of_the_same_backend(sweep):
    runs = reference.sweep_records(sweep, "demo")
    jax = [{**run, "backend": "jax", "values": {"vgg16": {"aopc_morf": 0.5}}} for run in runs]
    published = {"runs": reference.merge_runs(runs, jax)}
    on_jax = reference.compare(_summary(0.99, 1.0, 0.5), PARAMETERS, "jax", published, "demo")
    assert on_jax["runs_label"] == "3 published runs on jax" and on_jax["outside"] == []
    on_torch = reference.compare(_summary(0.99, 1.0, 0.5), PARAMETERS, "torch", published, "demo")
    assert on_torch["runs_label"] == "6 published runs on jax, tensorflow"


def test_seed_table_counts_the_verdicts(sweep):
    table = reference.seed_table({"runs": reference.sweep_records(sweep, "demo")})
    assert "| tensorflow | vgg16 | 3 | 0.990 [0.980, 1.000] |" in table
    assert (
        '- tensorflow (seeds 0, 1, 2): the paper\'s claim "cannot be judged" in 2 of 3 runs, "holds" in 1; '
        "the better heatmaps (paired MoRF − random, interval excluding 0): densenet201 in 3 of 3." in table
    )


def test_a_sweep_folder_without_finished_trials_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a sweep folder"):
        reference.sweep_records(tmp_path, "demo")
    (tmp_path / "sweep.json").write_text("{}")
    with pytest.raises(ValueError, match="no finished trial"):
        reference.sweep_records(tmp_path, "demo")


def test_the_committed_demo_reference_is_complete():
    published = reference.load_reference("demo", ROOT)
    assert published is not None, "docs/reference/demo.json is missing: run the seed sweep, then make docs"
    runs = published["runs"]
    assert len({run["seed"] for run in runs}) >= 5, "the demo is published over at least five seeds"
    first = runs[0]["parameters"]
    assert not any(reference.parameter_differences(first, run["parameters"]) for run in runs)
    assert all(set(run["values"]) == {"vgg16", "densenet201"} for run in runs)


def test_the_runner_writes_the_comparison_beside_the_summary(sweep, tmp_path):
    from helpers.runner import pipeline

    project = tmp_path / "project"
    path = reference.reference_path("demo", project)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"runs": reference.sweep_records(sweep, "demo")}))
    staging = _write_report(tmp_path / "run", 5, _summary(0.99, 1.0, 0.186, "holds"))
    compared = pipeline._compare_with_reference(staging, "demo", project, stale=[])
    assert compared["applies"] and len(compared["outside"]) == 3
    assert json.loads((staging / "reference.json").read_text())["line"] == compared["line"]
    assert "**no**" in (staging / pipeline.REFERENCE_PAGE).read_text()
    # a partial run whose 07 is stale keeps no comparison of an earlier summary
    assert pipeline._compare_with_reference(staging, "demo", project, stale=["07_aopc"]) is None
    assert not (staging / "reference.json").exists() and not (staging / pipeline.REFERENCE_PAGE).exists()
    # a profile the project publishes nothing for says so
    other = pipeline._compare_with_reference(staging, "smoke", project, stale=[])
    assert not other["applies"] and "no published runs of the smoke profile" in other["line"]
