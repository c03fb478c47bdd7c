"""The study's files: every path of docs/ARCHITECTURE.md's "Files between notebooks" table with its save and load.

Every notebook calls :func:`study_paths` with its ``profile``, ``work_dir`` and ``report_dir`` parameters and reads
or writes files only through the returned :class:`StudyPaths` and the functions here. All writes are atomic
(:func:`atomic_path`): a temporary name beside the target, renamed on success.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from helpers.common.choices import INPUT_MASKS
from helpers.common.files import atomic_path, find_project_root, load_json, load_npz, save_json, save_npz
from helpers.data.dataset import cache_path, load_images
from helpers.data.layout import SPLITS, DatasetError
from helpers.explain.registry import method_names
from helpers.metrics.aopc import correct_mask
from helpers.study import lineage
from helpers.study.integrity import ModelIntegrityError, load_verified_npz, verified_model_info
from helpers.study.lineage import LineageError
from helpers.study.split_files import read_manifest

__all__ = [
    "StudyPaths",
    "study_paths",
    "find_project_root",
    "atomic_path",
    "save_json",
    "load_json",
    "save_npz",
    "load_npz",
    "load_split",
    "METRICS_FILES",
    "metrics_file",
    "save_metrics_file",
    "load_metrics_file",
    "training_files",
    "save_training",
    "load_training",
    "predictions_path",
    "save_predictions",
    "load_predictions",
    "metrics_path",
    "save_metrics",
    "load_metrics",
    "heatmaps_path",
    "save_heatmaps",
    "load_heatmaps",
    "load_model_outputs",
    "load_compared_outputs",
    "curves_path",
    "save_curves",
    "load_curves",
    "save_summary",
    "LineageError",
    "load_model",
    "MODEL_NOTEBOOKS",
]

#: The notebook that trains each model slot (named in "rerun ..." messages).
MODEL_NOTEBOOKS: dict[str, str] = {"vgg16": "03_train_vgg16", "densenet201": "04_train_densenet201"}
#: The notebook that writes each metrics kind (per-model training metrics: :data:`MODEL_NOTEBOOKS`).
_METRICS_PRODUCERS = {
    "data": "01_data",
    "segmentation": "02_lung_segmentation",
    "classification": "05_report",
    "classification_summary": "05_report",
    "mask_energy": "06_gradcam",
    "aopc": "07_aopc",
    "summary": "07_aopc",
    "methods": "08_methods_and_metrics",
}


def _training_notebook(model_name: str) -> str:
    return MODEL_NOTEBOOKS.get(model_name, f"the training notebook of {model_name!r}")


#: Files of a trained model in ``paths.models`` (written by :func:`save_training`).
MODEL_SUFFIX, HISTORY_SUFFIX, INFO_SUFFIX = ".keras", "_history.csv", "_training.json"

#: Metrics files in ``paths.metrics`` by kind; ``{model}`` is the model slot's name.
METRICS_FILES: dict[str, str] = {
    "data": "data.json",
    "segmentation": "segmentation.json",
    "training": "training_{model}.json",
    "classification": "classification_{model}.json",
    "classification_summary": "classification_summary.json",
    "mask_energy": "gradcam_mask_energy.json",
    "aopc": "aopc.json",
    "summary": "summary.json",
    "methods": "methods.json",
}


# ----------------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyPaths:
    """Folders of one profile's run: raw data, processed arrays, models and the report."""

    root: Path
    profile: str
    report: Path

    @property
    def raw(self) -> Path:
        """Raw images (never modified); synthetic phantoms are generated here."""
        return self.root / "data" / "raw"

    @property
    def processed(self) -> Path:
        """Split manifest, cached arrays, predictions and heatmaps of this profile."""
        return self.root / "data" / "processed" / self.profile

    @property
    def cache(self) -> Path:
        """Decoded image arrays, keyed by their inputs (shared across profiles)."""
        return self.root / "data" / "processed" / "cache"

    @property
    def models(self) -> Path:
        """Trained models, histories and chosen epochs of this profile."""
        return self.root / "data" / "models" / self.profile

    @property
    def figures(self) -> Path:
        """PNG figures of the report."""
        return self.report / "figures"

    @property
    def metrics(self) -> Path:
        """JSON metrics of the report."""
        return self.report / "metrics"

    @property
    def split_manifest(self) -> Path:
        """CSV of every used image with its split (written by notebook 01)."""
        return self.processed / "split.csv"

    def ensure(self) -> "StudyPaths":
        """Create every folder of this profile and return self."""
        for folder in (self.raw, self.processed, self.cache, self.models, self.figures, self.metrics):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def study_paths(
    profile: str = "demo", work_dir: str | os.PathLike = "", report_dir: str | os.PathLike = ""
) -> StudyPaths:
    """Resolve the folders of a profile; empty strings mean the defaults (project root, ``reports/<profile>-interactive``).

    The runner always passes ``report_dir``; a notebook run by hand (JupyterLab) writes to its own
    ``reports/<profile>-interactive/`` so it never mixes into the published ``reports/<profile>/`` of a runner's run.
    """
    if not profile or any(sep in str(profile) for sep in ("/", "\\")):
        raise ValueError(f"profile must be a plain name such as 'demo', got {profile!r}")
    root = Path(work_dir).expanduser().resolve() if str(work_dir) else find_project_root()
    report = Path(report_dir).expanduser().resolve() if str(report_dir) else root / "reports" / f"{profile}-interactive"
    lineage.reset_reads()  # a notebook starts: what it reads from here on are the inputs of what it writes
    return StudyPaths(root=root, profile=str(profile), report=report).ensure()


