"""The package's shape: one-way dependencies, module size, a lazy public surface, identical training notebooks."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "helpers"

#: Layers from the bottom up; a module may import its own layer and the layers below it only.
LAYERS = {
    "computation": {
        "_core", "config", "progress", "dataset", "phantoms", "models", "training", "evaluation",
        "heatmaps", "perturbation", "scores", "localization", "parameters", "intervals", "download",
        "device", "parallel", "initializers", "segmentation", "explain", "metrics",
    },
    "study": {"study", "lineage", "lung_files", "split_files"},
    "reports": {
        "figures", "_figures_heatmaps", "_figures_segmentation", "reporting", "_report_html", "verdicts", "describe",
        "docs", "segmentation_report", "comparison", "figure_names", "reference", "explorer", "explorer_widget",
        "methods_report", "_figures_methods",
    },
    "runner": {
        "pipeline", "nbtools", "profiles", "kernels", "runlock", "staging", "provenance", "sweep", "sweep_report",
        "executed_notebooks",
        "executors",
    },
}  # fmt: skip
#: Third-party packages that no computation module may import.
PLOTTING = {"matplotlib", "seaborn"}


def _layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS.values()) if module in names)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, the package's own as ``helpers.<top-level module or subpackage>``."""
    inside = path.relative_to(PACKAGE).parent.parts  # () for a top-level module, ("explain",) in a subpackage
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's own package
                base = list(inside[: len(inside) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    found.add(f"helpers.{target[0]}")
                else:
                    found.update(f"helpers.{alias.name}" for alias in node.names)
            elif node.module:
                found.add(node.module)
    return found


#: Top-level modules, and every module of the subpackages (each subpackage is one unit of its layer).
MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.stem != "__init__")
SUBPACKAGE_FILES = sorted(p for p in PACKAGE.glob("*/*.py"))


def _unit(path: Path) -> str:
    """The module's layer unit: its stem at the top level, its subpackage's name inside one."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_every_module_has_a_layer():
    assert {_unit(p) for p in MODULES + SUBPACKAGE_FILES} == set().union(*LAYERS.values())


@pytest.mark.parametrize("path", MODULES + SUBPACKAGE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dependencies_point_one_way(path):
    imported = _imports(path)
    own = {name.split(".")[1] for name in imported if name.startswith("helpers.")} - {_unit(path)}
    upward = sorted(m for m in own if m in set().union(*LAYERS.values()) and _layer(m) > _layer(_unit(path)))
    assert not upward, f"{path.relative_to(PACKAGE)} imports {upward} from a layer above it"
    if _unit(path) in LAYERS["computation"] | LAYERS["study"]:
        plotting = sorted(name for name in imported if name.split(".")[0] in PLOTTING)
        assert not plotting, f"{path.stem} imports {plotting}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_600_lines(path):
    assert len(path.read_text().splitlines()) <= 600


def test_public_surface_is_lazy_and_complete():
    script = (
        "import sys, helpers, helpers.pipeline\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'keras', 'tensorflow', 'jax', 'matplotlib'})\n"
        "print(heavy)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
    import helpers

    for name in ("gradcam", "gradcam_plus_plus", "perturbation_curves", "aopc", "aopc_summary", "bootstrap_ci",
                 "paired_difference", "mask_energy", "build_classifier", "region_grid"):  # fmt: skip
        assert name in helpers.__all__
    for name in helpers.__all__:
        assert callable(getattr(helpers, name)), name
    with pytest.raises(AttributeError):
        helpers.no_such_name  # noqa: B018


def _cells(path: Path) -> list[tuple[str, str]]:
    nb = json.loads(path.read_text())
    return [(cell["cell_type"], "".join(cell["source"])) for cell in nb["cells"]]


def test_training_notebooks_differ_only_in_title_and_parameters():
    vgg = _cells(ROOT / "notebooks" / "03_train_vgg16.ipynb")
    dense = _cells(ROOT / "notebooks" / "04_train_densenet201.ipynb")
    assert len(vgg) == len(dense)
    differing = [i for i, (a, b) in enumerate(zip(vgg, dense)) if a != b]
    assert differing == [0, 2]  # the title and the parameters cell
    calls = [source for kind, source in vgg[3:] if kind == "code" and "train_and_report(" in source]
    assert len(calls) == 1


def test_the_runner_and_the_html_export_load_neither_keras_nor_matplotlib():
    """The runner's own process (notebooks run in kernels), the report export and ``make docs`` stay light and quiet."""
    code = (
        "import json, pathlib, sys, tempfile, helpers.pipeline, helpers._report_html, helpers.figure_names, helpers.docs\n"
        "summary = pathlib.Path(tempfile.mkdtemp()) / 'summary.json'\n"
        "summary.write_text(json.dumps({'rows': [{'model': 'vgg16', 'images': 3}]}))\n"
        "assert '| vgg16 | 3 |' in helpers.docs.summary_table(summary)\n"
        "print(sorted({'keras', 'tensorflow', 'jax', 'matplotlib'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "STUDY_COMPILE_LOG": os.devnull},  # as in gpu_study.py
    )  # fmt: skip
    assert out.stdout.strip() == "[]"
