"""Nothing silently wrong (issue 26, items 1-3): masks in any encoding, saved models that saw another input, and
files under data/ changed after they were written are read correctly or refused, naming the file or parameter."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers.data import dataset, layout
from helpers.models import segmentation
from helpers.runner import pipeline
from helpers.steps import segmentation as segmentation_report
from helpers.study import files as study
from helpers.study import integrity, lineage, lung_files, split_files

ROOT = Path(__file__).resolve().parents[1]
RUN = "R1"


# ----------------------------------------------------------------------------------------------------
# 1. Masks in any common encoding; Dice of two empty masks is undefined
# ----------------------------------------------------------------------------------------------------


def _lungs(height=40, width=40) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[6:34, 5:16] = 1
    mask[6:34, 24:35] = 1
    return mask


ENCODINGS = {
    "grey 0/1": lambda m: m,
    "grey 0/255": lambda m: m * 255,
    "RGB 0/255": lambda m: np.repeat((m * 255)[..., None], 3, axis=2),
    "RGB 0/1": lambda m: np.repeat(m[..., None], 3, axis=2),
    "16 bit 0/1": lambda m: m.astype(np.uint16),
    "16 bit 0/65535": lambda m: m.astype(np.uint16) * 65535,
    "red lungs": lambda m: np.dstack([m * 0, m * 0, m * 255]),  # BGR: a grey conversion would give 76
    "RGBA 0/255": lambda m: np.dstack([m * 255] * 3 + [np.full_like(m, 255)]),
    "soft edges": lambda m: cv2.GaussianBlur(m * 200, (3, 3), 0),  # anti-aliased, largest value below 255
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_mask_reads_alike_in_every_common_encoding(tmp_path, encoding):
    truth = _lungs()
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), ENCODINGS[encoding](truth))
    frame = pd.DataFrame({"path": [str(path)], "mask_path": [str(path)]})
    masks = dataset.load_masks(frame, 40, kind="lung", required=True)
    if encoding == "soft edges":  # cut at half height: the blurred border pixel rows go either way
        assert abs(int(masks.sum()) - int(truth.sum())) <= 2 * 28 * 2 and masks[0, 20, 10] == 1
    else:
        np.testing.assert_array_equal(masks[0], truth)
    np.testing.assert_array_equal(dataset.decode_mask(str(path)).shape, truth.shape)


def test_a_lung_mask_set_that_reads_empty_or_constant_is_refused_naming_the_files(tmp_path):
    files = {"empty": np.zeros((40, 40), np.uint8), "full": np.full((40, 40), 255, np.uint8), "good": _lungs() * 255}
    for name, array in files.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), array)
    frame = pd.DataFrame({"path": [str(tmp_path / f"{n}.png") for n in files]})
    frame["mask_path"] = frame["path"]
    with pytest.raises(layout.DatasetError, match=r"2 of 3 lung mask\(s\) show no lung.*empty\.png.*full\.png") as err:
        dataset.load_masks(frame, 16, kind="lung", required=True)
    assert "good.png" not in str(err.value)
    # lesion masks may be empty (a Normal image has no lesion)
    assert dataset.load_masks(frame, 16, kind="lesion").shape == (3, 16, 16)


def test_dice_of_two_empty_masks_is_undefined_and_left_out_of_the_summary():
    empty, lungs = np.zeros((12, 12), np.uint8), _lungs(12, 12)
    pred = np.stack([empty, lungs, lungs, empty])
    true = np.stack([empty, lungs, lungs, lungs])
    dice, iou = segmentation.dice(pred, true), segmentation.iou(pred, true)
    assert np.isnan(dice[0]) and np.isnan(iou[0]) and dice[1:].tolist() == [1.0, 1.0, 0.0]
    assert segmentation.defined_mean(dice) == pytest.approx(2 / 3) and np.isnan(segmentation.defined_mean([np.nan]))
    summary = segmentation.segmentation_summary(dice, iou, np.array([0, 0, 1, 1]), n_boot=50)
    assert summary["all"]["n"] == 3 and summary["all"]["undefined"] == 1
    assert summary["all"]["dice"]["estimate"] == pytest.approx(2 / 3)
    assert summary["classes"]["COVID"]["n"] == 1 and summary["classes"]["COVID"]["undefined"] == 1
    assert "undefined" not in summary["classes"]["Lung_Opacity"]
    table = segmentation_report.summary_table(summary)
    assert table.loc["all images", "undefined (both masks empty)"] == 1
    # every image undefined: no number, and the report says "undefined"
    none = segmentation.segmentation_summary(dice[:1], iou[:1], np.array([0]), n_boot=50)
    assert none["all"] == {"n": 0, "dice": None, "iou": None, "undefined": 1}
    assert segmentation_report.summary_table(none).loc["all images", "dice [95% CI]"] == "undefined"
    assert segmentation_report.interval_text(None) == "undefined"


# ----------------------------------------------------------------------------------------------------
# Notebook 02 on masks stored as 0/1, on a dataset with some or no masks
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def copy_of(tmp_path, phantom_dataset):
    """A copy of the shared phantom set (its masks are rewritten by the tests)."""
    target = tmp_path / "copy" / "COVID-19_Radiography_Dataset"
    shutil.copytree(phantom_dataset, target)
    return target


def _segment(work: Path, dataset_dir: Path, **overrides):
    """Notebook 02 at toy sizes on ``dataset_dir``'s split (written first)."""
    paths = study.study_paths("unit", work_dir=work)
    frame = dataset.scan_dataset(dataset_dir)
    split_files.write_manifest(list(dataset.balance_and_split(frame, seed=0)), paths.split_manifest, paths=paths)
    settings = dict(
        profile="unit", work_dir=str(work), report_dir="", seed=0, image_size=32, segmentation_size=16,
        unet_filters=2, unet_depth=1, unet_epochs=1, unet_batch_size=16, unet_learning_rate=0.003, n_bootstrap=20,
    )  # fmt: skip
    return paths, segmentation_report.segment_and_report(**{**settings, **overrides})