# ----------------------------------------------------------------------------------------------------
# The split (notebook 01's manifest: helpers.manifest)
# ----------------------------------------------------------------------------------------------------


def load_split(
    paths, split: str, image_size: int, progress: bool = True, input_mask: str = "none", mask_margin: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, H, W, 1) and labels int64 (N,) of one split of ``paths.split_manifest``, cached in ``paths.cache``.

    ``input_mask="lung"``: everything outside the split's predicted lung mask (notebook 02), dilated by
    ``mask_margin`` pixels, is set to the neutral fill of :func:`helpers.models.segmentation.apply_input_mask`; what the
    classifiers see in training and in every later stage. The manifest and the cached images are checked against
    their recorded SHA-256 (a cache that no longer matches is decoded again), and a model, predictions or heatmaps
    this notebook read before for another ``image_size``, ``input_mask`` or ``mask_margin`` is refused
    (:func:`helpers.study.lineage.request_view`).
    """
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    if input_mask not in INPUT_MASKS:
        raise ValueError(f"input_mask must be one of {INPUT_MASKS}, got {input_mask!r}")
    lineage.request_view(image_size, input_mask, mask_margin)  # refused when a model read before saw otherwise
    frame = read_manifest(paths.split_manifest)
    split_record = lineage.check_input(paths, paths.split_manifest, "01_data", digest=frame.attrs["sha256"])
    part = frame[frame["split"] == split].reset_index(drop=True)
    if part.empty:
        raise DatasetError(f"split manifest {paths.split_manifest} has no {split!r} rows")
    images = load_images(part, image_size, cache_dir=paths.cache, progress=progress)
    cached = cache_path(part, image_size, paths.cache)
    facts = {
        "image_size": image_size,
        "images": len(part),
        "split": split,
        "split_manifest": split_record["fingerprint"],
    }
    if cached.is_file() and not lineage.note_cache_read(paths, cached, images, **facts):  # its name: its fingerprint
        images = load_images(part, image_size, cache_dir=paths.cache, progress=progress)  # decoded and cached again
        lineage.note_cache_read(paths, cached, images, **facts)
    if input_mask == "lung":
        from helpers.models.segmentation import apply_input_mask
        from helpers.study.lung_files import load_lung_masks

        masks = load_lung_masks(paths, split, image_size, len(part))
        images = apply_input_mask(images, masks, margin=mask_margin)
    return images, part["label_index"].to_numpy(dtype=np.int64)


# ----------------------------------------------------------------------------------------------------
# Metrics files
# ----------------------------------------------------------------------------------------------------


def metrics_file(paths, kind: str, model_name: str | None = None) -> Path:
    """``paths.metrics / <file>`` of one kind of :data:`METRICS_FILES` (per-model kinds need ``model_name``)."""
    if kind not in METRICS_FILES:
        raise ValueError(f"kind must be one of {sorted(METRICS_FILES)}, got {kind!r}")
    name = METRICS_FILES[kind]
    if "{model}" in name:
        name = name.format(model=_model_name(model_name))
    return Path(paths.metrics) / name


def save_metrics_file(paths, kind: str, payload, model_name: str | None = None) -> Path:
    """Write ``payload`` to :func:`metrics_file` as JSON, atomically, and note it in the report's lineage."""
    path = save_json(payload, metrics_file(paths, kind, model_name))
    producer = _training_notebook(model_name) if kind == "training" else _METRICS_PRODUCERS[kind]
    lineage.note_report_write(paths, path, producer)
    return path


