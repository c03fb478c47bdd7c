"""Grad-CAM and Grad-CAM++ in the registry: :func:`helpers.heatmaps.gradcam` itself, under the registry's signature.

References: Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV; Chattopadhyay et al. 2018, "Grad-CAM++: Generalized Gradient-based Visual Explanations for
Deep Convolutional Networks", WACV.
"""

from __future__ import annotations

from .. import heatmaps as _heatmaps
from .registry import register

__all__ = ["gradcam", "gradcam_plus_plus"]


@register("gradcam")
def gradcam(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False):
    """Grad-CAM: ReLU(sum_k mean_ij(dy^c/dA^k_ij) A^k), by :func:`helpers.heatmaps.gradcam`.

    References: Selvaraju et al. 2017 (ICCV), Grad-CAM.
    """
    return _heatmaps.gradcam(model, images, classes, layer, batch_size, "gradcam", progress, return_classes)


@register("gradcam++")
def gradcam_plus_plus(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False):
    """Grad-CAM++ with its closed-form coefficients, by :func:`helpers.heatmaps.gradcam`.

    References: Chattopadhyay et al. 2018 (WACV), Grad-CAM++.
    """
    return _heatmaps.gradcam(model, images, classes, layer, batch_size, "gradcam++", progress, return_classes)
