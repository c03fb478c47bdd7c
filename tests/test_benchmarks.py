"""The paper-size benchmark's code path at toy sizes, so a change that breaks it shows in the tests."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, as_name: str | None = None):
    if str(ROOT / "benchmarks") not in sys.path:  # as when run as a script: its folder's modules import
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(as_name or name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_paper_study_runs_every_stage_at_toy_sizes(tmp_path):
    bench = _load("bench_paper_study")
    sizes = "--per-class 10 --image-size 32 --epochs 1 --region-size 16 --aopc-batch 10 --batch-size 8"
    args = [*sizes.split(), "--backbones", "small_vgg", "--work-dir", str(tmp_path), "--workers", "1"]
    results = bench.main(args)
    row = results["models"]["small_vgg"]
    assert row["aopc_inputs"] == 4 * 5 and row["aopc_over_bare"] > 0  # 4 test images (1 per class) x (2x2 regions + 1)
    assert "small_vgg: build" in results["stages"]
    stages = results["stages"]
    once = [k for k in stages if "reference" not in k]
    assert len(once) == len(stages) - 1 and results["study_seconds"] == pytest.approx(sum(stages[k] for k in once))
    assert len(row["aopc_stage_seconds"]) == len(row["bare_forward_seconds"]) == 1  # --aopc-repeats 1: one pass each
    assert row["aopc_images_per_s"] == pytest.approx(20 / row["aopc_stage_seconds"][0])
    assert row["curve_inputs_alone_seconds"] > 0 and row["host_perturbed_copies_seconds"] > 0
    assert 0 <= results["study_compilation_seconds"] <= results["compilation_seconds"]


def test_bench_paper_study_removes_its_temporary_work_folder(tmp_path, monkeypatch):
    bench = _load("bench_paper_study")
    work = tmp_path / "made-by-mkdtemp"
    work.mkdir()
    real = tempfile.mkdtemp
    monkeypatch.setattr(
        tempfile, "mkdtemp", lambda *a, **k: str(work) if k.get("prefix") == "paper-bench-" else real(*a, **k)
    )
    sizes = "--per-class 10 --image-size 32 --epochs 1 --region-size 16 --aopc-batch 10 --batch-size 8"
    bench.main([*sizes.split(), "--backbones", "small_vgg", "--workers", "1"])
    assert not work.exists()


def test_bench_paper_study_spares_spawned_workers_its_heavy_imports():
    # a process pool's workers re-run the main script's top level as __mp_main__: it must not import Keras there
    worker_view = _load("bench_paper_study", as_name="__mp_main__")
    assert not hasattr(worker_view, "keras") and not hasattr(worker_view, "COMPILES")


def test_bench_segmentation_runs_at_toy_sizes(tmp_path):
    bench = _load("bench_segmentation")
    sizes = "--per-class 10 --synthetic-size 32 --image-size 32 --segmentation-size 16 --depth 1 --base-filters 2"
    out = bench.main([*sizes.split(), "--epochs", "1", "--batch-size", "4", "--data-dir", str(tmp_path)])
    assert out["train_size"] == 32 and out["best_epoch"] == 1 and out["train_s"] > 0
    assert 0.0 <= out["test_dice"]["low"] <= out["test_dice"]["estimate"] <= out["test_dice"]["high"] <= 1.0


def test_bench_masks_checks_both_sides_at_toy_sizes():
    bench = _load("bench_masks")
    out = bench.main(["--n", "70", "--size", "40", "--segmentation-size", "32", "--margin", "2", "--decode", "20",
                      "--repeats", "1"])  # fmt: skip
    assert len(out["steps"]) == 8 and all(row["ratio"] > 0 for row in out["steps"].values())