def load_metrics_file(paths, kind: str, model_name: str | None = None):
    """Read :func:`metrics_file`, naming it when it is missing."""
    path = metrics_file(paths, kind, model_name)
    data = load_json(path)
    lineage.note_read(paths, path)
    return data


def save_summary(paths, markdown: str, payload: Mapping) -> dict:
    """Write the study summary: ``paths.report / "summary.md"`` and ``paths.metrics / "summary.json"``; return both paths."""
    md_path = Path(paths.report) / "summary.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown)
    lineage.note_report_write(paths, md_path, "07_aopc")
    return {"markdown": md_path, "json": save_metrics_file(paths, "summary", payload)}


# ----------------------------------------------------------------------------------------------------
# Trained models (notebooks 03, 04)
# ----------------------------------------------------------------------------------------------------


def _model_name(model_name) -> str:
    if not model_name or any(sep in str(model_name) for sep in ("/", "\\")):
        raise ValueError(f"model_name must be a plain name such as 'vgg16', got {model_name!r}")
    return str(model_name)


def training_files(paths, model_name: str) -> dict[str, Path]:
    """The three files of a trained model in ``paths.models``: ``model``, ``history``, ``info``."""
    model_name = _model_name(model_name)
    folder = Path(paths.models)
    return {
        "model": folder / f"{model_name}{MODEL_SUFFIX}",
        "history": folder / f"{model_name}{HISTORY_SUFFIX}",
        "info": folder / f"{model_name}{INFO_SUFFIX}",
    }


def save_training(result, paths, model_name: str, **extra) -> dict[str, Path]:
    """Write ``<model_name>.keras``, ``<model_name>_history.csv`` and ``<model_name>_training.json`` into ``paths.models`` atomically.

    ``extra`` (e.g. ``backbone="small_vgg"``, ``weights=None``) is added to the JSON; ``backbone`` defaults to
    the name :func:`helpers.models.classifiers.build_classifier` gives the model (``<backbone>_classifier``).
    """
    files = training_files(paths, model_name)
    if "backbone" not in extra and result.model.name.endswith("_classifier"):
        extra["backbone"] = result.model.name[: -len("_classifier")]
    with atomic_path(files["model"], suffix=MODEL_SUFFIX) as tmp:
        result.model.save(tmp)
    with atomic_path(files["history"], suffix=".csv") as tmp:
        result.history.to_csv(tmp, index=False)
    sha = {"model": lineage.file_digest(files["model"]), "history": lineage.file_digest(files["history"])}
    info = {"model_name": model_name, **result.info(), **extra, "sha256": sha, "run_id": lineage.run_id()}
    save_json(info, files["info"])
    fallback = {"model_name": model_name, **{k: v for k, v in extra.items() if not callable(v)}, **result.settings}
    lineage.record_write(
        paths, files["model"], _training_notebook(model_name), lineage.current_parameters() or fallback, sha["model"]
    )
    return files


def _verified_model(paths, model_name: str, image_size: int | None = None) -> tuple[Path, dict]:
    """The model file of a slot after checking its SHA-256 against the training JSON and its lineage."""
    files = training_files(paths, model_name)
    expect = None if image_size is None else {"image_size": image_size}
    return files["model"], verified_model_info(paths, files, _training_notebook(model_name), expect)


def load_model(paths, model_name: str, image_size: int | None = None):
    """Load a slot's classifier (safe mode) after verifying its SHA-256 and lineage (:class:`ModelIntegrityError`, :class:`LineageError`)."""
    from helpers.models.classifiers import load_classifier

    return load_classifier(_verified_model(paths, model_name, image_size)[0])


