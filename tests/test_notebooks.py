"""Notebook tests: nbval over every notebook prepared with the smoke profile (``nbval_study``, tests/conftest.py), the
runner on smoke, and two real runners on one work folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.runner import pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.notebook


def test_nbval_over_smoke_prepared_notebooks(nbval_study):
    record, report = nbval_study
    assert record["returncode"] == 0, record["output"]
    assert (report / "figures" / "fig1_examples.png").is_file() and (report / "summary.md").is_file()


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
    first, lines = _runner(tmp_path, "--only", "01,03,04"), []
    _read_until(first, "[1/3]", lines)
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
    ran = ["01_data.ipynb", "03_train_vgg16.ipynb", "04_train_densenet201.ipynb", "05_report.ipynb"]
    assert sorted(p.name for p in report.glob("*.ipynb")) == ran
    assert (report / "metrics" / "classification_summary.json").is_file()

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
    assert sorted(p.name for p in report.glob("*.ipynb")) == ran
    assert len(list((report / "metrics").glob("*.json"))) >= 5
