"""Tests of the papermill runner: profiles, parameter checks, staging and failures."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from helpers.runner import executed_notebooks, pipeline
from helpers.runner.profiles import ProfileError
from helpers.runner.runlock import RunLock, RunLocked

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, parameters: str, body: list[str]) -> Path:
    cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(src) for src in body]
    nb = nbformat.v4.new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def project(tmp_path):
    """A throw-away project: two numbered notebooks (no Keras), a profile, an unrelated notebook."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    write = (
        "import json, pathlib\n"
        "out = pathlib.Path(report_dir) / 'metrics'\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / (NAME + '.json')).write_text(json.dumps({'seed': seed, 'value': value}))"
    )
    _notebook(
        tmp_path / "notebooks" / "01_first.ipynb",
        'profile = "demo"\nreport_dir = ""\nwork_dir = ""\nseed = 0\nvalue = 1',
        ["NAME = '01'", write],
    )
    _notebook(
        tmp_path / "notebooks" / "02_second.ipynb",
        'profile = "demo"\nreport_dir = ""\nseed = 0\nvalue = 2\nfail = False\nrate = 0.5',
        ["NAME = '02'", write, "if fail:\n    raise RuntimeError('asked to fail')"],
    )
    _notebook(tmp_path / "notebooks" / "scratch.ipynb", "x = 1", ["raise SystemExit"])
    (tmp_path / "params" / "tiny.yaml").write_text(
        yaml.safe_dump({"description": "test profile", "shared": {"seed": 3}, "02_second": {"value": 5}})
    )
    return tmp_path


def test_discover_keeps_numbered_notebooks_in_order(project):
    found = pipeline.discover_notebooks(project / "notebooks")
    assert [p.name for p in found] == ["01_first.ipynb", "02_second.ipynb"]


def test_profile_parameters_are_combined(project):
    notebooks = pipeline.discover_notebooks(project / "notebooks")
    profile = pipeline.load_profile("tiny", project / "params")
    params = pipeline.resolve_parameters(profile, notebooks, ["01_first.value=7", "fail=true"])
    assert params["01_first"] == {"seed": 3, "value": 7}
    assert params["02_second"] == {"seed": 3, "value": 5, "fail": True}


@pytest.mark.parametrize(
    "content, overrides, message",
    [
        ({"shared": {"sed": 1}}, [], "shared key 'sed' is declared by no notebook"),
        ({"02_second": {"valeu": 1}}, [], "unknown key 'valeu' in section '02_second'"),
        ({"03_missing": {"x": 1}}, [], "section '03_missing' names no notebook"),
        ({"shared": {"report_dir": "x"}}, [], "set by the runner"),
        ({}, ["nope=1"], "no notebook declares a parameter 'nope'"),
        ({}, ["01_first.fail=1"], "notebook '01_first' has no parameter 'fail'"),
        ({}, ["09_x.value=1"], "no notebook named '09_x'"),
        ({}, ["value"], "expected key=value"),
        ({}, ["valeu=3"], "did you mean 'value'"),
        ({}, ["value=abc"], "expects an integer like its default 1, got 'abc'"),
    ],
)
def test_unknown_keys_are_rejected_with_their_name(project, content, overrides, message):
    (project / "params" / "bad.yaml").write_text(yaml.safe_dump(content))
    notebooks = pipeline.discover_notebooks(project / "notebooks")
    profile = pipeline.load_profile("bad", project / "params")
    with pytest.raises(ProfileError, match=message):
        pipeline.resolve_parameters(profile, notebooks, overrides)


def test_values_take_the_type_of_the_notebook_default(project):
    notebooks = pipeline.discover_notebooks(project / "notebooks")
    (project / "params" / "types.yaml").write_text("02_second:\n  rate: 1e-3\n")  # YAML 1.1 reads this as text
    profile = pipeline.load_profile("types", project / "params")
    params = pipeline.resolve_parameters(profile, notebooks, ["01_first.value=3", "02.fail=True"])
    assert params["02_second"]["rate"] == pytest.approx(0.001) and isinstance(params["02_second"]["rate"], float)
    assert params["01_first"]["value"] == 3 and params["02_second"]["fail"] is True
    assert pipeline.resolve_parameters(profile, notebooks, ["rate=2"])["02_second"]["rate"] == 2.0
    with pytest.raises(ProfileError, match="02_second.rate: expects a number"):
        pipeline.resolve_parameters(profile, notebooks, ["rate=fast"])


