"""Sweeps that cannot lie or hang: missing numbers stay missing, one sweep per folder, failures and signals exit
non-zero with one line, a listener that is not Ray is refused at once, and every grid problem is named in one pass."""

from __future__ import annotations

import errno
import http.server
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers.runner import executors, kernels, pipeline, sweep, sweep_report
from helpers.runner.executors import ExecutorError, make_executor
from helpers.runner.runlock import RunLock
from helpers.runner.sweep import SweepError

ROOT = Path(__file__).resolve().parents[1]


def _grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def _argv(grid: Path, work: Path, *extra: str) -> list[str]:
    return ["--profile", "smoke", "--grid", str(grid), "--work-dir", str(work), *extra]


class Calls(list):
    """The overrides of each ``run_study`` call; ``behave(overrides, work_dir)`` does the trial's work."""

    @staticmethod
    def behave(overrides, work):
        return None


@pytest.fixture
def trials(monkeypatch):
    """``pipeline.run_study`` replaced: each call recorded in the returned list, then its ``behave`` called."""
    calls = Calls()

    def run_study(profile, only, overrides, project_dir, work_dir, **kwargs):
        calls.append(tuple(overrides))
        return calls.behave(tuple(overrides), Path(work_dir))

    monkeypatch.setattr(pipeline, "run_study", run_study)
    return calls


# Missing numbers are missing --------------------------------------------------------------------------------------


def test_a_seed_summary_without_numbers_states_no_conclusion(tmp_path, trials):
    """Trials that stop before the metrics (notebooks 01-03) give a table of missing values and no claim."""
    report = tmp_path / "reports" / "smoke"
    report.mkdir(parents=True)
    (report / "run.json").write_text(json.dumps({"profile": "smoke", "stale": []}))
    grid = _grid(tmp_path, "name: seeds\nnotebooks: ['01', '02', '03']\nparameters:\n  shared:\n    seed: [0, 1]\n")
    out = sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=lambda t: None)
    table = pd.read_csv(out / "results.csv")
    assert table["status"].tolist() == ["done", "done"]
    summary = sweep_report.seed_summary(table)
    assert (summary.attrs["decided"], summary.attrs["agree"], summary.attrs["missing"]) == (0, 0, 2)
    seeds = pd.read_csv(out / "seeds.csv", index_col="model")
    assert (seeds["test_recall_n"] == 0).all() and (seeds["morf_minus_random_n"] == 0).all()
    for text in ((out / "results.md").read_text(), (report / "sweeps.md").read_text()):
        assert "In 2 of 2 seeds" not in text and "In 0 of" not in text
        assert "No seed has both models' test recall and MoRF - random (2 of 2 without them" in text
    assert "| vgg16 | missing | missing | missing |" in (report / "sweeps.md").read_text()


def test_seeds_with_some_numbers_missing_are_counted_as_missing():
    nan = float("nan")
    table = pd.DataFrame(
        {
            "trial": ["t0", "t1", "t2", "t3"],
            "status": ["done", "done", "done", "failed"],
            "vgg16_test_recall": [0.8, 0.8, nan, nan],
            "densenet201_test_recall": [0.9, 0.7, 0.9, nan],
            "vgg16_aopc": [0.1, 0.1, nan, nan],
            "densenet201_aopc": [0.2, 0.2, 0.2, nan],
            "vgg16_morf_minus_random": [0.1, nan, nan, nan],  # t1 has no MoRF - random for vgg16
            "densenet201_morf_minus_random": [0.2, 0.2, 0.2, nan],
        }
    )
    summary = sweep_report.seed_summary(table)
    # only t0 has every number: one decided seed, and it agrees; t1 and t2 are missing, not ties or agreements
    assert (summary.attrs["agree"], summary.attrs["decided"], summary.attrs["ties"]) == (1, 1, 0)
    assert (summary.attrs["missing"], summary.attrs["seeds"]) == (2, 3)
    claim = summary.attrs["claim"]
    assert claim.startswith("In 1 of 1 seeds with a better-generalizing model (higher test recall; 0 ties of 1)")
    assert "2 of 3 seeds lack a model's test recall or MoRF - random" in claim
    assert summary.loc["vgg16", "test_recall_n"] == 2 and summary.loc["densenet201", "test_recall_n"] == 3
    rows = {row["model"]: row for row in sweep_report.seed_rows(summary)}
    assert rows["vgg16"]["MoRF - random"] == "0.100 (2 of 3 missing)"
    assert rows["densenet201"]["test recall"].endswith("]") and "missing" not in rows["densenet201"]["test recall"]


