"""Paired comparison of two runs (masked vs unmasked): differences known by construction."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers.common import config
from helpers.common.files import save_npz
from helpers.report import comparison
from helpers.study import files as study

N, SIZE = 40, 16  # 10 test images per class


def _run(tmp_path, name, predicted, heat_inside: bool, aopc_shift: float, masks_dir):
    """A complete-looking run: split manifest, predictions, heatmaps and aopc.json with per-image AOPC."""
    paths = study.study_paths("unit", tmp_path / name, tmp_path / name / "report")
    labels = np.repeat(np.arange(4), N // 4)
    rows = []
    for i, label in enumerate(labels):
        rows.append({"path": f"/{name}/raw/img{i}.png", "label": config.CLASS_NAMES[label], "label_index": int(label),
                     "mask_path": str(masks_dir / "lung.png"), "lesion_mask_path": "", "split": "test"})  # fmt: skip
    pd.DataFrame(rows).to_csv(paths.split_manifest, index=False)
    save_npz(paths.processed / "predictions_m.npz", predicted=np.asarray(predicted, np.int64))
    heat = np.zeros((N, SIZE, SIZE), np.float32)  # at the image size: no upsampling blurs the border
    heat[:, : SIZE // 2] = 1.0 if heat_inside else 0.0  # the lung mask is the top half of the image
    heat[:, SIZE // 2 :] = 0.0 if heat_inside else 1.0
    save_npz(paths.processed / "heatmaps_m.npz", heatmaps=heat)
    rng = np.random.default_rng(0)
    morf = rng.uniform(0.2, 0.6, N) + aopc_shift
    random = morf - 0.1  # MoRF − random is 0.1 for every image in both runs
    entry = lambda values: {"indices": list(range(N)), "per_image_final": values.tolist()}  # noqa: E731
    report = {"models": {"m": {"morf": entry(morf), "random": entry(random)}}}
    paths.metrics.mkdir(parents=True, exist_ok=True)
    (paths.metrics / "aopc.json").write_text(json.dumps({"settings": {"image_size": SIZE}, "report": report}))
    return paths, labels


@pytest.fixture
def masks_dir(tmp_path):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[: SIZE // 2] = 255
    folder = tmp_path / "masks"
    folder.mkdir()
    cv2.imwrite(str(folder / "lung.png"), mask)
    return folder


def test_known_differences_and_their_readings(tmp_path, masks_dir):
    labels = np.repeat(np.arange(4), N // 4)
    first, _ = _run(tmp_path, "none", labels, heat_inside=False, aopc_shift=0.0, masks_dir=masks_dir)
    second, _ = _run(tmp_path, "lung", labels, heat_inside=True, aopc_shift=0.05, masks_dir=masks_dir)
    rows = {r["measure"]: r for r in comparison.compare_runs(first, second, n_boot=200)}
    assert list(rows) == list(comparison.MEASURES)
    # the same predictions: recall and F1 equal, a difference of exactly 0, not distinguishable
    for measure in ("macro recall", "macro F1"):
        assert rows[measure]["difference"] == 0 and rows[measure]["reading"] == "not distinguishable"
        assert rows[measure]["none"] == rows[measure]["lung"] == 1.0
    # every heatmap's mass moves from outside to inside the lungs: energy 0 -> 1
    energy = rows["lung-mask energy"]
    assert (energy["none"], energy["lung"], energy["difference"]) == pytest.approx((0.0, 1.0, 1.0))
    assert energy["reading"] == "higher with lung" and energy["n"] == N
    # AOPC shifted by 0.05 on every image: the difference and its whole interval are 0.05
    aopc = rows["AOPC (MoRF)"]
    assert (aopc["difference"], aopc["low"], aopc["high"]) == pytest.approx((0.05, 0.05, 0.05))
    gap = rows["MoRF − random"]
    assert gap["difference"] == pytest.approx(0.0, abs=1e-12) and gap["reading"] == "not distinguishable"
    table = comparison.comparison_markdown(list(rows.values()))
    assert "| m | AOPC (MoRF) |" in table and "+0.050 [+0.050, +0.050]" in table


def test_only_images_both_runs_classify_correctly_are_paired(tmp_path, masks_dir):
    labels = np.repeat(np.arange(4), N // 4)
    wrong = labels.copy()
    wrong[:10] = 1  # the second run misses the ten COVID images
    first, _ = _run(tmp_path, "none", labels, heat_inside=False, aopc_shift=0.0, masks_dir=masks_dir)
    second, _ = _run(tmp_path, "lung", wrong, heat_inside=True, aopc_shift=0.0, masks_dir=masks_dir)
    rows = {r["measure"]: r for r in comparison.compare_runs(first, second, n_boot=200)}
    assert rows["AOPC (MoRF)"]["n"] == rows["lung-mask energy"]["n"] == N - 10
    assert rows["macro recall"]["n"] == N
    assert rows["macro recall"]["difference"] == pytest.approx(0.75 - 1.0)  # COVID recall 0, the others 1
    assert rows["macro recall"]["reading"] == "lower with lung"


def test_runs_on_different_splits_are_refused(tmp_path, masks_dir):
    labels = np.repeat(np.arange(4), N // 4)
    first, _ = _run(tmp_path, "none", labels, heat_inside=False, aopc_shift=0.0, masks_dir=masks_dir)
    second, _ = _run(tmp_path, "lung", labels, heat_inside=True, aopc_shift=0.0, masks_dir=masks_dir)
    frame = pd.read_csv(second.split_manifest)
    frame.loc[0, "path"] = "/lung/raw/other.png"
    frame.to_csv(second.split_manifest, index=False)
    with pytest.raises(ValueError, match="different splits.*same test images"):
        comparison.compare_runs(first, second)
    (first.metrics / "aopc.json").unlink()
    with pytest.raises(FileNotFoundError, match="aopc.json does not exist"):
        comparison.compare_runs(first, second)


def test_rows_read_back_from_json_render_without_their_missing_values():
    row = {"model": "m", "measure": "AOPC (MoRF)", "none": None, "lung": 0.5, "n": 1, "difference": None,
           "low": None, "high": None, "reading": "too few images"}  # fmt: skip
    table = comparison.comparison_markdown([row])
    assert "| m | AOPC (MoRF) | – | 0.500 | – | 1 | too few images |" in table
