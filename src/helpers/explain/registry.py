"""The registry of heatmap methods (name -> function) and :func:`heatmap`, which runs one by name.

Every registered method takes ``(model, images, classes=None, layer=None, batch_size=32, progress=False,
return_classes=False, **options)`` and returns raw (N, h, w) float32 maps (after a ReLU) on the explained
layer's grid, as :func:`helpers.heatmaps.gradcam` does (see :mod:`helpers.explain.base`).
"""

from __future__ import annotations

from typing import Callable

__all__ = ["REGISTRY", "register", "method_names", "get_method", "heatmap", "method_heatmaps"]

#: Heatmap methods by name, in registration order.
REGISTRY: dict[str, Callable] = {}


def register(name: str) -> Callable:
    """Decorator adding a heatmap method to :data:`REGISTRY` under ``name`` (each name once)."""

    def add(function: Callable) -> Callable:
        if name in REGISTRY and REGISTRY[name] is not function:
            raise ValueError(f"heatmap method {name!r} is already registered")
        REGISTRY[name] = function
        return function

    return add


def method_names() -> tuple[str, ...]:
    """The names of every registered heatmap method."""
    return tuple(REGISTRY)


def get_method(method: str) -> Callable:
    """The function of heatmap method ``method``; a ValueError lists the known names for any other."""
    if not isinstance(method, str) or method not in REGISTRY:
        raise ValueError(f"unknown heatmap method {method!r}; known methods: {', '.join(sorted(REGISTRY))}")
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
