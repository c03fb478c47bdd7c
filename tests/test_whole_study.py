"""The whole study through the runner on the smoke profile: reproducibility, interruption, bad input."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from helpers.data import phantoms
from helpers.runner import pipeline
from helpers.runner.pipeline import NotebookFailed
from helpers.runner.profiles import ProfileError
from helpers.study import files as study
from helpers.study import lineage, split_files

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.notebook


def _run(work, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda *a: None)
    return pipeline.run_study(work_dir=work, **kwargs)


def test_missing_data_dir_stops_with_a_clear_message(tmp_path):
    # an empty data_dir means "download with kagglehub"; without it the runner names the manual steps up front
    with pytest.raises(ProfileError, match=r"(?s)01_data\.data_dir: source 'kaggle'.*not installed.*-p data_dir="):
        _run(tmp_path, profile="paper", only="01", export_html=False)
    with pytest.raises(ProfileError, match="no-such-download does not exist"):
        _run(
            tmp_path,
            profile="paper",
            only="01",
            export_html=False,
            overrides=[f"data_dir={tmp_path / 'no-such-download'}"],
        )
    assert not (tmp_path / "reports").exists()  # stopped before any kernel started
    empty = tmp_path / "empty-download"
    empty.mkdir()
    # a folder that is not the dataset: named before any kernel starts, with the layout it should have
    with pytest.raises(ProfileError, match=r"01_data\.data_dir: class folder .*empty-download.*COVID-19_Radiography"):
        _run(tmp_path, profile="paper", only="01", export_html=False, overrides=[f"data_dir={empty}"])
    assert not (tmp_path / "reports").exists()


def test_corrupt_image_stops_naming_the_file(tmp_path):
    dataset = phantoms.synthesize_dataset(tmp_path / "download", 12, image_size=48, seed=0, progress=False)
    bad = dataset / "COVID" / "images" / "COVID-3.png"
    bad.chmod(bad.stat().st_mode | stat.S_IWUSR)
    bad.write_bytes(bad.read_bytes()[:100])  # truncated: the header is intact, the image data are not
    mask = dataset / "Normal" / "masks" / "Normal-2.png"
    mask.chmod(mask.stat().st_mode | stat.S_IWUSR)
    mask.write_bytes(mask.read_bytes()[:100])
    overrides = ["source=kaggle", f"data_dir={dataset}"]
    with pytest.raises(NotebookFailed, match=r"01_data.*COVID-3\.png cannot be decoded"):
        _run(tmp_path, profile="smoke", only="01", export_html=False, overrides=overrides)
    _run(tmp_path, profile="smoke", only="01", export_html=False, overrides=overrides + ["skip_unreadable=true"])
    paths = study.study_paths("smoke", tmp_path)
    manifest = split_files.read_manifest(paths.split_manifest)
    assert not manifest["path"].str.endswith("COVID-3.png").any()
    assert not manifest["mask_path"].str.endswith("Normal-2.png").any()
    assert study.load_json(lineage.side_file(paths.split_manifest))["skipped"] == 2


def test_wrong_profile_key_stops_before_running(tmp_path, capsys):
    code = pipeline.main(["--profile", "smoke", "--work-dir", str(tmp_path), "-p", "epoch=3"])
    assert code == 2
    assert "no notebook declares a parameter 'epoch'" in capsys.readouterr().err
    profile = tmp_path / "typo.yaml"
    profile.write_text("shared:\n  seed: 0\n03_train_vgg16:\n  learning_rte: 0.1\n")
    code = pipeline.main(["--profile", str(profile), "--work-dir", str(tmp_path)])
    assert code == 2
    assert "unknown key 'learning_rte' in section '03_train_vgg16'" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_paper_profile_runs_end_to_end_on_a_small_download(tmp_path):
    """The paper's code path (VGG16 and DenseNet201, frozen, cached features) on a tiny Kaggle-layout download.

    At the smallest sizes that still run every notebook's code (the U-Net's is the smoke profile's: its 256 px,
    20 epochs would take two minutes here and test nothing more).
    """
    dataset = phantoms.synthesize_dataset(tmp_path / "download", 10, image_size=48, seed=0, progress=False)
    overrides = [
        f"data_dir={dataset.parent}",
        "image_size=32",
        "02.segmentation_size=32",
        "02.unet_filters=4",
        "02.unet_depth=2",
        "02.unet_epochs=1",
        "weights=null",
        "epochs=1",
        "region_size=16",
        "08.n_images=4",
        "08.methods=['gradcam', 'scorecam', 'eigencam']",  # a gradient, a perturbation and an activation method
        "08.scorecam_top_n=4",
        "08.road_fractions=[0.5]",
        "08.randomisation_images=2",
        "08.randomisation_stages=1",
        "ablation_images=4",
        "ablation_perturbations=['mean']",
        "ablation_sigmas=[]",
        "n_bootstrap=50",
        "gallery_per_class=1",
    ]
    _run(tmp_path, profile="paper", overrides=overrides, export_html=False)
    report = tmp_path / "reports" / "paper"
    training = study.load_json(report / "metrics" / "training_vgg16.json")
    assert training["backbone"] == "vgg16" and training["settings"]["feature_cache"] is True
    assert study.load_json(report / "metrics" / "training_densenet201.json")["backbone"] == "densenet201"
    assert (report / "summary.md").is_file() and (report / "figures" / "fig8_aopc.png").is_file()
    assert "paper" in (report / "summary.md").read_text()