def test_lung_masks_stored_as_0_1_are_read_as_lungs_by_notebook_02(copy_of, tmp_path):
    """The issue's repro: the phantom masks rewritten as (m > 127), 0/1; before, they read as empty and Dice was 1."""
    for path in copy_of.glob("*/masks/*.png"):
        cv2.imwrite(str(path), (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) > 127).astype(np.uint8))
    frame = dataset.scan_dataset(copy_of)
    truth = dataset.load_masks(frame, 32, kind="lung", required=True)
    assert truth.reshape(len(truth), -1).any(axis=1).all()
    paths, run = _segment(tmp_path / "work", copy_of)
    test = study.load_metrics_file(paths, "segmentation")["test"]["all"]
    assert test["dice"] != {"estimate": 1.0, "low": 1.0, "high": 1.0} and "undefined" not in test
    assert test["n"] == int(run.split_table["test"].sum()) > 0


def test_notebook_02_without_any_lung_mask_is_skipped_or_stops_for_input_mask_lung(copy_of, tmp_path, capsys):
    for folder in copy_of.glob("*/masks"):
        shutil.rmtree(folder)
    with pytest.raises(layout.DatasetError, match="no image of the dataset has a lung mask.*-p input_mask=none"):
        _segment(tmp_path / "work", copy_of, input_mask="lung")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reader gets a note, not a warning
        paths, run = _segment(tmp_path / "work", copy_of)
    out = capsys.readouterr().out
    assert "note: no image of the dataset has a lung mask, so notebook 02 is skipped" in out
    assert run.note and run.result is None and run.figures == {} and run.history_table is None
    assert not lung_files.lung_masks_path(paths).exists()
    run.show("split_table", "history_table", "segmentation_history")  # what is absent is not shown
    # the masks the classifiers would need are named as missing when input_mask="lung" asks for them
    with pytest.raises(FileNotFoundError, match="lung_masks.npz does not exist.*02_lung_segmentation"):
        study.load_split(paths, "test", 32, input_mask="lung")


