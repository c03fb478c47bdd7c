"""The perturbations g(x) that replace removed regions: one function each, one table of them.

A perturbation takes one image (H, W, C) float32 in [0, 1], its own random generator (a function of the seed and the
image's id only, :func:`helpers.common.seeds.image_rng`) and the settings, and returns the perturbed copy before
clipping to [0, 1]. A new perturbation is one function here and one entry in :data:`TABLE`; the runner's parameter
checks (``07.perturbation``, ``07.ablation_perturbations``), the curves and the ablation read the table. NumPy and OpenCV are
imported on first use, so the runner reads the names before any kernel starts.

References: Samek et al. 2017, "Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS
(uniform replacement, MoRF); Lamprou, "Evaluating Grad-CAM heatmaps of X-ray images" (Gaussian noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np

__all__ = ["PERTURBATIONS", "TABLE", "Perturbation", "gaussian", "uniform", "mean", "blur"]


def gaussian(image: np.ndarray, rng: np.random.Generator, sigma: float, fill, blur_sigma) -> np.ndarray:
    """x + N(0, sigma) per pixel (the paper's perturbation)."""
    import numpy as np

    return image + np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)


def uniform(image: np.ndarray, rng: np.random.Generator, sigma: float, fill, blur_sigma) -> np.ndarray:
    """U(0, 1) per pixel, replacing the image (Samek et al.)."""
    import numpy as np

    return rng.random(image.shape, dtype=np.float32)


def mean(image: np.ndarray, rng: np.random.Generator, sigma: float, fill, blur_sigma) -> np.ndarray:
    """The image's mean, or ``fill``, everywhere."""
    import numpy as np

    return np.full_like(image, image.mean() if fill is None else float(fill))


def blur(image: np.ndarray, rng: np.random.Generator, sigma: float, fill, blur_sigma) -> np.ndarray:
    """A Gaussian blur of the image (``blur_sigma`` px, reflected borders)."""
    import cv2

    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=float(blur_sigma), borderType=cv2.BORDER_REFLECT)
    return blurred.reshape(image.shape)


@dataclass(frozen=True)
class Perturbation:
    """One entry of :data:`TABLE`: the function, whether it draws random numbers (then it runs on threads for large
    inputs: numpy's generators release the GIL)."""

    function: Callable[..., np.ndarray]
    random: bool


#: Perturbations by name: the one place to add one.
TABLE: dict[str, Perturbation] = {
    "gaussian": Perturbation(gaussian, random=True),
    "uniform": Perturbation(uniform, random=True),
    "mean": Perturbation(mean, random=False),
    "blur": Perturbation(blur, random=False),
}
#: Names of the perturbations, in the table's order.
PERTURBATIONS: tuple[str, ...] = tuple(TABLE)
