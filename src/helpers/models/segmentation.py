"""Lung segmentation: a compact U-Net, Dice and IoU, training by validation Dice, and masking a classifier's input.

The U-Net (:func:`build_unet`) maps grayscale images in [0, 1], (S, S, 1), to the probability that each pixel is
lung, (S, S, 1). Its layout, ``depth`` levels with ``f_i = base_filters * 2**i`` filters at level ``i``::

    image in [0, 1]  -> "normalize"            Rescaling to [-1, 1]
    level i (down)   -> "enc{i}_conv1/2"      two 3x3 convolutions + ReLU ("same" padding), then "enc{i}_pool" 2x2 max pooling
    bottom           -> "bottleneck_conv1/2"  two 3x3 convolutions + ReLU, f_depth filters
    level i (up)     -> "dec{i}_up"           2x2 transposed convolution, stride 2 (f_i filters)
                        "dec{i}_concat"       concatenated with the output of "enc{i}_conv2" (the skip connection)
                        "dec{i}_conv1/2"      two 3x3 convolutions + ReLU
    output           -> "mask"                1x1 convolution + sigmoid

Unlike the original U-Net the convolutions are padded ("same"), so the output has the input's size and no tiling
is needed. uint8 images are scaled to [0, 1] on the device by :func:`helpers.backend.device.predict`, as for the classifiers.

Segmentation may run at a lower resolution than the classifier (the model's input size, ``segmentation_size``):
:func:`train_segmentation` and :func:`predict_masks` resize images down (area interpolation) and
:func:`predict_masks` resizes the predicted masks back up with nearest-neighbour interpolation.

References: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", 2015;
Dice, "Measures of the amount of ecologic association between species", 1945; Milletari, Navab & Ahmadi,
"V-Net", 2016 (soft Dice loss).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import keras
import numpy as np
import pandas as pd
from keras import layers, ops

from helpers.backend.device import predict
from helpers.backend.initializers import host_initializers, restore_initializers
from helpers.common import config
from helpers.common.checks import check_int, check_seed, to_unit_range
from helpers.common.parallel import each_index
from helpers.common.progress import tqdm
from helpers.common.seeds import seed_stream
from helpers.metrics.intervals import stratified_bootstrap_indices
from helpers.models.classifiers import CUSTOM_OBJECTS, SeededUniform, parameter_counts

__all__ = [
    "DEFAULT_FILL",
    "SegmentationResult",
    "build_unet",
    "load_unet",
    "dice",
    "iou",
    "defined_mean",
    "soft_dice_loss",
    "bce_dice_loss",
    "resize_images",
    "resize_masks",
    "train_segmentation",
    "predict_masks",
    "disk",
    "dilate_masks",
    "apply_input_mask",
    "segmentation_summary",
]

#: Default fill of the pixels outside a dilated lung mask (:func:`apply_input_mask`): a constant mid-grey.
DEFAULT_FILL = 128


# --------------------------------------------------------------------------------------------------
# The U-Net
# --------------------------------------------------------------------------------------------------


def build_unet(image_size: int = 64, base_filters: int = 8, depth: int = 3, seed: int | None = 0) -> keras.Model:
    """A compact U-Net: images (S, S, 1) in [0, 1] -> lung probability (S, S, 1) (layout in the module docstring).

    ``image_size`` (S) must be divisible by ``2**depth``. Kernels are He-uniform (:class:`helpers.models.classifiers.SeededUniform`)
    and biases zero, drawn on the host, so the same seed builds the same weights on every backend.
    References: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", 2015.
    """
    image_size = check_int("image_size", image_size, 1, type_error=TypeError)
    base_filters = check_int("base_filters", base_filters, 1, type_error=TypeError)
    depth = check_int("depth", depth, 1, type_error=TypeError)
    if image_size % (2**depth):
        raise ValueError(
            f"image_size={image_size} must be divisible by 2**depth = {2**depth} (depth={depth}): "
            f"use an image_size (segmentation_size) that is a multiple of {2**depth}, or a smaller depth"
        )
    if seed is not None:
        seed = check_seed(seed)
        keras.utils.set_random_seed(seed)
    next_seed = seed_stream(seed, 0x5E6)

    def conv(x, filters, name):
        init = SeededUniform(2.0, "fan_in", next_seed())
        return layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init, name=name)(x)

    with host_initializers(seed):
        inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
        x = layers.Rescaling(2.0, offset=-1.0, name="normalize")(inputs)
        skips = []
        for i in range(depth):
            filters = base_filters * 2**i
            x = conv(x, filters, f"enc{i}_conv1")
            x = conv(x, filters, f"enc{i}_conv2")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
        x = conv(x, base_filters * 2**depth, "bottleneck_conv1")
        x = conv(x, base_filters * 2**depth, "bottleneck_conv2")
        for i in reversed(range(depth)):
            filters = base_filters * 2**i
            init = SeededUniform(2.0, "fan_in", next_seed())
            x = layers.Conv2DTranspose(filters, 2, strides=2, kernel_initializer=init, name=f"dec{i}_up")(x)
            x = layers.Concatenate(name=f"dec{i}_concat")([x, skips[i]])
            x = conv(x, filters, f"dec{i}_conv1")
            x = conv(x, filters, f"dec{i}_conv2")
        init = SeededUniform(1.0, "fan_avg", next_seed())
        outputs = layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer=init, dtype="float32", name="mask")(x)
        model = keras.Model(inputs, outputs, name="unet")
    restore_initializers(model)
    return model


def load_unet(path) -> keras.Model:
    """Load a U-Net saved with ``model.save(path)`` (``.keras``) in Keras safe mode."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train and save the segmentation model first")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a complete .keras file (truncated or corrupt): save the model again")
    with host_initializers(seed=0):  # the saved weights replace these values: draw them without compiling
        model = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False, safe_mode=True)
    restore_initializers(model)
    return model