def test_equal_heatmap_scores_are_not_agreement():
    table = pd.DataFrame(
        {
            "trial": ["t0"],
            "status": ["done"],
            "vgg16_test_recall": [0.9],
            "densenet201_test_recall": [0.8],
            "vgg16_morf_minus_random": [0.2],
            "densenet201_morf_minus_random": [0.2],
        }
    )
    summary = sweep_report.seed_summary(table)  # argmax of a tie is the first model: not the better heatmaps
    assert (summary.attrs["agree"], summary.attrs["decided"]) == (0, 1)
    assert "(1 with equal MoRF - random)" in summary.attrs["claim"]


# One sweep of a name per work folder ------------------------------------------------------------------------------


def test_a_second_sweep_on_the_same_folder_is_refused_while_the_first_runs(tmp_path, trials, capsys):
    grid = _grid(tmp_path, "name: seeds\nparameters:\n  shared:\n    seed: [0, 1]\n")
    second = []

    def behave(overrides, work):
        if len(trials) == 1:  # during the first trial of the first sweep, the same sweep again
            second.append(sweep.main(_argv(grid, tmp_path)))
            second.append(sweep.main(_argv(grid, tmp_path, "--wait", "--wait-timeout", "0.2")))
            second.append(capsys.readouterr().err)

    trials.behave = behave
    assert sweep.main(_argv(grid, tmp_path)) == 0
    assert second[:2] == [2, 2] and len(trials) == 2  # the refused sweeps ran no trial
    refused, timed_out = second[2].strip().splitlines()
    assert "is using the sweep seeds of profile smoke in this folder" in refused
    assert "command: " in refused and refused.endswith("pass --wait to queue behind it")
    assert "after waiting 0.2 s" in timed_out
    out = tmp_path / "reports" / "smoke" / "sweeps" / "seeds"
    assert pd.read_csv(out / "results.csv")["status"].tolist() == ["done", "done"]
    for name in pd.read_csv(out / "results.csv")["trial"]:
        assert json.loads((out / name / "trial.json").read_text())["status"] == "done"


def test_wait_queues_behind_the_sweep_that_holds_the_folder(tmp_path, trials, capsys):
    grid = _grid(tmp_path, "name: seeds\nparameters:\n  shared:\n    seed: [0]\n")
    loaded = sweep.load_sweep(grid, "smoke", ROOT)
    path = sweep.lock_path(tmp_path, loaded)
    path.parent.mkdir(parents=True)
    holder = RunLock(path, command="python -m helpers.runner.sweep --grid other")
    holder.acquire()
    timer = threading.Timer(0.6, holder.release)
    timer.start()
    try:
        assert sweep.main(_argv(grid, tmp_path, "--wait")) == 0
    finally:
        timer.join()
    out = capsys.readouterr().out
    assert "waiting for the run with pid" in out and "command: python -m helpers.runner.sweep --grid other" in out
    assert len(trials) == 1


# A failed trial fails the command ---------------------------------------------------------------------------------


