"""Eigen-CAM: the first principal component of the explained layer's activations, batched on the device.

For one image, ``X`` (hw, K) holds the activations at every location, centred per channel (``X - mean over
locations``); the map is the projection ``X v_1`` on the first right singular vector ``v_1``, computed from the
smaller of the Gram matrix ``X X^T`` (projection ``sqrt(lambda_1) u_1``) and the covariance ``X^T X``. The sign
of a principal component is arbitrary: it is fixed so that the map correlates positively with the activations'
sum over channels; then the ReLU, as for every map. Class-agnostic: ``classes`` only sets the returned classes.

References: Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN.
"""

from __future__ import annotations

from helpers.explain.base import activation_maps_function, explained_split, prepare_classes, prepare_images, run_batches

__all__ = ["eigencam"]


def _eigencam(a):
    from keras import ops

    a = ops.cast(a, "float32")
    _, h, w, k = a.shape
    x = ops.reshape(a, (-1, h * w, k))
    centred = x - ops.mean(x, axis=1, keepdims=True)
    if h * w <= k:
        gram = ops.einsum("bpk,bqk->bpq", centred, centred)
        values, vectors = ops.eigh(gram)
        projection = vectors[:, :, -1] * ops.sqrt(ops.maximum(values[:, -1:], 0.0))
    else:
        covariance = ops.einsum("bpk,bpl->bkl", centred, centred)
        _, vectors = ops.eigh(covariance)
        projection = ops.einsum("bpk,bk->bp", centred, vectors[:, :, -1])
    total = ops.sum(x, axis=-1)
    agreement = ops.sum(projection * (total - ops.mean(total, axis=1, keepdims=True)), axis=1, keepdims=True)
    projection = ops.where(agreement < 0, -projection, projection)
    return ops.relu(ops.reshape(projection, (-1, h, w)))


def eigencam(model, images, classes=None, layer=None, batch_size=32, progress=False, return_classes=False):
    """Eigen-CAM: ReLU of the activations' first principal component, its sign agreeing with their channel sum.

    References: Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN.
    """
    split = explained_split(model, layer)
    x = prepare_images(model, images)
    wanted = prepare_classes(classes, len(x), split.num_classes)
    run = activation_maps_function(model, split, "eigencam", _eigencam, batch_size)
    desc = f"{model.name}: eigencam ({split.layer_name})"
    return run_batches(x, wanted, batch_size, run, desc, progress, return_classes)
