"""The one declaration of every notebook parameter's constraints, and of the relations between parameters.

Pure Python (no Keras, no NumPy), so the runner checks a whole profile before any kernel starts::

    from helpers.runner import parameters
    problems = parameters.validate({"07_aopc": {"region_size": 1000, "image_size": 32}})
    parameters.check("03_train_vgg16", "epochs", 20)      # raises ParameterError when invalid

Each parameter is declared once in :data:`PARAMETERS` (the same name means the same thing in every notebook
that declares it); :data:`RELATIONS` holds the checks that involve several parameters of one notebook, and
:func:`validate` adds the ones across notebooks (one ``image_size`` everywhere, distinct model slots). The
choices (backbones, methods, perturbations, orders) are repeated here from the computation modules so that
this module stays importable without Keras; ``tests/test_parameters.py`` checks that the copies agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from helpers.common.choices import (
    BACKBONES,
    INPUT_MASKS,
    METRIC_GROUPS,
    MIN_IMAGE_SIZE,
    MIN_SYNTHETIC_SIZE,
    MIXED_PRECISION,
    ORDERS,
    PAPER_BACKBONES,
    REGION_SCORES,
    SAMPLINGS,
    SOURCES,
)
from helpers.common.config import CLASS_NAMES
from helpers.common.text import did_you_mean
from helpers.explain.registry import METHODS
from helpers.metrics.perturbations import PERTURBATIONS

Check = Callable[[Any], "str | None"]


class ParameterError(ValueError):
    """A parameter value, or a combination of values, that the notebooks cannot run with."""


# ---------------------------------------------------------------------------------------------------
# Building blocks: each returns a function value -> problem text (None when the value is fine)
# ---------------------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def integer(minimum: int | None = None) -> Check:
    """An int (not a bool), at least ``minimum``."""

    def check(value):
        if not _is_int(value):
            return f"must be an integer, got {value!r}"
        if minimum is not None and value < minimum:
            return f"must be an integer >= {minimum}, got {value!r}"
        return None

    return check


def number(minimum: float | None = None, exclusive: bool = False, maximum: float | None = None) -> Check:
    """A finite int or float, above (``exclusive``) or at least ``minimum`` and at most ``maximum``."""

    def check(value):
        if not _is_number(value):
            return f"must be a finite number, got {value!r}"
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            return f"must be {'>' if exclusive else '>='} {minimum}, got {value!r}"
        if maximum is not None and value > maximum:
            return f"must be <= {maximum}, got {value!r}"
        return None

    return check


def boolean() -> Check:
    """True or False."""
    return lambda value: None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def text() -> Check:
    """A string."""
    return lambda value: None if isinstance(value, str) else f"must be a string, got {value!r}"


def plain_name() -> Check:
    """A non-empty file-name-safe name such as ``vgg16``."""
    pattern = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    return lambda value: (
        None
        if isinstance(value, str) and pattern.match(value)
        else f"must be a plain name such as 'vgg16' (letters, digits, _ . + -), got {value!r}"
    )


def one_of(choices) -> Check:
    """One of ``choices`` (with a "did you mean" hint)."""
    choices = tuple(choices)

    def check(value):
        if any(value == c and type(value) is type(c) for c in choices):
            return None
        strings = [c for c in choices if isinstance(c, str)]
        hint = did_you_mean(value, strings) if isinstance(value, str) else ""
        return f"must be one of {', '.join(map(repr, choices))}, got {value!r}{hint}"

    return check


def optional(inner: Check) -> Check:
    """None, or a value that passes ``inner``."""
    return lambda value: None if value is None else inner(value)


def list_of(item: Check, min_items: int = 0, length: int | None = None, unique: bool = False) -> Check:
    """A list (or tuple) whose items pass ``item``."""

    def check(value):
        if not isinstance(value, (list, tuple)):
            return f"must be a list, got {value!r}"
        if length is not None and len(value) != length:
            return f"must be a list of {length} items, got {value!r}"
        if len(value) < min_items:
            return f"must be a list of at least {min_items} item(s), got {value!r}"
        for entry in value:
            problem = item(entry)
            if problem:
                return f"item {entry!r} {problem}"
        if unique and len(set(map(repr, value))) != len(value):
            return f"must not repeat items, got {value!r}"
        return None

    return check


def region_size_value() -> Check:
    """A positive int, or a (height, width) pair of positive ints."""

    def check(value):
        if _is_int(value):
            return None if value > 0 else f"must be a positive number of pixels, got {value!r}"
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value):
            return None
        return f"must be a positive int or a (height, width) pair of positive ints, got {value!r}"

    return check


def class_counts_value() -> Check:
    """A positive int (every class), or four positive ints: a list in class order or a dict by class name."""
    positive = integer(1)

    def check(value):
        if _is_int(value):
            return positive(value)
        if isinstance(value, dict):
            if sorted(value) != sorted(CLASS_NAMES):
                return f"as a dict must name exactly the classes {list(CLASS_NAMES)}, got {sorted(value)!r}"
            counts = list(value.values())
        elif isinstance(value, (list, tuple)) and len(value) == len(CLASS_NAMES):
            counts = list(value)
        else:
            return f"must be a positive int or four positive ints (class order, or a dict by class), got {value!r}"
        bad = [v for v in counts if positive(v)]
        return f"must hold positive ints, got {bad[0]!r} in {value!r}" if bad else None

    return check


def _min_count(value) -> int:
    return min(value.values()) if isinstance(value, dict) else min(value) if isinstance(value, (list, tuple)) else value


def weights_value() -> Check:
    """None, ``"imagenet"``, or a path to a weights file."""
    return lambda value: (
        None
        if value is None or (isinstance(value, str) and value)
        else f"must be None, 'imagenet' or a path to a weights file, got {value!r}"
    )


def split_fractions_value() -> Check:
    """Three positive numbers (train, val, test) summing to 1."""

    def check(value):
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(_is_number(v) and v > 0 for v in value)
            or abs(sum(value) - 1.0) > 1e-6
        ):
            return f"must be three positive numbers (train, val, test) summing to 1, got {value!r}"
        return None

    return check


# ---------------------------------------------------------------------------------------------------
# The declaration
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One notebook parameter: what it means and the check its value must pass."""

    name: str
    doc: str
    check: Check


