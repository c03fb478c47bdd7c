"""The measures of a given model do not depend on the shape of the machine; the data does not depend on it at all.

Grad-CAM, perturbation curves, AOPC and mask energy are float32 forwards and gradients: another batch size,
device group, worker count or intra-op thread count splits and orders their sums differently, so they may differ
in the last bits, never more. Each comparison states the tolerance that covers this. Data (phantoms, decoded
images and their cache files, splits) is integer or text and stays byte-identical whatever the worker count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from test_heatmaps import assert_clear_argmax, contract_model
from test_heatmaps import phantoms as lesion_phantoms

from helpers.common import parallel
from helpers.data import dataset
from helpers.explain import grad_cam as heatmaps
from helpers.metrics import aopc as scores
from helpers.metrics import energy as localization
from helpers.metrics import perturbation
from helpers.study import split_files

HERE = Path(__file__).resolve().parent

#: 16 px images, 4 px regions: 16 regions, 17 steps per curve.
SIZE, REGION = 16, 4

# Tolerances, all far below any difference the study reads (AOPC differences between models or orders are
# 1e-2 and more):
#: Grad-CAM maps: a float32 sum over channels of activations times mean gradients; a few ulps (1e-7) of
#: rounding in each term stay within 1e-5 of the map, plus an absolute floor at 1e-6 of the peak for cells
#: where positive and negative terms cancel.
CAM_RTOL, CAM_ATOL_OF_PEAK = 1e-5, 1e-6
#: Probabilities (in [0, 1]) of a float32 softmax: each logit carries a few ulps of rounding, which moves a
#: probability by a few float32 ulps of 1 (6e-8 each; batch size 1 against 32 moves them by up to 4e-7 here).
PROB_ATOL = 5e-6
#: AOPC, its interval bounds and contrasts average differences of two such probabilities: at most twice that.
AOPC_ATOL = 1e-5
#: Mask energy (in [0, 1]) is a ratio of two sums of the upsampled maps, each sum within the maps' relative 1e-5:
#: the ratio within 2e-5, rounded up.
ENERGY_ATOL = 5e-5


@pytest.fixture(scope="module")
def case():
    """A small conv classifier with the study's layer names, uint8 images with a bright lesion, and its masks."""
    model = contract_model(seed=11, size=SIZE)
    images, masks = lesion_phantoms(n=10, size=SIZE, seed=11)
    images = np.round(images * 255).astype(np.uint8)
    return {"model": model, "images": images, "masks": masks}


def measures(model, images, masks, batch_size: int, explained=None) -> dict:
    """Grad-CAM maps, MoRF and random curves, AOPC and mask energy of ``images``, every forward at ``batch_size``.

    ``explained``: the (heatmaps, classes) whose region order the curves follow (default: the maps computed
    here). Comparisons pass the reference's, so that they compare the curves themselves: an order taken from
    maps that differ in the last bits could swap two nearly tied regions.
    """
    cam, classes = heatmaps.gradcam(model, images, batch_size=batch_size, return_classes=True)
    heat, explained_classes = (cam, classes) if explained is None else explained
    common = dict(perturbation="gaussian", sigma=0.1, seed=3, batch_size=batch_size, progress=False)
    morf = perturbation.perturbation_curves(model, images, heat, explained_classes, REGION, order="morf", **common)
    rand = perturbation.perturbation_curves(model, images, None, explained_classes, REGION, order="random", **common)
    return {
        "cam": cam,
        "classes": classes,
        "morf": morf,
        "random": rand,
        "aopc_morf": scores.aopc(morf)["aopc"],
        "aopc_random": scores.aopc(rand)["aopc"],
        "energy": localization.mask_energy(cam, masks),
    }


def assert_measures_agree(got: dict, expected: dict) -> None:
    """The same explained classes; maps, curves, AOPC and energies within the tolerances above."""
    np.testing.assert_array_equal(got["classes"], expected["classes"])  # see test_the_case_is_not_a_near_tie
    peak = float(np.abs(expected["cam"]).max())
    np.testing.assert_allclose(got["cam"], expected["cam"], rtol=CAM_RTOL, atol=CAM_ATOL_OF_PEAK * peak)
    for order in ("morf", "random"):
        np.testing.assert_allclose(got[order], expected[order], rtol=0, atol=PROB_ATOL)
        np.testing.assert_allclose(got[f"aopc_{order}"], expected[f"aopc_{order}"], rtol=0, atol=AOPC_ATOL)
    np.testing.assert_allclose(got["energy"], expected["energy"], rtol=0, atol=ENERGY_ATOL, equal_nan=True)