def test_relative_path_parameters_are_taken_from_the_start_folder(project, tmp_path):
    nb = project / "notebooks" / "03_third.ipynb"
    _notebook(nb, 'data_dir = ""\nweights = "imagenet"\nsource = "synthetic"', ["pass"])
    notebooks = pipeline.discover_notebooks(project / "notebooks")
    (tmp_path / "download").mkdir()
    (tmp_path / "w.h5").touch()  # a weights file that does not exist is an error before running
    params = pipeline.resolve_parameters({}, notebooks, ["data_dir=download", "weights=w.h5"], base_dir=tmp_path)
    assert params["03_third"]["data_dir"] == str(tmp_path / "download")
    assert params["03_third"]["weights"] == str(tmp_path / "w.h5")
    assert pipeline.resolve_parameters({}, notebooks, [])["03_third"] == {}


def test_kaggle_source_data_dir_is_checked_before_running(project, monkeypatch):
    from helpers.data import download

    nb = project / "notebooks" / "03_third.ipynb"
    _notebook(nb, 'data_dir = ""\nsource = "synthetic"', ["pass"])
    notebooks = pipeline.discover_notebooks(project / "notebooks")
    # an empty data_dir means a kagglehub download: accepted where kagglehub is installed ...
    monkeypatch.setattr(download, "kagglehub_available", lambda: True)
    assert pipeline.resolve_parameters({}, notebooks, ["source=kaggle"])["03_third"] == {"source": "kaggle"}
    # ... and rejected before any kernel starts, naming the manual steps, where it is not
    monkeypatch.setattr(download, "kagglehub_available", lambda: False)
    with pytest.raises(ProfileError, match=r"kagglehub, which is not installed.*unzip it.*-p data_dir="):
        pipeline.resolve_parameters({}, notebooks, ["source=kaggle"])
    # a folder that does not exist is an error either way
    with pytest.raises(ProfileError, match="data_dir /no/such/folder does not exist"):
        pipeline.resolve_parameters({}, notebooks, ["source=kaggle", "data_dir=/no/such/folder"])
    # ... unless the notebook that reads it does not run (--only / --from)
    bad_folder = ["source=kaggle", "data_dir=/no/such/folder"]
    assert pipeline.resolve_parameters({}, notebooks, bad_folder, run={"01_first"})["03_third"]["source"] == "kaggle"
    # so is a folder that is not the dataset: named with its first folders and what it should hold
    wrong = project / "downloads"
    for i in range(12):
        (wrong / f"folder{i:02d}").mkdir(parents=True)
    with pytest.raises(
        ProfileError,
        match=r"03_third\.data_dir: class folder .*COVID is missing: .* should be the "
        r"COVID-19_Radiography_Dataset folder .*folder00, .*folder07, \.\.\. \(4 more\)",
    ):
        pipeline.resolve_parameters({}, notebooks, ["source=kaggle", f"data_dir={wrong}"])
    for name in ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"):  # the layout itself is all it checks
        (wrong / "COVID-19_Radiography_Dataset" / name).mkdir(parents=True)
    assert (
        pipeline.resolve_parameters({}, notebooks, ["source=kaggle", f"data_dir={wrong}"])["03_third"]["source"]
        == "kaggle"
    )