def _declare(*items: Parameter) -> dict[str, Parameter]:
    return {p.name: p for p in items}


PARAMETERS: dict[str, Parameter] = _declare(
    # set by the runner in every notebook
    Parameter("profile", "profile name; selects data/processed/<profile>/ ...", plain_name()),
    Parameter("work_dir", "project root holding data/ ('' finds it)", text()),
    Parameter("report_dir", "where figures and metrics go ('' means reports/<profile>/)", text()),
    # shared
    Parameter("seed", "the one seed from which all randomness is derived", integer(0)),
    Parameter("image_size", "model input side in pixels (square)", integer(1)),
    # 01_data
    Parameter("source", "'synthetic' phantoms or the 'kaggle' download", one_of(SOURCES)),
    Parameter("data_dir", "kaggle: folder holding COVID-19_Radiography_Dataset ('': kagglehub download)", text()),
    Parameter(
        "synthetic_per_class", "phantoms per class: one count, or four (class order or by class)", class_counts_value()
    ),
    Parameter("synthetic_size", "side of the generated phantoms in pixels", integer(MIN_SYNTHETIC_SIZE)),
    Parameter("confounder", "synthetic only: smaller Viral Pneumonia chests", boolean()),
    Parameter("per_class", "images kept per class (None: the smallest class)", optional(integer(1))),
    Parameter("split_fractions", "train, val, test fractions", split_fractions_value()),
    Parameter("skip_unreadable", "skip unreadable images instead of stopping", boolean()),
    Parameter(
        "sampling",
        "class imbalance: 'downsample' (the paper), or every image with 'class_weight' or 'oversample'",
        one_of(SAMPLINGS),
    ),
    # 02 lung segmentation
    Parameter("segmentation_size", "side the U-Net segments at (masks are resized to image_size)", integer(8)),
    Parameter("unet_filters", "U-Net filters of the first level (doubled per level)", integer(1)),
    Parameter("unet_depth", "U-Net down-sampling levels", integer(1)),
    Parameter("unet_epochs", "U-Net training epochs", integer(1)),
    Parameter("unet_batch_size", "U-Net images per batch", integer(1)),
    Parameter("unet_learning_rate", "U-Net Adam learning rate", number(0, exclusive=True)),
    Parameter(
        "skip_missing_masks",
        "with input_mask='lung': train the U-Net on the images that have a lung mask (the others counted)",
        boolean(),
    ),
    # 02-07: what the classifiers see (02: stops when 'lung' needs lung masks the dataset lacks)
    Parameter("input_mask", "'none': the whole image; 'lung': only the predicted lungs of 02", one_of(INPUT_MASKS)),
    Parameter("mask_margin", "input_mask='lung': dilate the predicted lung mask by this many pixels", integer(0)),
    # 03, 04 training
    Parameter("model_name", "the model slot later notebooks read", plain_name()),
    Parameter("backbone", "feature extractor", one_of(BACKBONES)),
    Parameter("weights", "None, 'imagenet' or a backbone weights file", weights_value()),
    Parameter("freeze_backbone", "train the head only", boolean()),
    Parameter("epochs", "training epochs", integer(1)),
    Parameter("batch_size", "images per batch", integer(1)),
    Parameter("learning_rate", "Adam learning rate", number(0, exclusive=True)),
    Parameter("use_feature_cache", "frozen backbone: compute its features once", boolean()),
    Parameter("mixed_precision", "True, False, 'mixed_float16' or 'mixed_bfloat16'", one_of(MIXED_PRECISION)),
    # 05-07
    Parameter("model_names", "model slots to evaluate", list_of(plain_name(), min_items=1, unique=True)),
    Parameter("method", "heatmap method", one_of(METHODS)),
    Parameter("gallery_per_class", "gallery images per class", integer(1)),
    Parameter("alphas", "overlay opacities", list_of(number(0, maximum=1), min_items=1)),
    Parameter("region_size", "MoRF region side in pixels", region_size_value()),
    Parameter("perturbation", "perturbation function", one_of(PERTURBATIONS)),
    Parameter(
        "region_scores",
        "'grid': heatmap cells as regions; 'upsample': bilinear, mean per region",
        one_of(REGION_SCORES),
    ),
    Parameter("sigma", "std of the Gaussian noise, in units of the [0, 1] pixel range", number(0)),
    Parameter("n_bootstrap", "bootstrap resamples", integer(1)),
    Parameter("orders", "region orders ('morf' required)", list_of(one_of(ORDERS), min_items=1, unique=True)),
    Parameter(
        "ablation_perturbations", "ablation: perturbations at sigma", list_of(one_of(PERTURBATIONS), unique=True)
    ),
    Parameter("ablation_sigmas", "ablation: extra Gaussian noise levels", list_of(number(0))),
    Parameter("ablation_images", "ablation: images per model (0: all)", integer(0)),
    # 08 methods and metrics
    Parameter("methods", "heatmap methods to score", list_of(one_of(METHODS), min_items=1, unique=True)),
    Parameter("metrics", "metric families to run", list_of(one_of(METRIC_GROUPS), min_items=1, unique=True)),
    Parameter("n_images", "correctly classified test images per model, every method and metric (0: all)", integer(0)),
    Parameter("scorecam_top_n", "Score-CAM: channels of highest activation variance (0: all)", integer(0)),
    Parameter(
        "road_fractions",
        "ROAD: shares of the regions removed, in (0, 1)",
        list_of(number(0, exclusive=True, maximum=0.99), min_items=1, unique=True),
    ),
    Parameter("randomisation_images", "randomisation test: images per model", integer(1)),
    Parameter("randomisation_stages", "randomisation test: backbone layers re-drawn after the head", integer(1)),
)


