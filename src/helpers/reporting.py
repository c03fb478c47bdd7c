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
