"""The one declaration of notebook parameters: complete, in step with the helpers, and checked before any kernel."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.common import config
from helpers.runner import parameters, pipeline
from helpers.runner.parameters import ParameterError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = pipeline.discover_notebooks(ROOT / "notebooks")


def _defaults() -> dict[str, dict]:
    return {nb.stem: {k: ast.literal_eval(v) for k, v in pipeline.notebook_parameters(nb).items()} for nb in NOTEBOOKS}


def test_every_notebook_parameter_is_declared_and_its_default_valid():
    defaults = _defaults()
    missing = sorted({f"{stem}.{k}" for stem, p in defaults.items() for k in p if k not in parameters.PARAMETERS})
    assert missing == []
    assert parameters.validate(defaults) == []


@pytest.mark.parametrize("profile", ["demo", "demo-imbalanced", "smoke", "paper"])
def test_the_profiles_pass(profile, tmp_path):
    notebooks = NOTEBOOKS
    for name in config.CLASS_NAMES:  # the paper's data_dir must hold the dataset's class folders
        (tmp_path / name).mkdir()
    extra = [f"data_dir={tmp_path}"] if profile == "paper" else []
    pipeline.resolve_parameters(pipeline.load_profile(profile, ROOT / "params"), notebooks, extra)


def test_the_imbalanced_demo_keeps_the_real_ratios_and_weights_the_loss():
    from helpers.data.phantoms import REAL_CLASS_SIZES

    resolved = pipeline.resolve_parameters(pipeline.load_profile("demo-imbalanced", ROOT / "params"), NOTEBOOKS, [])
    counts = resolved["01_data"]["synthetic_per_class"]
    real = list(REAL_CLASS_SIZES.values())
    assert [round(n / 8) for n in real] == counts  # the real counts divided by 8, in class order
    assert {p["sampling"] for p in resolved.values() if "sampling" in p} == {"class_weight"}
    demo = pipeline.resolve_parameters(pipeline.load_profile("demo", ROOT / "params"), NOTEBOOKS, [])
    differs = {
        f"{stem}.{key}" for stem, p in resolved.items() for key, value in p.items() if demo[stem].get(key) != value
    }
    assert differs == {"01_data.synthetic_per_class", "01_data.sampling", "03_train_vgg16.sampling",
                       "04_train_densenet201.sampling"}  # fmt: skip


def test_the_checks_read_the_method_and_perturbation_tables():
    """A heatmap method or a perturbation is one function and one table entry: the checks accept exactly those."""
    import numpy as np

    from helpers.explain import registry
    from helpers.metrics import perturbation, perturbations

    for name in registry.METHODS:  # every entry resolves to a function of its module
        assert callable(registry.get_method(name))
        assert parameters.problems("06_gradcam", {"method": name}) == []
    assert parameters.problems("06_gradcam", {"method": "gradcam+"})
    assert parameters.problems("08_methods_and_metrics", {"methods": list(registry.METHODS)}) == []
    x = np.full((1, 8, 8, 1), 0.5, np.float32)
    for name in perturbations.PERTURBATIONS:
        assert parameters.problems("07_aopc", {"perturbation": name}) == []
        assert perturbation.perturbed_images(x, name, sigma=0.1).shape == x.shape
    assert parameters.problems("07_aopc", {"perturbation": "gauss"})
    from helpers.metrics.agreement import METRICS

    assert {metric.group for metric in METRICS} == set(parameters.METRIC_GROUPS)  # 08.metrics selects these families
    with pytest.raises(ValueError, match="perturbation must be one of"):
        perturbation.perturbed_images(x, "gauss")


def test_importable_without_keras_or_numpy():
    code = "import sys, helpers.runner.parameters; print(sorted({'keras', 'numpy', 'tensorflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "notebook, name, value, message",
    [
        ("03_train_vgg16", "epochs", -1, r"03_train_vgg16\.epochs: must be an integer >= 1, got -1"),
        ("03_train_vgg16", "epochs", True, "must be an integer"),
        ("05_report", "batch_size", 0, "integer >= 1"),
        ("07_aopc", "n_bootstrap", 0, "integer >= 1"),
        ("03_train_vgg16", "learning_rate", 0.0, "must be > 0"),
        ("07_aopc", "sigma", -0.1, "must be >= 0"),
        ("07_aopc", "perturbation", "gauss", "did you mean 'gaussian'"),
        ("07_aopc", "orders", ["morf", "sideways"], "item 'sideways' must be one of"),
        ("06_gradcam", "method", "cam", "must be one of 'gradcam', 'gradcam\\+\\+'"),
        ("01_data", "source", "kagle", "did you mean 'kaggle'"),
        ("01_data", "split_fractions", [0.5, 0.5, 0.5], "summing to 1"),
        ("06_gradcam", "alphas", [0.5, 1.5], "must be <= 1"),
        (None, "seed", -3, r"^seed: must be an integer >= 0"),
        ("01_data", "sampling", "oversampling", "did you mean 'oversample'"),
        ("01_data", "synthetic_per_class", [3, 5, 8], "four positive ints"),
        ("01_data", "synthetic_per_class", [3, 5, 8, 0], "must hold positive ints, got 0"),
        ("01_data", "synthetic_per_class", {"COVID": 3}, "must name exactly the classes"),
    ],
)
def test_check_names_notebook_and_parameter(notebook, name, value, message):
    with pytest.raises(ParameterError, match=message):
        parameters.check(notebook, name, value)


def test_check_accepts_good_values_and_unknown_names():
    parameters.check("07_aopc", "region_size", [8, 16])
    parameters.check("03_train_vgg16", "weights", None)
    parameters.check("03_train_vgg16", "mixed_precision", "mixed_bfloat16")
    parameters.check("01_data", "per_class", None)
    parameters.check("01_data", "synthetic_per_class", [36, 60, 102, 13])
    parameters.check(
        "01_data", "synthetic_per_class", {"COVID": 1, "Lung_Opacity": 2, "Normal": 3, "Viral Pneumonia": 4}
    )
    parameters.check("03_train_vgg16", "sampling", "class_weight")
    parameters.check(None, "a_parameter_nobody_declared", object())


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"07_aopc": {"region_size": 1000}}, r"07_aopc\.region_size: region_size=1000 is larger than the image"),
        (
            {"03_train_vgg16": {"image_size": 20, "backbone": "vgg16"}},
            "too small for backbone 'vgg16': it needs at least 32",
        ),
        ({"03_train_vgg16": {"weights": "imagenet"}}, "'small_vgg' has no ImageNet weights"),
        ({"07_aopc": {"orders": ["random"]}}, "orders must include 'morf'"),
        ({"01_data": {"synthetic_per_class": 5}}, r"01_data\.synthetic_per_class: 5 images .* leave a split empty"),
        ({"01_data": {"per_class": 600}}, "per_class=600 exceeds the smallest class of synthetic_per_class=500"),
        ({"01_data": {"synthetic_per_class": [36, 60, 102, 5]}}, "5 images per class .* leave a split empty"),
        ({"03_train_vgg16": {"sampling": "class_weight"}}, "sampling must be the same in every notebook"),
        ({"05_report": {"image_size": 64}}, "image_size must be the same in every notebook"),
        ({"04_train_densenet201": {"model_name": "vgg16"}}, "also the model_name of 04_train_densenet201"),
    ],
)
def test_relations(changes, message):
    values = _defaults()
    for stem, change in changes.items():
        values[stem].update(change)
    found = parameters.validate(values)
    assert any(__import__("re").search(message, line) for line in found), found
    with pytest.raises(ParameterError, match="invalid parameters"):
        parameters.raise_for(values)


def test_kaggle_source_accepts_an_empty_data_dir():
    values = _defaults()
    values["01_data"].update(source="kaggle", data_dir="")  # kagglehub downloads it (helpers.data.download)
    assert parameters.validate(values) == []


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "region_size=1000",
            "region_size in 07_aopc, 08_methods_and_metrics: region_size=1000 is larger than the image (image_size=32)",
        ),
        ("epochs=-1", "epochs in 03_train_vgg16, 04_train_densenet201: must be an integer >= 1, got -1"),
        ("image_size=7", "03_train_vgg16.image_size: image_size=7 is too small for backbone 'small_vgg'"),
        ("03.backbone=vgg17", "03_train_vgg16.backbone: must be one of"),
        ("07.perturbation=noise", "07_aopc.perturbation: must be one of"),
        (
            "batch_size=0",
            "batch_size in 03_train_vgg16, 04_train_densenet201, 05_report, 06_gradcam, 07_aopc, 08_methods_and_metrics: must be an integer >= 1",
        ),
        ("03.weights=/no/such/weights.h5", "03_train_vgg16.weights: weights file /no/such/weights.h5 does not exist"),
    ],
)
def test_runner_stops_before_any_kernel(override, message, tmp_path, capsys, monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook started"))
    code = pipeline.main(["--profile", "smoke", "--work-dir", str(tmp_path), "--no-html", "-p", override])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()
