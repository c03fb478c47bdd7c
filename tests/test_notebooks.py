"""Notebook tests: nbval over every notebook prepared with the smoke profile, and the runner on smoke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest

from helpers.runner import pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.notebook


def _prepare(tmp_path: Path) -> list[Path]:
    """Write the notebooks with the smoke parameters injected (papermill prepare-only) into a temp folder."""
    notebooks = pipeline.discover_notebooks(ROOT / "notebooks")
    params = pipeline.resolve_parameters(pipeline.load_profile("smoke", ROOT / "params"), notebooks)
    prepared_dir = tmp_path / "prepared"
    prepared_dir.mkdir()
    prepared = []
    for nb in notebooks:
        values = dict(params[nb.stem])
        declared = pipeline.notebook_parameters(nb)
        runner = {"profile": "smoke", "work_dir": str(tmp_path / "work"), "report_dir": str(tmp_path / "report")}
        values.update({k: v for k, v in runner.items() if k in declared})
        out = prepared_dir / nb.name
        pm.execute_notebook(str(nb), str(out), parameters=values, prepare_only=True, progress_bar=False)
        prepared.append(out)
    return prepared


def test_nbval_over_smoke_prepared_notebooks(tmp_path):
    prepared = _prepare(tmp_path)
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            *map(str, prepared),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert (tmp_path / "report" / "figures" / "fig1_examples.png").is_file()


def test_runner_executes_01_on_smoke(tmp_path):
    result = pipeline.run_study("smoke", only="01", work_dir=tmp_path, progress=False, log=lambda *a: None)
    report = tmp_path / "reports" / "smoke"
    assert result.report_dir == report
    for name in (
        "01_data.ipynb",
        "01_data.html",
        "index.html",
        "run.json",
        "figures/fig1_examples.png",
        "figures/masks_overlay.png",
        "metrics/data.json",
    ):
        assert (report / name).is_file(), name
    counts = json.loads((report / "metrics" / "data.json").read_text())["counts"]
    assert counts["Total"]["total"] == 4 * 12
    assert (tmp_path / "data" / "processed" / "smoke" / "split.csv").is_file()
