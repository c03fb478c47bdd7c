"""Tests of paths and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import config


def test_study_paths_layout(tmp_path):
    paths = config.study_paths("smoke", tmp_path)
    assert paths.processed == tmp_path / "data" / "processed" / "smoke"
    assert paths.models == tmp_path / "data" / "models" / "smoke"
    assert paths.report == tmp_path / "reports" / "smoke"
    assert paths.figures.is_dir() and paths.metrics.is_dir() and paths.cache.is_dir()
    other = config.study_paths("smoke", tmp_path, tmp_path / "staging")
    assert other.figures == tmp_path / "staging" / "figures"


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ROOT_ENV, str(tmp_path))
    assert config.find_project_root() == tmp_path.resolve()
    assert config.study_paths("demo").root == tmp_path.resolve()


@pytest.mark.parametrize("bad", ["", "a/b", "..\\x"])
def test_bad_profile_names(tmp_path, bad):
    with pytest.raises(ValueError, match="profile"):
        config.study_paths(bad, tmp_path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    config.save_json({"a": 1}, target)
    with pytest.raises(RuntimeError):
        with config.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert config.load_json(target) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_json_and_npz_round_trip(tmp_path):
    values = {"x": np.float32(0.5), "v": np.arange(3), "nan": float("nan"), "np_nan": np.float64("nan"),
              "inf": np.float32("inf"), "arr": np.array([1.0, np.nan])}
    config.save_json(values, tmp_path / "m.json")
    assert config.load_json(tmp_path / "m.json") == {"x": 0.5, "v": [0, 1, 2], "nan": None, "np_nan": None,
                                                    "inf": None, "arr": [1.0, None]}
    assert "NaN" not in (tmp_path / "m.json").read_text()  # strict JSON
    config.save_npz(tmp_path / "a.npz", h=np.ones((2, 3), np.float32))
    assert config.load_npz(tmp_path / "a.npz")["h"].shape == (2, 3)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        config.load_npz(tmp_path / "missing.npz")


def test_atomic_writes_get_the_umask_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        config.save_json({"a": 1}, tmp_path / "m.json")
    finally:
        os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
