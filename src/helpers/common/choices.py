"""The study's vocabularies: the values a choice may take (backbones, region orders, samplings, input masks ...).

Pure Python, so the runner checks parameters before any kernel starts and the computation modules read the same
tuples. The heatmap methods and the perturbations have tables of their own (:mod:`helpers.explain.registry`,
:mod:`helpers.metrics.perturbations`).
"""

from __future__ import annotations

#: Backbones of :func:`helpers.models.classifiers.build_backbone` and the smallest image side each one accepts.
PAPER_BACKBONES: tuple[str, ...] = ("vgg16", "densenet201")
DEMO_BACKBONES: tuple[str, ...] = ("small_vgg", "small_densenet")
BACKBONES: tuple[str, ...] = PAPER_BACKBONES + DEMO_BACKBONES
MIN_IMAGE_SIZE: dict[str, int] = {"vgg16": 32, "densenet201": 32, "small_vgg": 16, "small_densenet": 16}
#: Region orders of :mod:`helpers.metrics.perturbation`.
ORDERS: tuple[str, ...] = ("morf", "lerf", "random")
#: How :func:`helpers.metrics.perturbation.region_scores` scores regions: the heatmap's own cells when its grid is the region
#: grid (the paper: 9x9 cells = 34 px regions), or always the region mean of the bilinearly upsampled heatmap.
REGION_SCORES: tuple[str, ...] = ("grid", "upsample")
#: Notebook 08's metric families (:mod:`helpers.steps.methods`).
METRIC_GROUPS: tuple[str, ...] = ("aopc", "road", "insertion_deletion", "mask_energy", "pointing_game", "randomisation")
SOURCES: tuple[str, ...] = ("synthetic", "kaggle")
#: Class-imbalance strategies (split in 01 by :mod:`helpers.data.dataset`, loss or resampling in 03/04 by :mod:`helpers.models.training`).
SAMPLINGS: tuple[str, ...] = ("downsample", "class_weight", "oversample")
#: What the classifiers see (notebooks 03-07): the whole image, or only the predicted lungs of notebook 02.
INPUT_MASKS: tuple[str, ...] = ("none", "lung")
MIXED_PRECISION: tuple = (True, False, None, "", "float32", "mixed_float16", "mixed_bfloat16")
#: Smallest side of generated phantoms (:func:`helpers.data.synthesize_dataset`).
MIN_SYNTHETIC_SIZE = 8
