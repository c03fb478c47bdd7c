"""Tests of helpers.report.publish (``make docs``): the README's demo table and figures come from a demo report and stay in sync."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_reference import _summary, _write_report

from helpers.report import publish as docs
from helpers.report import reference
from helpers.report.publish import END_MARKER, SEEDS_END, SEEDS_START, START_MARKER, DocsError

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_matches_the_committed_docs_summary():
    readme = (ROOT / "README.md").read_text()
    committed = (ROOT / docs.SUMMARY_FILE).read_text()
    assert docs.readme_summary(readme) == committed, (
        "README.md's demo table differs from docs/demo_summary.md: regenerate both with `make docs` after `make study`"
    )
    assert committed.startswith("| model |")


def test_readme_seed_table_matches_the_published_runs():
    readme = (ROOT / "README.md").read_text()
    committed = (ROOT / docs.SEEDS_FILE).read_text()
    assert docs.readme_block(readme, SEEDS_START, SEEDS_END) == committed, (
        "README.md's seed table differs from docs/demo_seeds.md: regenerate both with `make docs`"
    )
    published = reference.load_reference("demo", ROOT)
    assert published is not None and committed == reference.seed_table(published), (
        "docs/demo_seeds.md is not the spread of docs/reference/demo.json: regenerate it with `make docs`"
    )


def test_every_figure_the_readme_shows_is_in_docs():
    names = docs.readme_figures((ROOT / "README.md").read_text())
    assert {"fig6_gradcam_covid.png", "fig7_overlays.png", "fig8_aopc.png", "aopc_ablation.png"} <= set(names)
    assert all((ROOT / "docs" / "figures" / name).is_file() for name in names)


ROWS = [
    {"model": "vgg16", "macro test recall [95% CI]": "0.990 [0.975, 1.000]", "images": 198},
    {"model": "densenet201", "macro test recall [95% CI]": "0.985 [0.965, 1.000]", "images": 197},
]
README = f"""# Study

Intro.

{START_MARKER}
| old | table |
|---|---|
| 1 | 2 |
{END_MARKER}

{SEEDS_START}
placeholder
{SEEDS_END}

![Figure 8](docs/figures/fig8_aopc.png) and ![again](docs/figures/fig8_aopc.png) ![ablation](docs/figures/aopc_ablation.png)

The end.
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "README.md").write_text(README)
    report = tmp_path / "reports" / "demo"
    (report / "metrics").mkdir(parents=True)
    (report / "metrics" / "summary.json").write_text(json.dumps({"profile": "demo", "rows": ROWS}))
    (report / "figures").mkdir()
    for name in ("fig8_aopc.png", "aopc_ablation.png", "fig1_examples.png"):
        (report / "figures" / name).write_bytes(b"\x89PNG fake " + name.encode())
    sweep = report / "sweeps" / "seeds"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": "seeds"}))
    for seed in (0, 1):
        _write_report(sweep / f"t{seed:02d}", seed, _summary(1.0 - seed / 100, 1.0, 0.05 + seed / 10))
        (sweep / f"t{seed:02d}" / "trial.json").write_text(json.dumps({"status": "done"}))
    return tmp_path


def test_build_docs_copies_the_shown_figures_and_writes_the_table_twice(project):
    written = docs.build_docs("reports/demo", root=project, log=lambda *a: None)
    figures = project / "docs" / "figures"
    assert sorted(p.name for p in figures.iterdir()) == ["aopc_ablation.png", "fig8_aopc.png"]  # not fig1
    assert (figures / "fig8_aopc.png").read_bytes() == b"\x89PNG fake fig8_aopc.png"
    table = (project / "docs" / "demo_summary.md").read_text()
    assert table == (
        "| model | macro test recall [95% CI] | images |\n|---|---|---|\n"
        "| vgg16 | 0.990 [0.975, 1.000] | 198 |\n| densenet201 | 0.985 [0.965, 1.000] | 197 |\n"
    )
    readme = (project / "README.md").read_text()
    assert docs.readme_summary(readme) == table and "| old | table |" not in readme
    assert readme.startswith("# Study\n\nIntro.\n\n") and readme.endswith("The end.\n")  # the rest unchanged
    assert written["summary"] == project / "docs" / "demo_summary.md"
    # the seed sweep's runs become the published reference, and their spread the README's second table
    published = reference.load_reference("demo", project)
    assert [run["seed"] for run in published["runs"]] == [0, 1]
    seeds = (project / docs.SEEDS_FILE).read_text()
    assert seeds == reference.seed_table(published) and "| tensorflow | vgg16 | 2 |" in seeds
    assert docs.readme_block(readme, SEEDS_START, SEEDS_END) == seeds and "placeholder" not in readme
    assert written["explorer"] is None  # no explorer.html in this report: the screenshot is left as it is
    docs.build_docs("reports/demo", root=project, log=lambda *a: None)
    assert (project / "README.md").read_text() == readme  # idempotent
    # without the sweep folder the published runs stay as they are
    shutil.rmtree(project / "reports" / "demo" / "sweeps")
    docs.build_docs("reports/demo", root=project, log=lambda *a: None)
    assert (project / "README.md").read_text() == readme


def test_build_docs_refuses_before_writing_anything(project):
    (project / "reports" / "demo" / "figures" / "aopc_ablation.png").unlink()
    with pytest.raises(DocsError, match="lacks aopc_ablation.png"):
        docs.build_docs("reports/demo", root=project)
    assert not (project / "docs").exists() and (project / "README.md").read_text() == README
    (project / "reports" / "demo" / "metrics" / "summary.json").unlink()
    with pytest.raises(DocsError, match="run the study first"):
        docs.build_docs("reports/demo", root=project)
    (project / "README.md").write_text(README.replace(END_MARKER, ""))
    with pytest.raises(DocsError, match="once each"):
        docs.build_docs("reports/demo", root=project)


def test_the_command_line_reports_a_missing_report(project, capsys):
    assert docs.main(["--report-dir", "reports/none", "--root", str(project)]) == 2
    assert "run the study first" in capsys.readouterr().err
