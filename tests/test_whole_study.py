"""The whole study through the runner on the smoke profile: reproducibility, interruption, bad input."""

from __future__ import annotations

import filecmp
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.data import phantoms
from helpers.runner import pipeline
from helpers.runner.pipeline import NotebookFailed, StaleInputs
from helpers.runner.profiles import ProfileError
from helpers.study import files as study
from helpers.study import lineage, split_files

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.notebook


def _run(work, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda *a: None)
    return pipeline.run_study(work_dir=work, **kwargs)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One complete smoke run of every notebook."""
    work = tmp_path_factory.mktemp("smoke-a")
    result = _run(work, profile="smoke")
    return work, result


def test_smoke_run_writes_the_browsable_report(smoke_run):
    work, result = smoke_run
    report = work / "reports" / "smoke"
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(result.timings) == notebooks
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


def test_same_seed_gives_identical_metrics(smoke_run, tmp_path):
    work, _ = smoke_run
    _run(tmp_path, profile="smoke", export_html=False)
    first, second = work / "reports" / "smoke" / "metrics", tmp_path / "reports" / "smoke" / "metrics"
    names = sorted(p.name for p in first.glob("*.json"))
    assert names and names == sorted(p.name for p in second.glob("*.json"))
    match, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert mismatch == [] and errors == [], f"metrics differ between two runs with the same seed: {mismatch}"
    assert filecmp.cmp(
        work / "reports" / "smoke" / "summary.md", tmp_path / "reports" / "smoke" / "summary.md", shallow=False
    )


def test_a_partial_rerun_never_mixes_two_runs(smoke_run, tmp_path, monkeypatch):
    """Issue 14's case: rerun only 03 with another learning rate, then only 07: refused, up front and in the notebook."""
    import json
    import shutil

    source, _ = smoke_run
    work = tmp_path / "work"
    shutil.copytree(source / "data", work / "data")
    shutil.copytree(source / "reports" / "smoke", work / "reports" / "smoke")
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


def test_interrupted_run_leaves_report_and_cache_usable(smoke_run):
    work, _ = smoke_run
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


def test_missing_data_dir_stops_with_a_clear_message(tmp_path):
    # an empty data_dir means "download with kagglehub"; without it the runner names the manual steps up front
    with pytest.raises(ProfileError, match=r"(?s)01_data\.data_dir: source 'kaggle'.*not installed.*-p data_dir="):
        _run(tmp_path, profile="paper", only="01", export_html=False)
    with pytest.raises(ProfileError, match="no-such-download does not exist"):
        _run(
            tmp_path,
            profile="paper",
            only="01",
            export_html=False,
            overrides=[f"data_dir={tmp_path / 'no-such-download'}"],
        )
    assert not (tmp_path / "reports").exists()  # stopped before any kernel started
    empty = tmp_path / "empty-download"
    empty.mkdir()
    # a folder that is not the dataset: named before any kernel starts, with the layout it should have
    with pytest.raises(ProfileError, match=r"01_data\.data_dir: class folder .*empty-download.*COVID-19_Radiography"):
        _run(tmp_path, profile="paper", only="01", export_html=False, overrides=[f"data_dir={empty}"])
    assert not (tmp_path / "reports").exists()


def test_corrupt_image_stops_naming_the_file(tmp_path):
    dataset = phantoms.synthesize_dataset(tmp_path / "download", 12, image_size=48, seed=0, progress=False)
    bad = dataset / "COVID" / "images" / "COVID-3.png"
    bad.chmod(bad.stat().st_mode | stat.S_IWUSR)
    bad.write_bytes(bad.read_bytes()[:100])  # truncated: the header is intact, the image data are not
    mask = dataset / "Normal" / "masks" / "Normal-2.png"
    mask.chmod(mask.stat().st_mode | stat.S_IWUSR)
    mask.write_bytes(mask.read_bytes()[:100])
    overrides = ["source=kaggle", f"data_dir={dataset}"]
    with pytest.raises(NotebookFailed, match=r"01_data.*COVID-3\.png cannot be decoded"):
        _run(tmp_path, profile="smoke", only="01", export_html=False, overrides=overrides)
    _run(tmp_path, profile="smoke", only="01", export_html=False, overrides=overrides + ["skip_unreadable=true"])
    paths = study.study_paths("smoke", tmp_path)
    manifest = split_files.read_manifest(paths.split_manifest)
    assert not manifest["path"].str.endswith("COVID-3.png").any()
    assert not manifest["mask_path"].str.endswith("Normal-2.png").any()
    assert study.load_json(lineage.side_file(paths.split_manifest))["skipped"] == 2


