"""Gradient-weighted CAM variants: HiResCAM, XGrad-CAM and Layer-CAM, batched, one compiled function each.

With ``A`` the explained layer's output (h, w, K) and ``g = dy^c/dA`` the gradient of the pre-softmax class score:

* HiResCAM: ``ReLU(sum_k g_k * A_k)`` (the element-wise product, no spatial averaging of the gradient);
* XGrad-CAM: ``w_k = sum_ij A_kij g_kij / sum_ij A_kij`` (0 where a channel sums to 0), ``ReLU(sum_k w_k A_k)``;
* Layer-CAM: ``ReLU(sum_k ReLU(g_k) * A_k)``.

When the explained layer feeds global average pooling and one dense layer, ``g`` is constant over space and
Grad-CAM, HiResCAM and XGrad-CAM coincide.

References: Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
neural networks", arXiv:2011.08891; Fu et al. 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and
Explanation of CNNs", BMVC; Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE TIP.
"""

from __future__ import annotations

from helpers.explain.base import explained_split, gradient_maps_function, prepare_classes, prepare_images, run_batches

__all__ = ["hirescam", "xgradcam", "layercam"]


def _hirescam(a, grads):
    from keras import ops

    return ops.relu(ops.sum(ops.cast(a, "float32") * ops.cast(grads, "float32"), axis=-1))


def _xgradcam(a, grads):
    from keras import ops

    a, grads = ops.cast(a, "float32"), ops.cast(grads, "float32")
    total = ops.sum(a, axis=(1, 2))
    nonzero = ops.not_equal(total, 0.0)
    weights = ops.where(nonzero, ops.sum(a * grads, axis=(1, 2)) / ops.where(nonzero, total, 1.0), 0.0)
    return ops.relu(ops.sum(a * weights[:, None, None, :], axis=-1))


def _layercam(a, grads):
    from keras import ops

    return ops.relu(ops.sum(ops.cast(a, "float32") * ops.relu(ops.cast(grads, "float32")), axis=-1))


def _gradient_cam(name, combine, model, images, classes, layer, batch_size, progress, return_classes):
    split = explained_split(model, layer)
    x = prepare_images(model, images)
    wanted = prepare_classes(classes, len(x), split.num_classes)
    run = gradient_maps_function(model, split, name, combine, batch_size)
    desc = f"{model.name}: {name} ({split.layer_name})"
    return run_batches(x, wanted, batch_size, run, desc, progress, return_classes)


def hirescam(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False):
    """HiResCAM: ReLU(sum_k g_k * A_k), the gradient times the activations, summed over channels.

    References: Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", arXiv:2011.08891.
    """
    return _gradient_cam("hirescam", _hirescam, model, images, classes, layer, batch_size, progress, return_classes)


def xgradcam(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False):
    """XGrad-CAM: channel weights sum(A g) / sum(A), then ReLU(sum_k w_k A_k).

    References: Fu et al. 2020, "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs", BMVC.
    """
    return _gradient_cam("xgradcam", _xgradcam, model, images, classes, layer, batch_size, progress, return_classes)


def layercam(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False):
    """Layer-CAM: ReLU(sum_k ReLU(g_k) * A_k), positive gradients as per-location weights.

    References: Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization", IEEE TIP.
    """
    return _gradient_cam("layercam", _layercam, model, images, classes, layer, batch_size, progress, return_classes)
