"""Notebook 05 in one call: :func:`evaluate_and_report` predicts the test split with both trained models, writes their
predictions and classification metrics, and draws the paper's Figures 4-5 and the confusion matrices.

References: Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (Figures 4-5, the final table's recall and F1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from helpers.common import config
from helpers.report import describe, figures, tables
from helpers.study import files as study

__all__ = ["ClassificationReport", "evaluate_and_report"]


@dataclass
class ClassificationReport:
    """What notebook 05 shows: the predictions' lines, the figures (closed: display them), the comparison with the
    paper's numbers and the run's caveat."""

    paths: study.StudyPaths
    predictions_text: str
    report_figures: list
    confusion_figure: object
    run_text: str
    caveat: str
    comparison: pd.DataFrame
    summary_text: str


def evaluate_and_report(
    profile: str,
    work_dir: str,
    report_dir: str,
    seed: int,
    image_size: int,
    input_mask: str,
    mask_margin: int,
    model_names: Sequence[str],
    batch_size: int,
) -> ClassificationReport:
    """Predict the test split with every model slot and write ``predictions_<model>.npz``,
    ``metrics/classification_<model>.json`` (scikit-learn's per-class precision, recall, F1) and
    ``metrics/classification_summary.json``; Figures 4-5 (classification reports) and the confusion matrices.
    References: Lamprou, Figures 4-5.
    """
    import keras

    from helpers.models import classification

    paths = study.study_paths(profile, work_dir, report_dir)
    keras.utils.set_random_seed(seed)
    model_names = list(model_names)
    lines = [describe.device_line()]
    x_test, y_test = study.load_split(paths, "test", image_size, input_mask=input_mask, mask_margin=mask_margin)
    metrics, trained = {}, {}
    for name in model_names:
        trained[name] = study.load_training(paths, name, image_size=image_size)
        probabilities = classification.predict_probabilities(trained[name].model, x_test, batch_size, progress=True)
        study.save_predictions(paths, name, probabilities, y_test)
        metrics[name] = classification.classification_metrics(y_test, probabilities, config.CLASS_NAMES)
        study.save_metrics(paths, name, metrics[name])
        lines.append(
            f"{name}: {len(y_test)} test images, accuracy {metrics[name]['accuracy']:.3f}, "
            f"kept epoch {trained[name].chosen_epoch}"
        )

    report_figures = []
    for name in model_names:
        backbone = trained[name].settings.get("backbone", name)
        number, figure_name = figures.classification_report_figure(name)
        title = f"classification report of {name} ({backbone}) on the test set"
        fig = figures.plot_classification_report(metrics[name], title=title, figure=number)
        figures.save_figure(fig, paths.figures, figure_name)
        report_figures.append(figures.closed(fig))
    fig = figures.plot_confusion_matrices(metrics)
    figures.save_figure(fig, paths.figures, figures.CONFUSION_MATRICES)
    confusion_figure = figures.closed(fig)

    # what this run used, from its own files: 01's data.json and the models' training files
    data_info, _ = describe.read_run_files(paths.metrics)
    training_info = {name: trained[name].settings for name in model_names}
    caveat = describe.comparison_caveat(data_info, training_info)
    comparison = tables.compact_comparison(metrics, paper=tables.PAPER_RESULTS)
    summary = []
    for name in model_names:
        row = tables.summary_row(name, metrics[name])
        row["kept_epoch"] = trained[name].chosen_epoch
        row["paper_recall"] = tables.PAPER_RESULTS.get(name, {}).get("recall")
        row["paper_f1"] = tables.PAPER_RESULTS.get(name, {}).get("f1")
        summary.append(row)
    summary_path = study.save_metrics_file(
        paths, "classification_summary",
        {"profile": profile, "models": summary, "comparable_to_paper": not caveat, "caveat": caveat},
    )  # fmt: skip
    return ClassificationReport(
        paths=paths,
        predictions_text="\n".join(lines),
        report_figures=report_figures,
        confusion_figure=confusion_figure,
        run_text=f"{describe.describe_data(data_info)}\n{describe.describe_models(training_info)}",
        caveat=caveat,
        comparison=comparison.map(lambda v: "–" if pd.isna(v) else f"{v:.2f}"),
        summary_text=f"wrote {summary_path.name}: headline numbers of {len(summary)} models",
    )
