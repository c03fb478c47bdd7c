"""The README's demo numbers and figures, generated from a demo report (``make docs``), so they cannot drift.

``python -m helpers.report.publish [--report-dir reports/demo]`` copies the figures the README shows
(``docs/figures/<name>.png``, found in the README itself) from ``<report>/figures/``, and writes the summary table of
``<report>/metrics/summary.json`` to ``docs/demo_summary.md`` and between the README's markers
``<!-- demo-summary:start -->`` and ``<!-- demo-summary:end -->``. With ``--seeds SWEEP_FOLDER`` (default: the demo
report's ``sweeps/seeds`` when it exists) it adds that seed sweep's runs to ``docs/reference/demo.json`` (a run replaces
the one of the same seed and backend; runs of other backends stay) and writes their spread to ``docs/demo_seeds.md``
and between ``<!-- demo-seeds:start -->`` and ``<!-- demo-seeds:end -->``. ``tests/test_docs.py`` fails when the
README's tables and the docs files differ.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

from helpers.common.files import atomic_path, find_project_root
from helpers.common.text import markdown_table
from helpers.report import reference

__all__ = [
    "START_MARKER",
    "END_MARKER",
    "SEEDS_START",
    "SEEDS_END",
    "SUMMARY_FILE",
    "SEEDS_FILE",
    "readme_block",
    "replace_block",
    "update_reference",
    "readme_figures",
    "readme_summary",
    "replace_summary",
    "summary_table",
    "build_docs",
    "main",
]

START_MARKER = "<!-- demo-summary:start -->"
END_MARKER = "<!-- demo-summary:end -->"
SEEDS_START = "<!-- demo-seeds:start -->"
SEEDS_END = "<!-- demo-seeds:end -->"
#: The committed copy of the README's demo table, relative to the project root.
SUMMARY_FILE = Path("docs") / "demo_summary.md"
#: The committed copy of the README's seed table (the spread of the published demo runs).
SEEDS_FILE = Path("docs") / "demo_seeds.md"
#: The seed sweep ``make docs`` reads when no ``--seeds`` is given, relative to the demo report.
DEFAULT_SEEDS = Path("sweeps") / "seeds"
_FIGURE_LINK = re.compile(r"\(docs/figures/([A-Za-z0-9_.-]+\.png)\)")


class DocsError(RuntimeError):
    """The README, the report or the docs folder is not as ``make docs`` needs it (the message says what)."""


def readme_figures(readme: str) -> list[str]:
    """File names of the figures the README shows from ``docs/figures/``, in order of appearance, once each."""
    return list(dict.fromkeys(_FIGURE_LINK.findall(readme)))


def _marker_span(readme: str, start_marker: str = START_MARKER, end_marker: str = END_MARKER) -> tuple[int, int]:
    if readme.count(start_marker) != 1 or readme.count(end_marker) != 1:
        raise DocsError(f"the README must hold {start_marker} and {end_marker} once each")
    start, end = readme.index(start_marker) + len(start_marker), readme.index(end_marker)
    if end < start:
        raise DocsError(f"{end_marker} comes before {start_marker} in the README")
    return start, end


def readme_block(readme: str, start_marker: str, end_marker: str) -> str:
    """The text between two of the README's markers (stripped of surrounding blank lines)."""
    start, end = _marker_span(readme, start_marker, end_marker)
    return readme[start:end].strip() + "\n"


def replace_block(readme: str, text: str, start_marker: str, end_marker: str) -> str:
    """The README with ``text`` between two of its markers."""
    start, end = _marker_span(readme, start_marker, end_marker)
    return readme[:start] + "\n" + text.strip() + "\n" + readme[end:]


def readme_summary(readme: str) -> str:
    """The table between the README's demo-summary markers (stripped of surrounding blank lines)."""
    return readme_block(readme, START_MARKER, END_MARKER)


def replace_summary(readme: str, table: str) -> str:
    """The README with ``table`` between its demo-summary markers."""
    return replace_block(readme, table, START_MARKER, END_MARKER)


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


#: The screenshot of the demo's per-image explorer that the README shows.
EXPLORER_SCREENSHOT = "explorer.png"


def _explorer_screenshot(report: Path, figures_dir: Path, log) -> Path | None:
    """``docs/figures/explorer.png`` from the report's ``explorer.html`` in headless Chromium (None, said, without one)."""
    page = report / "explorer.html"
    if not page.is_file():
        log(f"note: {page} does not exist (notebook 07 writes it): docs/figures/{EXPLORER_SCREENSHOT} kept as it is")
        return None
    from helpers.report import explorer

    try:
        with atomic_path(figures_dir / EXPLORER_SCREENSHOT, suffix=".png") as tmp:
            explorer.screenshot(page, tmp)
    except Exception as exc:  # no browser on this machine: the rest of the docs still update
        log(f"note: no screenshot of {page} ({type(exc).__name__}: {exc}); install chromium and chromium-driver")
        return None
    log(f"docs/figures/{EXPLORER_SCREENSHOT} <- {page}")
    return figures_dir / EXPLORER_SCREENSHOT


