"""Figures and tables written to ``reports/<profile>/``."""

from __future__ import annotations

import os
from pathlib import Path

from .config import atomic_path

#: Resolution of saved figures.
FIGURE_DPI = 150


def save_figure(fig, folder: str | os.PathLike, name: str, dpi: int = FIGURE_DPI) -> Path:
    """Save a matplotlib figure as ``<folder>/<name>.png`` atomically and return the path."""
    path = Path(folder) / (name if name.endswith(".png") else f"{name}.png")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.3f}") -> str:
    """Render a list of dicts as a GitHub-flavoured markdown table."""
    if not rows:
        return ""
    columns = columns or list(rows[0].keys())

    def cell(value):
        if isinstance(value, float):
            return floatfmt.format(value)
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(col, "")) for col in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _html_escape(text: str) -> str:
    import html

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


def _markdown_table_to_html(markdown: str) -> str:
    rows = [line.strip() for line in markdown.splitlines() if line.strip().startswith("|")]
    rows = [row for row in rows if not set(row.replace("|", "").strip()) <= set("-: ")]
    if not rows:
        return ""
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    head = "".join(f"<th>{_html_escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{_html_escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_index(report_dir: str | os.PathLike, title: str | None = None) -> Path:
    """Write ``index.html`` linking the report's notebooks, figures and metrics, with the summary table on top."""
    report = Path(report_dir)
    title = title or f"Grad-CAM / AOPC study: {report.name.lstrip('.').split('.')[0]}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{_html_escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
        "th{background:#eee}img{max-width:340px;border:1px solid #ddd;margin:4px}"
        "figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:0.85em}</style>",
        f"</head><body><h1>{_html_escape(title)}</h1>",
    ]
    summary = report / "summary.md"
    if summary.is_file():
        table = _markdown_table_to_html(summary.read_text())
        parts.append("<h2>Summary</h2>" + (table or f"<pre>{_html_escape(summary.read_text())}</pre>"))
        parts.append("<p><a href='summary.md'>summary.md</a></p>")
    notebooks = sorted(report.glob("*.ipynb"))
    if notebooks:
        parts.append("<h2>Notebooks</h2><ul>")
        for nb in notebooks:
            html_file = nb.with_suffix(".html")
            link = f"<a href='{html_file.name}'>{_html_escape(nb.stem)}</a>" if html_file.is_file() else _html_escape(nb.stem)
            parts.append(f"<li>{link} (<a href='{nb.name}'>ipynb</a>)</li>")
        parts.append("</ul>")
    figures = sorted((report / "figures").glob("*.png"))
    if figures:
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            rel = f"figures/{fig.name}"
            parts.append(f"<figure><a href='{rel}'><img src='{rel}' alt='{_html_escape(fig.stem)}'></a>"
                         f"<figcaption>{_html_escape(fig.stem)}</figcaption></figure>")
    metrics = sorted((report / "metrics").glob("*.json"))
    if metrics:
        parts.append("<h2>Metrics</h2><ul>")
        parts += [f"<li><a href='metrics/{m.name}'>{_html_escape(m.name)}</a></li>" for m in metrics]
        parts.append("</ul>")
    if (report / "run.json").is_file():
        parts.append("<p><a href='run.json'>run.json</a>: parameters, timings and versions of the run.</p>")
    parts.append("</body></html>")
    path = report / "index.html"
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


def export_report(report_dir: str | os.PathLike, log=print) -> Path:
    """Export every executed notebook of a report folder to HTML and write its ``index.html``."""
    report = Path(report_dir)
    for nb in sorted(report.glob("*.ipynb")):
        notebook_to_html(nb)
    index = write_index(report)
    log(f"report index: {index}")
    return index
