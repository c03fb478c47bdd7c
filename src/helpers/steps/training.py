"""Notebooks 03 and 04 in one call: :func:`train_and_report` trains a classifier and returns its tables, text and figure."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from helpers.common import config
from helpers.report import figures
from helpers.report.describe import device_line
from helpers.study import files as study


@dataclass
class TrainingReport:
    """What a training notebook shows: the files written, tables, the recall figure and text lines."""

    paths: study.StudyPaths
    result: object  # helpers.models.training.TrainingResult
    files: dict
    split_table: pd.DataFrame
    history_table: pd.DataFrame
    figure: object  # matplotlib Figure (closed: display it with IPython.display.display)
    setup_text: str
    model_text: str
    training_text: str
    kept_epoch_text: str


def train_and_report(
    profile: str,
    work_dir: str,
    report_dir: str,
    seed: int,
    image_size: int,
    model_name: str,
    backbone: str,
    weights,
    freeze_backbone: bool,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    use_feature_cache: bool,
    mixed_precision: bool | str = False,
    sampling: str = "downsample",
    input_mask: str = "none",
    mask_margin: int = 0,
) -> TrainingReport:
    """Train one model slot on the split of notebook 01 and write its files, training metrics and recall figure.

    Builds the classifier (:func:`helpers.models.classifiers.build_classifier`), trains it keeping the epoch with the best mean
    validation recall of the disease classes (:func:`helpers.models.training.train_classifier`), writes the model, history
    and training JSON (:func:`helpers.study.files.save_training`), ``metrics/training_<model_name>.json`` and the recall
    figure (Figure 2 for the ``vgg16`` slot, 3 for ``densenet201``). ``sampling`` is the class-imbalance strategy
    (:data:`helpers.models.training.SAMPLINGS`; ``"downsample"`` trains on notebook 01's split as it is). ``input_mask="lung"``
    trains on the images reduced to notebook 02's predicted lungs (:func:`helpers.study.files.load_split`).
    References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (training protocol, Figures 2-3).
    """
    import keras

    from helpers.models import classifiers as models
    from helpers.models import training

    paths = study.study_paths(profile, work_dir, report_dir)
    keras.utils.set_random_seed(seed)
    gpus = training.enable_gpu_memory_growth()
    policy = training.configure_precision(mixed_precision)
    setup_text = (
        f"{device_line()}\n"
        f"profile {profile}: {model_name} slot with backbone {backbone!r}, backend {keras.backend.backend()}, "
        f"dtype policy {policy}, GPUs with memory growth: {gpus or 'none'}"
    )
    masking = {"input_mask": input_mask, "mask_margin": mask_margin}
    x_train, y_train = study.load_split(paths, "train", image_size, **masking)
    x_val, y_val = study.load_split(paths, "val", image_size, **masking)
    split_table = pd.DataFrame(
        {
            "train": pd.Series(y_train).value_counts().sort_index().to_numpy(),
            "validation": pd.Series(y_val).value_counts().sort_index().to_numpy(),
        },
        index=config.CLASS_NAMES,
    )
    model = models.build_classifier(
        backbone,
        image_size,
        num_classes=len(config.CLASS_NAMES),
        weights=weights,
        freeze_backbone=freeze_backbone,
        seed=seed,
    )
    counts = models.parameter_counts(model)
    feature_shape = model.get_layer(models.feature_layer_name(model)).output.shape[1:]
    model_text = (
        f"feature map {tuple(feature_shape)}, head pooling {model.get_layer('head_pool').pool_size}\n"
        f"parameters: {counts['total']:,} in total, {counts['trainable']:,} trainable"
    )
    result = training.train_classifier(
        model,
        x_train,
        y_train,
        x_val,
        y_val,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        use_feature_cache=use_feature_cache,
        sampling=sampling,
    )
    files = study.save_training(
        result,
        paths,
        model_name,
        backbone=backbone,
        weights=None if weights is None else str(weights),
        freeze_backbone=freeze_backbone,
        image_size=image_size,
        **masking,
    )
    # metrics hold results only; wall times stay in the model folder's training JSON
    info = {k: v for k, v in result.info().items() if k != "timings"}
    study.save_metrics_file(
        paths,
        "training",
        {
            "model_name": model_name,
            "backbone": backbone,
            "weights": None if weights is None else str(weights),
            "freeze_backbone": freeze_backbone,
            **masking,
            **info,
        },
        model_name,
    )
    t = result.timings
    training_text = (
        f"trained in {t['total_s']:.1f} s (backbone features {t['features_s']:.1f} s, fitting {t['fit_s']:.1f} s; "
        f"feature cache {'on' if result.settings['feature_cache'] else 'off'}); saved {files['model'].name}"
    )
    shown = ["epoch", "loss", "val_loss", *[training.recall_column("val", c) for c in config.CLASS_NAMES]]
    history_table = result.history[[*shown, training.CRITERION_COLUMN]].round(3)
    label = figures.SLOT_LABELS.get(model_name, model_name)
    fig = figures.plot_recall_history(
        result.history,
        config.CLASS_NAMES,
        chosen_epoch=result.chosen_epoch,
        title=f"{label} ({backbone}): recall per class and epoch",
    )
    figures.save_figure(fig, paths.figures, figures.recall_history_figure(model_name)[1])
    figures.closed(fig)  # shown where the notebook displays it, not at the end of the training cell
    lines = [f"{model_name}: kept epoch {result.chosen_epoch} of {len(result.history)}"]
    for name in config.CLASS_NAMES:
        marker = "" if name in config.DISEASE_CLASSES else "  (not in the criterion)"
        lines.append(f"  validation recall {name:<16} {result.val_recalls[name]:.2f}{marker}")
    lines.append(f"  mean over the disease classes  {result.chosen_row[training.CRITERION_COLUMN]:.3f}")
    return TrainingReport(
        paths, result, files, split_table, history_table, fig, setup_text, model_text, training_text, "\n".join(lines)
    )
