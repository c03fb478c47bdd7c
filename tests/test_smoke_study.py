"""The session's smoke study (tests/conftest.py: the masking sweep, whose ``input_mask=none`` trial is the whole smoke
study) and what is checked on it: the browsable report, partial reruns and interruptions on copies of it, the masked
and unmasked studies compared, and sweeps through Ray (which run beside it, so that two Ray instances never start at
once: ``--dist loadfile`` keeps one file on one worker).
"""

from __future__ import annotations

import filecmp
import json
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_study
from test_notebooks import _runner
from test_whole_study import _run

from helpers.runner import sweep
from helpers.runner.pipeline import StaleInputs
from helpers.study import files as study
from helpers.study import lineage

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.notebook


def _grid(tmp_path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_smoke_run_writes_the_browsable_report(smoke_study):
    report = smoke_study / "reports" / "smoke"
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(study.load_json(report / "run.json")["notebooks"]) == notebooks
    for stem in notebooks:
        assert (report / f"{stem}.ipynb").is_file() and (report / f"{stem}.html").is_file()
    index = (report / "index.html").read_text()
    assert all(f"{stem}.html" in index for stem in notebooks)
    for figure in (
        "fig1_examples",
        "fig2_recall_history_vgg16",
        "fig3_recall_history_densenet201",
        "fig4_classification_report_vgg16",
        "fig5_classification_report_densenet201",
        "fig6_gradcam_covid",
        "fig7_overlays",
        "fig8_aopc",
    ):
        assert (report / "figures" / f"{figure}.png").is_file(), figure
        assert f"figures/{figure}.png" in index
    assert (report / "summary.md").is_file() and "AOPC" in (report / "summary.md").read_text()
    assert "<table>" in index  # the summary table at the top


def test_a_partial_rerun_never_mixes_two_runs(smoke_study, tmp_path, monkeypatch):
    """Issue 14's case: rerun only 03 with another learning rate, then only 07: refused, up front and in the notebook."""
    import json

    work = copy_study(smoke_study, tmp_path / "work")
    report = work / "reports" / "smoke"
    first_run = json.loads((report / "run.json").read_text())["run_id"]

    logs = []
    _run(work, profile="smoke", only="03", overrides=["03.learning_rate=0.05"], log=logs.append)
    run = json.loads((report / "run.json").read_text())
    assert run["stale"] == [
        "05_report",
        "06_gradcam",
        "07_aopc",
        "08_methods_and_metrics",
    ]  # from lineage: 04 read nothing 03 wrote
    assert run["runs"]["03_train_vgg16"] == run["run_id"] != first_run == run["runs"]["04_train_densenet201"]
    assert any("rerun them with --from 05" in line for line in logs)
    index = (report / "index.html").read_text()
    assert f"run <code>{run['run_id']}</code>" in index and f"run <code>{first_run}</code>" in index

    # the runner refuses before any kernel starts, naming the notebooks to rerun
    with pytest.raises(StaleInputs, match=r"07_aopc reads .*06_gradcam.*vgg16\.keras has changed.*--from 05"):
        _run(work, profile="smoke", only="07", export_html=False)
    assert json.loads((report / "run.json").read_text()) == run  # nothing ran
    # and notebook 07 itself (e.g. run in JupyterLab) refuses the heatmaps made from the old model
    monkeypatch.setenv(lineage.NOTEBOOK_ENV, "07_aopc")
    paths = study.study_paths("smoke", work)
    with pytest.raises(study.LineageError, match=r"made by 0[45]_\w+ from data/models/smoke/vgg16\.keras.*rerun 0[45]"):
        study.load_model_outputs(paths, "vgg16")


def test_interrupted_run_leaves_report_and_cache_usable(smoke_study, tmp_path):
    work = copy_study(smoke_study, tmp_path / "work")
    report = work / "reports" / "smoke"
    before = {p.relative_to(report): p.read_bytes() for p in (report / "metrics").glob("*.json")}
    proc = _runner(work, "-p", "seed=1")
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # interrupt while the second notebook runs
        lines.append(line)
        if line.startswith("[2/") and "..." in line:
            time.sleep(3)
            proc.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(lines)
    output = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "interrupted: the staging folder" in output and "was removed" in output
    assert f"the previous report in {report} is unchanged" in output and "Traceback" not in output
    after = {p.relative_to(report): p.read_bytes() for p in (report / "metrics").glob("*.json")}
    assert after == before  # the previous report is untouched
    paths = study.study_paths("smoke", work, report_dir=work / "elsewhere")  # a report of its own
    images, labels = study.load_split(paths, "test", 32, progress=False)  # the cache and manifest still load
    assert len(images) == len(labels) > 0
    # 01 finished in the interrupted run (seed 1): the report's models were trained on the seed-0 split, so
    # rerunning only 05 would test them on another split; the runner says so and what to rerun
    with pytest.raises(StaleInputs, match=r"05_report reads .*01_data.*--from 01"):
        _run(work, profile="smoke", only="05", export_html=False, overrides=["seed=1"])


@pytest.mark.notebook
def test_a_real_two_trial_smoke_sweep_through_ray(tmp_path, monkeypatch, smoke_study):
    """Two smoke trials (notebooks 01, 03-05, down-sampled and class-weighted) as Ray tasks on a local instance started
    for the sweep; the down-sampled trial is the smoke study's first notebooks, so its metrics files are byte-identical
    to those the local executor wrote for the session's smoke study; a rerun through Ray reruns nothing."""
    import filecmp

    import ray  # the [ray] extra: installed by make test, so this test never skips there

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    grid = _grid(
        tmp_path,
        "name: sampling\nnotebooks: ['01', '03', '04', '05']\nparameters:\n  shared:\n"
        "    sampling: [downsample, class_weight]\n",
    )
    logs = []
    remote = sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=logs.append, executor="ray")
    assert not ray.is_initialized()  # the local instance is stopped with the sweep
    assert any("a local instance started for this sweep" in line for line in logs)
    table = pd.read_csv(remote / "results.csv")
    assert table["status"].tolist() == ["done", "done"], table.get("error")
    assert table["vgg16_test_recall"].notna().all() and table["chosen"].sum() == 1
    trials = {json.loads((remote / t / "trial.json").read_text())["values"]["shared.sampling"]: remote / t
              for t in table["trial"]}  # fmt: skip
    weighted = json.loads(
        (trials["class_weight"] / "reports" / "smoke" / "metrics" / "training_vgg16.json").read_text()
    )
    assert weighted["settings"]["sampling"] == "class_weight"
    by_ray, local = (
        trials["downsample"] / "reports" / "smoke" / "metrics",
        smoke_study / "reports" / "smoke" / "metrics",
    )
    names = sorted(p.name for p in by_ray.glob("*.json"))
    assert {"data.json", "training_vgg16.json", "classification_summary.json"} <= set(names)
    _, mismatch, errors = filecmp.cmpfiles(local, by_ray, names, shallow=False)
    assert mismatch == [] and errors == [], f"a Ray trial and the local run differ: {mismatch}"
    for trial in table["trial"]:
        record = json.loads((remote / trial / "trial.json").read_text())
        assert record["status"] == "done" and (remote / trial / "reports" / "smoke" / "run.json").is_file()
    stamps = {t: (remote / t / "trial.json").stat().st_mtime_ns for t in table["trial"]}
    logs.clear()
    sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=logs.append, executor="ray")
    assert {t: (remote / t / "trial.json").stat().st_mtime_ns for t in table["trial"]} == stamps
    assert sum("done before, not rerun" in line for line in logs) == 2