def test_a_sweep_with_a_failed_trial_exits_1_and_says_so_last(tmp_path, trials, capsys):
    def behave(overrides, work):
        if "learning_rate=0.5" in overrides:
            raise pipeline.NotebookFailed("03_train_vgg16 failed in cell 3: loss is NaN")

    trials.behave = behave
    grid = _grid(tmp_path, "name: lr\nparameters:\n  shared:\n    learning_rate: [0.001, 0.5]\n")
    assert sweep.main(_argv(grid, tmp_path)) == 1
    out, err = capsys.readouterr()
    failed = pd.read_csv(tmp_path / "reports" / "smoke" / "sweeps" / "lr" / "results.csv").loc[1, "trial"]
    assert err.strip().splitlines()[-1].startswith(f"error: 1 of 2 trials failed ({failed}): their errors are in ")
    assert out.strip().splitlines()[-1].startswith("sweep lr: 1 done, 1 failed; table in ")
    # every trial failed: the same

    def no_split(overrides, work):
        raise RuntimeError("no split")

    trials.behave = no_split
    grid = _grid(tmp_path, "name: all\nparameters:\n  shared:\n    seed: [0]\n")
    assert sweep.main(_argv(grid, tmp_path)) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: 1 of 1 trials failed (t00-")
    # nothing failed: exit 0, the summary line last
    trials.behave = lambda overrides, work: None
    assert sweep.main(_argv(grid, tmp_path)) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.strip().splitlines()[-1].startswith("sweep all: 1 done, 0 failed")


# A Ray address that is not Ray ------------------------------------------------------------------------------------


@pytest.fixture
def web_server():
    """An HTTP server on 127.0.0.1 (what `python -m http.server` answers): its port."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_ray_init(monkeypatch):
    """A stand-in ``ray`` module whose ``init`` records its calls (a real one would retry for minutes)."""
    calls = []
    fake = type(sys)("ray")

    def init(*args, **kwargs):
        calls.append(kwargs.get("address"))
        raise ConnectionError("ray.init was called")

    fake.init = init
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    return calls


def test_a_listener_that_is_not_ray_is_refused_in_seconds(web_server, no_ray_init):
    address = f"127.0.0.1:{web_server}"
    t0 = time.monotonic()
    with pytest.raises(ExecutorError) as caught:
        make_executor("ray", ray_address=address).start(log=lambda text: None)
    assert time.monotonic() - t0 < executors.CONNECT_TIMEOUT + 1
    assert str(caught.value).startswith(f"--ray-address {address}: {address} accepts connections but is not a Ray")
    assert no_ray_init == []


def test_a_silent_listener_is_refused_after_the_connect_timeout(monkeypatch, no_ray_init):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as silent:  # accepts connections (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(ExecutorError, match="it sent nothing back within 0.5 s"):
            make_executor("ray", ray_address=address).start(log=lambda text: None)
        assert time.monotonic() - t0 < 2
    assert no_ray_init == []


def test_the_sweep_refuses_a_ray_address_that_is_not_ray_with_one_line(
    tmp_path, trials, web_server, no_ray_init, capsys
):
    grid = _grid(tmp_path, "parameters:\n  shared:\n    seed: [0]\n")
    address = f"127.0.0.1:{web_server}"
    assert sweep.main(_argv(grid, tmp_path, "--executor", "ray", "--ray-address", address)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --ray-address {address}: ")
    assert trials == [] and no_ray_init == [] and not (tmp_path / "reports").exists()


# SIGTERM as SIGINT ------------------------------------------------------------------------------------------------


@pytest.fixture
def signal_state(monkeypatch):
    """Undo what an interrupt leaves in this process: the kernels' mark and the silenced asyncio logger."""
    monkeypatch.setattr(kernels, "signal_received", None)
    yield
    logging.getLogger("asyncio").disabled = False


def test_sigterm_stops_a_sweep_as_sigint_does(tmp_path, trials, signal_state, capsys):
    class Escaped(Exception):
        """Raised by the handler the test had before the sweep: the sweep did not handle SIGTERM."""

    def earlier(signum, frame):
        raise Escaped

    def behave(overrides, work):
        staging = work / "reports" / ".smoke.staging-test"
        staging.mkdir(parents=True)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        except KeyboardInterrupt:  # what the runner does: its staging folder removed, a message
            staging.rmdir()
            assert kernels.signal_received == signal.SIGTERM  # the kernels are told, so they shut down quietly
            raise pipeline.RunInterrupted(f"interrupted: the staging folder {staging} was removed") from None

    trials.behave = behave
    grid = _grid(tmp_path, "name: term\nparameters:\n  shared:\n    seed: [0, 1]\n")
    before = signal.signal(signal.SIGTERM, earlier)
    try:
        assert sweep.main(_argv(grid, tmp_path)) == 130
        assert signal.getsignal(signal.SIGTERM) is earlier  # the sweep's handler is removed when it ends
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("sweep interrupted in trial t00-") and "finished trials are kept" in err[0]
    )
    assert ": the staging folder " in err[0] and "was removed; finished" in err[0]
    assert len(trials) == 1 and not list(tmp_path.rglob(".smoke.staging-*"))
    assert not list(tmp_path.rglob("trial.json"))  # neither done nor failed: the next run tries it again


def _sleeping_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                'profile = "demo"\nreport_dir = ""\nwork_dir = ""\nseed = 0', metadata={"tags": ["parameters"]}
            ),
            nbformat.v4.new_code_cell(
                "import pathlib, time\npathlib.Path(work_dir, 'sleeping').write_text('')\ntime.sleep(120)"
            ),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.write(nb, str(path))


