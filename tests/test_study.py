"""Tests of helpers.study.files: paths, atomic writes, JSON/NPZ, the manifest, every study file's save and load."""

from __future__ import annotations

import os
import sys

import keras
import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_training import tiny_model

from helpers.common import config
from helpers.common.config import DATASET_DIRNAME
from helpers.data import dataset, layout
from helpers.data.layout import DatasetError
from helpers.models import classification as evaluation
from helpers.models import training
from helpers.study import files as study
from helpers.study import split_files

matplotlib.use("Agg")


def test_study_paths_layout(tmp_path):
    paths = study.study_paths("smoke", tmp_path)
    assert paths.processed == tmp_path / "data" / "processed" / "smoke"
    assert paths.models == tmp_path / "data" / "models" / "smoke"
    assert paths.report == tmp_path / "reports" / "smoke-interactive"  # by hand: never the published report
    assert paths.figures.is_dir() and paths.metrics.is_dir() and paths.cache.is_dir()
    other = study.study_paths("smoke", tmp_path, tmp_path / "staging")
    assert other.figures == tmp_path / "staging" / "figures"


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ROOT_ENV, str(tmp_path))
    assert study.find_project_root() == tmp_path.resolve()
    assert study.study_paths("demo").root == tmp_path.resolve()


@pytest.mark.parametrize("bad", ["", "a/b", "..\\x"])
def test_bad_profile_names(tmp_path, bad):
    with pytest.raises(ValueError, match="profile"):
        study.study_paths(bad, tmp_path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    study.save_json({"a": 1}, target)
    with pytest.raises(RuntimeError):
        with study.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert study.load_json(target) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_json_and_npz_round_trip(tmp_path):
    values = {
        "x": np.float32(0.5),
        "v": np.arange(3),
        "nan": float("nan"),
        "np_nan": np.float64("nan"),
        "inf": np.float32("inf"),
        "arr": np.array([1.0, np.nan]),
        "set": {"b", "a"},  # e.g. a notebook default recorded in run.json
        "complex": 1 + 2j,
    }
    study.save_json(values, tmp_path / "m.json")
    assert study.load_json(tmp_path / "m.json") == {
        "x": 0.5,
        "v": [0, 1, 2],
        "nan": None,
        "np_nan": None,
        "inf": None,
        "arr": [1.0, None],
        "set": ["a", "b"],
        "complex": "(1+2j)",
    }
    assert "NaN" not in (tmp_path / "m.json").read_text()  # strict JSON
    study.save_npz(tmp_path / "a.npz", h=np.ones((2, 3), np.float32), g=np.zeros(4))
    assert study.load_npz(tmp_path / "a.npz")["h"].shape == (2, 3)
    assert list(study.load_npz(tmp_path / "a.npz", keys=("g", "absent"))) == ["g"]
    assert list(study.load_npz(tmp_path / "a.npz", keys="gh")) == []  # one key, not its letters
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        study.load_npz(tmp_path / "missing.npz")


def test_atomic_writes_get_the_umask_mode(tmp_path):

    umask = os.umask(0o022)
    try:
        study.save_json({"a": 1}, tmp_path / "m.json")
    finally:
        os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_manifest_round_trip_and_load_split(tmp_path, phantom_dataset):
    paths = study.study_paths("unit", work_dir=tmp_path)
    frame = dataset.scan_dataset(phantom_dataset)
    train, val, test = dataset.balance_and_split(frame, seed=0)
    assert (len(train), len(val), len(test)) == (36, 4, 8)
    split_files.write_manifest([train, val, test], paths.split_manifest, paths=paths)
    manifest = split_files.read_manifest(paths.split_manifest)
    pd.testing.assert_frame_equal(
        manifest, pd.concat([train, val, test], ignore_index=True)[list(layout.MANIFEST_COLUMNS)]
    )
    images, labels = study.load_split(paths, "test", 32, progress=False)
    assert images.shape == (8, 32, 32, 1) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, test["label_index"].to_numpy())
    np.testing.assert_array_equal(images, dataset.load_images(test, 32, cache_dir=False, progress=False))
    assert len(list(paths.cache.glob("*.npy"))) == 1
    with pytest.raises(DatasetError, match="split must be"):
        study.load_split(paths, "holdout", 32)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none.csv")):
        split_files.read_manifest(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.png,COVID\n")
    with pytest.raises(DatasetError, match=f"{bad} lacks the columns"):
        split_files.read_manifest(bad)
    bad.write_text("path,label,label_index,mask_path,lesion_mask_path,split\na.png,COVID,2,,,train\n")
    with pytest.raises(DatasetError, match="label_index"):
        split_files.read_manifest(bad)
    bad.write_text("path,label,label_index,mask_path,lesion_mask_path,split\na.png,COVID,0,,,holdout\n")
    with pytest.raises(DatasetError, match="holdout"):
        split_files.read_manifest(bad)
    with pytest.raises(DatasetError, match="lack the columns"):
        split_files.write_manifest([pd.DataFrame({"path": ["a"]})], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_dataset_from_parameters(tmp_path, phantom_dataset, monkeypatch):
    paths = study.study_paths("unit", work_dir=tmp_path)
    made = split_files.dataset_from_parameters(
        paths, "synthetic", synthetic_per_class=2, synthetic_size=32, seed=1, confounder=True, progress=False
    )
    assert made == paths.raw / "synthetic-32-2-1-confounder" / DATASET_DIRNAME and len(dataset.scan_dataset(made)) == 8
    assert split_files.dataset_from_parameters(paths, "kaggle", data_dir=phantom_dataset.parent) == phantom_dataset
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # no download here (tests/test_download.py fakes one)
    with pytest.raises(DatasetError, match="data_dir"):
        split_files.dataset_from_parameters(paths, "kaggle")
    with pytest.raises(DatasetError, match="source"):
        split_files.dataset_from_parameters(paths, "web")


def test_predictions_and_metrics_files_round_trip(tmp_path):
    paths = study.study_paths("unit", work_dir=tmp_path)
    probs = np.random.default_rng(2).random((7, 4)).astype(np.float32)
    labels = np.arange(7) % 4
    path = study.save_predictions(paths, "vgg16", probs, labels)
    assert path == paths.processed / "predictions_vgg16.npz"
    loaded = study.load_predictions(paths, "vgg16")
    np.testing.assert_array_equal(loaded["probabilities"], probs)
    np.testing.assert_array_equal(loaded["labels"], labels)
    np.testing.assert_array_equal(loaded["predicted"], probs.argmax(1))
    metrics = evaluation.classification_metrics(labels, probs, config.CLASS_NAMES)
    assert study.save_metrics(paths, "vgg16", metrics) == paths.metrics / "classification_vgg16.json"
    assert study.load_metrics(paths, "vgg16")["per_class"] == metrics["per_class"]  # JSON floats round-trip exactly
    with pytest.raises(FileNotFoundError, match="predictions_densenet201"):
        study.load_predictions(paths, "densenet201")


def test_save_and_load_heatmaps(tmp_path):
    paths = study.study_paths("unit", work_dir=tmp_path, report_dir=tmp_path / "report")
    heat = np.random.default_rng(0).uniform(size=(3, 2, 2)).astype("float32")
    path = study.save_heatmaps(paths, "vgg16", heat, np.array([0, 3, 1]), "gradcam++")
    assert path == paths.processed / "heatmaps_vgg16.npz"
    back = study.load_heatmaps(paths, "vgg16")
    np.testing.assert_array_equal(back["heatmaps"], heat)
    np.testing.assert_array_equal(back["classes"], [0, 3, 1])
    assert back["method"] == "gradcam++"
    with pytest.raises(FileNotFoundError, match="heatmaps_densenet201.npz"):
        study.load_heatmaps(paths, "densenet201")
    with pytest.raises(ValueError, match="classes"):
        study.save_heatmaps(paths, "vgg16", heat, [0, 1], "gradcam")


def test_load_model_outputs_checks_consistency(tmp_path):

    paths = study.study_paths("unit", work_dir=tmp_path, report_dir=tmp_path / "report")
    labels, predicted = np.array([0, 1, 2, 3]), np.array([0, 1, 1, 3])
    study.save_predictions(paths, "m", np.eye(4)[predicted], labels)
    study.save_heatmaps(paths, "m", np.zeros((4, 3, 3)), predicted, "gradcam++")
    out = study.load_model_outputs(paths, "m", n_images=4)
    assert out["correct"].tolist() == [True, True, False, True] and out["heatmaps"].shape == (4, 3, 3)
    assert out["method"] == "gradcam++"
    with pytest.raises(ValueError, match="predictions_m.npz"):
        study.load_model_outputs(paths, "m", n_images=5)
    # an image explained for another class than predicted (a near-tie) is not counted as correct
    explained = np.array([0, 2, 1, 3])
    study.save_heatmaps(paths, "m", np.zeros((4, 3, 3)), explained, "gradcam")
    with pytest.warns(UserWarning, match="1 test image"):
        out = study.load_model_outputs(paths, "m")
    assert out["correct"].tolist() == [True, False, False, True]
    study.save_heatmaps(paths, "m", np.zeros((3, 3, 3)), predicted[:3], "gradcam")
    with pytest.raises(ValueError, match="heatmaps_m.npz"):
        study.load_model_outputs(paths, "m")
    with pytest.raises(FileNotFoundError, match="predictions_x.npz"):
        study.load_model_outputs(paths, "x")


def test_save_and_load_training(tmp_path, tiny_data):
    paths = study.study_paths("unit", work_dir=tmp_path)
    result = training.train_classifier(tiny_model(), *tiny_data, epochs=2, batch_size=12, progress=False)
    files = study.save_training(result, paths, "vgg16", weights=None)
    assert {p.name for p in files.values()} == {"vgg16.keras", "vgg16_history.csv", "vgg16_training.json"}
    assert not [p for p in paths.models.iterdir() if p.name.startswith(".")]  # no temporary files left
    loaded = study.load_training(paths, "vgg16")
    assert loaded.chosen_epoch == result.chosen_epoch
    assert loaded.val_recalls == pytest.approx(result.val_recalls)
    assert loaded.settings["backbone"] == "small_vgg" and loaded.settings["weights"] is None
    pd.testing.assert_frame_equal(loaded.history, result.history, check_dtype=False)
    x = tiny_data[2].astype("float32") / 255.0
    np.testing.assert_array_equal(loaded.model.predict(x, verbose=0), result.model.predict(x, verbose=0))
    plain = keras.models.load_model(files["model"], safe_mode=True)  # no training code needed to reload
    np.testing.assert_array_equal(plain.predict(x, verbose=0), result.model.predict(x, verbose=0))
    with pytest.raises(FileNotFoundError, match="densenet201"):
        study.load_training(paths, "densenet201")