# --------------------------------------------------------------------------------------------------
# Dice and IoU
# --------------------------------------------------------------------------------------------------


def _binary(masks, name: str) -> np.ndarray:
    """Masks as bool (N, H, W); (H, W) becomes one mask, (N, H, W, 1) loses its channel; values must be 0/1."""
    arr = np.asarray(masks)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be binary masks (N, H, W), got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.size and not _zeros_and_ones(arr):
            raise ValueError(
                f"{name} must be binary (0/1 or bool), got values from {arr.min()} to {arr.max()}: "
                "threshold or divide by 255 first"
            )
        arr = arr.astype(bool)
    return arr


def _zeros_and_ones(arr: np.ndarray) -> bool:
    """Whether every value of a non-empty array is 0 or 1 (integers: vectorised max, and min when signed)."""
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return bool(arr.max() <= 1)
    if np.issubdtype(arr.dtype, np.integer):
        return bool(arr.min() >= 0 and arr.max() <= 1)
    if np.issubdtype(arr.dtype, np.floating):
        return bool(np.logical_or(arr == 0, arr == 1).all())
    return bool(np.isin(arr, (0, 1)).all())


def _overlaps(pred, true) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, true = _binary(pred, "pred"), _binary(true, "true")
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} masks must have the same shape")
    inter = np.logical_and(pred, true).sum(axis=(1, 2)).astype(np.float64)
    return inter, pred.sum(axis=(1, 2)).astype(np.float64), true.sum(axis=(1, 2)).astype(np.float64)


def dice(pred, true) -> np.ndarray:
    """Dice coefficient 2|P∩T| / (|P| + |T|) of each pair of binary masks (N, H, W) -> (N,); NaN (undefined) for two empty masks.

    References: Dice, "Measures of the amount of ecologic association between species", Ecology 26, 1945.
    """
    inter, p, t = _overlaps(pred, true)
    total = p + t
    return np.where(total > 0, 2.0 * inter / np.maximum(total, 1.0), np.nan)


def iou(pred, true) -> np.ndarray:
    """Intersection over union |P∩T| / |P∪T| (Jaccard index) of each pair of binary masks (N, H, W) -> (N,); NaN for two empty masks."""
    inter, p, t = _overlaps(pred, true)
    union = p + t - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), np.nan)