# ---------------------------------------------------------------------------------------------------
# Relations within one notebook: (names involved, check(params) -> problem or None)
# ---------------------------------------------------------------------------------------------------


def _backbone_size(p):
    minimum = MIN_IMAGE_SIZE[p["backbone"]]
    if p["image_size"] < minimum:
        return (
            f"image_size={p['image_size']} is too small for backbone {p['backbone']!r}: it needs at least {minimum} px"
        )
    return None


def _imagenet_weights(p):
    if p["weights"] == "imagenet" and p["backbone"] not in PAPER_BACKBONES:
        return f"backbone {p['backbone']!r} has no ImageNet weights: use weights=None or a weights file"
    return None


def _region_fits(p):
    size = p["region_size"]
    height, width = (size, size) if _is_int(size) else size
    if height > p["image_size"] or width > p["image_size"]:
        return f"region_size={size!r} is larger than the image (image_size={p['image_size']})"
    return None


def _morf_order(p):
    return None if "morf" in p["orders"] else f"orders must include 'morf' (the AOPC), got {p['orders']!r}"


def _synthetic_split(p):
    if p["source"] != "synthetic":
        return None
    smallest = _min_count(p["synthetic_per_class"])
    n = smallest if p["per_class"] is None else p["per_class"]
    if n > smallest:
        return f"per_class={n} exceeds the smallest class of synthetic_per_class={p['synthetic_per_class']!r}"
    f_train, f_val, _ = p["split_fractions"]
    n_train, n_val = math.floor(f_train * n + 1e-9), math.floor(f_val * n + 1e-9)
    if min(n_train, n_val, n - n_train - n_val) <= 0:
        return (
            f"{n} images per class with split_fractions {list(p['split_fractions'])} leave a split empty "
            f"({n_train}/{n_val}/{n - n_train - n_val}); raise synthetic_per_class"
        )
    return None


