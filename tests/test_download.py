"""Tests of helpers.data.download: the Kaggle folder from data_dir or from a (fake) kagglehub cache; errors name the manual steps.

No network: kagglehub is replaced by a fake module whose ``dataset_download`` returns a folder laid out as
kagglehub lays out its cache.
"""

from __future__ import annotations

import sys
import types

import pytest

from helpers.common.config import DATASET_DIRNAME
from helpers.data import dataset, download
from helpers.data.layout import DatasetError
from helpers.data.phantoms import synthesize_dataset
from helpers.study import files as study
from helpers.study import split_files


@pytest.fixture(scope="module")
def kagglehub_cache(tmp_path_factory):
    """A kagglehub cache holding the dataset as kagglehub lays it out; returns (cache, version folder, dataset folder)."""
    cache = tmp_path_factory.mktemp("kagglehub")
    version = cache / "datasets" / "tawsifurrahman" / "covid19-radiography-database" / "versions" / "5"
    made = synthesize_dataset(version, per_class=2, image_size=16, seed=0, mask_size=16, progress=False)
    (version / "README.md.txt").write_text("metadata spreadsheets and notes live beside the dataset folder")
    return cache, version, made


def _fake_kagglehub(monkeypatch, download):
    fake = types.ModuleType("kagglehub")
    calls = []

    def dataset_download(handle, *args, **kwargs):
        calls.append(handle)
        return download(handle)

    fake.dataset_download = dataset_download
    monkeypatch.setitem(sys.modules, "kagglehub", fake)
    return calls


def test_an_empty_data_dir_uses_the_kagglehub_download(monkeypatch, kagglehub_cache):
    _, version, made = kagglehub_cache
    calls = _fake_kagglehub(monkeypatch, lambda handle: str(version))
    found = download.resolve_kaggle_dir("")
    assert found == version / DATASET_DIRNAME == made
    assert calls == ["tawsifurrahman/covid19-radiography-database"]
    assert len(dataset.scan_dataset(found)) == 8  # 2 per class, the four classes
    paths = study.study_paths("unit", work_dir=version.parent)
    assert split_files.dataset_from_parameters(paths, "kaggle", data_dir="") == made


def test_a_given_data_dir_never_downloads(monkeypatch, kagglehub_cache):
    _, version, made = kagglehub_cache
    calls = _fake_kagglehub(monkeypatch, lambda handle: pytest.fail("downloaded although data_dir was given"))
    assert download.resolve_kaggle_dir(version) == made  # the folder holding the dataset
    assert download.resolve_kaggle_dir(made) == made  # or the dataset folder itself
    assert calls == []
    with pytest.raises(DatasetError, match="does not exist"):
        download.resolve_kaggle_dir(version / "no-such-folder")


def test_without_kagglehub_the_error_names_the_manual_steps(monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import kagglehub raises ImportError
    with pytest.raises(DatasetError, match="kagglehub, which is not installed") as caught:
        download.resolve_kaggle_dir("")
    message = str(caught.value)
    assert download.KAGGLE_URL in message and "unzip" in message and "-p data_dir=" in message


@pytest.mark.parametrize(
    "failure",
    [ConnectionError("Failed to resolve 'www.kaggle.com'"), PermissionError("401 Unauthorized: missing credentials")],
    ids=["offline", "no-credentials"],
)
def test_a_failed_download_names_the_manual_steps(monkeypatch, failure):
    def fail(handle):
        raise failure

    _fake_kagglehub(monkeypatch, fail)
    with pytest.raises(DatasetError, match="could not download tawsifurrahman/covid19-radiography-database") as caught:
        download.resolve_kaggle_dir("")
    message = str(caught.value)
    assert type(failure).__name__ in message and str(failure) in message
    assert download.KAGGLE_URL in message and "unzip" in message and "-p data_dir=" in message
    assert caught.value.__cause__ is failure


def test_a_download_without_the_dataset_folder_is_an_error(monkeypatch, tmp_path):
    (tmp_path / "versions" / "1").mkdir(parents=True)
    _fake_kagglehub(monkeypatch, lambda handle: str(tmp_path / "versions" / "1"))
    with pytest.raises(DatasetError, match=f"holds no {DATASET_DIRNAME} folder"):
        download.resolve_kaggle_dir("")


def test_kagglehub_available_does_not_import_it(monkeypatch):
    monkeypatch.setattr(download.importlib.util, "find_spec", lambda name: None)
    assert download.kagglehub_available() is False
    monkeypatch.setattr(download.importlib.util, "find_spec", lambda name: object())
    assert download.kagglehub_available() is True