def test_clean_outputs_drops_tensorflow_start_up_lines(tmp_path):
    noise = (
        "I0000 00:00:1795672123.984999   25286 port.cc:153] oneDNN custom operations are on.\n"
        "E0000 00:00:1795672134.148866   25334 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
    )
    cell = nbformat.v4.new_code_cell(
        "x",
        outputs=[
            nbformat.v4.new_output("stream", name="stderr", text=noise),
            nbformat.v4.new_output("stream", name="stderr", text=noise + "UserWarning: keep me\n"),
            nbformat.v4.new_output("stream", name="stdout", text="I0000 00:00:1 1 a.cc:1] stdout is kept\n"),
        ],
    )
    path = tmp_path / "x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(path))
    assert pipeline.clean_outputs(path) == 4
    outputs = nbformat.read(str(path), as_version=4).cells[0].outputs
    assert [o["text"] for o in outputs] == ["UserWarning: keep me\n", "I0000 00:00:1 1 a.cc:1] stdout is kept\n"]


def test_missing_profile_lists_the_available_ones(project):
    with pytest.raises(ProfileError, match="available profiles: tiny"):
        pipeline.load_profile("nosuch", project / "params")
    (project / "params" / "sweep-x.yaml").write_text("name: x\nparameters:\n  shared:\n    seed: [0, 1]\n")
    with pytest.raises(ProfileError, match=r"\(did you mean 'tiny'\?\); available profiles: tiny$"):
        pipeline.load_profile("tinny", project / "params")  # a sweep grid is not offered as a profile
    with pytest.raises(
        ProfileError, match="is a sweep grid, not a profile: run it with python -m helpers.runner.sweep"
    ):
        pipeline.load_profile("sweep-x", project / "params")
    (project / "params" / "sweep-y.yaml").write_text("name: y\nparameters:\n")  # malformed, still a grid
    (project / "params" / "notes.yaml").write_bytes("title: caf\xe9\n".encode("latin-1"))  # not UTF-8: skipped
    assert pipeline.available_profiles(project / "params") == ["tiny"]
    with pytest.raises(ProfileError, match="is a sweep grid"):
        pipeline.load_profile("sweep-y", project / "params")
    with pytest.raises(ProfileError, match="notes.yaml is not valid YAML"):
        pipeline.load_profile("notes", project / "params")