def load_training(paths, model_name: str, load_model: bool = True, image_size: int | None = None):
    """Read a model saved by :func:`save_training` (safe mode, SHA-256 and lineage verified), its history and its chosen epoch."""
    from helpers.models.classifiers import load_classifier
    from helpers.models.training import TrainingResult

    files = training_files(paths, model_name)
    for key in ("history", "info") + (("model",) if load_model else ()):
        if not files[key].is_file():
            raise FileNotFoundError(f"{files[key]} does not exist: run {_training_notebook(model_name)} first")
    info = load_json(files["info"])
    data, recorded = files["history"].read_bytes(), (info.get("sha256") or {}).get("history")
    if recorded and hashlib.sha256(data).hexdigest() != recorded:
        raise ModelIntegrityError(
            f"{files['history']} was modified after it was saved: rerun {_training_notebook(model_name)}"
        )
    history = pd.read_csv(io.BytesIO(data))
    model = load_classifier(_verified_model(paths, model_name, image_size)[0]) if load_model else None
    return TrainingResult(
        model=model,
        history=history,
        chosen_epoch=int(info["chosen_epoch"]),
        val_recalls=dict(info["val_recalls"]),
        timings=dict(info.get("timings", {})),
        settings={**info.get("settings", {}), **{k: v for k, v in info.items() if k not in ("settings", "timings")}},
    )


# ----------------------------------------------------------------------------------------------------
# Predictions and classification metrics (notebook 05)
# ----------------------------------------------------------------------------------------------------


def predictions_path(paths, model_name: str) -> Path:
    """``paths.processed / predictions_<model_name>.npz``."""
    return Path(paths.processed) / f"predictions_{model_name}.npz"


def metrics_path(paths, model_name: str) -> Path:
    """``paths.metrics / classification_<model_name>.json``."""
    return metrics_file(paths, "classification", model_name)


def save_predictions(paths, model_name: str, probabilities, labels) -> Path:
    """Write ``probabilities`` (N, C) float32, ``labels`` (N,) and ``predicted`` (N,) of the test split, manifest order."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(
            f"probabilities must be (N, C) matching labels (N,), got {probabilities.shape} and {labels.shape}"
        )
    path = save_npz(
        predictions_path(paths, model_name),
        probabilities=probabilities,
        labels=labels,
        predicted=probabilities.argmax(axis=1).astype(np.int64),
    )
    lineage.record_write(paths, path, "05_report")
    return path


def load_predictions(paths, model_name: str) -> dict:
    """Read ``predictions_<model_name>.npz``: ``probabilities``, ``labels``, ``predicted``."""
    path = predictions_path(paths, model_name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run notebook 05_report first")
    arrays = load_verified_npz(paths, path, "05_report")
    missing = {"probabilities", "labels", "predicted"} - set(arrays)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}")
    return arrays


def save_metrics(paths, model_name: str, metrics: Mapping) -> Path:
    """Write one model's classification metrics to ``paths.metrics / classification_<model_name>.json``."""
    return save_metrics_file(paths, "classification", {"model_name": model_name, **metrics}, model_name)


def load_metrics(paths, model_name: str) -> dict:
    """Read ``classification_<model_name>.json``."""
    return load_metrics_file(paths, "classification", model_name)


# ----------------------------------------------------------------------------------------------------
# Heatmaps (notebook 06) and the inputs of notebook 07
# ----------------------------------------------------------------------------------------------------


def curves_path(paths, model_name: str) -> Path:
    """``paths.processed / "curves_<model_name>.npz"``: one (N, L+1) array f(xᵏ) per region order (notebook 07)."""
    return Path(paths.processed) / f"curves_{model_name}.npz"


def save_curves(paths, model_name: str, curves) -> Path:
    """Write a model's per-image perturbation curves (``{order: (N, L+1)}``, manifest order) to ``curves_<model_name>.npz``."""
    arrays = {str(order): np.asarray(values, dtype=np.float64) for order, values in dict(curves).items()}
    shapes = sorted({a.shape for a in arrays.values()})
    if not arrays or len(shapes) != 1 or len(shapes[0]) != 2:
        raise ValueError(f"curves must be one (N, L+1) array per order, got shapes {shapes}")
    path = save_npz(curves_path(paths, model_name), **arrays)
    lineage.record_write(paths, path, "07_aopc")
    return path


def load_curves(paths, model_name: str) -> dict:
    """Read ``curves_<model_name>.npz`` (checked against its lineage record): ``{order: (N, L+1) float64}``."""
    return load_verified_npz(paths, curves_path(paths, model_name), "07_aopc")


