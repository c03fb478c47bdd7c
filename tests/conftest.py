"""Shared test fixtures: a small synthetic phantom dataset in the Kaggle layout."""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

import pytest

# Figures are drawn off-screen in tests.
os.environ.setdefault("MPLBACKEND", "Agg")

#: Size of the shared phantom dataset: enough per class for a non-empty 80/10/10 split (9/1/2).
PHANTOM_PER_CLASS = 12
PHANTOM_IMAGE_SIZE = 64


#: Imports through which a test may run a Keras computation: a test file importing any of them (directly or through
#: another test module) is marked ``keras`` and runs under every backend; the others run once (``make test``).
KERAS_IMPORTS = (
    "keras", "tensorflow", "jax", "helpers.backend", "helpers.explain", "helpers.models", "helpers.steps",
    "helpers.metrics.perturbation", "helpers.metrics.aopc", "helpers.metrics.road", "helpers.metrics.imputation",
    "helpers.metrics.insertion", "helpers.metrics.randomisation", "helpers.metrics.pointing", "helpers.study.files",
    "helpers.study.lung_files", "helpers.study.integrity", "helpers.report.explorer", "helpers.report.figures",
    "helpers.report.heatmap_figures",
)  # fmt: skip
TESTS = Path(__file__).resolve().parent


@functools.cache
def may_run_keras(path: Path) -> bool:
    """Whether the test file at ``path`` imports anything of :data:`KERAS_IMPORTS` (``helpers``' public names count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    for name in names:
        if name == "helpers" or name.startswith(KERAS_IMPORTS):
            return True
        other = TESTS / f"{name.split('.')[0]}.py"
        if name.startswith("test_") and other.is_file() and may_run_keras(other):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    """Mark ``keras`` every test of a file that may run a Keras computation (:func:`may_run_keras`).

    ``make test`` runs two pytest-xdist workers; the studies several notebook tests read are computed once per session
    for both (:func:`shared_once`).
    """
    for item in items:
        if may_run_keras(Path(item.fspath)):
            item.add_marker(pytest.mark.keras)


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory):
    """Path of a synthetic dataset folder (``COVID-19_Radiography_Dataset``): 12 phantoms per class at 64 px, seed 0."""
    from helpers.data.phantoms import synthesize_dataset

    root = tmp_path_factory.mktemp("phantoms")
    return synthesize_dataset(
        root, per_class=PHANTOM_PER_CLASS, image_size=PHANTOM_IMAGE_SIZE, seed=0, mask_size=64, progress=False
    )


@pytest.fixture(scope="module")
def toy():
    """The patch model of test_perturbation with images and ideal heatmaps (shared by the curve and AOPC tests)."""
    from test_perturbation import make_toy

    return make_toy()


@pytest.fixture(scope="module")
def tiny_data():
    """Quadrant images of test_training (shared by the training and the study-file tests)."""
    from test_training import make_tiny_data

    return make_tiny_data()


def shared_once(tmp_path_factory, name: str, compute) -> dict:
    """``compute(folder)`` (a JSON-able record) once per test session, whichever pytest-xdist worker asks first: the
    others wait on a lock and read the record, so a study shared by tests on both workers is computed once."""
    import fcntl
    import json

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above the workers' own
    folder, record = base / f"shared-{name}", base / f"shared-{name}.json"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.is_file():
            folder.mkdir(exist_ok=True)
            record.write_text(json.dumps(compute(folder)))
    return json.loads(record.read_text())


@pytest.fixture(scope="session")
def nbval_study(tmp_path_factory):
    """Every notebook run by nbval (``--nbval-lax``) with the smoke parameters injected, once per session: the notebooks
    as a user runs them in Jupyter. Returns ``(the nbval process's exit code and output, its report folder)``."""

    def compute(tmp: Path) -> dict:
        import subprocess
        import sys

        import papermill as pm

        from helpers.runner import pipeline

        notebooks = pipeline.discover_notebooks(TESTS.parent / "notebooks")
        params = pipeline.resolve_parameters(pipeline.load_profile("smoke", TESTS.parent / "params"), notebooks)
        prepared_dir = tmp / "prepared"
        prepared_dir.mkdir()
        prepared = []
        for nb in notebooks:
            values = dict(params[nb.stem])
            declared = pipeline.notebook_parameters(nb)
            runner = {"profile": "smoke", "work_dir": str(tmp / "work"), "report_dir": str(tmp / "report")}
            values.update({k: v for k, v in runner.items() if k in declared})
            out = prepared_dir / nb.name
            pm.execute_notebook(str(nb), str(out), parameters=values, prepare_only=True, progress_bar=False)
            prepared.append(out)
        env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
             "--rootdir", str(tmp), *map(str, prepared)],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        return {"returncode": proc.returncode, "output": proc.stdout[-6000:] + proc.stderr[-3000:],
                "report": str(tmp / "report")}  # fmt: skip

    record = shared_once(tmp_path_factory, "nbval", compute)
    return record, Path(record["report"])


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """The masking sweep on the smoke profile, once per test session: the whole study (01-08) with the classifiers on
    the whole image and on the predicted lungs, under a parent report (``params/sweep-masking.yaml``'s shape).

    Its ``input_mask=none`` trial is the smoke study other notebook tests read (:func:`smoke_study`).
    Returns ``(work folder, sweep folder, results table)``.
    """
    import json

    import pandas as pd

    def compute(work: Path) -> dict:
        from helpers.runner import sweep

        report = work / "reports" / "smoke"  # the parent report the sweep quotes itself in
        report.mkdir(parents=True)
        (report / "run.json").write_text(json.dumps({"profile": "smoke", "stale": []}))
        (report / "summary.md").write_text("# Study summary\n\nthe study's own text\n")
        (report / "index.html").write_text("<html>before</html>")
        grid = work / "grid.yaml"
        grid.write_text("name: masking\ncompare: input_mask\nparameters:\n  shared:\n    input_mask: [none, lung]\n")
        out = sweep.run_sweep(grid, "smoke", project_dir=TESTS.parent, work_dir=work, log=lambda t: None)
        return {"work": str(work), "out": str(out)}

    record = shared_once(tmp_path_factory, "smoke-sweep", compute)
    out = Path(record["out"])
    return Path(record["work"]), out, pd.read_csv(out / "results.csv")


@pytest.fixture(scope="session")
def smoke_study(smoke_sweep, tmp_path_factory):
    """The work folder of one complete smoke study (every notebook, seed 0, whole images), with its HTML report.

    Read it, never change it: a test that runs the runner on it copies it first (:func:`copy_study`).
    """
    from helpers.report.html import export_report

    _, out, table = smoke_sweep
    assert table["status"].tolist() == ["done", "done"], table.get("error")
    work = {trial_values(out / t)["shared.input_mask"]: out / t for t in table["trial"]}["none"]
    shared_once(
        tmp_path_factory, "smoke-html", lambda _: str(export_report(work / "reports" / "smoke", log=lambda *a: None))
    )
    return work


def trial_values(trial: Path) -> dict:
    """The values a sweep trial ran with (``{"shared.input_mask": "none"}``, from its ``trial.json``)."""
    import json

    return json.loads((trial / "trial.json").read_text())["values"]


def copy_study(source: Path, work: Path) -> Path:
    """A copy of a study's ``data/`` and ``reports/smoke/`` in ``work``, to run the runner on."""
    import shutil

    shutil.copytree(source / "data", work / "data")
    shutil.copytree(source / "reports" / "smoke", work / "reports" / "smoke")
    return work