def update_reference(root: Path, profile: str, sweeps, log=print) -> dict | None:
    """Add the finished trials of each seed sweep folder to ``docs/reference/<profile>.json``; return the reference.

    Runs of the same seed and backend are replaced, others kept; all must share their parameters but the seed.
    """
    path = reference.reference_path(profile, root)
    try:
        published = reference.load_reference(profile, root)
    except ValueError as exc:
        raise DocsError(str(exc)) from None
    runs = list(published["runs"]) if published else []
    for folder in sweeps:
        try:
            new = reference.sweep_records(folder, profile)
            runs = reference.merge_runs(runs, new)
        except ValueError as exc:
            raise DocsError(f"{folder}: {exc}") from None
        log(f"{path.relative_to(root)} <- {len(new)} run(s) of {folder}")
    if not runs:
        return None
    payload = {
        "profile": profile,
        "how": f"python -m helpers.runner.sweep --profile {profile} --grid params/sweep-seeds.yaml, then make docs",
        "runs": runs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")
    return payload


def build_docs(
    report_dir: str | os.PathLike = "reports/demo",
    root: str | os.PathLike | None = None,
    log=print,
    seeds: list[str | os.PathLike] | None = None,
) -> dict:
    """Copy the README's figures from ``report_dir/figures`` to ``docs/figures``, write the demo table and the seed table; return what was written.

    ``seeds``: seed sweep folders whose runs join ``docs/reference/demo.json`` (default: ``report_dir/sweeps/seeds``
    when it exists; ``[]`` keeps the reference as it is).
    """
    root = Path(root) if root is not None else find_project_root()
    report = Path(report_dir)
    report = report if report.is_absolute() else root / report
    readme_path = root / "README.md"
    readme = readme_path.read_text()
    _marker_span(readme)  # fail before copying anything
    _marker_span(readme, SEEDS_START, SEEDS_END)
    table = summary_table(report / "metrics" / "summary.json")
    names = [name for name in readme_figures(readme) if name != EXPLORER_SCREENSHOT]  # the screenshot is made here
    missing = [name for name in names if not (report / "figures" / name).is_file()]
    if missing:
        raise DocsError(f"{report / 'figures'} lacks {', '.join(missing)}: run the study first (make study)")
    if seeds is None:
        seeds = [report / DEFAULT_SEEDS] if (report / DEFAULT_SEEDS / "sweep.json").is_file() else []
    seeds = [Path(folder) if Path(folder).is_absolute() else root / folder for folder in seeds]
    published = update_reference(root, "demo", seeds, log)
    if published is None:
        raise DocsError(
            "no published demo runs: run the seed sweep first "
            "(python -m helpers.runner.sweep --profile demo --grid params/sweep-seeds.yaml)"
        )
    figures_dir = root / "docs" / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        with atomic_path(figures_dir / name, suffix=".png") as tmp:
            shutil.copyfile(report / "figures" / name, tmp)
        log(f"docs/figures/{name} <- {report / 'figures' / name}")
    shot = _explorer_screenshot(report, figures_dir, log)
    seed_text = reference.seed_table(published)
    _write_text(root / SUMMARY_FILE, table)
    _write_text(root / SEEDS_FILE, seed_text)
    readme = replace_block(replace_summary(readme, table), seed_text, SEEDS_START, SEEDS_END)
    _write_text(readme_path, readme)
    log(f"{SUMMARY_FILE} and the README's demo table <- {report / 'metrics' / 'summary.json'}")
    log(f"{SEEDS_FILE} and the README's seed table <- {reference.reference_path('demo', root).relative_to(root)}")
    return {
        "explorer": shot,
        "figures": [figures_dir / name for name in names],
        "summary": root / SUMMARY_FILE,
        "seeds": root / SEEDS_FILE,
        "readme": readme_path,
    }


def main(argv=None) -> int:
    """Command line of ``make docs``."""
    parser = argparse.ArgumentParser(prog="python -m helpers.report.publish", description=__doc__.splitlines()[0])
    parser.add_argument("--report-dir", default="reports/demo", help="the demo report (default: reports/demo)")
    parser.add_argument("--root", default=None, help="the project root (default: found from the current folder)")
    parser.add_argument(
        "--seeds",
        action="append",
        default=None,
        metavar="SWEEP_FOLDER",
        help="a seed sweep folder whose runs join docs/reference/demo.json (repeatable; default: "
        "REPORT_DIR/sweeps/seeds when it exists)",
    )
    args = parser.parse_args(argv)
    try:
        build_docs(args.report_dir, args.root, seeds=args.seeds)
    except (DocsError, OSError) as exc:
        print(f"make docs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
