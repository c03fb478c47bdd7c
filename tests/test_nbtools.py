"""The notebooks' shared Colab set-up cell and their hygiene."""

from __future__ import annotations

import glob
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from helpers.runner import nbtools

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return subprocess.CompletedProcess(args, 0)


@pytest.fixture
def fake_colab(monkeypatch):
    """Stand-in google.colab module whose drive.mount records its calls; pip is never run."""
    mounts = []
    drive = types.SimpleNamespace(mount=lambda where, **kw: mounts.append(where))
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    run = _Recorder()
    monkeypatch.setattr(subprocess, "run", run)
    return types.SimpleNamespace(mounts=mounts, run=run)


def _run_cell():
    exec(compile(nbtools.COLAB_CELL, "<colab-cell>", "exec"), {"__name__": "__main__"})


def test_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    run = _Recorder()
    monkeypatch.setattr(subprocess, "run", run)
    _run_cell()
    assert run.calls == []


def test_cell_on_colab_with_project_installed_only_mounts_drive(fake_colab):
    _run_cell()  # helpers is importable here, so nothing is installed
    assert fake_colab.run.calls == []
    assert fake_colab.mounts == ["/content/drive"]


def test_cell_on_colab_installs_from_repository_or_uploaded_wheel(fake_colab, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "helpers" else real_find_spec(name, *a)
    )
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    _run_cell()
    (command,), kwargs = fake_colab.run.calls[-1]
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"]
    assert command[5].startswith("git+https://") and kwargs == {"check": True}

    wheel = "/content/gradcam_xray_study-0.1.0-py3-none-any.whl"
    monkeypatch.setattr(glob, "glob", lambda pattern: [wheel] if pattern.endswith(".whl") else [])
    _run_cell()
    (command,), _ = fake_colab.run.calls[-1]
    assert command[-1] == wheel
    assert fake_colab.mounts == ["/content/drive", "/content/drive"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebooks_are_clean(path):
    assert nbtools.check_notebook(path) == []


def test_fix_strips_outputs_and_inserts_the_cell(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# title"),
            nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(
                "print(x)", execution_count=3, outputs=[nbformat.v4.new_output("stream", text="1\n")]
            ),
        ]
    )
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, str(path))
    assert len(nbtools.check_notebook(path)) == 2
    assert nbtools.fix_notebook(path) is True
    assert nbtools.check_notebook(path) == []
    assert nbtools.fix_notebook(path) is False
    cells = nbformat.read(str(path), as_version=4).cells
    assert cells[1].source == nbtools.COLAB_CELL and cells[0].cell_type == "markdown"