def test_malformed_profile_is_rejected(project):
    (project / "params" / "broken.yaml").write_text("shared: [1, 2\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        pipeline.load_profile("broken", project / "params")
    (project / "params" / "list.yaml").write_text("shared: [1, 2]\n")
    with pytest.raises(ProfileError, match="section 'shared' must be a mapping"):
        pipeline.load_profile("list", project / "params")


def test_only_selects_by_number_or_stem(project):
    notebooks = pipeline.discover_notebooks(project / "notebooks")
    assert [p.stem for p in pipeline.select_notebooks(notebooks, "2")] == ["02_second"]
    assert [p.stem for p in pipeline.select_notebooks(notebooks, "02_second,01")] == ["01_first", "02_second"]
    with pytest.raises(ProfileError, match="matches no notebook"):
        pipeline.select_notebooks(notebooks, "07")


def test_cli_rejects_bad_keys_before_running_anything(project, capsys):
    code = pipeline.main(
        ["--profile", str(project / "params" / "tiny.yaml"), "-p", "bogus=1", "--work-dir", str(project), "--no-html"]
    )
    assert code == 2
    assert "bogus" in capsys.readouterr().err
    assert not (project / "reports").exists()


@pytest.mark.notebook
def test_run_writes_report_and_failure_keeps_previous(project):
    logs = []
    result = pipeline.run_study("tiny", project_dir=project, work_dir=project, progress=False, log=logs.append)
    report = project / "reports" / "tiny"
    assert result.report_dir == report
    assert json.loads((report / "metrics" / "02.json").read_text()) == {"seed": 3, "value": 5}
    assert (report / "01_first.ipynb").is_file() and (report / "index.html").is_file()
    run = json.loads((report / "run.json").read_text())
    assert run["parameters"]["01_first"]["report_dir"] == str(report)  # the final folder, not the staging one
    # every value each notebook ran with: the profile's, the runner's and the notebook's own defaults
    assert run["parameters"]["02_second"] == {
        "profile": "tiny", "report_dir": str(report), "seed": 3, "value": 5, "fail": False, "rate": 0.5,
    }  # fmt: skip
    assert run["total_seconds"] == pytest.approx(sum(run["seconds"].values()), abs=0.05)
    assert any("[2/2] 02_second done" in line for line in logs)

    # cell numbers as in the source notebook (papermill's injected cell not counted), with the cell's first line
    with pytest.raises(
        pipeline.NotebookFailed,
        match=r"02_second\.ipynb failed in code cell 4 of 4 \(line 2: raise RuntimeError\('asked to fail'\)\).*asked to fail",
    ):
        pipeline.run_study(
            "tiny",
            overrides=["value=9", "fail=true"],
            project_dir=project,
            work_dir=project,
            progress=False,
            export_html=False,
            log=logs.append,
        )
    # the previous report is untouched; the failed run is kept aside for inspection
    assert json.loads((report / "metrics" / "02.json").read_text())["value"] == 5
    assert (project / "reports" / ".tiny.failed" / "02_second.ipynb").is_file()

    pipeline.run_study(
        "tiny",
        only="01",
        overrides=["value=4"],
        project_dir=project,
        work_dir=project,
        progress=False,
        export_html=False,
        log=logs.append,
    )
    assert json.loads((report / "metrics" / "01.json").read_text())["value"] == 4
    assert json.loads((report / "metrics" / "02.json").read_text())["value"] == 5  # kept from the full run
    assert not (project / "reports" / ".tiny.failed").exists()
    run = json.loads((report / "run.json").read_text())
    assert run["stale"] == ["02_second"]  # 02 reads what 01 wrote and was not rerun
    assert any("02_second read what the rerun notebooks wrote" in line for line in logs)

    pipeline.run_study("tiny", start="01", project_dir=project, work_dir=project, progress=False, log=logs.append)
    run = json.loads((report / "run.json").read_text())
    assert run["stale"] == [] and sorted(run["seconds"]) == ["01_first", "02_second"]


# --------------------------------------------------------------------------------------------------
# One run per work folder and profile; disk and permission errors; small messages
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_kernels(project, monkeypatch):
    """Notebooks "run" by copying them (no kernel), so runner behaviour is tested in milliseconds."""
    import papermill

    ran = []
    monkeypatch.chdir(project)  # the command line finds the throw-away project from here

    def execute(source, target, **kwargs):
        ran.append(Path(source).stem)
        shutil.copyfile(source, target)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(pipeline, "_environment", dict)
    return ran


def _main(project, *args):
    return pipeline.main(["--profile", str(project / "params" / "tiny.yaml"), "--work-dir", str(project), *args])


def _leftovers(project):
    return sorted(p.name for p in (project / "reports").iterdir() if p.name.startswith(".") and p.suffix != ".lock")


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    first, second = RunLock(tmp_path / ".x.lock", command="first run"), RunLock(tmp_path / ".x.lock")
    first.acquire()
    with pytest.raises(RunLocked, match=rf"pid {os.getpid()}, started .*command: first run"):
        second.acquire()
    t0 = time.monotonic()
    with pytest.raises(RunLocked, match="still holds .* after waiting 0.3 s"):
        second.acquire(wait=True, timeout=0.3, poll=0.05)
    assert time.monotonic() - t0 >= 0.3
    first.release()
    assert second.acquire() == {}  # released: taken at once
    second.release()


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    code = (
        "import sys, time; from helpers.runner.runlock import RunLock; RunLock(sys.argv[1], command='doomed').acquire(); "
        "print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / ".x.lock")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked, match=rf"pid {proc.pid}.*doomed"):
        RunLock(tmp_path / ".x.lock").acquire()
    proc.kill()  # kill -9: no clean-up runs, the OS releases the flock
    proc.wait()
    lock = RunLock(tmp_path / ".x.lock")
    dead = lock.acquire()
    assert dead["pid"] == proc.pid and dead["command"] == "doomed"
    assert json.loads((tmp_path / ".x.lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_run_refuses_while_another_holds_the_lock(project, fake_kernels, capsys):
    assert _main(project, "--no-html") == 0
    report = sorted(p.name for p in (project / "reports" / "tiny").iterdir())
    holder = RunLock(project / "reports" / ".tiny.lock", command="python -m helpers.runner.pipeline --profile tiny")
    holder.acquire()
    try:
        assert _main(project, "--no-html") == 2
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}, started" in err and "pass --wait" in err
        assert _main(project, "--no-html", "--wait", "--wait-timeout", "0.5") == 2
        assert "after waiting 0.5 s" in capsys.readouterr().err
    finally:
        holder.release()
    assert sorted(p.name for p in (project / "reports" / "tiny").iterdir()) == report
    assert _leftovers(project) == []


def test_staging_is_per_run_and_dead_runs_leftovers_are_removed(project, fake_kernels):
    reports = project / "reports"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    leftover = reports / f".tiny.staging-{int(dead.stdout)}-20240101T000000-000000"
    alive = reports / f".tiny.staging-{os.getppid()}-20240101T000000-000000"  # a live process: not provably dead
    other = reports / f".other.staging-{int(dead.stdout)}-20240101T000000-000000"  # another profile's
    for folder in (leftover, alive, other):
        folder.mkdir(parents=True)
    logs = []
    pipeline.run_study(
        "tiny", project_dir=project, work_dir=project, export_html=False, progress=False, log=logs.append
    )
    assert not leftover.exists() and alive.exists() and other.exists()
    assert any(f"left {alive} alone" in line for line in logs)


def test_interrupted_swap_restores_the_report(project, fake_kernels):
    assert _main(project, "--no-html") == 0
    reports = project / "reports"
    (reports / "tiny").rename(reports / ".tiny.previous")  # killed between the two renames
    logs = []
    pipeline.run_study(
        "tiny", only="02", project_dir=project, work_dir=project, export_html=False, progress=False, log=logs.append
    )
    assert (reports / "tiny" / "01_first.ipynb").is_file() and (reports / "tiny" / "02_second.ipynb").is_file()
    assert any("restored the report" in line for line in logs)


@pytest.mark.parametrize("where", ["export", "notebook output", "run.json"])
def test_full_disk_ends_in_one_line_and_keeps_the_report(project, fake_kernels, monkeypatch, capsys, where):
    assert _main(project, "--no-html") == 0
    report = project / "reports" / "tiny"
    before = sorted(p.name for p in report.iterdir())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(project / "reports" / "x"))

    if where == "export":
        from helpers.report import html as _report_html

        monkeypatch.setattr(_report_html, "export_report", full)
    elif where == "notebook output":
        import papermill

        monkeypatch.setattr(papermill, "execute_notebook", full)
    else:
        monkeypatch.setattr(pipeline, "save_json", full)
    capsys.readouterr()
    assert _main(project) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "failed: No space left on device (ENOSPC)" in err and "staging folder" in err and "was removed" in err
    assert f"the previous report in {report} is unchanged" in err
    assert sorted(p.name for p in report.iterdir()) == before
    assert _leftovers(project) == []


def test_read_only_work_folder_ends_in_one_line(project, fake_kernels, monkeypatch, capsys):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(project)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert _main(project, "--no-html") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot take the run lock in") and "Read-only file system (EROFS)" in err
    assert err.count("\n") == 1


def test_read_only_reports_folder_ends_in_one_line(project, fake_kernels, monkeypatch, capsys):
    assert _main(project, "--no-html") == 0
    report = project / "reports" / "tiny"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if ".staging-" in self.name:
            raise OSError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    capsys.readouterr()
    assert _main(project, "--no-html") == 1
    err = capsys.readouterr().err
    assert "creating the staging folder" in err and "Permission denied (EACCES)" in err and err.count("\n") == 1
    assert (report / "01_first.ipynb").is_file() and _leftovers(project) == []


def test_only_in_a_fresh_folder_claims_no_earlier_run(project, fake_kernels):
    logs = []
    pipeline.run_study(
        "tiny", only="01", project_dir=project, work_dir=project, export_html=False, progress=False, log=logs.append
    )
    assert not any("earlier run" in line for line in logs)
    assert json.loads((project / "reports" / "tiny" / "run.json").read_text())["stale"] == []


def _seed_sweep(report: Path) -> Path:
    """A finished two-seed sweep in the report's sweeps/ folder (its table only)."""
    folder = report / "sweeps" / "seeds"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"name": "seeds", "grid": "g.yaml", "axes": {"shared.seed": [0, 1]}}))
    (folder / "index.html").write_text("<html>sweep</html>")
    rows = [
        {"trial": f"t0{s}", "status": "done", "chosen": s == 0, "vgg16_test_recall": 0.8, "densenet201_test_recall": 0.9,
         "vgg16_aopc": 0.3, "densenet201_aopc": 0.4, "vgg16_morf_minus_random": 0.1, "densenet201_morf_minus_random": 0.2}
        for s in (0, 1)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def test_reruns_keep_the_sweeps_and_their_quote(project, fake_kernels):
    assert _main(project) == 0
    report = project / "reports" / "tiny"
    marker = _seed_sweep(report) / "results.csv"
    inode = marker.stat().st_ino
    for args in ([], ["--only", "02"]):  # a full rerun and a partial one
        assert _main(project, *args) == 0, args
        assert marker.stat().st_ino == inode  # moved into the new report, never copied
        quote = (report / "sweeps.md").read_text()
        assert "[seeds](sweeps/seeds/index.html)" in quote and "In 2 of 2 seeds" in quote
        assert "| vgg16 | 0.800 [0.800, 0.800] |" in quote
        assert "<a href='sweeps/seeds/index.html'>seeds</a>" in (report / "index.html").read_text()
        assert _leftovers(project) == []
    shutil.rmtree(report / "sweeps")
    assert _main(project, "--no-html") == 0
    assert not (report / "sweeps.md").exists()  # no sweeps, no stale quote


def test_sweeps_left_in_a_killed_runs_folders_come_back(project, fake_kernels):
    assert _main(project, "--no-html") == 0
    reports = project / "reports"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    staging = reports / f".tiny.staging-{int(dead.stdout)}-20240101T000000-000000"
    staging.mkdir()
    _seed_sweep(staging)  # killed after moving the sweeps into its staging folder, before the swap
    logs = []
    pipeline.run_study(
        "tiny", project_dir=project, work_dir=project, export_html=False, progress=False, log=logs.append
    )
    assert (reports / "tiny" / "sweeps" / "seeds" / "results.csv").is_file() and not staging.exists()
    assert any("moved the sweeps back" in line for line in logs)
    assert "seeds" in (reports / "tiny" / "sweeps.md").read_text()


def test_from_and_profile_path_messages(project, capsys):
    assert _main(project, "--from", "00") == 2
    assert "--from '00' matches no notebook" in capsys.readouterr().err
    assert pipeline.main(["--profile", "missing.yaml", "--work-dir", str(project)]) == 2
    err = capsys.readouterr().err
    assert "profile file missing.yaml does not exist" in err and "missing.yaml.yaml" not in err


@pytest.mark.notebook
def test_real_kernels_quiet_shutdown_and_clean_interrupt(project):
    """No "KeyboardInterrupt caught in kernel" after a good run; SIGTERM mid-cell gives one line, no traceback."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT / "src"))
    command = [
        sys.executable,
        "-m",
        "helpers.runner.pipeline",
        "--profile",
        str(project / "params" / "tiny.yaml"),
        "--work-dir",
        str(project),
        "--no-html",
        "--no-progress",
    ]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "KeyboardInterrupt" not in done.stdout + done.stderr
    report = project / "reports" / "tiny"
    before = (report / "metrics" / "02.json").read_bytes()

    nb = nbformat.read(str(project / "notebooks" / "02_second.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import time\nprint('sleeping', flush=True)\ntime.sleep(120)"))
    nbformat.write(nb, str(project / "notebooks" / "02_second.ipynb"))
    proc = subprocess.Popen(
        command + ["-p", "value=9"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[2/2]"):
            time.sleep(6)  # the kernel is in the sleeping cell
            proc.send_signal(signal.SIGTERM)
            break
    output = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "ZMQError" not in output and "DeadKernelError" not in output, output
    assert "interrupted: the staging folder" in output and "was removed" in output
    assert f"the previous report in {report} is unchanged" in output
    assert (report / "metrics" / "02.json").read_bytes() == before
    assert _leftovers(project) == []


def test_a_failing_notebook_is_reported_once_with_its_line(project, capsys, monkeypatch):
    monkeypatch.chdir(project)  # the command line finds the throw-away project from here
    assert _main(project, "--no-html", "-p", "fail=true") == 1
    out, err = capsys.readouterr()
    assert "FAILED: notebook 02_second.ipynb failed in code cell 4 of 4 (line 2: raise RuntimeError(" in out
    # the error line points to the FAILED line instead of repeating it (a kernel may log to stderr before it)
    assert err.splitlines()[-1] == "error: notebook 02_second.ipynb failed (see FAILED above)"
    assert (out + err).count("failed in code cell") == 1


def test_a_problem_is_listed_once(project):
    notebooks = pipeline.discover_notebooks(project / "notebooks")
    profile = pipeline.load_profile("tiny", project / "params")
    with pytest.raises(ProfileError) as caught:
        pipeline.resolve_parameters(profile, notebooks, ["seed=abc"])
    lines = str(caught.value).splitlines()[1:]  # seed is checked twice (its type, then its declaration): one line
    assert lines == ["  seed in 01_first, 02_second: expects an integer like its default 0, got 'abc'"]


def test_the_failing_line_is_the_one_that_raised_even_when_chained():
    traceback = [
        "\x1b[0;31mValueError\x1b[0m  Traceback (most recent call last)",
        "Cell \x1b[0;32mIn[3], line 2\x1b[0m\n      1 try:\n----> 2     int(x)",
        "\x1b[0;31mValueError\x1b[0m: invalid literal",
        "\nThe above exception was the direct cause of the following exception:\n",
        "Cell \x1b[0;32mIn[3], line 4\x1b[0m\n----> 4     raise RuntimeError('bad') from e",
    ]
    assert executed_notebooks.failing_line_number(traceback) == 4
    assert executed_notebooks.failing_line_number(traceback[:3]) == 2
    assert (
        executed_notebooks.failing_line_number([]) is None
        and executed_notebooks.failing_line_number(["no cell here"]) is None
    )


def test_failure_message_shows_the_whole_statement_that_raised():
    cell = "%matplotlib inline\nfor i in range(2):\n    folder = study.dataset_from_parameters(\n        source,\n        data_dir)\n"
    assert executed_notebooks.statement_at(cell, 3) == "folder = study.dataset_from_parameters(source, data_dir)"
    assert executed_notebooks.statement_at(cell, 1) == "%matplotlib inline"
    assert executed_notebooks.statement_at("x = " + "y + " * 40 + "1", 1).endswith("…")
    assert (
        executed_notebooks.statement_at("if f(x) > 0:\n    a = 1\nelse:\n    b = 2\n", 1) == "if f(x) > 0:"
    )  # the header only
    assert executed_notebooks.statement_at("ok = (a\n    != b)\n", 1) == "ok = (a != b)"  # '!=' is not a shell escape
    assert executed_notebooks.statement_at("@cache(\n    size=3)\ndef g():\n    pass\n", 1) == "@cache(size=3)"
    assert executed_notebooks.statement_at("a = 1; b = f(\n    x)\n", 1) == "a = 1; b = f(x)"


def test_runner_started_outside_a_study_folder_uses_the_package_checkout(tmp_path, monkeypatch, capsys):
    from helpers.common import config
    from helpers.study import files as study

    monkeypatch.delenv(config.ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert study.find_project_root() == tmp_path.resolve()  # library code: the working folder, as before
    assert study.find_project_root(checkout=True) == ROOT
    assert pipeline.main(["--only", "09"]) == 2  # fails at once, but after finding the notebooks
    out, err = capsys.readouterr()
    assert f"study folder {ROOT}" in out and "matches no notebook (notebooks: 01_data" in err
    assert not (tmp_path / "reports").exists() and not (tmp_path / "data").exists()
