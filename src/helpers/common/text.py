"""Text for readers: numbers formatted for tables, Markdown tables of rows, and a "did you mean" hint for a mistyped name."""

from __future__ import annotations


def format_value(value) -> str:
    """A number with 3 decimals, never "-0.000"."""
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


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


def did_you_mean(value: str, options) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``options`` to ``value``, or an empty string when none is close."""
    import difflib

    close = difflib.get_close_matches(value, [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
