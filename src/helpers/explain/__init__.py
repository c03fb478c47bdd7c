"""Heatmap methods, one function each in one registry (name -> function), and :func:`heatmap` to run one by name.

Every method returns raw (N, h, w) float32 maps on the explained layer's grid (after a ReLU), takes the layer to
explain (default: the backbone's output) and runs batched on the TensorFlow and JAX backends:

* gradient-based: ``gradcam``, ``gradcam++`` (:mod:`helpers.heatmaps`), ``hirescam``, ``xgradcam``, ``layercam``;
* perturbation-based: ``scorecam`` (``top_n`` for Faster Score-CAM);
* activation-based: ``eigencam``;
* model-independent baselines: ``sobel`` (edge map), ``random`` (seeded).

    from helpers.explain import heatmap, METHODS
    maps = heatmap("hirescam", model, images)
"""

from __future__ import annotations

from .baselines import edge_map, random_map, sobel
from .eigen_cam import eigencam
from .grad_cam import gradcam, gradcam_plus_plus
from .gradient_variants import hirescam, layercam, xgradcam
from .registry import REGISTRY, get_method, heatmap, method_heatmaps, method_names, register
from .score_cam import scorecam, scorecam_weights

#: Names of the built-in heatmap methods: gradient-based, perturbation-based, activation-based, then the baselines.
METHODS: tuple[str, ...] = (
    "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam", "sobel", "random",
)  # fmt: skip
if set(METHODS) != set(method_names()):
    raise ImportError(f"the registry holds {method_names()}, not the declared methods {METHODS}")
#: The methods that never look at the model's weights (their maps must survive model-parameter randomisation).
MODEL_INDEPENDENT: tuple[str, ...] = ("sobel", "random")

__all__ = [
    "METHODS",
    "MODEL_INDEPENDENT",
    "REGISTRY",
    "register",
    "method_names",
    "get_method",
    "heatmap",
    "method_heatmaps",
    "gradcam",
    "gradcam_plus_plus",
    "hirescam",
    "xgradcam",
    "layercam",
    "scorecam",
    "scorecam_weights",
    "eigencam",
    "sobel",
    "random_map",
    "edge_map",
]
