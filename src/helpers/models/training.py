"""Training with per-class recall history and best-epoch selection (saving and loading: :mod:`helpers.study.files`).

The classifier is fit with Adam and categorical cross-entropy, one shuffled pass over the training set per
epoch (a seeded permutation, partial last batch included). After every epoch the history records the
training loss and the per-class training recall (running over the epoch's batches, as Keras reports
training metrics), and the validation loss and per-class validation recall at the epoch's end. The chosen
epoch maximizes the mean validation recall over ``config.DISEASE_CLASSES`` (ties: the earliest), and its
weights are restored.

Class imbalance (``sampling``): ``"downsample"`` (the paper) trains on the split as it is, every example weighing the
same; ``"class_weight"`` weights each example's loss by the inverse frequency of its class in the training split
(``N / (K n_c)``, mean weight 1; Keras's ``sample_weight``, so a batch's loss is the weighted sum over its size);
``"oversample"`` adds, every epoch, a seeded draw with replacement from each smaller class up to the largest
class's count, then shuffles the lot. Both are supported by the compiled head epochs too.

Fast path: when the backbone is frozen and no augmentation is asked for, the backbone's output for each
image never changes, so the features are computed once and the head is fit on them. Its batches, shuffling
order, initial weights and optimizer are those of fitting the whole frozen model, so both give the same
history and weights up to float round-off (``use_feature_cache=False`` runs the whole model every batch). On the
JAX backend each epoch of this head training is one compiled call (every batch's Adam step in a ``lax.scan``, the
validation forward at its end): the same updates as ``train_on_batch``, without a host round trip per batch.

References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (training protocol and checkpoint
criterion); Kingma & Ba 2015 (Adam).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import keras
import numpy as np
import pandas as pd
from keras import ops

from helpers.backend.device import predict_batches
from helpers.common import config
from helpers.common.checks import check_int, check_unit_range, to_unit_range
from helpers.common.choices import SAMPLINGS
from helpers.common.progress import tqdm
from helpers.models.classifiers import head_probability_model, parameter_counts, split_classifier

__all__ = [
    "CRITERION_COLUMN",
    "recall_column",
    "ClassCount",
    "TrainingResult",
    "configure_precision",
    "enable_gpu_memory_growth",
    "per_class_recall",
    "SAMPLINGS",
    "inverse_frequency_weights",
    "oversampled_indices",
    "train_classifier",
]


def recall_column(split: str, class_name: str) -> str:
    """History column of one class's recall: ``train_recall_<class>`` or ``val_recall_<class>``."""
    return f"{split}_recall_{class_name}"


#: History column of the checkpoint criterion (mean validation recall of the disease classes).
CRITERION_COLUMN = "val_mean_disease_recall"


@keras.saving.register_keras_serializable(package="helpers")
class ClassCount(keras.metrics.Metric):
    """Count of one class's examples (``kind="examples"``) or of its correct arg-max predictions (``kind="hits"``).

    ``train_on_batch`` resets metrics every call, so the training loop sums these per-batch counts
    itself to get the running recall of the epoch.
    """

    def __init__(self, class_id: int, kind: str = "hits", name: str | None = None, **kwargs):
        if kind not in ("hits", "examples"):
            raise ValueError(f"kind must be 'hits' or 'examples', got {kind!r}")
        super().__init__(name=name or f"{kind}_{class_id}", **kwargs)
        self.class_id, self.kind = int(class_id), kind
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add the batch's count from one-hot labels and scores."""
        true = ops.argmax(y_true, axis=-1)
        counted = ops.cast(ops.equal(true, self.class_id), "float32")
        if self.kind == "hits":
            counted = counted * ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), self.class_id), "float32")
        self.total.assign_add(ops.sum(counted))

    def result(self):
        """The count so far."""
        return ops.convert_to_tensor(self.total)

    def reset_state(self):
        """Zero the count."""
        self.total.assign(0.0)

    def get_config(self):
        """Serializable configuration."""
        return {**super().get_config(), "class_id": self.class_id, "kind": self.kind}


