"""The three install descriptions (pyproject, constraints, environment.yml) agree with each other."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
#: Extras pinned in constraints.txt but installed only on demand, not by `make setup` or environment.yml.
ON_DEMAND_EXTRAS = {"kaggle"}


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"constraints.txt: {line!r} is not pinned with =="
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements(on_demand: bool = True):
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for name, extra in project.get("optional-dependencies", {}).items():
        if on_demand or name not in ON_DEMAND_EXTRAS:
            reqs += [Requirement(r) for r in extra]
    return reqs


def test_every_dependency_is_pinned_within_its_range():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert pins[name] in req.specifier, f"constraints.txt pins {req.name}=={pins[name]} outside {req.specifier}"


def test_environment_yml_installs_the_project_with_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    version = Version(re.split(r"[=<>]+", python)[1] + ".0")
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert version in requires, f"environment.yml {python} does not satisfy requires-python {requires}"
    pip_lines = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-c constraints.txt" in pip_lines
    extras = set(_pyproject()["project"]["optional-dependencies"]) - ON_DEMAND_EXTRAS
    install = next(line for line in pip_lines if line.startswith("-e ."))
    assert set(re.search(r"\[(.*)\]", install).group(1).split(",")) == extras


def test_makefile_installs_the_same_way_and_ci_calls_the_readme_command():
    makefile = (ROOT / "Makefile").read_text()
    install = re.search(r'-c constraints.txt -e "\.\[(.*)\]"', makefile)
    assert install, "the Makefile installs the project with -c constraints.txt"
    # every extra but the on-demand ones: ray included, so the Ray executor's test runs under make test
    assert set(install.group(1).split(",")) == set(_pyproject()["project"]["optional-dependencies"]) - ON_DEMAND_EXTRAS
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci and "make test" in ci
    readme = (ROOT / "README.md").read_text()
    assert "make study" in readme and "make test" in readme


def test_installed_versions_match_the_pins():
    from importlib.metadata import PackageNotFoundError, version

    pins = _pins()
    for req in _requirements(on_demand=False):
        name = canonicalize_name(req.name)
        try:
            installed = Version(version(req.name))
        except PackageNotFoundError:
            pytest.fail(f"{req.name} is declared but not installed: rerun `make setup`")
        assert installed == pins[name], f"{req.name} {installed} installed, constraints.txt pins {pins[name]}"