def defined_mean(values) -> float:
    """Mean of the defined (non-NaN) values, NaN when there are none (Dice and IoU of two empty masks are undefined)."""
    values = np.asarray(values, np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """Mean over images of 1 - (2 Σ p t + s) / (Σ p + Σ t + s) on probabilities (any backend, ``keras.ops``).

    References: Milletari, Navab & Ahmadi, "V-Net", 3DV 2016 (soft Dice loss).
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    axes = tuple(range(1, len(y_pred.shape)))
    inter = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return ops.mean(1.0 - (2.0 * inter + smooth) / (total + smooth))


def bce_dice_loss(y_true, y_pred):
    """Training loss of the U-Net: mean binary cross-entropy per pixel plus :func:`soft_dice_loss`.

    References: Milletari, Navab & Ahmadi, "V-Net", 3DV 2016 (soft Dice loss).
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    eps = keras.config.epsilon()
    p = ops.clip(y_pred, eps, 1.0 - eps)
    bce = -ops.mean(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    return bce + soft_dice_loss(y_true, y_pred)


# --------------------------------------------------------------------------------------------------
# Resizing between the classifier's and the segmentation's resolution
# --------------------------------------------------------------------------------------------------


def resize_images(images, size: int) -> np.ndarray:
    """Images (N, H, W[, 1]) resized to (N, size, size, 1) with area interpolation (unchanged at that size), dtype kept."""
    size = check_int("size", size, 1)
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] != 1:
        raise ValueError(f"images must be grayscale (N, H, W) or (N, H, W, 1), got shape {arr.shape}")
    if arr.shape[1:3] == (size, size):
        return arr
    out = np.empty((len(arr), size, size, 1), dtype=arr.dtype)

    def resize(i: int) -> None:
        out[i, :, :, 0] = cv2.resize(arr[i, :, :, 0], (size, size), interpolation=cv2.INTER_AREA)

    each_index(resize, len(arr))
    return out


def resize_masks(masks, size: int) -> np.ndarray:
    """Binary masks (N, H, W) resized to (N, size, size) uint8 0/1: down by area share >= 0.5, up by nearest neighbour."""
    size = check_int("size", size, 1)
    arr = _binary(masks, "masks").astype(np.uint8)
    if arr.shape[1:] == (size, size):
        return arr
    out = np.empty((len(arr), size, size), dtype=np.uint8)
    down = size < max(arr.shape[1:])

    def resize(i: int) -> None:
        if down:
            out[i] = cv2.resize(arr[i].astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5
        else:
            out[i] = cv2.resize(arr[i], (size, size), interpolation=cv2.INTER_NEAREST)

    each_index(resize, len(arr))
    return out


def _model_size(model) -> int:
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1:
        raise ValueError(f"the segmentation model must take square grayscale images (S, S, 1), it takes {shape}")
    return int(shape[0])


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass
class SegmentationResult:
    """A trained U-Net (weights of the best validation-Dice epoch), its per-epoch history, that epoch and timings."""

    model: keras.Model
    history: pd.DataFrame
    best_epoch: int
    timings: dict[str, float]
    settings: dict = field(default_factory=dict)

    @property
    def best_val_dice(self) -> float:
        """Mean validation Dice of the kept epoch."""
        return float(self.history.loc[self.history["epoch"] == self.best_epoch, "val_dice"].iloc[0])

    def info(self) -> dict:
        """JSON-ready summary: kept epoch, its validation Dice, parameter counts, timings, settings."""
        return {
            "best_epoch": int(self.best_epoch),
            "val_dice": self.best_val_dice,
            "epochs": int(len(self.history)),
            "parameters": parameter_counts(self.model),
            "timings": {k: float(v) for k, v in self.timings.items()},
            "settings": self.settings,
        }


def _pairs(images, masks, size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8/float (N, size, size, 1) and masks as uint8 (N, size, size), checked and resized."""
    images = np.asarray(images)
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{name} images must be uint8 (0-255) or floats in [0, 1], got dtype {images.dtype}")
    masks = _binary(masks, f"{name} masks")
    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(f"{name}: {len(images)} images and {len(masks)} masks; both must be equal in number and > 0")
    if images.shape[1:3] != masks.shape[1:3]:
        raise ValueError(f"{name}: images {images.shape[1:3]} and masks {masks.shape[1:3]} differ in size")
    return resize_images(images, size), resize_masks(masks, size)


class _Batches(keras.utils.PyDataset):
    """The batches ``order[k*step:(k+1)*step]`` of images and masks, gathered and scaled one batch at a time.

    Images stay uint8 (or float32 in [0, 1]) and masks uint8 on the host: an epoch never copies the training set
    (4,304 images and masks at 256 px are 0.6 GB as uint8, 2.3 GB as float32).
    """

    def __init__(self, x, y, order, step: int):
        super().__init__()
        if len(order) % step:
            raise ValueError(f"the order's {len(order)} rows must be whole batches of {step}")
        self.x, self.y, self.order, self.step = x, y, order, step

    def __len__(self) -> int:
        return len(self.order) // self.step

    def __getitem__(self, k: int):
        rows = self.order[k * self.step : (k + 1) * self.step]
        x = self.x[rows]
        return (to_unit_range(x) if x.dtype == np.uint8 else x), self.y[rows][..., None].astype(np.float32)


def _train_epoch(fit_model, x, y, order, step: int) -> list[float]:
    """One epoch of Adam steps on the batches ``order[k*step:(k+1)*step]``; the loss of each step (or their mean).

    ``x``: uint8 images (N, S, S, 1) (or float32 in [0, 1]); ``y``: masks uint8 0/1 (N, S, S); each batch is scaled
    to float32 as it is taken (:class:`_Batches`). On JAX, ``fit`` runs the steps without a host round trip per step
    (the next batch is copied while the device computes); on TensorFlow a ``train_on_batch`` loop is cheaper than
    ``fit``'s per-call set-up. Both give bitwise the same weights.
    """
    batches = _Batches(x, y, order, step)
    if keras.backend.backend() == "jax":
        history = fit_model.fit(batches, epochs=1, shuffle=False, verbose=0)
        return [float(history.history["loss"][0])]
    return [float(fit_model.train_on_batch(*batches[k])) for k in range(len(batches))]


def train_segmentation(
    model: keras.Model,
    x_train,
    m_train,
    x_val,
    m_val,
    epochs: int = 6,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> SegmentationResult:
    """Fit a U-Net with Adam on BCE + soft Dice and keep the epoch with the best mean validation Dice (ties: the earliest).

    ``x_*``: uint8 images (N, H, W[, 1]) or floats in [0, 1]; ``m_*``: binary masks (N, H, W) of the same size. Both
    are resized to the model's input size (:func:`resize_images`, :func:`resize_masks`) when they differ. Every epoch
    takes the full batches of a permutation seeded by ``(seed, epoch)`` (the fewer than ``batch_size`` left over
    change from epoch to epoch), so each backend compiles one training step; validation Dice is computed at the
    model's size on masks thresholded at 0.5. Returns a :class:`SegmentationResult` whose model (uncompiled) holds
    the kept epoch's weights.
    References: Ronneberger, Fischer & Brox 2015 (U-Net); Milletari, Navab & Ahmadi 2016 (soft Dice loss).
    """
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_seed(seed)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    size = _model_size(model)
    x_train, m_train = _pairs(x_train, m_train, size, "training")
    x_val, m_val = _pairs(x_val, m_val, size, "validation")
    t_start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    x_fit = x_train if x_train.dtype == np.uint8 else to_unit_range(x_train, "training images")
    n = len(x_fit)
    step = min(batch_size, n)
    # A functional twin sharing every layer: compiling it leaves the U-Net itself uncompiled.
    fit_model = keras.Model(model.inputs, model.outputs, name=f"{model.name}_fit")
    fit_model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(learning_rate)), loss=bce_dice_loss)
    rows, best, best_weights, best_epoch = [], -np.inf, None, 1
    bar = tqdm(range(1, epochs + 1), desc=f"training {model.name}", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        losses = _train_epoch(fit_model, x_fit, m_train, perm[: (n // step) * step], step)
        val = predict(model, x_val, batch_size=step)[..., 0] >= 0.5
        row = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "val_dice": defined_mean(dice(val, m_val)),
            "val_iou": defined_mean(iou(val, m_val)),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        score = -1.0 if np.isnan(row["val_dice"]) else row["val_dice"]  # undefined: every mask empty
        if score > best:
            best, best_epoch = score, epoch
            best_weights = [np.array(w) for w in model.get_weights()]
        bar.set_postfix(loss=f"{row['loss']:.3f}", val_dice=f"{row['val_dice']:.3f}", best=best_epoch)
    model.set_weights(best_weights)
    timings = {"fit_s": time.perf_counter() - t_start}
    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": float(learning_rate),
        "seed": seed,
        "segmentation_size": size,
        "loss": "binary cross-entropy + soft Dice",
        "criterion": "mean validation Dice (threshold 0.5)",
        "train_size": int(n),
        "val_size": int(len(x_val)),
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }
    return SegmentationResult(model, pd.DataFrame(rows), int(best_epoch), timings, settings)


#: Images whose probabilities :func:`predict_masks` holds at once (rounded to whole batches).
_THRESHOLD_CHUNK = 512


def predict_masks(model, images, batch_size: int = 64, threshold: float = 0.5, output_size: int | None = None):
    """Binary lung masks uint8 0/1 (N, H, W) of images (N, H, W[, 1]) (uint8, or floats in [0, 1]).

    Images are resized to the model's input size (area interpolation) when they differ; the masks (probability >=
    ``threshold``) come back at ``output_size`` (default: the images' size), resized with nearest neighbour.
    """
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    arr = np.asarray(images)
    if arr.ndim not in (3, 4):
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, 1), got {arr.shape}")
    out_size = int(arr.shape[1]) if output_size is None else check_int("output_size", output_size, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    x = resize_images(arr, _model_size(model))
    if x.dtype != np.uint8:
        x = to_unit_range(x)
    masks = np.empty(x.shape[:3], dtype=np.uint8)
    step = batch_size * max(1, _THRESHOLD_CHUNK // batch_size)  # whole batches: the same compiled forward
    for start in range(0, len(x), step):  # thresholded a chunk at a time: the probabilities are never all in memory
        probabilities = predict(model, x[start : start + step], batch_size=batch_size)
        masks[start : start + step] = probabilities[..., 0] >= float(threshold)
    return resize_masks(masks, out_size) if masks.shape[1] != out_size else masks


# --------------------------------------------------------------------------------------------------
# Masking the classifier's input
# --------------------------------------------------------------------------------------------------


def disk(radius: int) -> np.ndarray:
    """The disk structuring element {(dy, dx): dy² + dx² <= radius²} as uint8 (2 radius + 1, 2 radius + 1)."""
    radius = check_int("radius", radius, 0)
    d = np.arange(-radius, radius + 1)
    return (d[:, None] ** 2 + d[None, :] ** 2 <= radius**2).astype(np.uint8)


def dilate_masks(masks, margin: int) -> np.ndarray:
    """Binary masks (N, H, W) dilated by ``margin`` pixels with a disk (:func:`disk`, cv2): uint8 0/1."""
    margin = check_int("margin", margin, 0)
    arr = _binary(masks, "masks").astype(np.uint8)
    if margin == 0:
        return arr
    kernel = disk(margin)
    out = np.empty_like(arr)

    def dilate(i: int) -> None:
        out[i] = cv2.dilate(arr[i], kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)

    each_index(dilate, len(arr))
    return out


def apply_input_mask(images, masks, margin: int = 4, fill=DEFAULT_FILL) -> np.ndarray:
    """Images (N, H, W[, 1]) uint8 with every pixel outside the mask dilated by ``margin`` pixels set to ``fill``.

    ``fill`` is a constant grey level (default :data:`DEFAULT_FILL`, mid-grey 128), the same for every image: the
    area outside the lungs then carries no information about the image, so a classifier cannot read its class
    there. A per-image statistic (such as the mean inside the lungs, which the opacities of a disease raise) would
    spread a class-dependent brightness over the whole background and hand the classifier exactly the shortcut
    masking is meant to remove. Only the shape of the mask itself is left outside the lungs. Another constant (e.g.
    the training images' mean grey level) can be passed as any number in [0, 255]. The margin keeps the lung borders (and a mask that is slightly too
    small) in view. An all-ones mask returns the images unchanged; the output has the images' shape.
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0-255), got dtype {arr.dtype}")
    squeeze = arr.ndim == 3
    if arr.ndim == 4 and arr.shape[-1] != 1 or arr.ndim not in (3, 4):
        raise ValueError(f"images must be grayscale (N, H, W) or (N, H, W, 1), got shape {arr.shape}")
    keep = dilate_masks(masks, margin).astype(bool)
    if keep.shape != arr.shape[:3]:
        raise ValueError(f"masks {keep.shape} must match the images {arr.shape[:3]} (resize them with resize_masks)")
    if isinstance(fill, bool) or not isinstance(fill, (int, float, np.integer, np.floating)) or not 0 <= fill <= 255:
        raise ValueError(f"fill must be a grey level in [0, 255], got {fill!r}")
    value = np.uint8(int(round(float(fill))))
    out = arr.copy()
    view = out if squeeze else out[..., 0]
    view[~keep] = value
    return out


# --------------------------------------------------------------------------------------------------
# Summary with intervals
# --------------------------------------------------------------------------------------------------


def segmentation_summary(
    dice_values,
    iou_values,
    labels,
    class_names: Sequence[str] = config.CLASS_NAMES,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Mean Dice and IoU per class and over all images, each with a percentile bootstrap interval.

    ``dice_values``, ``iou_values``: per test image (N,); ``labels``: class indices (N,). The images are resampled
    within each class (:func:`helpers.metrics.intervals.stratified_bootstrap_indices`), the same draws for Dice and IoU; a
    class's interval resamples its own images. Returns ``{"classes": {name: {"n", "dice", "iou"}}, "all": {...},
    "n_boot", "seed", "level", "method"}`` with ``{"estimate", "low", "high"}`` entries (None for an absent class).
    Images whose Dice or IoU is undefined (NaN: both masks empty) are left out and counted as ``"undefined"`` in
    their entries (a key present only when there are any); ``n`` counts the images scored.
    References: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile interval).
    """
    values = {"dice": np.asarray(dice_values, np.float64), "iou": np.asarray(iou_values, np.float64)}
    labels = np.asarray(labels, np.int64)
    if any(v.shape != labels.shape for v in values.values()) or labels.ndim != 1 or labels.size == 0:
        raise ValueError(
            f"dice {values['dice'].shape}, iou {values['iou'].shape} and labels {labels.shape} must be equal (N,), N > 0"
        )
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(f"labels must be class indices in [0, {len(class_names)}), got {np.unique(labels)}")
    undefined = np.isnan(values["dice"]) | np.isnan(values["iou"])
    values, scored = {k: v[~undefined] for k, v in values.items()}, labels[~undefined]
    draws = stratified_bootstrap_indices(scored, n_boot, seed) if scored.size else None
    alpha = (1.0 - level) / 2.0

    def entry(v: np.ndarray, members: np.ndarray) -> dict | None:
        if not members.size:
            return None
        boot = v[draws[:, members]].mean(axis=1)
        low, high = np.quantile(boot, [alpha, 1.0 - alpha])
        return {"estimate": float(v[members].mean()), "low": float(low), "high": float(high)}

    def counted(members: np.ndarray, left_out: int) -> dict:
        entries = {k: entry(v, members) for k, v in values.items()}
        return {"n": int(members.size), **entries, **({"undefined": left_out} if left_out else {})}

    classes = {
        name: counted(np.flatnonzero(scored == c), int(undefined[labels == c].sum()))
        for c, name in enumerate(class_names)
    }
    return {
        "classes": classes,
        "all": counted(np.arange(scored.size), int(undefined.sum())),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": level,
        "method": "percentile bootstrap of the mean, test images resampled within each true class",
    }
