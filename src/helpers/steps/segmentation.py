"""Notebook 02 in one call: train the lung U-Net, score it on the test split, write the predicted masks and figures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.common import config
from helpers.data.layout import SPLITS
from helpers.report import figures, segmentation_figures
from helpers.report.describe import device_line
from helpers.study import files as study
from helpers.study import lung_files, split_files

__all__ = ["SegmentationReport", "segment_and_report", "summary_table", "interval_text", "input_note"]


@dataclass
class SegmentationReport:
    """What notebook 02 shows: files, tables, figures (closed: display them) and text lines.

    When no image of the dataset has a lung mask (and the classifiers see the whole image) notebook 02 is skipped:
    ``note`` says so, and there is no model, table or figure (``result``, ``history_table``, ``summary_table`` None).
    """

    paths: study.StudyPaths
    result: object  # helpers.models.segmentation.SegmentationResult
    files: dict
    split_table: pd.DataFrame
    history_table: pd.DataFrame | None
    summary_table: pd.DataFrame | None
    test_dice: np.ndarray
    figures: dict
    setup_text: str
    model_text: str
    training_text: str
    note: str = ""

    def show(self, *names: str) -> None:
        """Display the named tables (attributes) and figures (keys of ``figures``) that this run made."""
        from IPython.display import display

        for name in names:
            item = self.figures.get(name, getattr(self, name, None))
            if item is not None:
                display(item)


def interval_text(entry: dict | None) -> str:
    """``estimate [low, high]`` of a summary entry, or "undefined" (no image with a lung in either mask)."""
    if entry is None:
        return "undefined"
    return f"{entry['estimate']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def summary_table(summary: dict) -> pd.DataFrame:
    """Test Dice and IoU per class and over all images, ``estimate [low, high]`` (from :func:`segmentation_summary`).

    Images whose Dice is undefined (both masks empty) are left out of the means and counted in an ``undefined``
    column when there are any.
    """
    entries = [*summary["classes"].items(), ("all images", summary["all"])]
    rows = []
    for name, entry in entries:
        row = {"class": name, "images": entry["n"]}
        for key in ("dice", "iou"):
            row[f"{key} [95% CI]"] = (
                "–" if entry[key] is None and not entry.get("undefined") else interval_text(entry[key])
            )
        if any(e.get("undefined") for _, e in entries):
            row["undefined (both masks empty)"] = entry.get("undefined", 0)
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def _listed(items: list, limit: int = 5) -> str:
    return f"{items[:limit]}" + (" ..." if len(items) > limit else "")


def _rows_with_masks(paths, input_mask: str, skip_missing_masks: bool) -> dict[str, np.ndarray] | str:
    """Per split, which rows have a lung mask file; or why the U-Net cannot be trained, when ``input_mask`` does not need it.

    Stops (naming the runner's parameters) when ``input_mask="lung"`` needs a U-Net that cannot be trained, and
    when some images lack a mask under ``input_mask="lung"`` unless ``skip_missing_masks``; otherwise the images
    without a mask are left out of the U-Net's training and scores, in a printed note.
    """
    from helpers.data.dataset import rows_without_mask
    from helpers.data.layout import DatasetError

    frame = split_files.read_manifest(paths.split_manifest)
    missing = rows_without_mask(frame, "lung")
    has_mask = {split: ~frame.loc[frame["split"] == split, "path"].isin(missing).to_numpy() for split in SPLITS}
    empty = [split for split, kept in has_mask.items() if not kept.any()]
    if empty:
        reason = (
            "no image of the dataset has a lung mask"
            if len(missing) == len(frame)
            else f"no image of the {' and '.join(empty)} split of the dataset has a lung mask"
        )
        if input_mask == "lung":
            raise DatasetError(
                f"{reason} ({len(missing)} of {len(frame)} images in {paths.split_manifest} have none), so the lung "
                "U-Net that input_mask='lung' needs cannot be trained: run with -p input_mask=none, or use a dataset "
                "with lung masks (<Class>/masks/<image name>)"
            )
        return reason
    if missing and input_mask == "lung" and not skip_missing_masks:
        raise DatasetError(
            f"{len(missing)} of {len(frame)} image(s) have no lung mask (or it is no longer on disk): "
            f"{_listed(missing)}; with -p skip_missing_masks=true the U-Net trains on the {len(frame) - len(missing)} "
            "that have one (and still predicts a mask for every image)"
        )
    if missing:
        counts = ", ".join(f"{split} {int((~kept).sum())}" for split, kept in has_mask.items())
        print(
            f"note: {len(missing)} of {len(frame)} image(s) have no lung mask ({counts}): the U-Net trains and is "
            f"scored on the {len(frame) - len(missing)} that have one, and predicts a mask for every image; "
            f"e.g. {_listed(missing, 3)}"
        )
    return has_mask


def _split_masks(paths, split: str, image_size: int, has_mask: np.ndarray):
    """Images, labels and ground-truth lung masks (of the rows ``has_mask``) of one split, and ``has_mask``."""
    from helpers.data.dataset import load_masks

    images, labels = study.load_split(paths, split, image_size)
    frame = split_files.read_manifest(paths.split_manifest)
    part = frame[frame["split"] == split].reset_index(drop=True)
    masks = load_masks(part[has_mask].reset_index(drop=True), image_size, kind="lung", required=True)
    return images, labels, masks, has_mask


def _skipped(paths, profile: str, image_size: int, reason: str) -> SegmentationReport:
    """Notebook 02 without lung masks to train on: a note, the split read (and verified), nothing trained or written."""
    study.lineage.check_input(paths, paths.split_manifest, "01_data")
    note = (
        f"note: {reason}, so notebook 02 is skipped: no lung U-Net is trained and no lung masks are written; the "
        "classifiers see the whole image (input_mask='none')"
    )
    print(note)
    empty = pd.DataFrame(0, index=config.CLASS_NAMES, columns=list(SPLITS))
    return SegmentationReport(
        paths=paths, result=None, files={}, split_table=empty, history_table=None, summary_table=None,
        test_dice=np.zeros(0), figures={}, setup_text=f"profile {profile}: lung segmentation at {image_size} px",
        model_text="", training_text="", note=note,
    )  # fmt: skip


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
    input_mask: str = "none",
) -> SegmentationReport:
    """Train the lung U-Net on the training split's lung masks, keep the best validation Dice, write masks and metrics.

    The U-Net works at ``segmentation_size`` (images resized down); its masks are resized to ``image_size`` with
    nearest neighbour and written for every split (:func:`helpers.study.lung_files.save_lung_masks`), where the classifier
    notebooks read them with ``input_mask="lung"``. Test Dice and IoU are computed at ``image_size`` against the
    dataset's lung masks, per class with bootstrap intervals (``metrics/segmentation.json``; an image whose Dice is
    undefined, both masks empty, is left out and counted). Masks are read by :func:`helpers.data.dataset.decode_mask`
    (0/1 or 0/255, grey or colour, 8 or 16 bit). Images without a lung mask are left out of training and scoring,
    counted in a printed note, and still get a predicted mask; with ``input_mask="lung"`` (the classifiers' input)
    they stop the notebook, naming them, unless ``skip_missing_masks``. When no image has a lung mask the notebook
    is skipped with a note, or with ``input_mask="lung"`` stops. ``mixed_precision`` (as in notebooks 03-04,
    :func:`helpers.models.training.configure_precision`) builds, trains and runs the U-Net under that dtype policy (its
    output layer stays float32); the previous policy is restored afterwards.
    References: Ronneberger, Fischer & Brox 2015 (U-Net); Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images",
    §4.2 (segment the lungs before classification).
    """
    import keras

    from helpers.models import segmentation, training
    from helpers.models.classifiers import parameter_counts

    paths = study.study_paths(profile, work_dir, report_dir)
    keras.utils.set_random_seed(seed)
    has_mask = _rows_with_masks(paths, input_mask, skip_missing_masks)
    if isinstance(has_mask, str):
        return _skipped(paths, profile, image_size, has_mask)
    data = {split: _split_masks(paths, split, image_size, has_mask[split]) for split in SPLITS}
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
        figures.SEGMENTATION_HISTORY: segmentation_figures.plot_segmentation_history(
            result.history, best_epoch=result.best_epoch
        ),
        figures.SEGMENTATION_EXAMPLES: segmentation_figures.plot_segmentation_examples(
            images, truth, test_pred, labels, config.CLASS_NAMES, seed=seed
        ),
        figures.SEGMENTATION_WORST: segmentation_figures.plot_worst_segmentations(
            images, truth, test_pred, labels, config.CLASS_NAMES
        ),
        figures.MASKED_INPUTS: segmentation_figures.plot_masked_inputs(
            x_test, masked, y_test, config.CLASS_NAMES, seed=seed
        ),
    }
    for name, fig in made.items():
        figures.save_figure(fig, paths.figures, name)
        figures.closed(fig)
    t, undefined = result.timings, summary["all"].get("undefined", 0)
    training_text = (
        f"kept epoch {result.best_epoch} of {len(result.history)} (validation Dice {result.best_val_dice:.3f}); "
        f"trained in {t['fit_s']:.1f} s; test Dice {interval_text(summary['all']['dice'])} on "
        f"{summary['all']['n']} images"
        + (f"; Dice undefined (both masks empty) on {undefined}, left out" if undefined else "")
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
    undefined = entry.get("undefined", 0)
    return (
        f"{seen} Lung segmentation (02): test Dice {interval_text(entry['dice'])}, IoU {interval_text(entry['iou'])} "
        f"on {entry['n']} images"
        + (f" ({undefined} left out: Dice undefined, both masks empty)." if undefined else ".")
    )