@dataclass
class TrainingResult:
    """A trained classifier (chosen epoch's weights), its per-epoch history, the chosen epoch and timings."""

    model: keras.Model
    history: pd.DataFrame
    chosen_epoch: int
    val_recalls: dict[str, float]
    timings: dict[str, float]
    settings: dict = field(default_factory=dict)

    @property
    def chosen_row(self) -> pd.Series:
        """History row of the chosen epoch."""
        return self.history.loc[self.history["epoch"] == self.chosen_epoch].iloc[0]

    def info(self) -> dict:
        """JSON-ready summary: chosen epoch, its validation recalls, parameter counts, timings, settings."""
        row = self.chosen_row
        return {
            "chosen_epoch": int(self.chosen_epoch),
            "val_recalls": {k: float(v) for k, v in self.val_recalls.items()},
            "val_mean_disease_recall": float(row[CRITERION_COLUMN]),
            "val_loss": float(row["val_loss"]),
            "epochs": int(len(self.history)),
            "parameters": parameter_counts(self.model),
            "timings": {k: float(v) for k, v in self.timings.items()},
            "settings": self.settings,
        }


# --------------------------------------------------------------------------------------------------
# Options a GPU user expects
# --------------------------------------------------------------------------------------------------


def configure_precision(mixed_precision: bool | str = False) -> str:
    """Set Keras's global dtype policy *before building a model*; True means ``mixed_float16``. Returns the policy name."""
    if mixed_precision is True:
        policy = "mixed_float16"
    elif mixed_precision in (False, None, "", "float32"):
        policy = "float32"
    elif mixed_precision in ("mixed_float16", "mixed_bfloat16"):
        policy = mixed_precision
    else:
        raise ValueError(
            f"mixed_precision must be True, False, 'mixed_float16' or 'mixed_bfloat16', got {mixed_precision!r}"
        )
    keras.config.set_dtype_policy(policy)
    return policy


def enable_gpu_memory_growth() -> list[str]:
    """On the TensorFlow backend, let TensorFlow grow GPU memory on demand; returns the GPUs set (empty elsewhere)."""
    if keras.backend.backend() != "tensorflow":
        return []
    import tensorflow as tf

    done = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            done.append(gpu.name)
        except RuntimeError:  # GPUs already initialized: the setting can no longer change
            pass
    return done


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _as_labels(y, n_classes: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != n_classes:
            raise ValueError(f"{name} is one-hot with {y.shape[1]} columns but the model has {n_classes} classes")
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise ValueError(f"{name} must be integer labels (N,) or one-hot (N, C), got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes or not np.all(np.equal(np.mod(y, 1), 0))):
        raise ValueError(f"{name} must hold class indices in [0, {n_classes}), got values {np.unique(y)[:10]}")
    return y.astype(np.int64)


def _check_images(x, model: keras.Model, name: str) -> None:
    shape = tuple(model.input_shape[1:])
    if not hasattr(x, "shape") or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, shape))}), got {getattr(x, 'shape', type(x))}"
        )
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 images (0-255) or floats in [0, 1], got dtype {x.dtype}")
    if x.dtype != np.uint8 and len(x):
        check_unit_range(x, name)


