"""The README's demo numbers and figures, generated from a demo report (``make docs``), so they cannot drift.

``python -m helpers.docs [--report-dir reports/demo]`` copies the figures the README shows
(``docs/figures/<name>.png``, found in the README itself) from ``<report>/figures/``, and writes the summary table of
``<report>/metrics/summary.json`` to ``docs/demo_summary.md`` and between the README's markers
``<!-- demo-summary:start -->`` and ``<!-- demo-summary:end -->``. ``tests/test_docs.py`` fails when the README's
table and ``docs/demo_summary.md`` differ.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

from ._core import atomic_path, find_project_root, markdown_table

__all__ = [
    "START_MARKER",
    "END_MARKER",
    "SUMMARY_FILE",
    "readme_figures",
    "readme_summary",
    "replace_summary",
    "summary_table",
    "build_docs",
    "main",
]

START_MARKER = "<!-- demo-summary:start -->"
END_MARKER = "<!-- demo-summary:end -->"
#: The committed copy of the README's demo table, relative to the project root.
SUMMARY_FILE = Path("docs") / "demo_summary.md"
_FIGURE_LINK = re.compile(r"\(docs/figures/([A-Za-z0-9_.-]+\.png)\)")


class DocsError(RuntimeError):
    """The README, the report or the docs folder is not as ``make docs`` needs it (the message says what)."""


def readme_figures(readme: str) -> list[str]:
    """File names of the figures the README shows from ``docs/figures/``, in order of appearance, once each."""
    return list(dict.fromkeys(_FIGURE_LINK.findall(readme)))


def _marker_span(readme: str) -> tuple[int, int]:
    if readme.count(START_MARKER) != 1 or readme.count(END_MARKER) != 1:
        raise DocsError(f"the README must hold {START_MARKER} and {END_MARKER} once each")
    start, end = readme.index(START_MARKER) + len(START_MARKER), readme.index(END_MARKER)
    if end < start:
        raise DocsError(f"{END_MARKER} comes before {START_MARKER} in the README")
    return start, end


def readme_summary(readme: str) -> str:
    """The table between the README's demo-summary markers (stripped of surrounding blank lines)."""
    start, end = _marker_span(readme)
    return readme[start:end].strip() + "\n"


def replace_summary(readme: str, table: str) -> str:
    """The README with ``table`` between its demo-summary markers."""
    start, end = _marker_span(readme)
    return readme[:start] + "\n" + table.strip() + "\n" + readme[end:]


def summary_table(summary_json: str | os.PathLike) -> str:
    """The study's final table (``rows`` of ``summary.json``, written by notebook 07) as markdown."""
    path = Path(summary_json)
    if not path.is_file():
        raise DocsError(f"{path} does not exist: run the study first (make study)")
    rows = json.loads(path.read_text()).get("rows")
    if not rows:
        raise DocsError(f"{path} holds no summary rows")
    return markdown_table(rows, sorted(rows[0], key=_column_rank))


#: Column order of the summary table (summary.json stores each row's keys sorted).
_COLUMN_ORDER = (
    "model",
    "macro test recall",
    "macro test F1",
    "AOPC (MoRF)",
    "random-order AOPC",
    "MoRF − random",
    "MoRF − LeRF",
    "images",
)


def _column_rank(column: str) -> int:
    return next((i for i, prefix in enumerate(_COLUMN_ORDER) if column.startswith(prefix)), len(_COLUMN_ORDER))


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path, suffix=path.suffix) as tmp:
        Path(tmp).write_text(text)


def build_docs(
    report_dir: str | os.PathLike = "reports/demo", root: str | os.PathLike | None = None, log=print
) -> dict:
    """Copy the README's figures from ``report_dir/figures`` to ``docs/figures`` and write the demo table; return what was written."""
    root = Path(root) if root is not None else find_project_root()
    report = Path(report_dir)
    report = report if report.is_absolute() else root / report
    readme_path = root / "README.md"
    readme = readme_path.read_text()
    _marker_span(readme)  # fail before copying anything
    table = summary_table(report / "metrics" / "summary.json")
    names = readme_figures(readme)
    missing = [name for name in names if not (report / "figures" / name).is_file()]
    if missing:
        raise DocsError(f"{report / 'figures'} lacks {', '.join(missing)}: run the study first (make study)")
    figures_dir = root / "docs" / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        with atomic_path(figures_dir / name, suffix=".png") as tmp:
            shutil.copyfile(report / "figures" / name, tmp)
        log(f"docs/figures/{name} <- {report / 'figures' / name}")
    _write_text(root / SUMMARY_FILE, table)
    _write_text(readme_path, replace_summary(readme, table))
    log(f"{SUMMARY_FILE} and the README's demo table <- {report / 'metrics' / 'summary.json'}")
    return {"figures": [figures_dir / name for name in names], "summary": root / SUMMARY_FILE, "readme": readme_path}


def main(argv=None) -> int:
    """Command line of ``make docs``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--report-dir", default="reports/demo", help="the demo report (default: reports/demo)")
    parser.add_argument("--root", default=None, help="the project root (default: found from the current folder)")
    args = parser.parse_args(argv)
    try:
        build_docs(args.report_dir, args.root)
    except (DocsError, OSError) as exc:
        print(f"make docs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
