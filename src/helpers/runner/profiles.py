"""Profiles and parameters of the study runner: read ``params/<profile>.yaml``, apply ``-p`` overrides, type and
check every value against the notebooks' ``parameters`` cells and :mod:`helpers.runner.parameters`, pick notebooks.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Collection

import yaml

from helpers.common.config import ROOT_ENV
from helpers.common.text import did_you_mean
from helpers.data import download, layout
from helpers.runner import parameters as declared_parameters

#: Parameters that the runner sets itself in every notebook that declares them.
RUNNER_KEYS = ("profile", "work_dir", "report_dir")
#: Top-level keys of a profile file that are not notebook sections.
META_KEYS = ("description",)
_NOTEBOOK_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")


class ProfileError(ValueError):
    """A profile file or a command-line parameter that does not fit the notebooks."""


def discover_notebooks(notebooks_dir: str | os.PathLike) -> list[Path]:
    """Return the numbered notebooks (``NN_name.ipynb``) of a folder in order."""
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"notebook folder {folder} does not exist: run from the study's folder (the one holding params/ and "
            f"notebooks/), or set ${ROOT_ENV} to it"
        )
    found = sorted(p for p in folder.iterdir() if _NOTEBOOK_RE.match(p.name))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {folder}")
    return found


def notebook_parameters(path: str | os.PathLike) -> dict:
    """Return the names and literal defaults of a notebook's ``parameters`` cell."""
    import papermill as pm

    path = Path(path)
    declared = pm.inspect_notebook(str(path))
    if not declared:
        raise ProfileError(f"{path} has no cell tagged 'parameters'")
    return {name: info.get("default") for name, info in declared.items()}


def load_profile(profile: str, params_dir: str | os.PathLike) -> dict:
    """Read ``params/<profile>.yaml`` (or a path to a YAML file) into a dict of sections."""
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml"):  # a path: shown as given when it does not exist
        path = candidate
        if not path.is_file() and (Path(params_dir) / candidate.name).is_file() and candidate.parent == Path("."):
            path = Path(params_dir) / candidate.name
    else:
        path = Path(params_dir) / f"{profile}.yaml"
    if not path.is_file():
        available = available_profiles(params_dir)
        raise ProfileError(
            f"profile file {path} does not exist{did_you_mean(path.stem, available)}; "
            f"available profiles: {', '.join(available) or 'none'}"
        )
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path} is not valid YAML (UTF-8): {exc}") from exc
    if not isinstance(content, dict):
        raise ProfileError(f"{path} must hold a mapping of sections, got {type(content).__name__}")
    if _is_sweep_grid(content):
        raise ProfileError(
            f"{path} is a sweep grid, not a profile: run it with "
            f"python -m helpers.runner.sweep --profile <profile> --grid {path}"
        )
    for section, values in content.items():
        if section in META_KEYS:
            continue
        if values is None:
            content[section] = {}
        elif not isinstance(values, dict):
            raise ProfileError(f"{path}: section '{section}' must be a mapping of parameter names to values")
    content["_path"] = str(path)
    return content


def _is_sweep_grid(content) -> bool:
    """Whether a parsed YAML file is a sweep grid (``helpers.runner.sweep``: a ``parameters`` section) rather than a profile."""
    return isinstance(content, dict) and "parameters" in content  # no notebook is named "parameters"


def available_profiles(params_dir: str | os.PathLike) -> list[str]:
    """Names of the profiles in ``params_dir``: its YAML files except sweep grids (and unreadable files)."""
    names = []
    for path in sorted(Path(params_dir).glob("*.yaml"), key=lambda p: p.stem):
        try:
            content = yaml.safe_load(path.read_text())
        except (OSError, ValueError, yaml.YAMLError):  # unreadable, not UTF-8, not YAML: not offered
            continue
        if isinstance(content, dict) and not _is_sweep_grid(content):
            names.append(path.stem)
    return names