def test_notebook_02_trains_on_the_images_that_have_a_mask_and_says_how_many(copy_of, tmp_path, capsys):
    gone = sorted(copy_of.glob("COVID/masks/*.png"))[:3]
    for path in gone:
        path.unlink()
    with pytest.raises(layout.DatasetError, match=r"have no lung mask.*-p skip_missing_masks=true") as err:
        _segment(tmp_path / "work", copy_of, input_mask="lung")
    assert "skip_missing=True" not in str(err.value)
    paths, run = _segment(tmp_path / "work", copy_of)  # input_mask="none": the masks only score the U-Net
    out = capsys.readouterr().out
    assert "note: 3 of 48 image(s) have no lung mask" in out
    skipped = study.load_metrics_file(paths, "segmentation")["skipped_without_mask"]
    assert sum(skipped.values()) == 3 and run.split_table.to_numpy().sum() == 45
    train = split_files.read_manifest(paths.split_manifest).query("split == 'train'")
    masks = lung_files.load_lung_masks(paths, "train", 32, len(train))  # every image still gets a predicted mask
    assert masks.shape == (len(train), 32, 32)


def test_missing_masks_name_the_runners_parameter(phantom_dataset, tmp_path):
    frame = dataset.scan_dataset(phantom_dataset).iloc[:4].copy()
    frame.loc[frame.index[0], "mask_path"] = ""
    with pytest.raises(layout.DatasetError, match="-p skip_missing_masks=true") as err:
        dataset.masked_rows(frame)
    assert "skip_missing=True" not in str(err.value)
    frame["mask_path"] = ""
    for skip in (False, True):
        with pytest.raises(layout.DatasetError, match="no image of the dataset has a lung mask"):
            dataset.masked_rows(frame, skip_missing=skip)


# ----------------------------------------------------------------------------------------------------
# A simulated smoke run: the study's own save/load calls, as the runner's kernels would make them
# ----------------------------------------------------------------------------------------------------


def _smoke_parameters(**shared) -> dict[str, dict]:
    """Every notebook's values on the smoke profile as the runner records them (defaults included, no folders)."""
    notebooks = pipeline.discover_notebooks(ROOT / "notebooks")
    overrides = [f"{key}={value}" for key, value in shared.items()]
    resolved = pipeline.resolve_parameters(pipeline.load_profile("smoke", ROOT / "params"), notebooks, overrides)
    declared = {nb.stem: pipeline.notebook_parameters(nb) for nb in notebooks}
    effective = pipeline.effective_parameters(resolved, declared)
    return {stem: {**values, "profile": "smoke"} for stem, values in effective.items()}


def _as(monkeypatch, paths, stem, parameters):
    """Act as the runner's kernel of notebook ``stem`` (run R1) from its first cell on."""
    monkeypatch.setenv(lineage.NOTEBOOK_ENV, stem)
    monkeypatch.setenv(lineage.RUN_ENV, RUN)
    monkeypatch.setenv(lineage.PARAMETERS_ENV, json.dumps(parameters[stem]))
    lineage.start_notebook(paths.report, stem, RUN)
    return study.study_paths("smoke", paths.root, paths.report)


def _stand_in_model(paths, model_name: str, stem: str) -> None:
    """The files save_training writes, with stand-in bytes for the model (these tests never reach Keras)."""
    files = study.training_files(paths, model_name)
    files["model"].write_bytes(f"stand-in model {model_name}".encode())
    files["history"].write_text("epoch,loss\n1,0.5\n")
    sha = {key: lineage.file_digest(files[key]) for key in ("model", "history")}
    study.save_json({"model_name": model_name, "chosen_epoch": 1, "val_recalls": {}, "sha256": sha}, files["info"])
    lineage.record_write(paths, files["model"], stem, value=sha["model"])


