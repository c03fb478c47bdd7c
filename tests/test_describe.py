"""Tests of helpers.report.describe: the report describes the data and models it ran on, from its own files."""

from __future__ import annotations

import json

from helpers.report import describe, html

COUNTS = {
    "COVID": {"train": 9, "val": 1, "test": 2, "total": 12},
    "Normal": {"train": 9, "val": 1, "test": 2, "total": 12},
    "Total": {"train": 18, "val": 2, "test": 4, "total": 24},
}
PAPER_MODELS = {
    "vgg16": {"backbone": "vgg16", "weights": "imagenet", "freeze_backbone": True, "chosen_epoch": 7, "epochs": 20},
    "densenet201": {"backbone": "densenet201", "weights": "imagenet", "freeze_backbone": True},
}
DEMO_MODELS = {"vgg16": {"backbone": "small_vgg", "weights": None}, "densenet201": {"backbone": "small_densenet"}}


def test_data_and_models_are_described_from_the_files():
    real = {"source": "kaggle", "dataset_dir": "/data/COVID-19_Radiography_Dataset", "counts": COUNTS, "image_size": 96}
    text = describe.describe_data(real)
    assert "real chest X-rays" in text and "synthetic" not in text and "/data/COVID-19_Radiography_Dataset" in text
    assert "24 images used (18 train, 2 val, 4 test)" in text and "COVID 12" in text
    assert "synthetic phantom" in describe.describe_data({**real, "source": "synthetic"})
    assert "unknown" in describe.describe_data(None)
    models = describe.describe_models(PAPER_MODELS)
    assert "vgg16 slot: backbone vgg16 (imagenet weights, frozen, kept epoch 7 of 20)" in models
    assert "trained from scratch" in describe.describe_models(DEMO_MODELS)


def test_caveat_depends_on_the_data_and_models_not_the_profile():
    real = {"source": "kaggle", "dataset_dir": "x", "counts": COUNTS}
    assert describe.comparison_caveat(real, PAPER_MODELS) == ""
    demo_on_real = describe.comparison_caveat(real, DEMO_MODELS)  # real data, small models: caveat names the models
    assert "small_vgg" in demo_on_real and "synthetic" not in demo_on_real
    phantoms = describe.comparison_caveat({**real, "source": "synthetic"}, PAPER_MODELS)
    assert "synthetic phantom" in phantoms and "not comparable" in phantoms


def test_index_banner_reads_data_json(tmp_path):
    report = tmp_path / "demo"
    (report / "metrics").mkdir(parents=True)
    (report / "run.json").write_text(json.dumps({"profile": "demo"}))
    data = {"source": "kaggle", "dataset_dir": "/real/COVID-19_Radiography_Dataset", "counts": COUNTS}
    (report / "metrics" / "data.json").write_text(json.dumps(data))
    for name, info in PAPER_MODELS.items():
        (report / "metrics" / f"training_{name}.json").write_text(json.dumps({"model_name": name, **info}))
    page = html.write_index(report).read_text()
    assert "real chest X-rays" in page and "synthetic" not in page and "class='note'" not in page
    data["source"] = "synthetic"
    (report / "metrics" / "data.json").write_text(json.dumps(data))
    page = html.write_index(report).read_text()
    assert "synthetic phantom X-rays" in page and "not comparable" in page


def test_run_files_list_the_models_in_the_papers_order(tmp_path):
    for name in ("densenet201", "extra", "vgg16"):
        (tmp_path / f"training_{name}.json").write_text(json.dumps({"model_name": name}))
    _, models = describe.read_run_files(tmp_path)
    assert list(models) == ["vgg16", "densenet201", "extra"]