def _parse_override(text: str) -> tuple[str | None, str, object]:
    if "=" not in text:
        raise ProfileError(f"-p {text!r}: expected key=value or NN_notebook.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    value = _parse_value(raw)
    section = None
    if "." in key:
        section, key = key.split(".", 1)
    if not key.isidentifier():
        raise ProfileError(f"-p {text!r}: {key!r} is not a parameter name")
    return section, key, value


def _parse_value(raw: str):
    """A command-line value: a Python literal (``1e-3``, ``None``, ``[1, 2]``), else YAML (``true``, ``imagenet``)."""
    raw = raw.strip()
    if not raw:
        return ""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return yaml.safe_load(raw)


def _coerce(value, default_literal: str | None, where: str, problems: list[str]):
    """Give a value the type of the notebook's literal default where that is safe (``"1e-3"`` -> 0.001 for a float).

    A value that cannot take that type is a problem, and comes back as :data:`_INVALID` (not validated again).
    """
    default = _literal(default_literal)
    if isinstance(default, bool) or isinstance(value, bool) or value is None:
        return value
    if isinstance(default, float) and isinstance(value, (int, str)):
        try:
            return float(value)
        except ValueError:
            problems.append(f"{where}: expects a number like its default {default_literal}, got {value!r}")
            return _INVALID
    elif isinstance(default, int) and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            problems.append(f"{where}: expects an integer like its default {default_literal}, got {value!r}")
            return _INVALID
    return value


#: Parameters holding paths: relative values are taken from the folder the runner was started in.
def _is_path_parameter(key: str) -> bool:
    return key.endswith("_dir") or key in ("weights",)


def _absolute_paths(params: dict, base: Path) -> dict:
    out = dict(params)
    for key, value in params.items():
        if (
            _is_path_parameter(key)
            and isinstance(value, str)
            and value
            and value != "imagenet"
            and not Path(value).expanduser().is_absolute()
        ):
            out[key] = str((base / Path(value).expanduser()).resolve())
    return out


def section_for(name: str, stems) -> str | None:
    """A notebook stem from a stem or its number (``03`` or ``3`` -> ``03_train_vgg16``)."""
    if name in stems:
        return name
    matches = [stem for stem in stems if name.isdigit() and stem[:2] == name.zfill(2)]
    return matches[0] if len(matches) == 1 else None


def resolve_parameters(
    profile: dict,
    notebooks: list[Path],
    overrides: list[str] = (),
    base_dir: str | os.PathLike | None = None,
    run: Collection[str] | None = None,
) -> dict[str, dict]:
    """Combine a profile and ``-p`` overrides into each notebook's parameters, rejecting unknown keys.

    ``run``: the notebooks (stems) about to run, whose files (``data_dir``, ``weights``) are checked; default all.
    """
    source = profile.get("_path", "profile")
    declared = {nb.stem: notebook_parameters(nb) for nb in notebooks}
    stems = set(declared)
    all_names = set().union(*declared.values())
    problems = []

    for section in profile:
        if section in META_KEYS or section in ("_path", "shared"):
            continue
        if section not in stems:
            problems.append(
                f"{source}: section '{section}' names no notebook{did_you_mean(section, stems)}"
                f" (notebooks: {', '.join(sorted(stems))})"
            )
    shared = dict(profile.get("shared") or {})
    for key in shared:
        if key in RUNNER_KEYS:
            problems.append(f"{source}: shared key '{key}' is set by the runner, not by a profile")
        elif key not in all_names:
            problems.append(f"{source}: shared key '{key}' is declared by no notebook{did_you_mean(key, all_names)}")
    for stem in sorted(stems & set(profile)):
        for key in profile[stem]:
            if key in RUNNER_KEYS:
                problems.append(f"{source}: key '{stem}.{key}' is set by the runner, not by a profile")
            elif key not in declared[stem]:
                known = ", ".join(sorted(declared[stem]))
                problems.append(
                    f"{source}: unknown key '{key}' in section '{stem}'{did_you_mean(key, declared[stem])}"
                    f" (its parameters: {known})"
                )

    per_notebook = {stem: {} for stem in sorted(stems)}
    for stem in per_notebook:
        per_notebook[stem].update({k: v for k, v in shared.items() if k in declared[stem]})
        per_notebook[stem].update(profile.get(stem) or {})

    for text in overrides:
        section, key, value = _parse_override(text)
        if key in RUNNER_KEYS:
            problems.append(f"-p {text}: '{key}' is set by the runner (use --profile / --work-dir)")
            continue
        if section is not None:
            stem = section_for(section, stems)
            if stem is None:
                problems.append(f"-p {text}: no notebook named '{section}'{did_you_mean(section, stems)}")
            elif key not in declared[stem]:
                problems.append(
                    f"-p {text}: notebook '{stem}' has no parameter '{key}'{did_you_mean(key, declared[stem])}"
                )
            else:
                per_notebook[stem][key] = value
        elif key not in all_names:
            problems.append(f"-p {text}: no notebook declares a parameter '{key}'{did_you_mean(key, all_names)}")
        else:
            for stem in per_notebook:
                if key in declared[stem]:
                    per_notebook[stem][key] = value

    base = Path(base_dir) if base_dir else Path.cwd()
    for stem, params in per_notebook.items():
        coerced = {
            key: _coerce(value, declared[stem].get(key), f"{stem}.{key}", problems) for key, value in params.items()
        }
        per_notebook[stem] = _absolute_paths({k: v for k, v in coerced.items() if v is not _INVALID}, base)
    problems += preflight(per_notebook, declared, run)
    if problems:
        raise ProfileError("invalid parameters:\n  " + "\n  ".join(_merged(problems)))
    return per_notebook


_PROBLEM_RE = re.compile(r"^(\d\d_\w+)\.(\w+): (.*)$", re.S)


def _merged(problems: list[str]) -> list[str]:
    """The problems, with one line for the same problem of a shared parameter in several notebooks
    (``input_mask in 03_train_vgg16, 04_...: ...``)."""
    groups, order = {}, []
    for line in problems:
        found = _PROBLEM_RE.match(line)
        item = line if not found else found.group(2, 3)  # (key, text)
        if item not in groups:
            groups[item] = []
            order.append(item)
        if found:
            groups[item].append(found.group(1))
    lines = []
    for item in order:
        stems = groups[item]
        if not stems:
            lines.append(item)
        else:
            key, text = item
            lines.append(f"{stems[0]}.{key}: {text}" if len(stems) == 1 else f"{key} in {', '.join(stems)}: {text}")
    return lines


def effective_parameters(per_notebook: dict[str, dict], declared: dict[str, dict]) -> dict[str, dict]:
    """Each notebook's values as its kernel will see them: literal defaults, then the profile and ``-p`` values."""
    effective = {}
    for stem, params in per_notebook.items():
        values = {}
        for key, text in declared[stem].items():
            default = _literal(text, _MISSING)
            if key not in RUNNER_KEYS and default is not _MISSING:
                values[key] = default
        values.update(params)
        effective[stem] = values
    return effective


def preflight(
    per_notebook: dict[str, dict], declared: dict[str, dict], run: Collection[str] | None = None
) -> list[str]:
    """Problems that would only surface inside a kernel, found before anything runs.

    Every value and relation is checked against :mod:`helpers.runner.parameters` (ranges, choices, region size vs
    image size, the backbone's minimum size ...), then, for the notebooks in ``run`` (default all), the files the
    values name (``data_dir``, ``weights``) and, for ``source="kaggle"`` with an empty ``data_dir`` (a kagglehub
    download), that kagglehub is installed.
    """
    effective = effective_parameters(per_notebook, declared)
    problems = declared_parameters.validate(effective)
    for stem, params in effective.items():
        if run is not None and stem not in run:  # a notebook that does not run reads no file
            continue
        data_dir, weights = params.get("data_dir"), params.get("weights")
        if params.get("source") == "kaggle" and isinstance(data_dir, str):
            if data_dir and not Path(data_dir).expanduser().exists():
                problems.append(f"{stem}.data_dir: data_dir {data_dir} does not exist")
            elif data_dir and (problem := layout.layout_problem(data_dir)):
                problems.append(f"{stem}.data_dir: {problem}")
            elif not data_dir and not download.kagglehub_available():
                problems.append(
                    f"{stem}.data_dir: source 'kaggle' with an empty data_dir downloads the dataset with kagglehub, "
                    f"which is not installed. Either {download.MANUAL_STEPS}"
                )
        if isinstance(weights, str) and weights not in ("", "imagenet") and not Path(weights).expanduser().is_file():
            problems.append(f"{stem}.weights: weights file {weights} does not exist")
    return problems


_MISSING = object()
#: What :func:`_coerce` returns for a value it has reported.
_INVALID = object()


def _literal(text, missing=None):
    try:
        return ast.literal_eval(text) if text is not None else missing
    except (ValueError, SyntaxError):
        return missing


def select_notebooks(notebooks: list[Path], only: str | None, option: str = "--only") -> list[Path]:
    """Keep the notebooks whose number (``01``) or stem is listed in a comma-separated ``only``."""
    if not only:
        return notebooks
    wanted = [item.strip() for item in only.split(",") if item.strip()]
    chosen = []
    for item in wanted:
        matches = [nb for nb in notebooks if nb.stem == item or nb.name[:2] == item.zfill(2)]
        if not matches:
            names = ", ".join(nb.stem for nb in notebooks)
            raise ProfileError(f"{option} {item!r} matches no notebook (notebooks: {names})")
        chosen.extend(m for m in matches if m not in chosen)
    return sorted(chosen)