def _simulate(monkeypatch, work: Path, phantom_dataset, input_mask: str = "none"):
    """Notebooks 01-07 of the smoke profile, each reading and writing its files through helpers.study.files."""
    params = _smoke_parameters(input_mask=input_mask)
    report = work / "reports" / "smoke"
    paths = study.study_paths("smoke", work, report)
    view = {"input_mask": input_mask, "mask_margin": params["03_train_vgg16"]["mask_margin"]}
    slots = {"03_train_vgg16": "vgg16", "04_train_densenet201": "densenet201"}

    paths = _as(monkeypatch, paths, "01_data", params)
    frames = dataset.balance_and_split(dataset.scan_dataset(phantom_dataset), seed=0)
    split_files.write_manifest(list(frames), paths.split_manifest, paths=paths)
    paths = _as(monkeypatch, paths, "02_lung_segmentation", params)
    for split in layout.SPLITS:
        study.load_split(paths, split, 32, progress=False)
    lung_files.save_lung_masks(
        paths, {s: dataset.load_masks(f, 32, kind="lung") for s, f in zip(layout.SPLITS, frames)}
    )
    for stem, slot in slots.items():
        paths = _as(monkeypatch, paths, stem, params)
        study.load_split(paths, "train", 32, progress=False, **view)
        _stand_in_model(paths, slot, stem)
    paths = _as(monkeypatch, paths, "05_report", params)
    _, labels = study.load_split(paths, "test", 32, progress=False, **view)
    for stem, slot in slots.items():
        integrity.verified_model_info(paths, study.training_files(paths, slot), stem, {"image_size": 32})
        guessed = (labels + (np.arange(len(labels)) % 4 == 0)) % 4  # every fourth image wrong
        study.save_predictions(paths, slot, np.eye(4)[guessed] * 0.7 + 0.075, labels)
    paths = _as(monkeypatch, paths, "06_gradcam", params)
    for stem, slot in slots.items():
        integrity.verified_model_info(paths, study.training_files(paths, slot), stem, {"image_size": 32})
    study.load_split(paths, "test", 32, progress=False, **view)
    for slot in slots.values():
        explained = study.load_predictions(paths, slot)["predicted"]
        study.save_heatmaps(paths, slot, np.random.default_rng(0).random((len(labels), 4, 4)), explained)
    paths = _as(monkeypatch, paths, "07_aopc", params)
    study.load_split(paths, "test", 32, progress=False, **view)
    for stem, slot in slots.items():
        study.load_model_outputs(paths, slot, n_images=len(labels))
        integrity.verified_model_info(paths, study.training_files(paths, slot), stem, {"image_size": 32})
    for key in (lineage.NOTEBOOK_ENV, lineage.RUN_ENV, lineage.PARAMETERS_ENV):
        monkeypatch.delenv(key)
    return paths


@pytest.fixture
def no_kernel(monkeypatch):
    """The runner's notebooks are replaced by a record of the call: a refusal must come before it."""
    calls = []
    monkeypatch.setattr(pipeline, "_run_locked", lambda *args, **kw: calls.append([nb.stem for nb in args[3]]) or "ran")
    return calls


def _partial(work: Path, only: str, *overrides: str):
    return pipeline.run_study("smoke", only=only, overrides=list(overrides), project_dir=ROOT, work_dir=work,
                              progress=False, export_html=False, log=lambda *a: None)  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# 2. Saved models that saw another input
# ----------------------------------------------------------------------------------------------------


