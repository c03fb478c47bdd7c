"""What the runner does to an executed notebook: drop start-up noise from its outputs, show the report's final folder
instead of the staging folder, and say in one line where a failed notebook raised (its cell and whole statement).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from helpers.common.files import atomic_path
from helpers.common.native_logs import NOISE

__all__ = [
    "failure_message",
    "statement_at",
    "is_magic",
    "failing_line_number",
    "clean_outputs",
    "show_final_paths",
    "reader_notes",
]


def failure_message(nb: Path, exc: Exception) -> str:
    """Name the notebook, the failing code cell as the user sees it in ``notebooks/`` and the line that raised."""
    import nbformat

    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    source = getattr(exc, "source", None)
    where = "a cell"
    if source is not None:
        code = [cell for cell in nbformat.read(str(nb), as_version=4).cells if cell.cell_type == "code"]
        index = next((i for i, cell in enumerate(code, start=1) if cell.source == source), None)
        lines = source.splitlines()
        number = failing_line_number(getattr(exc, "traceback", None))
        if number is not None and 1 <= number <= len(lines) and lines[number - 1].strip():
            shown = f"line {number}: {statement_at(source, number)}"
        else:
            shown = next((line.strip()[:70] for line in lines if line.strip() and not line.startswith("#")), "")
        where = f"code cell {index} of {len(code)}" if index is not None else "a cell"
        if shown:
            where += f" ({shown})"
    return f"notebook {nb.name} failed in {where}: {ename}: {evalue}"


def statement_at(source: str, number: int, width: int = 90) -> str:
    """The whole statement of a cell that holds line ``number`` (a call over several lines as one), shortened to ``width``."""
    import ast

    lines = source.splitlines()
    # IPython's magics and shell escapes become ``pass`` at the same indentation, so the rest still parses
    python = "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass" if is_magic(line.lstrip()) else line for line in lines
    )
    spans = []  # (first, last) line of each simple statement, compound statement's header or decorator
    try:
        for node in ast.walk(ast.parse(python)):
            if isinstance(node, ast.stmt):
                body = getattr(node, "body", None)
                first = node.lineno
                last = body[0].lineno - 1 if body and body[0].lineno > first else node.end_lineno or first
                spans.append((first, max(first, last)))
                spans += [(d.lineno, d.end_lineno or d.lineno) for d in getattr(node, "decorator_list", ())]
    except SyntaxError:  # other IPython syntax: the line alone
        spans = []
    covering = [(first, last) for first, last in spans if first <= number <= last]
    if covering:  # the statements that start last (the innermost; several when joined by ';'), whole
        first = max(f for f, _ in covering)
        last = max(x for f, x in covering if f == first)
    else:
        first = last = number
    text = " ".join(" ".join(line.split()) for line in lines[first - 1 : last]).replace("( ", "(").replace(" )", ")")
    return text if len(text) <= width else text[: width - 1] + "…"


def is_magic(line: str) -> bool:
    """Whether a (left-stripped) cell line is an IPython magic or shell escape rather than Python."""
    return line.startswith("%") or (line.startswith("!") and not line.startswith("!="))


def failing_line_number(traceback) -> int | None:
    """The line of the cell that raised, from an IPython traceback (``Cell In[n], line k``), or None."""
    if not traceback:
        return None
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))
    # chained exceptions print the cause first: the line that raised is in the last traceback
    text = re.split(r"The above exception was the direct cause|During handling of the above exception", text)[-1]
    found = re.search(r"Cell In\[\d+\], line (\d+)", text)
    return int(found.group(1)) if found else None


def clean_outputs(path: str | os.PathLike) -> int:
    """Drop TensorFlow start-up log lines from an executed notebook's stderr outputs; return how many were removed."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = output.get("text", "").splitlines(keepends=True)
                clean = [line for line in lines if not NOISE.match(line.rstrip("\r\n"))]
                removed += len(lines) - len(clean)
                if not "".join(clean).strip():
                    continue
                output["text"] = "".join(clean)
            kept.append(output)
        cell["outputs"] = kept
    if removed:
        with atomic_path(path) as tmp:
            nbformat.write(nb, str(tmp))
    return removed


def show_final_paths(path: str | os.PathLike, staging: Path, final: Path) -> int:
    """Write the report's final folder instead of the staging folder in an executed notebook (parameters cell, outputs); return the cells changed.

    The runner executes into ``staging`` and renames it to ``final`` on success, so the staging path a notebook saw
    no longer exists when anyone reads the report.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    old, new = str(staging), str(final)
    changed = 0
    for cell in nb.cells:
        before = cell.source
        cell.source = cell.source.replace(old, new)
        texts = [o for o in cell.get("outputs", []) if o.get("output_type") == "stream" and old in o.get("text", "")]
        for output in texts:
            output["text"] = output["text"].replace(old, new)
        changed += bool(texts) or cell.source != before
    papermill = nb.metadata.get("papermill", {})
    for key in ("output_path",):
        if isinstance(papermill.get(key), str) and old in papermill[key]:
            papermill[key], changed = papermill[key].replace(old, new), changed + 1
    recorded = papermill.get("parameters", {})
    for key, value in list(recorded.items()):
        if isinstance(value, str) and old in value:
            recorded[key], changed = value.replace(old, new), changed + 1
    if changed:
        with atomic_path(path) as tmp:
            nbformat.write(nb, str(tmp))
    return changed


_WARNING = re.compile(r"^(?:.*:\d+: )?(\w*Warning): (.+)$")


def reader_notes(path: str | os.PathLike) -> list[str]:
    """The notes and warnings meant for the reader in an executed notebook's outputs, once each, in order.

    A note is a printed line starting with ``note:``; a warning is Python's ``<file>:<line>: <Category>Warning: <text>``
    line on stderr (its source line after it is left out). The runner repeats them on its console.
    """
    import nbformat

    found: list[str] = []
    for cell in nbformat.read(str(path), as_version=4).cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") != "stream":
                continue
            for line in output.get("text", "").splitlines():
                text = line.strip()
                warning = _WARNING.match(text) if output.get("name") == "stderr" else None
                if text.startswith("note:"):
                    found.append(text)
                elif warning:
                    found.append(f"warning: {warning.group(2)}")
    return list(dict.fromkeys(found))
