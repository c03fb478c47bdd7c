"""The sweep runner: grid files checked up front, one runner call per trial, resume, failures recorded, the table."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pytest

from helpers.runner import pipeline, sweep, sweep_report
from helpers.runner.runlock import RunLock
from helpers.runner.sweep import SweepError

ROOT = Path(__file__).resolve().parents[1]


def _grid(tmp_path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def _fake_summary(work: Path, profile: str, recall: dict, heat: dict, criterion: dict) -> None:
    metrics = work / "reports" / profile / "metrics"
    metrics.mkdir(parents=True)
    summary = {
        "classification": {
            "models": {m: {"macro_recall": {"estimate": r}, "macro_f1": {"estimate": r}} for m, r in recall.items()}
        },
        "aopc": {m: {"morf": {"final": h + 0.1}, "morf_minus_random": {"final": h}} for m, h in heat.items()},
    }
    (metrics / "summary.json").write_text(json.dumps(summary))
    for model, value in criterion.items():
        (metrics / f"training_{model}.json").write_text(json.dumps({"val_mean_disease_recall": value}))


@pytest.fixture
def fake_run(monkeypatch):
    """``pipeline.run_study`` replaced: records its calls, writes a summary from the overrides, fails on lr 0.5."""
    calls = []

    def run_study(profile, only, overrides, project_dir, work_dir, **kwargs):
        calls.append((profile, only, tuple(overrides), Path(work_dir)))
        if any("learning_rate=0.5" in o for o in overrides):
            raise pipeline.NotebookFailed("03_train_vgg16 failed in cell 3: loss is NaN")
        lr = next((float(o.split("=")[1]) for o in overrides if "learning_rate" in o), 0.001)
        seed = next((int(o.split("=")[1]) for o in overrides if o.startswith("seed=")), 0)
        _fake_summary(
            Path(work_dir), profile,
            recall={"vgg16": 0.8, "densenet201": 0.9 if seed % 2 == 0 else 0.7},
            heat={"vgg16": 0.1, "densenet201": 0.2},
            criterion={"vgg16": lr * 100, "densenet201": lr * 100},
        )  # fmt: skip
        return None

    monkeypatch.setattr(pipeline, "run_study", run_study)
    return calls


def test_grid_runs_every_trial_once_records_failures_and_resumes(tmp_path, fake_run):
    grid = _grid(
        tmp_path,
        "name: lr\nparameters:\n  shared:\n    learning_rate: [0.001, 0.5, 0.003]\n"
        "  03_train_vgg16:\n    sampling: [downsample]\n  04:\n    sampling: [downsample]\n"
        "notebooks: ['01', '03', '04']\n",
    )
    out = sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=lambda t: None)
    assert out == tmp_path / "reports" / "smoke" / "sweeps" / "lr"
    assert len(fake_run) == 3
    profile, only, overrides, work = fake_run[0]
    assert profile == "smoke" and only == "01,03,04" and work.parent == out
    assert overrides == (
        "learning_rate=0.001",
        "03_train_vgg16.sampling='downsample'",
        "04_train_densenet201.sampling='downsample'",
    )
    table = pd.read_csv(out / "results.csv")
    assert table["status"].tolist() == ["done", "failed", "done"]
    assert "loss is NaN" in table.loc[1, "error"]
    assert table["chosen"].tolist() == [False, False, True]  # lr 0.003: the best validation criterion
    assert table.loc[2, "densenet201_test_recall"] == 0.9
    for name in ("results.md", "index.html", "sweep.png"):
        assert (out / name).is_file()
    failed = json.loads((out / table.loc[1, "trial"] / "trial.json").read_text())
    assert failed["status"] == "failed" and "NotebookFailed" in failed["error"] and failed["traceback"]
    # resume: the done trials are never rerun, the failed one is tried again
    fake_run.clear()
    sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=lambda t: None)
    assert [c[2][0] for c in fake_run] == ["learning_rate=0.5"]


def test_random_search_is_seeded(tmp_path):
    text = "search: random\ntrials: 3\nseed: 7\nparameters:\n  shared:\n    learning_rate: [0.001, 0.002, 0.003, 0.004]\n    epochs: [1, 2]\n"
    a = sweep.load_sweep(_grid(tmp_path, text), "smoke", ROOT)
    b = sweep.load_sweep(_grid(tmp_path, text), "smoke", ROOT)
    assert len(a.trials) == 3 and [t.values for t in a.trials] == [t.values for t in b.trials]
    assert len({t.name for t in a.trials}) == 3


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "parameters:\n  03_train_vgg:\n    epochs: [1]\n",
            "section '03_train_vgg' names no notebook \\(did you mean '03_train_vgg16'\\?\\)",
        ),
        (
            "parameters:\n  shared:\n    learning_rat: [0.1]\n",
            "unknown parameter 'shared.learning_rat' \\(did you mean 'learning_rate'\\?\\)",
        ),
        ("parameters:\n  03:\n    epochs: []\n", "'03_train_vgg16.epochs' has an empty value list"),
        ("parameters:\n  03:\n    epochs: 3\n", "must be a list of values"),
        ("parameters:\n  03:\n    epochs: [1, two]\n", "03_train_vgg16.epochs: must be an integer, got 'two'"),
        ("parameters:\n  shared:\n    sampling: [oversampling]\n", "did you mean 'oversample'"),
        ("parameters:\n  03:\n    profile: [x]\n", "set by the runner"),
        ("parametres:\n  03:\n    epochs: [1]\n", "unknown key 'parametres' \\(did you mean 'parameters'\\?\\)"),
        ("notebooks: ['01', '09']\nparameters:\n  03:\n    epochs: [1]\n", "no notebook named '09'"),
        ("search: random\nparameters:\n  03:\n    epochs: [1]\n", "needs 'trials'"),
        ("parameters:\n  07:\n    region_size: [8, 1000]\n", "region_size=1000 is larger than the image"),
    ],
)
def test_bad_grids_are_refused_before_any_trial(tmp_path, fake_run, text, message):
    with pytest.raises(SweepError, match=message):
        sweep.run_sweep(_grid(tmp_path, text), "smoke", project_dir=ROOT, work_dir=tmp_path)
    assert fake_run == [] and not (tmp_path / "reports").exists()
    code = sweep.main(["--profile", "smoke", "--grid", str(tmp_path / "grid.yaml"), "--work-dir", str(tmp_path)])
    assert code == 2


def test_shipped_grids_load():
    demo = sweep.load_sweep(ROOT / "params" / "sweep-demo.yaml", "demo", ROOT)
    assert len(demo.trials) == 4
    seeds = sweep.load_sweep(ROOT / "params" / "sweep-seeds.yaml", "demo", ROOT)
    assert [t.values for t in seeds.trials] == [{"shared.seed": s} for s in range(5)]


def test_seed_summary_counts_the_seeds_that_agree(tmp_path, fake_run):
    grid = _grid(tmp_path, "name: seeds\nparameters:\n  shared:\n    seed: [0, 1, 2, 3, 4]\n")
    out = sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=lambda t: None)
    seeds = pd.read_csv(out / "seeds.csv", index_col="model")
    assert seeds.loc["densenet201", "test_recall_mean"] == pytest.approx((0.9 * 3 + 0.7 * 2) / 5)
    assert seeds.loc["vgg16", "morf_minus_random_low"] == pytest.approx(0.1)  # no spread: a zero-width interval
    summary = sweep_report.seed_summary(pd.read_csv(out / "results.csv"))
    # densenet201 generalizes better in seeds 0, 2, 4 and has the larger MoRF - random in all: 3 of 5 agree
    assert (summary.attrs["agree"], summary.attrs["decided"]) == (3, 5)
    assert "In 3 of 5 seeds" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--executor", "rayy"], "--executor must be one of local, ray, got 'rayy' (did you mean 'ray'?)"),
        (["--workers", "0"], "--workers must be an integer >= 1, got 0"),
        (["--workers", "two"], "--workers must be an integer >= 1, got 'two'"),
        (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:{port}"], "--ray-address 127.0.0.1:{port}: no Ray cluster"),
    ],
)
def test_bad_executor_options_are_refused_before_any_trial(tmp_path, fake_run, capsys, options, message):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    grid = _grid(tmp_path, "parameters:\n  shared:\n    seed: [0, 1]\n")
    argv = ["--profile", "smoke", "--grid", str(grid), "--work-dir", str(tmp_path)]
    assert sweep.main(argv + [o.format(port=port) for o in options]) == 2
    assert message.format(port=port) in capsys.readouterr().err
    assert fake_run == [] and not (tmp_path / "reports").exists()


def _parent_report(work: Path, profile: str = "smoke") -> Path:
    report = work / "reports" / profile
    report.mkdir(parents=True)
    (report / "run.json").write_text(json.dumps({"profile": profile, "stale": []}))
    (report / "summary.md").write_text("# Study summary\n\nthe study's own text\n")
    (report / "index.html").write_text("<html>before</html>")
    return report


def test_a_finished_sweep_is_quoted_and_linked_in_the_parent_report(tmp_path, fake_run):
    report = _parent_report(tmp_path)
    grid = _grid(tmp_path, "name: seeds\nparameters:\n  shared:\n    seed: [0, 1, 2, 3, 4]\n")
    sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=lambda t: None)
    quote = (report / "sweeps.md").read_text()
    assert "[seeds](sweeps/seeds/index.html)" in quote and "5 of 5 trials done" in quote
    assert "| densenet201 | 0.820 [" in quote and "In 3 of 5 seeds" in quote  # mean test recall (0.9*3+0.7*2)/5
    index = (report / "index.html").read_text()
    assert "the study&#x27;s own text" in index or "the study's own text" in index
    assert "<a href='sweeps/seeds/index.html'>seeds</a>" in index and "Seed robustness (sweep seeds, 5 seeds)" in index
    assert (report / "summary.md").read_text() == "# Study summary\n\nthe study's own text\n"  # the study's file


def test_the_parent_report_is_only_touched_under_the_runners_lock(tmp_path, fake_run):
    report = _parent_report(tmp_path)
    grid = _grid(tmp_path, "name: seeds\nparameters:\n  shared:\n    seed: [0, 1]\n")
    out = sweep.run_sweep(grid, "smoke", project_dir=ROOT, work_dir=tmp_path, log=lambda t: None)
    (report / "sweeps.md").unlink()
    holder = RunLock(tmp_path / "reports" / ".smoke.lock", command="python -m helpers.runner.pipeline --profile smoke")
    holder.acquire()
    logs = []
    try:
        assert not sweep_report.refresh_parent_report(tmp_path, "smoke", logs.append, timeout=0.3)
    finally:
        holder.release()
    assert not (report / "sweeps.md").exists() and "that run quotes the sweeps when it finishes" in logs[0]
    assert sweep_report.refresh_parent_report(tmp_path, "smoke", logs.append)
    assert "seeds" in (report / "sweeps.md").read_text() and out.is_dir()
    # no finished report (no run.json): nothing is created beside the sweeps
    (report / "run.json").unlink()
    (report / "sweeps.md").unlink()
    assert not sweep_report.refresh_parent_report(tmp_path, "smoke", logs.append)
    assert not (report / "sweeps.md").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("compare: input_mask\nparameters:\n  shared:\n    seed: [0, 1]\n", "compare must name one parameter"),
        ("compare: seed\nparameters:\n  shared:\n    seed: [0, 1, 2]\n", "exactly two values"),
    ],
)
def test_compare_must_name_a_two_valued_axis(tmp_path, text, message):
    with pytest.raises(SweepError, match=message):
        sweep.load_sweep(_grid(tmp_path, text), "smoke", ROOT)
    loaded = sweep.load_sweep(
        _grid(tmp_path, "compare: input_mask\nparameters:\n  shared:\n    input_mask: [none, lung]\n"), "smoke", ROOT
    )
    assert loaded.compare == "shared.input_mask" and len(loaded.trials) == 2