def explained(result: dict) -> tuple:
    """The (heatmaps, classes) of a result of :func:`measures`."""
    return result["cam"], result["classes"]


@pytest.fixture(scope="module")
def reference(case):
    """The measures at batch size 32 (Grad-CAM's default; 10 images of 17 steps make 6 batches of curves)."""
    return measures(case["model"], case["images"], case["masks"], batch_size=32)


def test_the_case_is_not_a_near_tie(case, reference):
    """Explained classes come from an argmax of float32 logits: compared exactly only because no image is close
    to a tie (the top two logits differ by far more than float32 noise), and the maps and curves are not trivial."""
    assert_clear_argmax(case["model"], case["images"].astype(np.float32) / 255.0)
    assert reference["cam"].max() > 0 and np.isfinite(reference["energy"]).sum() >= 8
    assert np.ptp(reference["morf"]) > 0.05  # the perturbation changes the probabilities


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_measures_agree_across_batch_sizes(case, reference, batch_size):
    """One image at a time, batches that straddle images, and one batch larger than all pairs."""
    got = measures(case["model"], case["images"], case["masks"], batch_size, explained(reference))
    assert_measures_agree(got, reference)


def test_curves_agree_across_device_groups_and_subsets(case, reference):
    """Images held on the device a few at a time, and a subset scored with its own ids, give the same curves."""
    model, images = case["model"], case["images"]
    common = dict(perturbation="gaussian", sigma=0.1, seed=3, progress=False)
    grouped = perturbation.perturbation_curves(
        model, images, reference["cam"], reference["classes"], REGION, batch_size=17, device_budget_bytes=1, **common
    )
    np.testing.assert_allclose(grouped, reference["morf"], rtol=0, atol=PROB_ATOL)
    part = perturbation.perturbation_curves(
        model,
        images[3:8],
        reference["cam"][3:8],
        reference["classes"][3:8],
        REGION,
        batch_size=5,
        image_ids=np.arange(3, 8),
        **common,
    )
    np.testing.assert_allclose(part, reference["morf"][3:8], rtol=0, atol=PROB_ATOL)


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "blur"])
def test_curves_agree_across_worker_counts(case, reference, kind, monkeypatch):
    """$STUDY_WORKERS and ``workers=`` change how many threads draw the perturbed copies, not the curves."""
    model, images = case["model"], case["images"]
    monkeypatch.setattr(perturbation, "_THREADED_PIXELS", 0)  # threads even for these few pixels
    args = (model, images, reference["cam"], reference["classes"], REGION, kind)
    curves, copies = {}, {}
    for workers in ("1", "3"):
        monkeypatch.setenv(parallel.WORKERS_ENV, workers)
        copies[workers] = perturbation.perturbed_images(images, kind, 0.1, seed=3, blur_sigma=1.0)
        curves[workers] = perturbation.perturbation_curves(*args, seed=3, batch_size=32, progress=False)
    assert copies["1"].tobytes() == copies["3"].tobytes()  # the data: the same bytes
    np.testing.assert_array_equal(
        perturbation.perturbed_images(images, kind, 0.1, seed=3, blur_sigma=1.0, workers=2), copies["1"]
    )
    np.testing.assert_allclose(curves["3"], curves["1"], rtol=0, atol=PROB_ATOL)
    if kind == "gaussian":
        np.testing.assert_allclose(curves["3"], reference["morf"], rtol=0, atol=PROB_ATOL)


def test_aopc_statistics_and_ablation_agree_across_batch_sizes(case, reference):
    """Bootstrap intervals, paired contrasts and the ablation's rows move by no more than the curves do."""
    from test_scores import rows_close

    model, images = case["model"], case["images"]
    other = measures(model, images, case["masks"], batch_size=5, explained=explained(reference))
    for order in ("morf", "random"):
        a, b = (scores.aopc_summary(m[order], n_boot=300, seed=1) for m in (reference, other))
        for key in ("aopc", "aopc_low", "aopc_high", "final", "final_low", "final_high"):
            np.testing.assert_allclose(b[key], a[key], rtol=0, atol=AOPC_ATOL, err_msg=key)
    a, b = (scores.paired_difference(m["morf"], m["random"], n_boot=300, seed=1) for m in (reference, other))
    for key in ("difference", "difference_low", "difference_high", "final", "final_low", "final_high"):
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=AOPC_ATOL, err_msg=key)
    settings = [("gaussian", 0.1), ("mean", 0.0)]
    rows = {
        batch_size: scores.perturbation_ablation(
            model,
            images,
            reference["cam"],
            reference["classes"],
            REGION,
            settings,
            batch_size=batch_size,
            n_boot=200,
            progress=False,
        )
        for batch_size in (17, 128)
    }
    assert len(rows[17]) == len(rows[128]) == 2
    assert all(rows_close(a, b, AOPC_ATOL) for a, b in zip(rows[17], rows[128]))