@pytest.mark.notebook
def test_failed_trials_through_ray_are_recorded(tmp_path, monkeypatch):
    """A dataset whose images do not decode fails in notebook 01 (the layout passes the checks before any kernel):
    each Ray task records its failure, the sweep goes on."""
    import ray

    from helpers.common.config import CLASS_NAMES, DATASET_DIRNAME

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    broken = tmp_path / "broken" / DATASET_DIRNAME
    for name in CLASS_NAMES:
        (broken / name / "images").mkdir(parents=True)
        (broken / name / "images" / f"{name}-1.png").write_bytes(b"not a png")
    grid = _grid(
        tmp_path,
        f"name: broken\nnotebooks: ['01']\nparameters:\n  01:\n    source: [kaggle]\n    data_dir: ['{broken}']\n"
        "  shared:\n    seed: [0, 1]\n",
    )
    out = sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=lambda t: None, executor="ray")
    assert not ray.is_initialized()
    table = pd.read_csv(out / "results.csv")
    assert table["status"].tolist() == ["failed", "failed"]
    for trial in table["trial"]:
        record = json.loads((out / trial / "trial.json").read_text())
        assert record["status"] == "failed" and "NotebookFailed" in record["error"] and "01_data" in record["error"]
    # that a rerun tries failed trials again is the sweep's logic, whichever executor: tests/test_sweep.py


@pytest.mark.notebook
def test_the_masking_sweep_compares_masked_and_unmasked_smoke_studies(smoke_sweep):
    """params/sweep-masking.yaml's shape on smoke: the whole study (01-08) without and with input_mask="lung"."""
    work, out, table = smoke_sweep
    report = work / "reports" / "smoke"
    assert table["status"].tolist() == ["done", "done"], table.get("error")
    masked = out / table.loc[1, "trial"]
    training = json.loads((masked / "reports" / "smoke" / "metrics" / "training_vgg16.json").read_text())
    assert training["input_mask"] == "lung" and (masked / "data" / "processed" / "smoke" / "lung_masks.npz").is_file()
    pairs = json.loads((out / "comparison.json").read_text())["pairs"]
    assert len(pairs) == 1 and pairs[0]["names"] == ["none", "lung"] and "error" not in pairs[0]
    measures = {(row["model"], row["measure"]) for row in pairs[0]["rows"]}
    assert {("vgg16", "macro recall"), ("densenet201", "MoRF − random")} <= measures
    assert "## Paired comparison: shared.input_mask" in (out / "results.md").read_text()
    assert "lung − none [95% CI]" in (report / "sweeps.md").read_text()


def test_the_same_seed_gives_the_same_bytes_through_the_runner_and_through_nbval(smoke_study, nbval_study):
    """Two complete smoke studies with seed 0, one by the runner (as the sweep's trial) and one by nbval (the notebooks
    as Jupyter runs them): every metrics file and summary.md byte for byte the same."""
    record, reference = nbval_study
    assert record["returncode"] == 0, "the notebooks failed under nbval: see test_nbval_over_smoke_prepared_notebooks"
    report = smoke_study / "reports" / "smoke"
    names = sorted(p.name for p in (reference / "metrics").glob("*.json"))
    assert names and names == sorted(p.name for p in (report / "metrics").glob("*.json"))
    _, mismatch, errors = filecmp.cmpfiles(reference / "metrics", report / "metrics", names, shallow=False)
    assert mismatch == [] and errors == [], f"metrics differ between two runs with the same seed: {mismatch}"
    assert filecmp.cmp(reference / "summary.md", report / "summary.md", shallow=False)
