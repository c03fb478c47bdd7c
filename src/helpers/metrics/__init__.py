"""Metrics of heatmaps beyond noise-MoRF AOPC: ROAD, insertion and deletion, the pointing game, model randomisation.

* :mod:`.imputation`: ROAD's noisy linear imputation, a batched multigrid-preconditioned conjugate-gradient solve;
* :mod:`.road`: ROAD MoRF/LeRF curves at removal fractions and the combined score (LeRF - MoRF) / 2;
* :mod:`.insertion`: insertion and deletion curves (the study's curve engine) and their AUCs;
* :mod:`.pointing`: is each heatmap's maximum inside its mask;
* :mod:`.similarity`: Spearman rank correlation and SSIM of heatmaps;
* :mod:`.randomisation`: the cascading model-parameter randomisation test.

Every statistic comes with a percentile-bootstrap interval over images (:func:`helpers.scores.bootstrap_ci`).
"""

from __future__ import annotations

from .imputation import imputation_system, road_impute
from .insertion import curve_auc, deletion_curves, insertion_curves, insertion_deletion
from .pointing import pointing_game, pointing_game_summary
from .randomisation import randomisation_stages, randomisation_test, randomise_layers, randomised_copy
from .road import FRACTIONS, road_curves, road_evaluation, road_scores
from .similarity import spearman, ssim

__all__ = [
    "FRACTIONS",
    "road_impute",
    "imputation_system",
    "road_curves",
    "road_scores",
    "road_evaluation",
    "deletion_curves",
    "insertion_curves",
    "curve_auc",
    "insertion_deletion",
    "pointing_game",
    "pointing_game_summary",
    "spearman",
    "ssim",
    "randomisation_stages",
    "randomised_copy",
    "randomise_layers",
    "randomisation_test",
]
