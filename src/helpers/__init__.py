"""Grad-CAM heatmaps of chest X-ray classifiers, scored by AOPC: the study's helper package.

Modules: ``config`` (paths, constants, atomic writes), ``data`` (dataset scan, synthetic phantoms,
split, image cache), ``models``, ``training``, ``gradcam``, ``perturbation`` (MoRF/LeRF/AOPC),
``reporting`` (figures and tables) and ``pipeline`` (the papermill runner).
"""

__version__ = "0.1.0"
