"""The package's shape: subpackages by layer, dependencies one way and without cycles, no private name across
modules, module size, a lazy public surface, the module map of docs/ARCHITECTURE.md, identical training notebooks."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "helpers"

#: Subpackages from the bottom layer up: a module may import its own subpackage and the ones listed before it only.
LAYERS = ("common", "backend", "data", "explain", "metrics", "models", "study", "report", "steps", "runner")
#: Third-party packages that no module below ``report`` may import.
PLOTTING = {"matplotlib", "seaborn"}

MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    """``helpers.metrics.aopc`` for src/helpers/metrics/aopc.py (``helpers.metrics`` for its ``__init__``)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("helpers",) + (parts[:-1] if parts[-1] == "__init__" else parts))


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, str | None]]:
    """(module, name) of every import of ``path`` (name None for ``import x``); function-level ones unless asked."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path.relative_to(PACKAGE)}: relative import (the package imports absolutely)"
            found += [(node.module, alias.name) for alias in node.names]
    return found


def _own(module: str, name: str | None) -> str | None:
    """The package module an import reaches (``from helpers.study import files`` reaches ``helpers.study.files``)."""
    if not module.startswith("helpers"):
        return None
    if name and (PACKAGE / Path(*module.split(".")[1:]) / f"{name}.py").exists():
        return f"{module}.{name}"
    return module


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_sits_in_a_layer():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__"))
    assert top == ["__init__.py", *sorted(LAYERS)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dependencies_point_one_way(path):
    me = _layer(_name(path))
    if me is None:  # helpers/__init__.py: the public surface loads any layer, lazily
        return
    upward = sorted(
        target for module, name in _imports(path) if (target := _own(module, name)) and (_layer(target) or 0) > me
    )
    assert not upward, f"{_name(path)} imports {upward} from a layer above its own"
    if me < LAYERS.index("report"):
        plotting = sorted(module for module, _ in _imports(path) if module.split(".")[0] in PLOTTING)
        assert not plotting, f"{_name(path)} imports {plotting}"


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    graph = {}
    for path in MODULES:
        me = _name(path)
        graph[me] = {t for m, n in _imports(path, top_level_only) if (t := _own(m, n)) and t != me and t != "helpers"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    """No cycle among modules, counting imports inside functions too (a lazy import is still a dependency)."""
    graph = _graph(top_level_only=False)
    # a subpackage's __init__ loads its modules lazily by name; the modules do not import their __init__ back
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_crosses_a_module(path):
    private = sorted(
        f"{module}.{name}"
        for module, name in _imports(path)
        if module.startswith("helpers") and name and name.startswith("_") and name != "__version__"
    )
    assert not private, f"{_name(path)} imports private names {private}"
    # nor through a module: `from helpers.x import y` then `y._name`
    modules = {name for module, name in _imports(path) if name and _own(module, name) != module}
    used = (
        sorted(set(re.findall(rf"\b({'|'.join(map(re.escape, modules))})\._[a-z]\w*", path.read_text())))
        if modules
        else []
    )
    assert not used, f"{_name(path)} reaches private names of {used}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_600_lines(path):
    assert len(path.read_text().splitlines()) <= 600


def _documented_modules() -> dict[str, str]:
    """The module map of docs/ARCHITECTURE.md: ``path/to/module.py`` rows of its table, with their layer."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    return dict(re.findall(r"^\| `(\w+(?:/\w+)*\.py)` \| ([\w-]+) \|", text, flags=re.M))


def test_the_architecture_page_maps_every_module():
    documented = _documented_modules()
    actual = {
        str(p.relative_to(PACKAGE)): (p.relative_to(PACKAGE).parts[0] if len(p.relative_to(PACKAGE).parts) > 1 else "-")
        for p in MODULES
    }
    assert set(documented) == set(actual), (
        f"missing from docs/ARCHITECTURE.md: {sorted(set(actual) - set(documented))}; "
        f"no longer in the package: {sorted(set(documented) - set(actual))}"
    )
    wrong = sorted(path for path, layer in documented.items() if actual[path] != layer)
    assert not wrong, f"docs/ARCHITECTURE.md puts these in another subpackage: {wrong}"


def test_public_surface_is_lazy_and_complete():
    script = (
        "import sys, helpers, helpers.runner.pipeline\n"
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
        "import json, pathlib, sys, tempfile, helpers.runner.pipeline, helpers.report.html, helpers.report.figure_names, helpers.report.publish\n"
        "summary = pathlib.Path(tempfile.mkdtemp()) / 'summary.json'\n"
        "summary.write_text(json.dumps({'rows': [{'model': 'vgg16', 'images': 3}]}))\n"
        "assert '| vgg16 | 3 |' in helpers.report.publish.summary_table(summary)\n"
        "print(sorted({'keras', 'tensorflow', 'jax', 'matplotlib'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "STUDY_COMPILE_LOG": os.devnull},  # as in gpu_study.py
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_the_suite_runs_keras_tests_on_every_backend_and_the_rest_once(tmp_path):
    """tests/conftest.py marks a test file ``keras`` from its imports; make test runs only those under JAX too."""
    from conftest import TESTS, may_run_keras

    assert may_run_keras(TESTS / "test_heatmaps.py") and may_run_keras(TESTS / "test_methods_step.py")
    assert not may_run_keras(TESTS / "test_phantoms.py") and not may_run_keras(TESTS / "test_sweep_guards.py")
    public = tmp_path / "test_public.py"
    public.write_text("from helpers import gradcam\n")
    assert may_run_keras(public)
    through = tmp_path / "test_through.py"  # through another test module
    through.write_text("from test_heatmaps import contract_model\n")
    assert may_run_keras(through)
