"""The study's classifiers: an ImageNet backbone (or a small demo backbone) and the paper's head.

Every classifier has the same layout (see ``docs/ARCHITECTURE.md``)::

    image in [0, 1], (H, W, 1)
      -> "to_rgb"        GrayscaleToRGB: one channel repeated three times
      -> "normalize"     BackboneNormalization: the backbone's own input normalization
      -> "backbone"      nested keras.Model, its output is the feature map (Grad-CAM's target)
      -> "head_pool"     MaxPooling2D(p, p), p = head_pool_size(grid)
      -> "head_flatten"  Flatten
      -> "head_dense"    Dense(64, relu)
      -> "logits"        Dense(num_classes), the pre-softmax class scores
      -> "probabilities" Softmax

The preprocessing layers are registered Keras layers with ``get_config`` (no ``Lambda``), so a saved
``.keras`` file reloads with ``keras.models.load_model(path, safe_mode=True)``.

Backbones:

* ``vgg16``: ``keras.applications.VGG16`` without its top; output ``block5_pool`` (9x9x512 at 299 px);
  normalization ``caffe`` (RGB->BGR, 0-255 scale, minus the ImageNet mean pixel).
* ``densenet201``: ``keras.applications.DenseNet201`` without its top; output ``relu`` (9x9x1920 at 299 px);
  normalization ``torch`` (0-1 scale, minus the ImageNet mean, divided by the ImageNet std).
* ``small_vgg``: VGG-style 3x3 convolution blocks, each followed by 2x2 max pooling, four blocks
  (stride 16: 96 px -> 6x6 grid); trained from scratch; normalization ``tf`` (scale to [-1, 1]).
* ``small_densenet``: a stride-2 stem convolution, dense blocks (BN-ReLU-Conv3x3 layers whose outputs are
  concatenated) and transitions (BN-ReLU-Conv1x1 compression, 2x2 average pooling), stride 16, ending in
  BN-ReLU like DenseNet; trained from scratch; normalization ``tf``.

With the paper's head at 299x299 the parameter counts are exactly the paper's: VGG16 14,846,084 in
total / 131,396 trainable, DenseNet201 18,813,828 / 491,844 (backbone frozen).

References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images"; Simonyan & Zisserman 2015
(VGG); Huang et al. 2017 (DenseNet).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from helpers.backend.graph import split_at
from helpers.backend.initializers import host_initializers, restore_initializers
from helpers.backend.transfer import to_device
from helpers.common import config
from helpers.common.checks import check_int
from helpers.common.choices import BACKBONES, MIN_IMAGE_SIZE, PAPER_BACKBONES
from helpers.common.seeds import seed_stream

#: Input normalization of each backbone (see :class:`BackboneNormalization`).
NORMALIZATION: dict[str, str] = {"vgg16": "caffe", "densenet201": "torch", "small_vgg": "tf", "small_densenet": "tf"}
#: Units of the head's hidden Dense layer (the paper's 64).
HEAD_UNITS = 64
#: The paper's head pooling size (at its 9x9 grid).
PAPER_POOL_SIZE = 4

# ImageNet statistics used by keras.applications' preprocess_input.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------------
# Preprocessing layers
# --------------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="helpers")
class GrayscaleToRGB(layers.Layer):
    """Repeat a single-channel image into three identical channels (a no-op on three channels)."""

    def call(self, inputs):
        """Return the input with its last axis repeated to three channels."""
        if inputs.shape[-1] == 3:
            return inputs
        return ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        """Same shape with three channels."""
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package="helpers")
class BackboneNormalization(layers.Layer):
    """Map RGB images in [0, 1] to a backbone's expected input, as ``keras.applications`` preprocess_input does.

    Modes: ``caffe`` (VGG16: RGB->BGR, scale to 0-255, subtract the ImageNet mean pixel), ``torch``
    (DenseNet: subtract the ImageNet mean and divide by its std on a 0-1 scale), ``tf`` (scale to [-1, 1]).
    """

    MODES = ("caffe", "torch", "tf")

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"BackboneNormalization mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        """Normalize a batch of RGB images in [0, 1]."""
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1) * 255.0
            return x - ops.cast(ops.convert_to_tensor(_CAFFE_MEAN_BGR), x.dtype)
        if self.mode == "torch":
            mean = ops.cast(ops.convert_to_tensor(_TORCH_MEAN_RGB), x.dtype)
            std = ops.cast(ops.convert_to_tensor(_TORCH_STD_RGB), x.dtype)
            return (x - mean) / std
        return x * 2.0 - 1.0

    def compute_output_shape(self, input_shape):
        """Unchanged shape."""
        return input_shape

    def get_config(self):
        """Serializable configuration (the mode)."""
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="helpers")
class SeededUniform(keras.initializers.Initializer):
    """Variance-scaling uniform initializer drawn with NumPy's seeded generator: the same values on every backend.

    ``limit = sqrt(3 * scale / n)`` with ``n`` the fan-in (``mode="fan_in"``, He uniform with ``scale=2``) or the
    mean of fan-in and fan-out (``mode="fan_avg"``, Glorot uniform with ``scale=1``). Drawing on the host also
    avoids compiling one random kernel per weight shape on the JAX backend.

    References: He et al. 2015 (fan-in scaling); Glorot & Bengio 2010 (fan-average scaling).
    """

    def __init__(self, scale: float = 1.0, mode: str = "fan_avg", seed: int | None = None):
        if mode not in ("fan_in", "fan_avg"):
            raise ValueError(f"mode must be 'fan_in' or 'fan_avg', got {mode!r}")
        self.scale, self.mode, self.seed = float(scale), mode, seed

    def __call__(self, shape, dtype=None):
        """Draw a tensor of ``shape``."""
        shape = tuple(int(d) for d in shape)
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in = shape[-2] * receptive if len(shape) >= 2 else shape[0]
        fan_out = shape[-1] * receptive
        n = fan_in if self.mode == "fan_in" else (fan_in + fan_out) / 2.0
        limit = np.sqrt(3.0 * self.scale / max(n, 1.0))
        values = np.random.default_rng(self.seed).uniform(-limit, limit, size=shape)
        return to_device(values.astype(keras.backend.standardize_dtype(dtype or "float32")))

    def get_config(self):
        """Serializable configuration."""
        return {"scale": self.scale, "mode": self.mode, "seed": self.seed}


CUSTOM_OBJECTS = {
    "GrayscaleToRGB": GrayscaleToRGB,
    "BackboneNormalization": BackboneNormalization,
    "SeededUniform": SeededUniform,
}


# --------------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------------


def _small_vgg(input_shape, seed: int | None) -> keras.Model:
    """VGG-style backbone: four blocks of 3x3 ReLU convolutions + 2x2 max pooling (stride 16)."""
    blocks = ((16, 1), (32, 1), (48, 2), (64, 2))
    next_seed = seed_stream(seed, 1)
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for b, (filters, convs) in enumerate(blocks, start=1):
        for c in range(1, convs + 1):
            init = SeededUniform(1.0, "fan_avg", next_seed())
            x = layers.Conv2D(
                filters, 3, padding="same", activation="relu", kernel_initializer=init, name=f"block{b}_conv{c}"
            )(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return keras.Model(inputs, x, name=config.FEATURE_LAYER)


def _small_densenet(input_shape, seed: int | None) -> keras.Model:
    """DenseNet-style backbone: stem conv (stride 2), three dense blocks with transitions, a final dense block, BN-ReLU (stride 16)."""
    growth, layers_per_block, stem = 12, (2, 2, 2, 2), 16
    next_seed = seed_stream(seed, 2)

    def init():
        return SeededUniform(2.0, "fan_in", next_seed())

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(stem, 3, strides=2, padding="same", use_bias=False, kernel_initializer=init(), name="stem_conv")(
        inputs
    )
    for b, n_layers in enumerate(layers_per_block, start=1):
        for i in range(1, n_layers + 1):
            y = layers.BatchNormalization(name=f"block{b}_{i}_bn")(x)
            y = layers.Activation("relu", name=f"block{b}_{i}_relu")(y)
            y = layers.Conv2D(
                growth, 3, padding="same", use_bias=False, kernel_initializer=init(), name=f"block{b}_{i}_conv"
            )(y)
            x = layers.Concatenate(name=f"block{b}_{i}_concat")([x, y])
        if b < len(layers_per_block):
            channels = int(x.shape[-1]) // 2
            x = layers.BatchNormalization(name=f"transition{b}_bn")(x)
            x = layers.Activation("relu", name=f"transition{b}_relu")(x)
            x = layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=init(), name=f"transition{b}_conv")(x)
            x = layers.AveragePooling2D(2, name=f"transition{b}_pool")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    return keras.Model(inputs, x, name=config.FEATURE_LAYER)


def _weights_path(weights) -> Path | None:
    """Return ``weights`` as an existing file path, None for ``None``/``"imagenet"``; raise for a missing file."""
    if weights is None or (isinstance(weights, str) and weights == "imagenet"):
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be 'imagenet', None or a path to a weights file, got {type(weights).__name__}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist (weights must be 'imagenet', None, or a path to a backbone weights file)"
        )
    return path


def build_backbone(backbone: str, image_size: int = 299, weights="imagenet", seed: int | None = None) -> keras.Model:
    """Build the named backbone (RGB input, no top) as a keras.Model named ``backbone``; see :func:`build_classifier` for ``weights``."""
    _check_backbone(backbone)
    _check_image_size(backbone, image_size)
    path = _weights_path(weights)
    shape = (int(image_size), int(image_size), 3)
    if backbone in PAPER_BACKBONES:
        if weights == "imagenet" and path is None:
            keras_weights = "imagenet"
        else:
            keras_weights = None
        app = keras.applications.VGG16 if backbone == "vgg16" else keras.applications.DenseNet201
        with host_initializers(seed):
            model = app(include_top=False, weights=keras_weights, input_shape=shape)
        restore_initializers(model)
        model.name = config.FEATURE_LAYER
    elif backbone == "small_vgg":
        if weights == "imagenet":
            raise ValueError("backbone 'small_vgg' has no ImageNet weights: use weights=None or a weights file")
        model = _small_vgg(shape, seed)
    else:
        if weights == "imagenet":
            raise ValueError("backbone 'small_densenet' has no ImageNet weights: use weights=None or a weights file")
        model = _small_densenet(shape, seed)
    if path is not None:
        try:
            model.load_weights(str(path))
        except Exception as exc:  # name the file and the expected content
            raise ValueError(
                f"could not load backbone weights from {path} into {backbone!r} at {image_size} px: {exc}. "
                "Expected a backbone weights file: the '*_notop.h5' file keras.applications downloads, or a "
                "'.weights.h5' written by model.get_layer('backbone').save_weights(...)."
            ) from exc
    return model


# --------------------------------------------------------------------------------------------------
# Classifier
# --------------------------------------------------------------------------------------------------


def head_pool_size(grid: int) -> int:
    """Pooling size of the head for a feature grid side: ``max(1, min(4, grid // 2))`` (4 at the paper's 9x9 grid, 3 at 6x6, 1 at 2x2)."""
    return max(1, min(PAPER_POOL_SIZE, int(grid) // 2))


def _check_backbone(backbone) -> None:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")


def _check_image_size(backbone: str, image_size) -> None:
    check_int("image_size", image_size, 1, type_error=TypeError)
    minimum = MIN_IMAGE_SIZE[backbone]
    if image_size < minimum:
        raise ValueError(
            f"image_size={image_size} is too small for backbone {backbone!r}: it needs at least {minimum} px "
            f"(its feature grid would be empty)"
        )


def build_classifier(
    backbone: str,
    image_size: int = 299,
    num_classes: int = 4,
    weights="imagenet",
    freeze_backbone: bool = True,
    seed: int | None = None,
) -> keras.Model:
    """Build the study's classifier: images (H, W, 1) in [0, 1] -> class probabilities (see the module docstring).

    ``backbone``: one of :data:`BACKBONES`. ``weights``: ``"imagenet"`` (keras.applications downloads them;
    paper backbones only), ``None`` (random initialization), or a path to a *backbone* weights file: the
    ``*_notop.h5`` file keras.applications downloads (e.g. ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``,
    for offline machines) or a ``.weights.h5`` written by ``model.get_layer("backbone").save_weights(path)``.
    The head is always freshly initialized. ``freeze_backbone`` makes the backbone non-trainable (its
    BatchNormalization layers then run in inference mode). ``seed`` seeds Keras, NumPy and Python
    (``keras.utils.set_random_seed``) and the initializers, so the same seed builds the same weights; the head
    and the small backbones use :class:`SeededUniform`, whose draws are the same on every backend.
    """
    _check_backbone(backbone)
    _check_image_size(backbone, image_size)
    check_int("num_classes", num_classes, 2)
    _weights_path(weights)  # fail on a missing file before building anything
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    image_size = int(image_size)

    with host_initializers(seed):
        base = build_backbone(backbone, image_size, weights=weights, seed=seed)
        base.trainable = not freeze_backbone
        grid = int(base.output.shape[1])
        pool = head_pool_size(grid)

        next_seed = seed_stream(seed, 3)

        def init():
            return SeededUniform(1.0, "fan_avg", next_seed())

        inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
        x = GrayscaleToRGB(name="to_rgb")(inputs)
        x = BackboneNormalization(NORMALIZATION[backbone], name="normalize")(x)
        x = base(x)
        x = layers.MaxPooling2D(pool_size=pool, strides=pool, name="head_pool")(x)
        x = layers.Flatten(name="head_flatten")(x)
        x = layers.Dense(HEAD_UNITS, activation="relu", kernel_initializer=init(), name="head_dense")(x)
        x = layers.Dense(int(num_classes), kernel_initializer=init(), dtype="float32", name=config.LOGITS_LAYER)(x)
        outputs = layers.Softmax(dtype="float32", name=config.PROBABILITIES_LAYER)(x)
        model = keras.Model(inputs, outputs, name=f"{backbone}_classifier")
    restore_initializers(model)
    return model


def feature_layer_name(model: keras.Model) -> str:
    """Name of the classifier's feature-map layer (the nested backbone, ``config.FEATURE_LAYER``); raises if absent."""
    try:
        model.get_layer(config.FEATURE_LAYER)
    except ValueError as exc:
        raise ValueError(
            f"model {model.name!r} has no layer named {config.FEATURE_LAYER!r}: build it with helpers.models.classifiers.build_classifier"
        ) from exc
    return config.FEATURE_LAYER


def split_classifier(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Return ``(feature_model, head_model)`` sharing the classifier's layers (and so its weights).

    ``feature_model``: images (H, W, 1) in [0, 1] -> the backbone's feature map.
    ``head_model``: a feature map -> the pre-softmax class scores (the ``logits`` layer).
    """
    split = split_at(model, feature_layer_name(model))
    return split.feature_model, split.head_model


def head_probability_model(model: keras.Model) -> keras.Model:
    """Feature map -> class probabilities, sharing the classifier's head layers (used to train the head on cached features)."""
    split = split_at(model, feature_layer_name(model))
    return keras.Model(split.feature_tensor, model.outputs[0], name="head_probability_model")


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts of a model."""
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    non_trainable = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


def load_classifier(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Load a saved classifier (``.keras``) in Keras safe mode with the study's custom layers registered."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the training notebook (03 or 04) that writes it first")
    import zipfile

    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ValueError(
            f"{path} is not a complete .keras file (truncated or corrupt): rerun the notebook that wrote it"
        )
    with host_initializers(seed=0):  # the saved weights replace these values: draw them without compiling
        model = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=compile, safe_mode=True)
    restore_initializers(model)
    return model