def test_wrong_profile_key_stops_before_running(tmp_path, capsys):
    code = pipeline.main(["--profile", "smoke", "--work-dir", str(tmp_path), "-p", "epoch=3"])
    assert code == 2
    assert "no notebook declares a parameter 'epoch'" in capsys.readouterr().err
    profile = tmp_path / "typo.yaml"
    profile.write_text("shared:\n  seed: 0\n03_train_vgg16:\n  learning_rte: 0.1\n")
    code = pipeline.main(["--profile", str(profile), "--work-dir", str(tmp_path)])
    assert code == 2
    assert "unknown key 'learning_rte' in section '03_train_vgg16'" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_paper_profile_runs_end_to_end_on_a_small_download(tmp_path):
    """The paper's code path (VGG16 and DenseNet201, frozen, cached features) on a tiny Kaggle-layout download."""
    dataset = phantoms.synthesize_dataset(tmp_path / "download", 10, image_size=48, seed=0, progress=False)
    overrides = [
        f"data_dir={dataset.parent}",
        "image_size=32",
        "weights=null",
        "epochs=1",
        "region_size=16",
        "08.n_images=4",
        "08.scorecam_top_n=4",
        "08.road_fractions=[0.5]",
        "08.randomisation_images=2",
        "08.randomisation_stages=1",
        "ablation_images=4",
        "ablation_perturbations=['mean']",
        "ablation_sigmas=[]",
        "n_bootstrap=50",
        "gallery_per_class=1",
    ]
    _run(tmp_path, profile="paper", overrides=overrides, export_html=False)
    report = tmp_path / "reports" / "paper"
    training = study.load_json(report / "metrics" / "training_vgg16.json")
    assert training["backbone"] == "vgg16" and training["settings"]["feature_cache"] is True
    assert study.load_json(report / "metrics" / "training_densenet201.json")["backbone"] == "densenet201"
    assert (report / "summary.md").is_file() and (report / "figures" / "fig8_aopc.png").is_file()
    assert "paper" in (report / "summary.md").read_text()


def _runner(work, *args):
    command = [
        sys.executable,
        "-m",
        "helpers.runner.pipeline",
        "--profile",
        "smoke",
        "--work-dir",
        str(work),
        "--no-html",
        "--no-progress",
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc, prefix, lines):
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return
    raise AssertionError("".join(lines))


def test_two_real_runners_share_a_work_folder_safely(tmp_path):
    """One run per work folder and profile: a second refuses naming the first, --wait queues, kill -9 never blocks."""
    report = tmp_path / "reports" / "smoke"
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    first, lines = _runner(tmp_path), []
    _read_until(first, "[1/8]", lines)
    refused = _runner(tmp_path)
    out = refused.communicate(timeout=120)[0]
    assert refused.returncode == 2, out
    assert f"pid {first.pid}, started" in out and "--profile smoke" in out and "pass --wait" in out
    waiting = _runner(tmp_path, "--wait", "--wait-timeout", "600", "--only", "05")
    out_first = "".join(lines) + first.communicate(timeout=600)[0]
    assert first.returncode == 0, out_first
    out_waiting = waiting.communicate(timeout=600)[0]
    assert waiting.returncode == 0, out_waiting
    assert f"waiting for the run with pid {first.pid}" in out_waiting
    assert sorted(p.name for p in report.glob("*.ipynb")) == notebooks and (report / "summary.md").is_file()

    killed, lines = _runner(tmp_path, "--only", "01,03"), []
    _read_until(killed, "[2/2]", lines)
    time.sleep(2)
    killed.kill()  # kill -9: the lock file still names it, but the OS released the lock
    killed.wait()
    assert list((tmp_path / "reports").glob(".smoke.staging-*"))
    after = _runner(tmp_path, "--only", "05")
    out_after = after.communicate(timeout=600)[0]
    assert after.returncode == 0, out_after
    assert list((tmp_path / "reports").glob(".smoke.staging-*")) == []  # the dead run's staging is cleaned up
    assert sorted(p.name for p in report.glob("*.ipynb")) == notebooks and (report / "summary.md").is_file()
    assert len(list((report / "metrics").glob("*.json"))) >= 6
