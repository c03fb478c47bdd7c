"""What a report ran on, in words: the data from ``metrics/data.json`` and the models from ``metrics/training_<model>.json``.

The report's banner and notebook 05's caveat are built from these files, never from the profile's name: a
``demo``-profile run on the real radiographs says so, and a ``paper``-profile run on phantoms gets the caveat.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Mapping

from helpers.report.figure_names import SLOT_FIGURES

__all__ = [
    "PAPER_BACKBONES",
    "describe_data",
    "describe_models",
    "comparison_caveat",
    "read_run_files",
    "cpu_name",
    "device_line",
]

#: The paper's backbones, per model slot: ImageNet weights, frozen.
PAPER_BACKBONES: dict[str, str] = {"vgg16": "vgg16", "densenet201": "densenet201"}

_SOURCES = {
    "synthetic": "synthetic phantom X-rays (generated)",
    "kaggle": "the COVID-19 Radiography Database (real chest X-rays)",
}


def read_run_files(metrics_dir) -> tuple[dict | None, dict[str, dict]]:
    """``(data.json or None, {model: training_<model>.json})`` of a report's ``metrics`` folder."""
    metrics = Path(metrics_dir)
    data = json.loads((metrics / "data.json").read_text()) if (metrics / "data.json").is_file() else None
    models = {}
    for path in sorted(metrics.glob("training_*.json")):
        info = json.loads(path.read_text())
        models[info.get("model_name", path.stem[len("training_") :])] = info
    slots = list(SLOT_FIGURES)  # the paper's order (vgg16, then densenet201), then any other slot by name
    order = sorted(models, key=lambda name: (slots.index(name) if name in slots else len(slots), name))
    return data, {name: models[name] for name in order}


def describe_data(data: Mapping | None) -> str:
    """One sentence on the data a run used: source, dataset folder, images per split and class counts."""
    if not data:
        return (
            "Data: unknown (this report has no metrics/data.json: notebook 01 writes it into the report it runs for, "
            "and notebooks run by hand write into reports/<profile>-interactive/, not the runner's reports/<profile>/)."
        )
    source = _SOURCES.get(data.get("source"), f"source {data.get('source')!r}")
    counts = data.get("counts", {})
    total = counts.get("Total", {})
    classes = [c for c in counts if c != "Total"]
    split = ", ".join(f"{total[s]:,} {s}" for s in ("train", "val", "test") if s in total)
    per_class = ", ".join(f"{c} {counts[c].get('total', '?')}" for c in classes)
    size = f", read at {data['image_size']} px" if "image_size" in data else ""
    return (
        f"Data: {source} from {data.get('dataset_dir', '?')}; {total.get('total', '?'):,} images used ({split}){size}; "
        f"per class: {per_class}."
        if total
        else f"Data: {source} from {data.get('dataset_dir', '?')}."
    )


def _weights_text(info: Mapping) -> str:
    weights = info.get("weights")
    settings = info.get("settings", {})
    frozen = info.get("freeze_backbone", settings.get("freeze_backbone"))
    if weights in (None, "None", ""):
        return "trained from scratch"
    state = "frozen" if frozen else "fine-tuned" if frozen is not None else ""
    return f"{weights} weights{', ' + state if state else ''}"


def describe_models(models: Mapping[str, Mapping]) -> str:
    """One sentence on the trained models: slot, backbone, weights, kept epoch."""
    if not models:
        return "Models: unknown (no metrics/training_<model>.json in this report; run notebooks 03 and 04)."
    parts = []
    for name, info in models.items():
        epoch = f", kept epoch {info['chosen_epoch']} of {info['epochs']}" if "chosen_epoch" in info else ""
        parts.append(f"{name} slot: backbone {info.get('backbone', '?')} ({_weights_text(info)}{epoch})")
    return "Models: " + "; ".join(parts) + "."


def comparison_caveat(data: Mapping | None, models: Mapping[str, Mapping]) -> str:
    """A caveat for putting the paper's values beside this run's: "" only for the paper's setting, read from the run's files.

    The paper's setting: the real dataset (``source = "kaggle"``) and, in each model slot, the paper's backbone with
    pretrained weights (``"imagenet"`` or a weights file). Anything else (phantoms, small or from-scratch backbones) gets a caveat saying what differs.
    """
    differences = []
    if not data or data.get("source") != "kaggle":
        differences.append(
            "the data are synthetic phantom X-rays" if data else "the data are unknown (no metrics/data.json)"
        )
    for name, info in models.items():
        wanted = PAPER_BACKBONES.get(name)
        if info.get("backbone") != wanted or info.get("weights") in (None, "None", ""):
            differences.append(f"the {name} slot uses backbone {info.get('backbone', '?')} ({_weights_text(info)})")
    if not models:
        differences.append("the models are unknown (no training files)")
    if not differences:
        return ""
    return (
        "Caveat: this run is not the paper's setting (the COVID-19 Radiography Database with ImageNet VGG16/DenseNet201): "
        + "; ".join(differences)
        + ". Its numbers are not comparable to the paper's."
    )


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_line() -> str:
    """One line on what runs the models: Keras version, backend and its version, and the GPUs it sees or the CPU."""
    import keras

    backend = keras.backend.backend()
    gpus: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = [
            tf.config.experimental.get_device_details(d).get("device_name", d.name)
            for d in tf.config.list_physical_devices("GPU")
        ]
    elif backend == "jax":
        import jax

        gpus = [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    elif backend == "torch":
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    version = getattr(sys.modules.get(backend), "__version__", "")  # the backend's module, imported by Keras
    where = f"GPU {', '.join(gpus)}" if gpus else f"CPU only ({cpu_name()}, {os.cpu_count()} cores)"
    return f"Keras {keras.__version__}, {backend}{f' {version}' if version else ''} backend; device: {where}"
