"""Tests of helpers.runner.provenance (run.json), the runner's final-path rewrite and console-only progress bars."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import nbformat

from helpers.runner import pipeline, provenance


def test_environment_records_versions_git_device_and_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    env = provenance.environment(tmp_path)  # not a git checkout
    assert env["keras_backend"] == "jax" and env["git"] == {"commit": None, "dirty": None}
    versions = env["versions"]
    for name in ("numpy", "keras", "scikit-learn", "papermill", "python", "tensorflow", "jax", "jaxlib", "opencv"):
        assert name in versions
    assert versions["numpy"] == metadata.version("numpy") and versions["python"] == env["python"]
    assert env["device"]["cpu"] and isinstance(env["device"]["gpus"], list)
    # a git checkout: the commit, and dirty once a tracked file changes
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("1")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    state = provenance.git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "a.txt").write_text("2")
    assert provenance.git_state(tmp_path)["dirty"] is True


def test_runner_does_not_import_tensorflow_for_run_json():
    code = (
        "import sys; from helpers.runner import pipeline; pipeline._environment(); print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False" and "absl" not in out.stderr


def test_final_paths_replace_the_staging_folder(tmp_path):
    staging, final = tmp_path / "reports" / ".demo.staging-1", tmp_path / "reports" / "demo"
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(f'report_dir = "{staging}"\nseed = 0')
    params.metadata["tags"] = ["injected-parameters"]
    printed = nbformat.v4.new_code_cell("print(paths.report)")
    printed.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"report in {staging}\n")]
    nb.cells = [params, printed]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    assert pipeline.show_final_paths(path, staging, final) == 2
    text = path.read_text()
    assert str(staging) not in text and f'report_dir = \\"{final}\\"' in text and f"report in {final}" in text


def test_progress_goes_to_the_console_under_the_runner():
    code = (
        "from helpers.common.progress import tqdm\n"
        "import io, sys\n"
        "sys.stderr = io.StringIO()  # what a notebook cell would capture\n"
        "for _ in tqdm(range(3), desc='bar'): pass\n"
        "assert sys.stderr.getvalue() == '', sys.stderr.getvalue()\n"
    )
    env = {**__import__("os").environ, "STUDY_PLAIN_PROGRESS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "bar: 100%" in out.stderr  # on the process's own console


def test_progress_stays_out_of_an_executed_cell(monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("STUDY_PLAIN_PROGRESS", "1")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from helpers.common.progress import tqdm\nfor _ in tqdm(range(3), desc='bar'): pass")
    ]
    NotebookClient(nb, timeout=120).execute()
    assert nb.cells[0].outputs == []  # ipykernel captures fd 2: the bar goes to its saved copy of the console