def test_mask_energy_agrees_across_opencv_thread_counts(case, reference):
    """Upsampling runs on OpenCV's threads: one thread or several give the same energies."""
    threads = cv2.getNumThreads()
    try:
        energies = {}
        for n in (1, 4):
            cv2.setNumThreads(n)
            energies[n] = localization.mask_energy(reference["cam"], case["masks"], size=48)
    finally:
        cv2.setNumThreads(threads)
    np.testing.assert_allclose(energies[4], energies[1], rtol=0, atol=ENERGY_ATOL, equal_nan=True)


_CHILD = """
import sys
import numpy as np
sys.path.insert(0, {here!r})
import test_machine_independence as T
data = np.load({inputs!r})
model = T.contract_model(seed=11, size=T.SIZE)
out = T.measures(model, data["images"], data["masks"], 32, (data["cam"], data["classes"]))
np.savez({output!r}, **out)
"""


def test_measures_agree_across_intra_op_thread_counts(case, reference, tmp_path):
    """The same measures in a process whose TensorFlow (or XLA) runs one intra-op thread (two if this one does)."""
    current = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    threads = "2" if current == "1" or (not current and (os.cpu_count() or 1) == 1) else "1"
    inputs, output = tmp_path / "inputs.npz", tmp_path / "out.npz"
    np.savez(inputs, images=case["images"], masks=case["masks"], cam=reference["cam"], classes=reference["classes"])
    env = dict(
        os.environ,
        TF_NUM_INTRAOP_THREADS=threads,
        TF_NUM_INTEROP_THREADS=threads,
        OMP_NUM_THREADS=threads,
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    if keras.backend.backend() == "jax":
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" if threads == "1" else ""
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    script = _CHILD.format(here=str(HERE), inputs=str(inputs), output=str(output))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_measures_agree(dict(np.load(output)), reference)


# ----------------------------------------------------------------------------------------------------
# Data: the same bytes whatever the worker count (phantoms: tests/test_parallel.py)
# ----------------------------------------------------------------------------------------------------


def test_scan_split_and_manifest_are_the_same_bytes_whatever_the_worker_count(phantom_dataset, tmp_path, monkeypatch):
    """The scan checks every file on $STUDY_WORKERS threads; the frame, the split and the manifest file do not change."""
    manifests = {}
    for workers in ("1", "3"):
        monkeypatch.setenv(parallel.WORKERS_ENV, workers)
        frame = dataset.scan_dataset(phantom_dataset)
        parts = dataset.balance_and_split(frame, seed=4)
        (tmp_path / workers).mkdir()
        manifests[workers] = split_files.write_manifest(list(parts), tmp_path / workers / "split.csv").read_bytes()
    assert manifests["1"] == manifests["3"] and manifests["1"].count(b"\n") == 49  # header and 48 rows


def test_image_cache_files_are_the_same_bytes_whatever_the_worker_count(phantom_dataset, tmp_path, monkeypatch):
    """Images decoded on one thread or several: the same arrays and byte-identical cache files."""
    frame = dataset.scan_dataset(phantom_dataset)
    arrays, files = {}, {}
    for workers in (1, 2, 3):
        cache = tmp_path / f"cache-{workers}"
        if workers == 3:  # through $STUDY_WORKERS rather than the argument
            monkeypatch.setenv(parallel.WORKERS_ENV, "3")
            arrays[workers] = dataset.load_images(frame, 24, cache_dir=cache, progress=False)
        else:
            arrays[workers] = dataset.load_images(frame, 24, cache_dir=cache, progress=False, workers=workers)
        (files[workers],) = cache.glob("*.npy")
    assert arrays[1].dtype == np.uint8 and arrays[1].shape == (48, 24, 24, 1)
    assert arrays[1].tobytes() == arrays[2].tobytes() == arrays[3].tobytes()
    assert len({f.name for f in files.values()}) == 1  # the key depends on the files, not on the workers
    assert files[1].read_bytes() == files[2].read_bytes() == files[3].read_bytes()
    masks = {}
    for workers in ("1", "3"):  # lung masks are decoded and resized on $STUDY_WORKERS threads
        monkeypatch.setenv(parallel.WORKERS_ENV, workers)
        masks[workers] = dataset.load_masks(frame, 24, "lung")
    assert masks["1"].any() and masks["1"].tobytes() == masks["3"].tobytes()
