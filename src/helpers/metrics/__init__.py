"""Metrics of heatmaps: perturbation curves and AOPC, mask energy, intervals, ROAD, insertion and deletion, the
pointing game and model randomisation.

* :mod:`.perturbation`: the region grid, region scores and orders, perturbations, the batched MoRF/LeRF curves;
* :mod:`.aopc`: per-image AOPC, its summaries with bootstrap and paired intervals, the perturbation ablation;
* :mod:`.energy`: the share of a heatmap's energy inside a mask;
* :mod:`.intervals`: percentile-bootstrap intervals, paired and class-stratified ones of recall and F1;
* :mod:`.imputation`: ROAD's noisy linear imputation, a batched multigrid-preconditioned conjugate-gradient solve;
* :mod:`.road`: ROAD MoRF/LeRF curves at removal fractions and the combined score (LeRF - MoRF) / 2;
* :mod:`.insertion`: insertion and deletion curves (the study's curve engine) and their AUCs;
* :mod:`.pointing`: is each heatmap's maximum inside its mask;
* :mod:`.similarity`: Spearman rank correlation and SSIM of heatmaps;
* :mod:`.randomisation`: the cascading model-parameter randomisation test.

Every statistic comes with a percentile-bootstrap interval over images (:func:`helpers.metrics.intervals.bootstrap_ci`).
Names load on first use (PEP 562).
"""

from __future__ import annotations

from helpers.common.lazy import lazy_exports

#: Public name -> the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("road_impute", "imputation_system"), "imputation"),
    **dict.fromkeys(("curve_auc", "deletion_curves", "insertion_curves", "insertion_deletion"), "insertion"),
    **dict.fromkeys(("pointing_game", "pointing_game_summary"), "pointing"),
    **dict.fromkeys(("randomisation_stages", "randomisation_test", "randomise_layers", "randomised_copy"),
                    "randomisation"),
    **dict.fromkeys(("FRACTIONS", "road_curves", "road_evaluation", "road_scores"), "road"),
    **dict.fromkeys(("spearman", "ssim"), "similarity"),
}  # fmt: skip

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
