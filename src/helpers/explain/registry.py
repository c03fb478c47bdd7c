"""The registry of heatmap methods (name -> function) and :func:`heatmap`, which runs one by name.

Every registered method takes ``(model, images, classes=None, layer=None, batch_size=32, progress=False,
return_classes=False, **options)`` and returns raw (N, h, w) float32 maps (after a ReLU) on the explained
layer's grid, as :func:`helpers.explain.grad_cam.gradcam` does (see :mod:`helpers.explain.base`).
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = [
    "BUILTIN", "METHODS", "MODEL_INDEPENDENT", "REGISTRY", "register", "method_names", "get_method", "heatmap",
    "method_heatmaps",
]  # fmt: skip

#: The built-in heatmap methods: name -> (module of ``helpers.explain``, function). A new method is one function in a
#: module of this package and one entry here; the runner's parameter checks (``06.method``, ``08.methods``), the study's
#: files and notebook 08 all read this table. Gradient-based, perturbation-based, activation-based, then baselines.
BUILTIN: dict[str, tuple[str, str]] = {
    "gradcam": ("grad_cam", "gradcam"),
    "gradcam++": ("grad_cam", "gradcam_plus_plus"),
    "hirescam": ("gradient_variants", "hirescam"),
    "xgradcam": ("gradient_variants", "xgradcam"),
    "layercam": ("gradient_variants", "layercam"),
    "scorecam": ("score_cam", "scorecam"),
    "eigencam": ("eigen_cam", "eigencam"),
    "sobel": ("baselines", "sobel"),
    "random": ("baselines", "random_map"),
}
#: Names of the built-in methods, in the table's order.
METHODS: tuple[str, ...] = tuple(BUILTIN)
#: The methods that never look at the model's weights (their maps must survive model-parameter randomisation).
MODEL_INDEPENDENT: tuple[str, ...] = ("sobel", "random")
#: Methods added at run time with :func:`register` (a user's own), by name.
REGISTRY: dict[str, Callable] = {}


def register(name: str) -> Callable:
    """Decorator adding a heatmap method of your own under ``name`` (not one of :data:`METHODS`; each name once)."""

    def add(function: Callable) -> Callable:
        if name in BUILTIN or (name in REGISTRY and REGISTRY[name] is not function):
            raise ValueError(f"heatmap method {name!r} is already registered")
        REGISTRY[name] = function
        return function

    return add


def method_names() -> tuple[str, ...]:
    """The names of every heatmap method: the built-in ones, then those added with :func:`register`."""
    return METHODS + tuple(REGISTRY)


def get_method(method: str) -> Callable:
    """The function of heatmap method ``method`` (its module imported on first use); a ValueError lists the known names."""
    if isinstance(method, str) and method in BUILTIN:
        module, function = BUILTIN[method]
        return getattr(importlib.import_module(f"helpers.explain.{module}"), function)
    if not isinstance(method, str) or method not in REGISTRY:
        raise ValueError(f"unknown heatmap method {method!r}; known methods: {', '.join(sorted(method_names()))}")
    return REGISTRY[method]


def heatmap(
    method: str,
    model,
    images,
    classes=None,
    layer=None,
    batch_size: int = 32,
    progress: bool = False,
    return_classes: bool = False,
    **options,
):
    """Raw (N, h, w) float32 heatmaps of ``images`` by the registered ``method`` (``options`` go to the method)."""
    function = get_method(method)
    return function(
        model,
        images,
        classes=classes,
        layer=layer,
        batch_size=batch_size,
        progress=progress,
        return_classes=return_classes,
        **options,
    )


def method_heatmaps(methods, model, images, classes=None, layer=None, batch_size: int = 32, options=None) -> dict:
    """``{method: (N, h, w) maps}`` for each of ``methods`` on the same images and classes; ``options``: {method: kwargs}."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise ValueError(f"options name methods that are not run: {unknown}")
    names = list(methods)
    for name in names:
        get_method(name)
    return {name: heatmap(name, model, images, classes, layer, batch_size, **options.get(name, {})) for name in names}
