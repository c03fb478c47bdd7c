"""A reader's console: TensorFlow's start-up lines are dropped and every other line kept; no retracing warning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers.common.native_logs import NOISE


def _run(code: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "STUDY_NATIVE_LOGS")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**environment, **env}
    )


def test_the_filter_drops_the_noise_and_keeps_everything_else():
    code = (
        "import os, sys\n"
        "from helpers.common.native_logs import filtered_stderr\n"
        "with filtered_stderr():\n"
        "    os.write(2, b'I0000 00:00:1796505181.679685    5645 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "    os.write(2, b'kept from the native side\\n')\n"
        "    print('kept from python', file=sys.stderr)\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
        "print('after', file=sys.stderr)\n"
    )
    run = _run(code)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == ["kept from the native side", "kept from python", "after"]


def test_building_a_model_on_tensorflow_prints_no_start_up_lines_and_no_retracing_warning():
    code = (
        "import numpy as np, helpers\n"
        "x = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1), dtype=np.uint8)\n"
        "for seed in range(7):  # a user's several models in one process\n"
        "    model = helpers.build_classifier('small_vgg', 32, weights=None, seed=seed)\n"
        "    helpers.gradcam(model, x)\n"
        "print('done')\n"
    )
    run = _run(code, KERAS_BACKEND="tensorflow")
    assert run.returncode == 0 and run.stdout.strip() == "done", run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert not [line for line in lines if NOISE.match(line)], lines
    assert "retracing" not in run.stderr


@pytest.mark.parametrize("keep", ["1"])
def test_the_start_up_lines_can_be_kept(keep):
    run = _run("import helpers; helpers.build_classifier('small_vgg', 32, weights=None)", KERAS_BACKEND="tensorflow",
               STUDY_NATIVE_LOGS=keep)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert any(NOISE.match(line) for line in run.stderr.splitlines())
