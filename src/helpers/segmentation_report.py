"""Notebook 02 in one call: train the lung U-Net, score it on the test split, write the predicted masks and figures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import config, figures, lung_files, study
from .describe import device_line

__all__ = ["SegmentationReport", "segment_and_report", "summary_table", "input_note"]


@dataclass
class SegmentationReport:
    """What notebook 02 shows: files, tables, figures (closed: display them) and text lines."""

    paths: study.StudyPaths
    result: object  # helpers.segmentation.SegmentationResult
    files: dict
    split_table: pd.DataFrame
    history_table: pd.DataFrame
    summary_table: pd.DataFrame
    test_dice: np.ndarray
    figures: dict
    setup_text: str
    model_text: str
    training_text: str


def summary_table(summary: dict) -> pd.DataFrame:
    """Test Dice and IoU per class and over all images, ``estimate [low, high]`` (from :func:`segmentation_summary`)."""
    rows = []
    for name, entry in [*summary["classes"].items(), ("all images", summary["all"])]:
        row = {"class": name, "images": entry["n"]}
        for key in ("dice", "iou"):
            value = entry[key]
            row[f"{key} [95% CI]"] = (
                "–" if value is None else f"{value['estimate']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def _split_masks(paths, split: str, image_size: int, skip_missing_masks: bool):
    """Images, labels, ground-truth lung masks of one split, and which rows have a mask (all unless skipping)."""
    from .dataset import load_masks, masked_rows

    images, labels = study.load_split(paths, split, image_size)
    frame = study.read_manifest(paths.split_manifest)
    part = frame[frame["split"] == split].reset_index(drop=True)
    kept = masked_rows(part, "lung", skip_missing=skip_missing_masks)  # raises, naming them, unless skipping
    has_mask = part["path"].isin(kept["path"]).to_numpy()
    return images, labels, load_masks(kept.reset_index(drop=True), image_size, kind="lung"), has_mask


def segment_and_report(
    profile: str,
    work_dir: str,
    report_dir: str,
    seed: int,
    image_size: int,
    segmentation_size: int,
    unet_filters: int,
    unet_depth: int,
    unet_epochs: int,
    unet_batch_size: int,
    unet_learning_rate: float,
    mask_margin: int = 4,
    n_bootstrap: int = 2000,
    skip_missing_masks: bool = False,
    mixed_precision: bool | str = False,
) -> SegmentationReport:
    """Train the lung U-Net on the training split's lung masks, keep the best validation Dice, write masks and metrics.

    The U-Net works at ``segmentation_size`` (images resized down); its masks are resized to ``image_size`` with
    nearest neighbour and written for every split (:func:`helpers.lung_files.save_lung_masks`), where the classifier
    notebooks read them with ``input_mask="lung"``. Test Dice and IoU are computed at ``image_size`` against the
    dataset's lung masks, per class with bootstrap intervals (``metrics/segmentation.json``). Images without a lung
    mask stop the notebook, naming them, unless ``skip_missing_masks`` (then they are left out of training and
    scoring, counted, and still get a predicted mask). ``mixed_precision`` (as in notebooks 03-04,
    :func:`helpers.training.configure_precision`) builds, trains and runs the U-Net under that dtype policy (its
    output layer stays float32); the previous policy is restored afterwards.
    References: Ronneberger, Fischer & Brox 2015 (U-Net); Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images",
    §4.2 (segment the lungs before classification).
    """
    import keras
    import matplotlib.pyplot as plt

    from . import segmentation, training
    from .models import parameter_counts

    paths = study.study_paths(profile, work_dir, report_dir)
    keras.utils.set_random_seed(seed)
    data = {split: _split_masks(paths, split, image_size, skip_missing_masks) for split in ("train", "val", "test")}
    skipped = {split: int((~d[3]).sum()) for split, d in data.items()}
    split_table = pd.DataFrame(
        {
            split: pd.Series(d[1][d[3]]).value_counts().reindex(range(len(config.CLASS_NAMES)), fill_value=0).to_numpy()
            for split, d in data.items()
        },
        index=config.CLASS_NAMES,
    )
    previous_policy = keras.config.dtype_policy()
    policy = training.configure_precision(mixed_precision)
    setup_text = (
        f"{device_line()}\nprofile {profile}: lung U-Net on backend {keras.backend.backend()}, dtype policy {policy}"
    )
    try:
        model = segmentation.build_unet(segmentation_size, base_filters=unet_filters, depth=unet_depth, seed=seed)
        counts = parameter_counts(model)
        model_text = (
            f"U-Net at {segmentation_size} px, {unet_depth} levels, {unet_filters}-{unet_filters * 2**unet_depth} filters: "
            f"{counts['total']:,} parameters"
        )
        (x_train, _, m_train, keep_train), (x_val, _, m_val, keep_val) = data["train"], data["val"]
        result = segmentation.train_segmentation(
            model,
            x_train[keep_train],
            m_train,
            x_val[keep_val],
            m_val,
            epochs=unet_epochs,
            batch_size=unet_batch_size,
            learning_rate=unet_learning_rate,
            seed=seed,
        )
        predicted = {
            split: segmentation.predict_masks(result.model, d[0], batch_size=unet_batch_size, output_size=image_size)
            for split, d in data.items()
        }
    finally:
        keras.config.set_dtype_policy(previous_policy)
    x_test, y_test, m_test, keep_test = data["test"]
    test_pred = predicted["test"][keep_test]
    dice, iou = segmentation.dice(test_pred, m_test), segmentation.iou(test_pred, m_test)
    summary = segmentation.segmentation_summary(dice, iou, y_test[keep_test], n_boot=n_bootstrap, seed=seed)
    settings = {
        **result.settings,
        "image_size": image_size,
        "unet_filters": unet_filters,
        "unet_depth": unet_depth,
        "dtype_policy": policy,
    }
    info = {**result.info(), "settings": settings}
    files = lung_files.save_segmenter(paths, result.model, result.history, info)
    files["masks"] = lung_files.save_lung_masks(paths, predicted)
    results = {k: v for k, v in info.items() if k != "timings"}  # metrics hold results, not wall times
    study.save_metrics_file(
        paths,
        "segmentation",
        {**results, "test": summary, "skipped_without_mask": skipped, "mask_margin": mask_margin},
    )
    images, truth, labels = x_test[keep_test], m_test, y_test[keep_test]
    masked = segmentation.apply_input_mask(x_test, predicted["test"], margin=mask_margin)
    made = {
        figures.SEGMENTATION_HISTORY: figures.plot_segmentation_history(result.history, best_epoch=result.best_epoch),
        figures.SEGMENTATION_EXAMPLES: figures.plot_segmentation_examples(
            images, truth, test_pred, labels, config.CLASS_NAMES, seed=seed
        ),
        figures.SEGMENTATION_WORST: figures.plot_worst_segmentations(
            images, truth, test_pred, labels, config.CLASS_NAMES
        ),
        figures.MASKED_INPUTS: figures.plot_masked_inputs(x_test, masked, y_test, config.CLASS_NAMES, seed=seed),
    }
    for name, fig in made.items():
        figures.save_figure(fig, paths.figures, name)
        plt.close(fig)
    t = result.timings
    training_text = (
        f"kept epoch {result.best_epoch} of {len(result.history)} (validation Dice {result.best_val_dice:.3f}); "
        f"trained in {t['fit_s']:.1f} s; test Dice {summary['all']['dice']['estimate']:.3f} "
        f"[{summary['all']['dice']['low']:.3f}, {summary['all']['dice']['high']:.3f}] on {int(keep_test.sum())} images"
        + (f"; left out without a lung mask: {skipped}" if any(skipped.values()) else "")
    )
    history_table = result.history.drop(columns=["seconds"], errors="ignore").round(4).set_index("epoch")
    return SegmentationReport(
        paths=paths,
        result=result,
        files=files,
        split_table=split_table,
        history_table=history_table,
        summary_table=summary_table(summary),
        test_dice=dice,
        figures=made,
        setup_text=setup_text,
        model_text=model_text,
        training_text=training_text,
    )


def input_note(paths, input_mask: str = "none", mask_margin: int = 0) -> str:
    """One sentence for the study summary: what the classifiers saw, and the U-Net's test Dice when notebook 02 ran."""
    seen = (
        "Classifier input: the whole image."
        if input_mask == "none"
        else f"Classifier input: the lungs predicted by notebook 02, dilated by {mask_margin} px, the rest set to grey."
    )
    path = study.metrics_file(paths, "segmentation")
    if not path.is_file():
        return seen
    entry = study.load_metrics_file(paths, "segmentation")["test"]["all"]
    dice, iou = entry["dice"], entry["iou"]
    return (
        f"{seen} Lung segmentation (02): test Dice {dice['estimate']:.3f} [{dice['low']:.3f}, {dice['high']:.3f}], "
        f"IoU {iou['estimate']:.3f} [{iou['low']:.3f}, {iou['high']:.3f}] on {entry['n']} images."
    )