def _unet_levels(p):
    size, depth = p["segmentation_size"], p["unet_depth"]
    if size % (2**depth):
        return f"segmentation_size={size} must be divisible by 2**unet_depth={2**depth} (the U-Net halves it {depth}x)"
    return None


@dataclass(frozen=True)
class Relation:
    """A check over several parameters of one notebook; runs only when all of them are declared and valid."""

    names: tuple[str, ...]  # the first is the one an error names
    check: Callable[[Mapping], str | None]


RELATIONS: tuple[Relation, ...] = (
    Relation(("image_size", "backbone"), _backbone_size),
    Relation(("backbone", "weights"), _imagenet_weights),
    Relation(("region_size", "image_size"), _region_fits),
    Relation(("orders",), _morf_order),
    Relation(("segmentation_size", "unet_depth"), _unet_levels),
    Relation(("synthetic_per_class", "source", "per_class", "split_fractions"), _synthetic_split),
)


# ---------------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------------


def _where(notebook: str | None, name: str) -> str:
    return f"{notebook}.{name}" if notebook else name


def check(notebook: str | None, name: str, value) -> None:
    """Raise :class:`ParameterError` naming the notebook and parameter when ``value`` breaks its declaration."""
    spec = PARAMETERS.get(name)
    problem = spec.check(value) if spec else None
    if problem:
        raise ParameterError(f"{_where(notebook, name)}: {problem}")


def problems(notebook: str | None, params: Mapping[str, Any]) -> list[str]:
    """Every problem of one notebook's full parameter set: each value, then the relations between them."""
    found, valid = [], set()
    for name, value in params.items():
        spec = PARAMETERS.get(name)
        problem = spec.check(value) if spec else None
        if problem:
            found.append(f"{_where(notebook, name)}: {problem}")
        else:
            valid.add(name)
    for relation in RELATIONS:
        if set(relation.names) <= valid:
            problem = relation.check(params)
            if problem:
                found.append(f"{_where(notebook, relation.names[0])}: {problem}")
    return found


def validate(per_notebook: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Problems of every notebook's parameters plus the relations across notebooks (one image_size, distinct slots)."""
    found = []
    for stem, params in per_notebook.items():
        found += problems(stem, params)
    reasons = {
        "image_size": "models are trained and read at one size",
        "sampling": "the split of 01 and the training of 03/04 go together",
        "input_mask": "the classifiers are tested, explained and perturbed on the input they were trained on",
        "mask_margin": "the classifiers are tested, explained and perturbed on the input they were trained on",
    }
    for name, reason in reasons.items():
        values = {stem: p[name] for stem, p in per_notebook.items() if name in p}
        if len(set(map(repr, values.values()))) > 1:
            listed = ", ".join(f"{stem} {value!r}" for stem, value in values.items())
            found.append(f"{name} must be the same in every notebook ({reason}), got {listed}")
    slots = {stem: p["model_name"] for stem, p in per_notebook.items() if "model_name" in p}
    for stem, slot in slots.items():
        others = [other for other, name in slots.items() if name == slot and other != stem]
        if others and stem < others[0]:
            found.append(
                f"{stem}.model_name: {slot!r} is also the model_name of {', '.join(others)}; "
                "the later notebook would overwrite the model"
            )
    return found


def raise_for(per_notebook: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise one :class:`ParameterError` listing every problem :func:`validate` finds."""
    found = validate(per_notebook)
    if found:
        raise ParameterError("invalid parameters:\n  " + "\n  ".join(found))
