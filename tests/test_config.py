"""Tests of helpers.common.config's thread pinning and helpers.runner.provenance's machine record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.common import config
from helpers.runner import provenance


def test_thread_count_reads_study_threads(monkeypatch):
    monkeypatch.delenv(config.THREADS_ENV, raising=False)
    assert config.thread_count() == config.DEFAULT_THREADS
    monkeypatch.setenv(config.THREADS_ENV, " 3 ")
    assert config.thread_count() == 3
    monkeypatch.setenv(config.THREADS_ENV, "AUTO")
    assert config.thread_count() is None
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv(config.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=r"\$STUDY_THREADS must be a positive int or 'auto'"):
            config.thread_count()


def test_pin_threads_sets_tensorflow_variables_unless_set(monkeypatch):
    for name in (config.THREADS_ENV, *config.TF_THREAD_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert config.pin_threads() == {name: str(config.DEFAULT_THREADS) for name in config.TF_THREAD_VARIABLES}
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "5")  # the user's own setting wins
    monkeypatch.setenv(config.THREADS_ENV, "1")
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS")
    assert config.pin_threads() == {
        config.THREADS_ENV: "1",
        "TF_NUM_INTRAOP_THREADS": "5",
        "TF_NUM_INTEROP_THREADS": "1",
    }
    for name in config.TF_THREAD_VARIABLES:
        monkeypatch.delenv(name)
    monkeypatch.setenv(config.THREADS_ENV, "auto")  # TensorFlow's own choice: nothing set
    assert config.pin_threads() == {config.THREADS_ENV: "auto"}


def test_importing_helpers_pins_the_threads_before_keras_starts():
    env = {k: v for k, v in os.environ.items() if k not in (config.THREADS_ENV, *config.TF_THREAD_VARIABLES)}
    code = "import os, helpers; print(os.environ.get('TF_NUM_INTRAOP_THREADS'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(config.DEFAULT_THREADS)


def test_run_json_records_what_shapes_the_floats(monkeypatch):
    monkeypatch.setenv(config.THREADS_ENV, "2")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    device = provenance.device()
    assert device["threads"]["TF_NUM_INTRAOP_THREADS"] == "2" and device["threads"][config.THREADS_ENV] == "2"
    assert 1 <= device["usable_cores"] <= (os.cpu_count() or 1)
    assert set(device["cpu_features"]) <= set(provenance.CPU_FEATURES)
    if os.path.isfile("/proc/cpuinfo") and "avx2" in open("/proc/cpuinfo").read():
        assert "avx2" in device["cpu_features"]
    json.dumps(device)  # run.json must be able to hold it