def test_a_partial_rerun_with_another_input_mask_is_refused_before_any_kernel(
    tmp_path, phantom_dataset, monkeypatch, no_kernel
):
    work = tmp_path / "work"
    paths = _simulate(monkeypatch, work, phantom_dataset, input_mask="none")
    assert _partial(work, "07") == "ran"  # the same parameters: it may run
    no_kernel.clear()
    for only in ("07", "06", "05"):
        with pytest.raises(
            pipeline.StaleInputs,
            match=rf"{only}_\w+ would read data/models/smoke/vgg16\.keras \(and \d+ more file\(s\)\), which 03_train_vgg16 made with "
            r"input_mask='none', but this run has -p input_mask=lung: rerun from 03_train_vgg16 .*--from 03 "
            r"-p input_mask=lung.*or run with -p input_mask=none",
        ):
            _partial(work, only, "input_mask=lung")
    assert no_kernel == []
    # and inside a kernel (JupyterLab, or a runner that let it through): the notebook's load refuses it
    _as(monkeypatch, paths, "07_aopc", _smoke_parameters(input_mask="lung"))
    with pytest.raises(study.LineageError, match=r"vgg16\.keras was made by 03_train_vgg16 with input_mask='none', "
                       r"but this notebook has input_mask='lung'.*--from 03 -p input_mask=lung"):  # fmt: skip
        study.load_model(paths, "vgg16", 32)
    with pytest.raises(study.LineageError, match="predictions_vgg16.npz was made by 05_report with input_mask='none'"):
        study.load_model_outputs(paths, "vgg16")


def test_a_notebook_run_by_hand_names_the_parameter_that_differs(tmp_path, phantom_dataset, monkeypatch):
    """e.g. papermill with only ``-p profile smoke``: the notebook's image_size and input_mask are not the models'."""
    paths = _simulate(monkeypatch, tmp_path / "work", phantom_dataset, input_mask="none")
    paths = study.study_paths("smoke", paths.root)  # by hand: no runner, its own report folder
    with pytest.raises(study.LineageError, match=r"image_size=32, but this notebook has image_size=96: run this "
                       r"notebook with image_size=32 \(papermill: -p image_size 32"):  # fmt: skip
        study.load_model(paths, "vgg16", 96)
    # interactively, what load_split was asked for is what the models must have seen ...
    paths = study.study_paths("smoke", paths.root)
    study.load_split(paths, "test", 32, progress=False, input_mask="lung", mask_margin=4)
    with pytest.raises(study.LineageError, match="input_mask='none', but this notebook has input_mask='lung'"):
        study.load_model(paths, "vgg16", 32)
    # ... in either order
    paths = study.study_paths("smoke", paths.root)
    integrity.verified_model_info(paths, study.training_files(paths, "vgg16"), "03_train_vgg16", {"image_size": 32})
    with pytest.raises(study.LineageError, match="vgg16.keras was made by 03_train_vgg16 with input_mask='none'"):
        study.load_split(paths, "test", 32, progress=False, input_mask="lung", mask_margin=4)


def test_another_mask_margin_or_lung_segmentation_is_refused_before_any_kernel(
    tmp_path, phantom_dataset, monkeypatch, no_kernel
):
    work = tmp_path / "work"
    paths = _simulate(monkeypatch, work, phantom_dataset, input_mask="lung")
    assert _partial(work, "07", "input_mask=lung") == "ran"
    with pytest.raises(pipeline.StaleInputs, match=r"made with mask_margin=4, but this run has -p mask_margin=8"):
        _partial(work, "07", "input_mask=lung", "mask_margin=8")
    # notebook 02 rerun in the same run with another segmentation: the models were trained on the old masks
    with pytest.raises(
        pipeline.StaleInputs,
        match=r"07_aopc reads .*, written by 0\d_\w+, which was made from what 02_lung_segmentation rewrites in this "
        r"run with -p unet_epochs=12 \(saved: unet_epochs=2\).*--from 02",
    ):
        _partial(work, "02,07", "input_mask=lung", "unet_epochs=12")
    assert no_kernel == [["07_aopc"]]  # only the first, unrefused call
    # notebook 02 already rerun with another segmentation: the models' lineage says so
    _as(monkeypatch, paths, "02_lung_segmentation", _smoke_parameters(input_mask="lung", unet_epochs=12))
    masks = {split: np.zeros((n, 32, 32), np.uint8) for split, n in (("train", 36), ("val", 4), ("test", 8))}
    lung_files.save_lung_masks(paths, masks)
    for key in (lineage.NOTEBOOK_ENV, lineage.RUN_ENV, lineage.PARAMETERS_ENV):
        monkeypatch.delenv(key)
    with pytest.raises(pipeline.StaleInputs, match=r"07_aopc reads .*whose results do not match data/.*--from 03"):
        _partial(work, "07", "input_mask=lung")