def per_class_recall(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of every class (NaN for a class without examples)."""
    recalls = np.full(n_classes, np.nan)
    for c in range(n_classes):
        mask = labels == c
        if mask.any():
            recalls[c] = float(np.mean(predicted[mask] == c))
    return recalls


def _cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    eps = 1e-7  # Keras's epsilon for categorical cross-entropy on probabilities
    p = np.clip(probabilities[np.arange(len(labels)), labels], eps, 1 - eps)
    return float(-np.mean(np.log(p)))


def inverse_frequency_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class loss weights ``N / (K n_c)`` over the K classes present (0 for an absent class): mean example weight 1."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def oversampled_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every index once, plus a draw with replacement from each smaller class up to the largest class's count (unshuffled)."""
    labels = np.asarray(labels, np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    extra = [
        rng.choice(np.flatnonzero(labels == c), size=int(counts.max() - n), replace=True)
        for c, n in zip(classes, counts)
        if n < counts.max()
    ]
    return np.concatenate([np.arange(len(labels)), *extra]).astype(np.int64)


def _backbone_is_frozen(model: keras.Model) -> bool:
    base = model.get_layer(config.FEATURE_LAYER)
    return not base.trainable or not base.trainable_weights


def compiled_epochs_available(fit_model) -> bool:
    """Whether head epochs run as one compiled call each: the JAX backend, without loss scaling (float16)."""
    return keras.backend.backend() == "jax" and not isinstance(fit_model.optimizer, keras.optimizers.LossScaleOptimizer)


class _CompiledHeadEpochs:
    """One compiled call per epoch of head training on cached features (JAX): every batch's Adam step, the epoch's
    loss and per-class hit counts, and the validation probabilities at its end.

    Batches follow the given permutation, ``batch_size`` at a time; the last, partial batch is padded with
    zero-weight rows, so its loss and gradient are those of its real rows (as ``train_on_batch`` computes them).
    The loss is Keras's categorical cross-entropy on probabilities; the optimizer is the fit model's compiled one
    (``stateless_apply``), so the updates are the ones ``train_on_batch`` makes.
    """

    def __init__(self, fit_model, x_train, y_onehot, x_val, batch_size: int, n_classes: int, class_weights=None):
        import jax
        import jax.numpy as jnp

        self.model, self.batch_size = fit_model, int(batch_size)
        optimizer = fit_model.optimizer
        optimizer.build(fit_model.trainable_variables)
        self.state = (
            [v.value for v in fit_model.trainable_variables],
            [v.value for v in fit_model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        self.x, self.y = jax.device_put(np.asarray(x_train, np.float32)), jax.device_put(y_onehot)
        self.x_val = jax.device_put(np.asarray(x_val, np.float32))
        eps = keras.config.epsilon()
        cw = None if class_weights is None else jnp.asarray(np.asarray(class_weights, np.float32))

        def loss_fn(trainable, non_trainable, xb, yb, wb):
            probs, non_trainable = fit_model.stateless_call(trainable, non_trainable, xb, training=True)
            p = probs / jnp.sum(probs, axis=-1, keepdims=True)
            per_example = -jnp.sum(yb * jnp.log(jnp.clip(p, eps, 1.0 - eps)), axis=-1)
            if cw is not None:  # Keras's sample_weight: weighted sum over the batch's (real) size
                per_example = per_example * (yb @ cw)
            return jnp.sum(per_example * wb) / jnp.sum(wb), (probs, non_trainable)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def epoch(state, x, y, x_val, idx, w):
            def step(carry, batch):
                trainable, non_trainable, opt_vars = carry
                rows, wb = batch
                xb, yb = x[rows], y[rows]
                (loss, (probs, non_trainable)), grads = grad_fn(trainable, non_trainable, xb, yb, wb)
                trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
                onehot_true = yb * wb[:, None]
                hits = jnp.sum(onehot_true * jax.nn.one_hot(jnp.argmax(probs, axis=-1), n_classes), axis=0)
                return (trainable, non_trainable, opt_vars), (loss * jnp.sum(wb), hits, jnp.sum(onehot_true, axis=0))

            state, (losses, hits, examples) = jax.lax.scan(step, state, (idx, w))
            trainable, non_trainable, _ = state
            val_probs, _ = fit_model.stateless_call(trainable, non_trainable, x_val, training=False)
            return state, jnp.sum(losses), jnp.sum(hits, axis=0), jnp.sum(examples, axis=0), val_probs

        self._epoch = jax.jit(epoch)

    def run(self, perm: np.ndarray):
        """Train one epoch over ``perm``; returns (loss sum over examples, hits per class, examples per class, validation probabilities)."""
        n = len(perm)
        n_batches = -(-n // self.batch_size)
        slots = n_batches * self.batch_size
        idx = np.zeros(slots, dtype=np.int32)
        idx[:n] = perm
        w = np.zeros(slots, dtype=np.float32)
        w[:n] = 1.0
        shape = (n_batches, self.batch_size)
        self.state, loss, hits, examples, val_probs = self._epoch(
            self.state, self.x, self.y, self.x_val, idx.reshape(shape), w.reshape(shape)
        )
        return (
            float(loss),
            np.asarray(hits, np.float64),
            np.asarray(examples, np.float64),
            np.asarray(val_probs, np.float32),
        )

    def snapshot(self):
        """The head's current variables (device arrays are immutable: a reference is a copy)."""
        return self.state

    def restore(self, state) -> None:
        """Write a snapshot's variables (and optimizer state) back into the model."""
        trainable, non_trainable, opt_vars = state
        for var, value in zip(self.model.trainable_variables, trainable):
            var.assign(value)
        for var, value in zip(self.model.non_trainable_variables, non_trainable):
            var.assign(value)
        for var, value in zip(self.model.optimizer.variables, opt_vars):
            var.assign(value)


def train_classifier(
    model: keras.Model,
    x_train,
    y_train,
    x_val,
    y_val,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    use_feature_cache: bool = True,
    class_names: Sequence[str] = config.CLASS_NAMES,
    progress: bool = True,
    augment: Callable | None = None,
    feature_batch_size: int | None = None,
    sampling: str = "downsample",
) -> TrainingResult:
    """Fit ``model`` (a :func:`helpers.models.classifiers.build_classifier` model) and keep the epoch with the best disease recall.

    ``x_*``: uint8 images (N, H, W, 1) (scaled to [0, 1] batch by batch) or floats in [0, 1]; ``y_*``: class
    indices (N,) or one-hot. ``augment(batch, rng)``, if given, transforms each float training batch (and
    turns the feature cache off). ``use_feature_cache`` fits the head on backbone features computed once
    when the backbone is frozen. Returns a :class:`TrainingResult` whose model (left uncompiled) holds the
    chosen epoch's weights. ``sampling`` (:data:`SAMPLINGS`): ``"class_weight"`` weights the loss by inverse class
    frequency, ``"oversample"`` resamples the smaller classes every epoch (module docstring).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(map(repr, SAMPLINGS))}, got {sampling!r}")
    class_names = tuple(class_names)
    n_classes = int(model.output_shape[-1])
    if len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names but the model has {n_classes} outputs")
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    _check_images(x_train, model, "x_train")
    _check_images(x_val, model, "x_val")
    y_train = _as_labels(y_train, n_classes, "y_train")
    y_val = _as_labels(y_val, n_classes, "y_val")
    if len(y_train) != len(x_train) or len(y_val) != len(x_val):
        raise ValueError(
            f"images and labels differ in length: x_train {len(x_train)} / y_train {len(y_train)}, "
            f"x_val {len(x_val)} / y_val {len(y_val)}"
        )
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError("x_train and x_val must not be empty")
    disease = [class_names.index(c) for c in config.DISEASE_CLASSES if c in class_names] or list(range(n_classes))
    if not np.isin(y_val, disease).any():
        raise ValueError(
            f"y_val has no example of {', '.join(class_names[c] for c in disease)}: the checkpoint criterion needs them"
        )
    feature_batch_size = int(feature_batch_size or max(batch_size, 64))

    t_start = time.perf_counter()
    keras.utils.set_random_seed(int(seed))
    order_rng = np.random.default_rng(int(seed))
    augment_rng = np.random.default_rng([int(seed), 1])
    oversample_rng = np.random.default_rng([int(seed), 2])
    class_weights = inverse_frequency_weights(y_train, n_classes) if sampling == "class_weight" else None
    fast = bool(use_feature_cache) and augment is None and _backbone_is_frozen(model)

    timings = {"features_s": 0.0}
    if fast:
        split_classifier(model)  # checks the classifier's feature layer
        t0 = time.perf_counter()
        # the classifier's compiled backbone: the same compilation as its predictions and curves at this batch size
        train_inputs = predict_batches(
            model,
            x_train,
            feature_batch_size,
            desc="backbone features (train)" if progress else None,
            output="features",
        )
        val_inputs = predict_batches(
            model, x_val, feature_batch_size, desc="backbone features (val)" if progress else None, output="features"
        )
        timings["features_s"] = time.perf_counter() - t0
        fit_model = head_probability_model(model)
        transform = None
    else:
        train_inputs, val_inputs = x_train, x_val
        # A functional twin sharing every layer: compiling it leaves the classifier itself uncompiled.
        fit_model = keras.Model(model.inputs, model.outputs, name=f"{model.name}_fit")
        transform = to_unit_range

    fit_model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(learning_rate)),
        loss="categorical_crossentropy",
        metrics=[ClassCount(c, kind) for c in range(n_classes) for kind in ("hits", "examples")],
    )
    eye = np.eye(n_classes, dtype=np.float32)
    n = len(train_inputs)
    compiled_epochs = fast and compiled_epochs_available(fit_model)
    if compiled_epochs:
        epoch_runner = _CompiledHeadEpochs(
            fit_model, train_inputs, eye[y_train], val_inputs, batch_size, n_classes, class_weights
        )
    rows, best_score, best_weights, chosen = [], -np.inf, None, 1
    t_fit = time.perf_counter()
    epoch_iter = tqdm(range(1, epochs + 1), desc=f"training {model.name}", disable=not progress)
    for epoch in epoch_iter:
        t0 = time.perf_counter()
        if sampling == "oversample":
            perm = oversampled_indices(y_train, oversample_rng)
            perm = perm[order_rng.permutation(len(perm))]
        else:
            perm = order_rng.permutation(n)
        seen = len(perm)
        if compiled_epochs:
            loss_sum, hits, examples, val_probs = epoch_runner.run(perm)
        else:
            loss_sum, hits, examples = 0.0, np.zeros(n_classes), np.zeros(n_classes)
            for start in range(0, seen, batch_size):
                idx = perm[start : start + batch_size]
                xb = train_inputs[idx]
                if transform is not None:
                    xb = transform(xb)
                if augment is not None:
                    xb = np.asarray(augment(xb, augment_rng), dtype=np.float32)
                weights = None if class_weights is None else class_weights[y_train[idx]]
                logs = fit_model.train_on_batch(xb, eye[y_train[idx]], sample_weight=weights, return_dict=True)
                loss_sum += float(logs["loss"]) * len(idx)  # batch mean loss, weighted by batch size as Keras does
                hits += [float(logs[f"hits_{c}"]) for c in range(n_classes)]
                examples += [float(logs[f"examples_{c}"]) for c in range(n_classes)]
            val_probs = None
        train_recall = np.where(examples > 0, hits / np.maximum(examples, 1), np.nan)
        if val_probs is None:
            val_probs = predict_batches(fit_model, val_inputs, feature_batch_size, transform)
        val_recall = per_class_recall(y_val, val_probs.argmax(axis=1), n_classes)
        row = {"epoch": epoch, "loss": loss_sum / seen, "val_loss": _cross_entropy(val_probs, y_val)}
        for c, name in enumerate(class_names):
            row[recall_column("train", name)] = float(train_recall[c])
        for c, name in enumerate(class_names):
            row[recall_column("val", name)] = float(val_recall[c])
        score = float(np.nanmean(val_recall[disease]))
        row[CRITERION_COLUMN] = score
        row["val_accuracy"] = float(np.mean(val_probs.argmax(axis=1) == y_val))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if score > best_score:
            best_score, chosen = score, epoch
            best_weights = epoch_runner.snapshot() if compiled_epochs else [np.array(w) for w in model.get_weights()]
        epoch_iter.set_postfix(loss=f"{row['loss']:.3f}", val_disease_recall=f"{score:.3f}", best=chosen)
    timings["fit_s"] = time.perf_counter() - t_fit
    if compiled_epochs:
        epoch_runner.restore(best_weights)
    else:
        model.set_weights(best_weights)
    timings["total_s"] = time.perf_counter() - t_start

    history = pd.DataFrame(rows)
    chosen_row = history.iloc[chosen - 1]
    val_recalls = {name: float(chosen_row[recall_column("val", name)]) for name in class_names}
    settings = {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "seed": int(seed),
        "feature_cache": fast,
        "augment": augment is not None,
        "class_names": list(class_names),
        "criterion": f"mean validation recall of {', '.join(class_names[c] for c in disease)}",
        "image_shape": list(model.input_shape[1:]),
        "dtype_policy": keras.config.dtype_policy().name,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "train_size": int(len(x_train)),
        "val_size": int(len(x_val)),
    }
    if sampling != "downsample":  # recorded only when used: the paper's runs keep their files byte for byte
        settings["sampling"] = sampling
        if class_weights is not None:
            settings["class_weights"] = {name: float(w) for name, w in zip(class_names, class_weights)}
    return TrainingResult(model, history, int(chosen), val_recalls, timings, settings)