def heatmaps_path(paths, model_name: str):
    """``paths.processed / "heatmaps_<model_name>.npz"`` (written by notebook 06, read by 07)."""
    return paths.processed / f"heatmaps_{model_name}.npz"


def save_heatmaps(paths, model_name: str, heatmaps, classes, method: str = "gradcam"):
    """Write raw heatmaps (N, h, w), the explained classes (N,) and the method to ``heatmaps_<model_name>.npz``."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    classes = np.asarray(classes)
    if heatmaps.ndim != 3 or classes.shape != (heatmaps.shape[0],):
        raise ValueError(f"heatmaps must be (N, h, w) and classes (N,), got {heatmaps.shape} and {classes.shape}")
    if method not in method_names():
        raise ValueError(f"method must be one of {method_names()}, got {method!r}")
    path = save_npz(
        heatmaps_path(paths, model_name), heatmaps=heatmaps, classes=classes.astype(np.int64), method=np.array(method)
    )
    lineage.record_write(paths, path, "06_gradcam")
    return path


def load_heatmaps(paths, model_name: str) -> dict:
    """Read ``heatmaps_<model_name>.npz``: ``heatmaps`` (N, h, w) float32, ``classes`` (N,), ``method`` str."""
    path = heatmaps_path(paths, model_name)
    data = load_verified_npz(paths, path, "06_gradcam") if path.is_file() else load_npz(path)
    data["method"] = str(data["method"])
    return data


def load_model_outputs(paths, model_name: str, n_images: int | None = None) -> dict:
    """Read one model's test predictions (notebook 05) and heatmaps (notebook 06) and check they match each other and the test split.

    Returns ``probabilities``, ``labels``, ``predicted``, ``heatmaps``, ``classes`` (explained class),
    ``method`` (the heatmap method) and ``correct``: the images whose prediction and explained class are both
    the true label, so every scored curve follows the probability of the class the image was counted correct for.
    """
    pred_path, heat_path = predictions_path(paths, model_name), heatmaps_path(paths, model_name)
    pred, heat = load_predictions(paths, model_name), load_heatmaps(paths, model_name)
    for key in ("heatmaps", "classes"):
        if key not in heat:
            raise KeyError(f"{heat_path} has no array {key!r}")
    n = len(pred["labels"])
    if n_images is not None and n != n_images:
        raise ValueError(f"{pred_path} has {n} images but the test split has {n_images}: rerun notebook 05")
    if len(heat["heatmaps"]) != n or len(heat["classes"]) != n:
        raise ValueError(f"{heat_path} has {len(heat['heatmaps'])} heatmaps for {n} test images: rerun notebook 06")
    labels = pred["labels"].astype(np.int64)
    predicted = pred["predicted"].astype(np.int64)
    classes = heat["classes"].astype(np.int64)
    disagree = int(np.sum(predicted != classes))
    if disagree:
        warnings.warn(
            f"{model_name}: {disagree} test image(s) explained for another class than notebook 05 predicted "
            f"(a near-tie); they are left out of the correctly classified set",
            stacklevel=2,
        )
    return {
        "probabilities": pred["probabilities"],
        "labels": labels,
        "predicted": predicted,
        "heatmaps": heat["heatmaps"],
        "classes": classes,
        "method": str(heat.get("method", "gradcam")),
        "correct": correct_mask(predicted, labels) & (classes == labels),
    }


def load_compared_outputs(paths, model_names, labels) -> tuple[dict, str]:
    """Every model's :func:`load_model_outputs` on the test split of ``labels``, and the one heatmap method they share.

    Refuses (ValueError naming the notebook to rerun) predictions whose labels are not the test split's and heatmaps
    of the models made by different methods: AOPC compares the models' heatmaps, so both must come from one method.
    """
    labels = np.asarray(labels)
    outputs = {name: load_model_outputs(paths, name, n_images=len(labels)) for name in model_names}
    for name, out in outputs.items():
        if not np.array_equal(out["labels"], labels):
            raise ValueError(
                f"{predictions_path(paths, name).name} labels differ from the test split: rerun notebook 05"
            )
    methods = sorted({out["method"] for out in outputs.values()})
    if len(methods) != 1:
        raise ValueError(f"the models' heatmaps come from different methods {methods}: rerun notebook 06")
    return outputs, methods[0]
