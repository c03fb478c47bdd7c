"""The report's ``index.html`` and HTML export of executed notebooks."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

from helpers.common.files import atomic_path
from helpers.report.describe import comparison_caveat, describe_data, describe_models, read_run_files
from helpers.report.figure_names import FIGURE_CAPTIONS


def _html_escape(text: str) -> str:
    return html.escape(str(text))


def notebook_to_html(notebook_path: str | os.PathLike, html_path: str | os.PathLike | None = None) -> Path:
    """Export an executed notebook to a standalone HTML file beside it (or at ``html_path``)."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook_path = Path(notebook_path)
    html_path = Path(html_path) if html_path else notebook_path.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook_path), as_version=4))
    with atomic_path(html_path, suffix=".html") as tmp:
        tmp.write_text(body, encoding="utf-8")
    return html_path


def _inline(text: str) -> str:
    escaped = _html_escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"<a href='\2'>\1</a>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def markdown_to_html(markdown: str) -> str:
    """Render the small markdown subset of ``summary.md`` (headings, tables, paragraphs, lists, code, bold) as HTML."""
    html, block = [], []

    def flush_table():
        if not block:
            return
        rows = [r for r in block if not set(r.replace("|", "").strip()) <= set("-: ")]
        cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
        head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
        html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        block.clear()

    paragraph: list[str] = []

    def flush_paragraph():
        if paragraph:
            html.append("<p>" + _inline(" ".join(paragraph)) + "</p>")
            paragraph.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            flush_paragraph()
            block.append(stripped)
            continue
        flush_table()
        if not stripped:
            flush_paragraph()
        elif stripped.startswith("#"):
            flush_paragraph()
            level = min(len(stripped) - len(stripped.lstrip("#")) + 1, 4)
            html.append(f"<h{level}>{_inline(stripped.lstrip('#').strip())}</h{level}>")
        elif stripped.startswith(("- ", "* ")):
            flush_paragraph()
            html.append(f"<ul><li>{_inline(stripped[2:])}</li></ul>")
        else:
            paragraph.append(stripped)
    flush_table()
    flush_paragraph()
    return "\n".join(html).replace("</ul>\n<ul>", "\n")


def _figure_order(path: Path) -> tuple:
    names = list(FIGURE_CAPTIONS)
    return (names.index(path.stem) if path.stem in names else len(names), path.stem)


def write_index(report_dir: str | os.PathLike, title: str | None = None, stale=()) -> Path:
    """Write ``index.html``: the summary (and the sweeps' ``sweeps.md``) on top, then notebooks, figures and metrics."""
    report = Path(report_dir)
    run = json.loads((report / "run.json").read_text()) if (report / "run.json").is_file() else {}
    profile = run.get("profile") or report.name.lstrip(".").split(".")[0]
    title = title or f"Grad-CAM / AOPC study: {profile} profile"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{_html_escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
        "th{background:#eee}img{max-width:100%;border:1px solid #ddd}"
        "figure{display:inline-block;width:48%;margin:0.5%;vertical-align:top}figcaption{font-size:0.9em}"
        ".note{background:#fff6d6;border:1px solid #e0c060;padding:0.5em 1em}</style>",
        f"</head><body><h1>{_html_escape(title)}</h1>",
    ]
    data, models = read_run_files(report / "metrics")
    parts.append(f"<p>{_html_escape(describe_data(data))}<br>{_html_escape(describe_models(models))}</p>")
    caveat = comparison_caveat(data, models)
    if caveat:
        parts.append(f"<p class='note'>{_html_escape(caveat)}</p>")
    if stale:
        parts.append(
            "<p class='note'>Partial run: "
            + ", ".join(f"<code>{_html_escape(s)}</code>" for s in stale)
            + " were not rerun after notebooks they read from, so their figures and metrics come from an earlier run.</p>"
        )
    summary = report / "summary.md"
    if summary.is_file():
        parts.append("<section>" + markdown_to_html(summary.read_text()) + "</section>")
        parts.append("<p><a href='summary.md'>summary.md</a></p>")
    if (report / "explorer.html").is_file():
        parts.append(
            "<p><a href='explorer.html'><strong>Explore every test image</strong></a>: both models' predictions, heatmaps, "
            "per-image AOPC and the perturbed images step by step.</p>"
        )
    methods = report / "methods.md"  # notebook 08: other heatmap methods and metrics (helpers.steps.methods)
    if methods.is_file():
        parts.append("<section>" + markdown_to_html(methods.read_text()) + "</section>")
    compared = report / "reference.md"  # the runner's comparison with the published runs (helpers.report.reference)
    if compared.is_file():
        parts.append("<section>" + markdown_to_html(compared.read_text()) + "</section>")
    sweeps = report / "sweeps.md"  # the sweeps' quote (helpers.runner.sweep_report.quote_sweeps)
    if sweeps.is_file():
        parts.append("<section>" + markdown_to_html(sweeps.read_text()) + "</section>")
    notebooks = sorted(report.glob("*.ipynb"))
    if notebooks:
        parts.append("<h2>Notebooks</h2><ul>")
        seconds = run.get("seconds", {})
        for nb in notebooks:
            html_file = nb.with_suffix(".html")
            link = (
                f"<a href='{html_file.name}'>{_html_escape(nb.stem)}</a>"
                if html_file.is_file()
                else _html_escape(nb.stem)
            )
            took = f", {seconds[nb.stem]:.0f} s" if nb.stem in seconds else ""
            if nb.stem in run.get("runs", {}):  # which run produced this part of the report
                took += f", run <code>{_html_escape(run['runs'][nb.stem])}</code>"
            parts.append(f"<li>{link} (<a href='{nb.name}'>ipynb</a>{took})</li>")
        parts.append("</ul>")
    figures = sorted((report / "figures").glob("*.png"), key=_figure_order)
    if figures:
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            rel = f"figures/{fig.name}"
            caption = FIGURE_CAPTIONS.get(fig.stem, fig.stem)
            parts.append(
                f"<figure><a href='{rel}'><img src='{rel}' alt='{_html_escape(caption)}'></a>"
                f"<figcaption>{_html_escape(caption)}</figcaption></figure>"
            )
    metrics = sorted((report / "metrics").glob("*.json"))
    if metrics:
        parts.append("<h2>Metrics</h2><ul>")
        parts += [f"<li><a href='metrics/{m.name}'>{_html_escape(m.name)}</a></li>" for m in metrics]
        parts.append("</ul>")
    if run:
        parts.append(
            f"<p><a href='run.json'>run.json</a>: parameters, timings and versions of the run "
            f"({_html_escape(run.get('environment', {}).get('keras_backend', ''))} backend, "
            f"{run.get('total_seconds', 0):.0f} s of notebooks).</p>"
        )
    parts.append("</body></html>")
    path = report / "index.html"
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


def export_report(report_dir: str | os.PathLike, log=print, stale=()) -> Path:
    """Export every executed notebook of a report folder to HTML and write its ``index.html``."""
    report = Path(report_dir)
    for nb in sorted(report.glob("*.ipynb")):
        notebook_to_html(nb)
    index = write_index(report, stale=stale)
    log(f"report index: {index}")
    return index
