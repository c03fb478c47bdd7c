"""Lineage: every study file knows what made it, and a read that would mix two runs is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.data import dataset
from helpers.runner import pipeline
from helpers.study import files as study
from helpers.study import lineage, split_files


def _as(monkeypatch, notebook, run):
    """Act as the runner's kernel of ``notebook`` in run ``run``."""
    monkeypatch.setenv(lineage.NOTEBOOK_ENV, notebook)
    monkeypatch.setenv(lineage.RUN_ENV, run)


@pytest.fixture
def split(tmp_path, phantom_dataset):
    """A work folder with a split manifest written by '01_data' of run R1, and the report being built."""
    paths = study.study_paths("unit", work_dir=tmp_path, report_dir=tmp_path / "report")
    frame = dataset.scan_dataset(phantom_dataset)
    return paths, frame


def _write_split(paths, frame, seed):
    split_files.write_manifest(list(dataset.balance_and_split(frame, seed=seed)), paths.split_manifest, paths=paths)


def test_every_write_records_producer_run_parameters_and_inputs(split, monkeypatch):
    paths, frame = split
    _as(monkeypatch, "01_data", "R1")
    monkeypatch.setenv(lineage.PARAMETERS_ENV, '{"seed": 0, "image_size": 32}')
    lineage.start_notebook(paths.report, "01_data", "R1")
    _write_split(paths, frame, 0)
    record = study.load_json(lineage.side_file(paths.split_manifest))
    assert record["producer"] == "01_data" and record["run_id"] == "R1"
    assert record["parameters"] == {"seed": 0, "image_size": 32} and record["inputs"] == {}
    assert record["fingerprint"] == lineage.file_digest(paths.split_manifest)

    _as(monkeypatch, "05_report", "R1")
    lineage.start_notebook(paths.report, "05_report", "R1")
    study.study_paths("unit", work_dir=paths.root, report_dir=paths.report)  # a notebook starts
    _, labels = study.load_split(paths, "test", 32, progress=False)
    study.save_predictions(paths, "vgg16", np.eye(4)[labels], labels)
    record = study.load_json(lineage.side_file(study.predictions_path(paths, "vgg16")))
    inputs = record["inputs"]
    assert inputs["data/processed/unit/split.csv"] == lineage.file_digest(paths.split_manifest)
    assert any(key.startswith("data/processed/cache/") for key in inputs)  # the image cache it read
    sections = lineage.load_report_lineage(paths.report)["notebooks"]
    assert set(sections) == {"01_data", "05_report"} and sections["05_report"]["run_id"] == "R1"
    assert "data/processed/unit/predictions_vgg16.npz" in sections["05_report"]["writes"]


def test_a_file_made_from_an_input_that_changed_since_is_refused(split, monkeypatch):
    paths, frame = split
    _write_split(paths, frame, 0)
    _, labels = study.load_split(paths, "test", 32, progress=False)
    study.save_predictions(paths, "vgg16", np.eye(4)[labels], labels)
    assert len(study.load_predictions(paths, "vgg16")["labels"]) == len(labels)
    _write_split(paths, frame, 1)  # notebook 01 rerun with another seed
    with pytest.raises(
        study.LineageError, match="predictions_vgg16.npz was made by 05_report from .*split.csv.*rerun 05"
    ):
        study.load_predictions(paths, "vgg16")


def test_a_file_without_lineage_is_refused(split):
    paths, _ = split
    study.save_npz(study.predictions_path(paths, "vgg16"), probabilities=np.eye(4), labels=np.arange(4))
    with pytest.raises(study.LineageError, match="no lineage record.*--from 05"):
        study.load_predictions(paths, "vgg16")
    lineage.side_file(study.predictions_path(paths, "vgg16")).write_text("{not json")
    with pytest.raises(study.LineageError, match="lineage.json is not readable JSON.*--from 05"):
        study.load_predictions(paths, "vgg16")


def test_another_runs_file_is_refused_for_the_report_being_built(split, monkeypatch, tmp_path):
    """The issue's case: a failed run rewrote data/ after the report was made; a partial rerun must not read it."""
    paths, frame = split
    _as(monkeypatch, "01_data", "R1")
    lineage.start_notebook(paths.report, "01_data", "R1")
    _write_split(paths, frame, 0)
    _as(monkeypatch, "05_report", "R1")
    lineage.start_notebook(paths.report, "05_report", "R1")
    _, labels = study.load_split(paths, "test", 32, progress=False)
    study.save_predictions(paths, "vgg16", np.eye(4)[labels], labels)
    _as(monkeypatch, "07_aopc", "R1")
    lineage.start_notebook(paths.report, "07_aopc", "R1")
    study.load_predictions(paths, "vgg16")

    failed = study.study_paths("unit", work_dir=paths.root, report_dir=tmp_path / "failed")  # run R2's staging
    _as(monkeypatch, "05_report", "R2")
    lineage.start_notebook(failed.report, "05_report", "R2")
    study.load_split(failed, "test", 32, progress=False)
    study.save_predictions(failed, "vgg16", np.roll(np.eye(4)[labels], 1, axis=1), labels)

    stems = ["01_data", "05_report", "07_aopc"]
    assert list(lineage.stale_notebooks(paths, stems)) == ["07_aopc"]  # what 07 read changed under it ...
    # ... and data/ no longer holds what the report shows of 05: the runner refuses --only 07 up front
    with pytest.raises(pipeline.StaleInputs, match="07_aopc reads .*written by 05_report.*another run.*--from 05"):
        pipeline._check_partial_run(paths, [Path(f"{s}.ipynb") for s in stems], [Path("07_aopc.ipynb")])
    _as(monkeypatch, "07_aopc", "R3")  # and so does notebook 07 when run by hand
    lineage.start_notebook(paths.report, "07_aopc", "R3")
    with pytest.raises(study.LineageError, match="run R2 of 05_report.*report.*from run R1.*--from 05"):
        study.load_predictions(paths, "vgg16")


def test_stale_notebooks_follow_lineage_not_notebook_order(split, monkeypatch):
    paths, frame = split
    for stem in ("01_data", "05_report", "06_gradcam"):
        _as(monkeypatch, stem, "R1")
        lineage.start_notebook(paths.report, stem, "R1")
        study.study_paths("unit", work_dir=paths.root, report_dir=paths.report)
        if stem == "01_data":
            _write_split(paths, frame, 0)
        elif stem == "05_report":
            _, labels = study.load_split(paths, "test", 32, progress=False)
            study.save_predictions(paths, "vgg16", np.eye(4)[labels], labels)
        else:  # reads only 05's predictions
            study.load_predictions(paths, "vgg16")
            study.save_metrics_file(paths, "mask_energy", {"x": 1})
    stems = ["01_data", "05_report", "06_gradcam", "07_aopc"]
    assert lineage.stale_notebooks(paths, stems) == {}
    _as(monkeypatch, "01_data", "R2")  # rerun 01 alone, with the same parameters: nothing changes
    lineage.start_notebook(paths.report, "01_data", "R2")
    _write_split(paths, frame, 0)
    assert lineage.stale_notebooks(paths, stems, rerun=["01_data"]) == {}
    _write_split(paths, frame, 1)  # with another seed: 05 read the split, 06 read 05's output
    stale = lineage.stale_notebooks(paths, stems, rerun=["01_data"])
    assert list(stale) == ["05_report", "06_gradcam"] and "06_gradcam" not in stale["05_report"]
    assert "05_report, which is stale" in stale["06_gradcam"]