# ----------------------------------------------------------------------------------------------------
# 3. Files under data/ are verified against their recorded digest before use
# ----------------------------------------------------------------------------------------------------


def test_hand_edited_predictions_stop_the_runner_and_the_notebook(tmp_path, phantom_dataset, monkeypatch, no_kernel):
    """The issue's repro: ``predicted = labels`` in predictions_vgg16.npz, then ``--only 07``."""
    work = tmp_path / "work"
    paths = _simulate(monkeypatch, work, phantom_dataset)
    path = study.predictions_path(paths, "vgg16")
    arrays = study.load_npz(path)
    assert (arrays["predicted"] != arrays["labels"]).any()
    arrays["predicted"] = arrays["labels"]
    np.savez_compressed(path, **arrays)
    with pytest.raises(
        pipeline.StaleInputs,
        match=r"data/processed/smoke/predictions_vgg16\.npz was modified after 05_report wrote it .*07_aopc reads it: "
        r"rerun 05_report and the notebooks after it \(--from 05\)",
    ):
        _partial(work, "07")
    assert no_kernel == []
    _as(monkeypatch, paths, "07_aopc", _smoke_parameters())
    with pytest.raises(
        study.LineageError, match=r"predictions_vgg16\.npz was modified after 05_report wrote it.*--from 05"
    ):
        study.load_model_outputs(paths, "vgg16")


def test_every_file_a_notebook_reads_under_data_is_checked_against_its_digest(
    tmp_path, phantom_dataset, monkeypatch, capsys
):
    paths = _simulate(monkeypatch, tmp_path / "work", phantom_dataset)
    study.study_paths("smoke", paths.root, paths.report)
    images, _ = study.load_split(paths, "test", 32, progress=False)
    # the image cache: a changed cache file is decoded again, not used
    frame = split_files.read_manifest(paths.split_manifest)
    cached = dataset.cache_path(frame[frame["split"] == "test"], 32, paths.cache)
    np.save(cached, np.zeros_like(images))
    again, _ = study.load_split(paths, "test", 32, progress=False)
    np.testing.assert_array_equal(again, images)
    assert f"note: {cached} does not match the SHA-256 recorded" in capsys.readouterr().out
    # the other files: refused, naming the file and the notebook to rerun
    edits = {
        lung_files.lung_masks_path(paths): (
            "02_lung_segmentation",
            lambda: lung_files.load_lung_masks(paths, "test", 32, 8),
        ),
        study.heatmaps_path(paths, "densenet201"): ("06_gradcam", lambda: study.load_heatmaps(paths, "densenet201")),
        study.predictions_path(paths, "densenet201"): (
            "05_report",
            lambda: study.load_predictions(paths, "densenet201"),
        ),
        paths.split_manifest: ("01_data", lambda: study.load_split(paths, "test", 32, progress=False)),
    }
    for path, (producer, load) in edits.items():
        path.write_bytes(path.read_bytes() + b"\n")
        with pytest.raises(
            study.LineageError, match=rf"{path.name} was modified after {producer} wrote it.*rerun {producer}"
        ):
            load()
    history = study.training_files(paths, "vgg16")["history"]
    history.write_text("epoch,loss\n1,0.1\n")
    with pytest.raises(integrity.ModelIntegrityError, match="vgg16_history.csv was modified.*rerun 03_train_vgg16"):
        study.load_training(paths, "vgg16", load_model=False)


def test_the_digest_benchmark_runs_at_toy_sizes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_digests", ROOT / "benchmarks" / "bench_digests.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--test", "8", "--train", "0", "--size", "16", "--model-mb", "0.1", "--repeats", "1"])
    assert len(out["files"]) == 6 and all(row["hash_s"] >= 0 for row in out["files"].values())
