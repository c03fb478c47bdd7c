"""The runner's console: the notes and warnings a notebook gives its reader, and no stale HTML after --no-html."""

from __future__ import annotations

import nbformat
from test_pipeline import fake_kernels, project  # noqa: F401  (fixtures)

from helpers.runner import executed_notebooks, pipeline


def _executed(path, outputs):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.outputs = [nbformat.v4.new_output("stream", name=name, text=text) for name, text in outputs]
    nb.cells = [cell, nbformat.v4.new_markdown_cell("note: not an output")]
    nbformat.write(nb, str(path))
    return path


def test_reader_notes_are_the_notes_and_warnings_once_each(tmp_path):
    path = _executed(
        tmp_path / "n.ipynb",
        [
            ("stdout", "training ...\nnote: left out 3 image(s) without a lung mask: a.png, b.png, c.png\n"),
            ("stderr", "/x/dataset.py:197: UserWarning: 2 mask(s) have another aspect ratio\n  warnings.warn(\n"),
            ("stdout", "note: left out 3 image(s) without a lung mask: a.png, b.png, c.png\n"),
            ("stderr", "I0000 00:00:1 1 a.cc:1] start-up line\n"),
        ],
    )
    assert executed_notebooks.reader_notes(path) == [
        "note: left out 3 image(s) without a lung mask: a.png, b.png, c.png",
        "warning: 2 mask(s) have another aspect ratio",
    ]


def test_the_runner_repeats_the_notes_on_its_console(project, fake_kernels, monkeypatch):  # noqa: F811
    import papermill

    def execute(source, target, **kwargs):
        _executed(target, [("stdout", "note: 141 image(s) have no lung mask\n")])

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    logs = []
    pipeline.run_study("tiny", only="01", project_dir=project, work_dir=project, progress=False, log=logs.append)
    assert "  01_first: note: 141 image(s) have no lung mask" in logs


def test_a_no_html_rerun_removes_the_pages_it_would_leave_stale(project, fake_kernels):  # noqa: F811
    report = project / "reports" / "tiny"
    pipeline.run_study("tiny", project_dir=project, work_dir=project, progress=False, log=lambda *a: None)
    assert (report / "index.html").is_file() and (report / "01_first.html").is_file()
    logs = []
    pipeline.run_study(
        "tiny", only="01", project_dir=project, work_dir=project, progress=False, export_html=False, log=logs.append
    )
    assert not (report / "index.html").exists() and not (report / "01_first.html").exists()
    assert (report / "02_second.html").is_file()  # 02 was not rerun: its page still shows its run
    assert any("--no-html: removed the earlier run's index.html, 01_first.html" in line for line in logs)