@pytest.mark.notebook
def test_sigterm_during_a_real_trial_leaves_no_staging_folder_or_kernel_file(tmp_path):
    """A throw-away study whose notebook sleeps: SIGTERM to the sweep mid-cell gives exit 130 and one line, the
    runner's staging folder removed and the kernel shut down (its connection file gone)."""
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "params").mkdir()
    (project / "pyproject.toml").write_text("[project]\nname='x'\n")
    (project / "params" / "tiny.yaml").write_text("shared:\n  seed: 0\n")
    _sleeping_notebook(project / "notebooks" / "01_first.ipynb")
    grid = _grid(project, "name: term\nparameters:\n  shared:\n    seed: [0]\n")
    runtime = tmp_path / "runtime"  # the kernel's connection file: a temporary file, or in Jupyter's runtime folder
    runtime.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "STUDY_WORK_DIR"}
    env.update(
        PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT / "src"), JUPYTER_RUNTIME_DIR=str(runtime), TMPDIR=str(runtime)
    )

    def connection_files():
        return [path for path in runtime.rglob("*.json") if "shell_port" in path.read_text(errors="replace")]

    command = [sys.executable, "-m", "helpers.runner.sweep", "--profile", "tiny", "--grid", str(grid)]
    proc = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(project.glob("reports/tiny/sweeps/term/t00-*/sleeping")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        assert connection_files() and list(project.rglob(".tiny.staging-*"))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("sweep interrupted in trial t00-") and ": the staging folder " in last, err
    assert "was removed; no report was written" in last and last.endswith("resumes with the others"), err
    assert not list(project.rglob(".tiny.staging-*")) and not connection_files()
    assert not list(project.rglob("trial.json"))
    assert pathlib.Path(project / "reports" / ".tiny.sweep-term.lock").read_text() == ""  # released


# A folder the sweep cannot write ----------------------------------------------------------------------------------


def test_a_folder_the_sweep_cannot_write_gives_one_line(tmp_path, trials, capsys, monkeypatch):
    grid = _grid(tmp_path, "name: seeds\nparameters:\n  shared:\n    seed: [0]\n")
    work = tmp_path / "work"
    work.mkdir()
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):  # a read-only file system (chmod does not stop root)
        if str(self).startswith(str(work)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    assert sweep.main(_argv(grid, work)) == 1
    out, err = capsys.readouterr()
    assert err == (
        f"error: cannot take the sweep lock in {work / 'reports'}: Read-only file system (EROFS): {work / 'reports'}\n"
    )
    assert trials == []
    monkeypatch.setattr(pathlib.Path, "mkdir", real_mkdir)
    (work / "reports").write_text("")  # a file where the reports folder should be
    assert sweep.main(_argv(grid, work)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot take the sweep lock in {work / 'reports'}: ")
    assert "Traceback" not in err and trials == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_work_folder_gives_one_line(tmp_path, trials, capsys):
    grid = _grid(tmp_path, "name: seeds\nparameters:\n  shared:\n    seed: [0]\n")
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o555)
    try:
        assert sweep.main(_argv(grid, work)) == 1
    finally:
        work.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied (EACCES)" in err and trials == []


# Every grid problem at once ---------------------------------------------------------------------------------------


def test_every_problem_of_a_grid_is_named_at_once(tmp_path):
    text = (
        "notebooks: ['01', '03', '07']\nparameters:\n  03:\n    epochs: [1, two, 1]\n"
        "  07:\n    region_size: [8, 1000]\n"
    )
    with pytest.raises(SweepError) as caught:
        sweep.load_sweep(_grid(tmp_path, text), "smoke", ROOT)
    message = str(caught.value)
    assert "03_train_vgg16.epochs: must be an integer, got 'two'" in message  # a value
    assert "'03_train_vgg16.epochs' lists 1 more than once" in message  # a duplicate
    # a relation, for the trials that hold the value, found although the file has other problems
    assert "region_size=1000 is larger than the image (image_size=32) (trials with 07_aopc.region_size=1000)" in message


@pytest.mark.parametrize(
    "text, message",
    [
        ("parameters:\n  03:\n    epochs: [2, 2]\n", "'03_train_vgg16.epochs' lists 2 more than once"),
        ("parameters:\n  shared:\n    learning_rate: [0.001, 1.0e-3]\n", "lists 0.001 more than once"),
        (
            "parameters:\n  03:\n    epochs: [1]\n  03_train_vgg16:\n    epochs: [2]\n",
            "'03_train_vgg16.epochs' is given twice (in sections '03' and '03_train_vgg16')",
        ),
        (
            "notebooks: ['03', '04']\nparameters:\n  shared:\n    seed: [0]\n",
            "notebooks: ['03', '04'] does not start at '01': every trial runs in a work folder of its own, where "
            "03_train_vgg16 would find nothing of what 01_data writes",
        ),
        ("notebooks: [3]\nparameters:\n  shared:\n    seed: [0]\n", "does not start at '01'"),
    ],
)
def test_duplicates_and_a_notebook_list_after_01_are_refused(tmp_path, trials, text, message):
    with pytest.raises(SweepError) as caught:
        sweep.run_sweep(_grid(tmp_path, text), "smoke", project_dir=ROOT, work_dir=tmp_path)
    assert message in str(caught.value)
    assert trials == [] and not (tmp_path / "reports").exists()


def test_grids_that_start_at_01_and_list_each_value_once_load(tmp_path):
    loaded = sweep.load_sweep(
        _grid(tmp_path, "notebooks: [1, '03']\nparameters:\n  shared:\n    seed: [0, 1]\n    sampling: [downsample]\n"),
        "smoke",
        ROOT,
    )
    assert loaded.only == "1,03" and len(loaded.trials) == 2
