"""Notebook hygiene: the shared Colab set-up cell, stripped outputs, a tagged parameters cell.

``python -m helpers.runner.nbtools notebooks/`` checks every notebook; ``--fix`` rewrites them in place
(outputs stripped, execution counts cleared, the Colab set-up cell brought up to date).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: First line of the shared set-up cell; it identifies the cell in every notebook.
COLAB_MARKER = "# Colab set-up"

#: Source of the set-up cell every notebook carries as its first code cell.
COLAB_CELL = """# Colab set-up: on Google Colab only, install the study's package and mount Google Drive.
# Elsewhere this cell does nothing. Install source: an uploaded wheel (/content/gradcam_xray_study-*.whl)
# if there is one, else STUDY_REPOSITORY (edit it to point at your copy of the repository).
import sys

if "google.colab" in sys.modules:
    import glob
    import importlib.util
    import subprocess

    STUDY_REPOSITORY = "git+https://github.com/YOUR-ACCOUNT/gradcam-xray-study.git"
    MOUNT_DRIVE = True  # then set data_dir in the parameters cell to a folder on /content/drive/MyDrive
    if importlib.util.find_spec("helpers") is None:
        wheels = sorted(glob.glob("/content/gradcam_xray_study-*.whl"))
        source = wheels[-1] if wheels else STUDY_REPOSITORY
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)
    if MOUNT_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")"""

_PLACEHOLDER = "# COLAB-SETUP"


def _is_setup_cell(cell) -> bool:
    source = "".join(cell.get("source", ""))
    return cell.get("cell_type") == "code" and (source.startswith(COLAB_MARKER) or source.strip() == _PLACEHOLDER)


def check_notebook(path: str | Path) -> list[str]:
    """Return the hygiene problems of one notebook (empty when it is clean)."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    problems = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or "".join(code[0].source) != COLAB_CELL:
        problems.append(f"{path}: the first code cell is not the current Colab set-up cell")
    if any(c.get("outputs") or c.get("execution_count") for c in code):
        problems.append(f"{path}: has outputs or execution counts (strip them)")
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{path}: needs exactly one cell tagged 'parameters', found {len(tagged)}")
    return problems


def fix_notebook(path: str | Path) -> bool:
    """Strip outputs, clear execution counts and refresh the Colab set-up cell; return whether it changed."""
    import nbformat

    path = Path(path)
    before = path.read_text()
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and _is_setup_cell(code[0]):
        code[0].source = COLAB_CELL
    else:
        setup = nbformat.v4.new_code_cell(COLAB_CELL)
        first = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
        nb.cells.insert(first, setup)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    after = nbformat.writes(nb) + "\n"
    if after != before:
        from helpers.common.files import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(after)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Check (or with ``--fix`` repair) the numbered notebooks of a folder."""
    parser = argparse.ArgumentParser(prog="python -m helpers.runner.nbtools", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="notebooks")
    parser.add_argument("--fix", action="store_true", help="rewrite notebooks in place")
    args = parser.parse_args(argv)
    paths = sorted(Path(args.folder).glob("[0-9][0-9]_*.ipynb"))
    problems = []
    for path in paths:
        if args.fix and fix_notebook(path):
            print(f"fixed {path}")
        problems += check_notebook(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
