"""Heatmap methods: one function each, one table of them (:mod:`.registry`), and :func:`heatmap` to run one by name.

Every method returns raw (N, h, w) float32 maps on the explained layer's grid (after a ReLU), takes the layer to
explain (default: the backbone's output) and runs batched on the TensorFlow and JAX backends:

* gradient-based: ``gradcam``, ``gradcam++`` (:mod:`.grad_cam`), ``hirescam``, ``xgradcam``, ``layercam``
  (:mod:`.gradient_variants`);
* perturbation-based: ``scorecam`` (:mod:`.score_cam`; ``top_n`` for Faster Score-CAM);
* activation-based: ``eigencam`` (:mod:`.eigen_cam`);
* model-independent baselines: ``sobel`` (edge map), ``random`` (seeded) (:mod:`.baselines`).

:mod:`.maps` holds the arrays' side (upsampling, normalisation, overlays); :mod:`.base` the machinery the methods
share. Names load on first use, so ``from helpers.explain import METHODS`` imports no Keras::

    from helpers.explain import heatmap, METHODS
    maps = heatmap("hirescam", model, images)
"""

from __future__ import annotations

from helpers.common.lazy import lazy_exports

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("BUILTIN", "METHODS", "MODEL_INDEPENDENT", "REGISTRY", "register", "method_names", "get_method", "heatmap",
         "method_heatmaps"),
        "registry",
    ),
    **dict.fromkeys(("gradcam", "gradcam_plus_plus", "class_score_gradient"), "grad_cam"),
    **dict.fromkeys(("hirescam", "xgradcam", "layercam"), "gradient_variants"),
    **dict.fromkeys(("scorecam", "scorecam_weights"), "score_cam"),
    **dict.fromkeys(("eigencam",), "eigen_cam"),
    **dict.fromkeys(("sobel", "random_map", "edge_map"), "baselines"),
    **dict.fromkeys(("upsample", "normalize", "overlay", "jet", "gray_to_rgb"), "maps"),
}  # fmt: skip

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
