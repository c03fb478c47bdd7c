"""The synthetic X-ray simulator: phantom chest X-rays in the Kaggle layout, with lung and lesion masks.

:func:`render_phantom` draws one phantom (body, lungs, ribs, heart shadow, vessels, a corner marker and the class
finding, whose position its lesion mask records); :func:`synthesize_dataset` writes ``per_class`` phantoms per class
in the layout of the COVID-19 Radiography Database (see :mod:`helpers.data.dataset`), so the same scan, split and cache
serve the phantoms and the real data.

References: M. E. H. Chowdhury et al., "Can AI help in screening viral and COVID-19 pneumonia?",
IEEE Access 8 (2020) (the dataset whose layout and classes the phantoms imitate).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from helpers.common.checks import check_int
from helpers.common.config import CLASS_NAMES, DATASET_DIRNAME
from helpers.common.files import load_json, save_json
from helpers.common.parallel import parallel_map, progress_updates
from helpers.data.layout import LESION_DIRNAME, DatasetError

__all__ = [
    "SYNTHETIC_MARKER",
    "PHANTOM_VERSION",
    "OUTPUTS",
    "REAL_CLASS_SIZES",
    "class_counts",
    "synthetic_dir_name",
    "render_phantom",
    "synthesize_dataset",
]

#: Name of the JSON marker that records a synthetic dataset's parameters (written last).
SYNTHETIC_MARKER = "synthetic.json"
#: Version of the phantom generator; part of the marker, so a changed generator never reuses old files.
PHANTOM_VERSION = 1
#: The generator's name as recorded in the marker (kept from the module that first wrote it, so existing
#: phantom folders stay valid).
GENERATOR_NAME = "helpers.data.render_phantom"

#: Images per class in the real COVID-19 Radiography Database (an imbalanced phantom set can scale these down).
REAL_CLASS_SIZES: dict[str, int] = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}

_check_int = partial(check_int, error=DatasetError)


def class_counts(per_class) -> dict[str, int]:
    """Phantoms per class from an int (the same for every class), a list of four counts (class order) or a dict.

    ``per_class=[361, 601, 1019, 134]`` is the real set's imbalance (:data:`REAL_CLASS_SIZES`) scaled by 1/10.
    """
    if isinstance(per_class, dict):
        unknown = sorted(set(per_class) - set(CLASS_NAMES))
        missing = [name for name in CLASS_NAMES if name not in per_class]
        if unknown or missing:
            raise DatasetError(
                f"per_class as a dict needs exactly the classes {list(CLASS_NAMES)}; unknown {unknown}, missing {missing}"
            )
        return {name: _check_int(f"per_class[{name!r}]", per_class[name], 1) for name in CLASS_NAMES}
    if isinstance(per_class, (list, tuple)):
        if len(per_class) != len(CLASS_NAMES):
            raise DatasetError(f"per_class as a list needs {len(CLASS_NAMES)} counts (class order), got {per_class!r}")
        return {name: _check_int(f"per_class[{name!r}]", n, 1) for name, n in zip(CLASS_NAMES, per_class)}
    n = _check_int("per_class", per_class, 1)
    return dict.fromkeys(CLASS_NAMES, n)


def _uniform(counts: dict[str, int]) -> int | None:
    values = set(counts.values())
    return values.pop() if len(values) == 1 else None


def synthetic_dir_name(image_size: int, per_class, seed: int, confounder: bool = False) -> str:
    """Folder name of a synthetic dataset under ``paths.raw``: ``synthetic-<size>-<n>-<seed>[-confounder]``.

    With different counts per class, ``<n>`` is the four counts joined by ``_`` (class order).
    """
    counts = class_counts(per_class)
    same = _uniform(counts)
    n = str(same) if same is not None else "_".join(str(counts[name]) for name in CLASS_NAMES)
    return f"synthetic-{int(image_size)}-{n}-{int(seed)}" + ("-confounder" if confounder else "")


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalized pixel-centre coordinates (u horizontal, v vertical), both in (0, 1)."""
    u = (np.arange(width, dtype=np.float32) + 0.5) / width
    v = (np.arange(height, dtype=np.float32) + 0.5) / height
    return u[None, :], v[:, None]


def _ellipse(u, v, cx, cy, rx, ry, edge: float = 0.0) -> np.ndarray:
    """Soft ellipse indicator in [0, 1]; ``edge`` is the width of the soft border (in radius units).

    With the grids of :func:`_grid` (a row ``u`` and a column ``v``) it is evaluated only on the rows and columns
    where it can be non-zero (the rest is exactly 0), which gives the same values as the whole grid, faster.
    """
    on_grid = np.ndim(u) == 2 and np.ndim(v) == 2 and np.shape(u)[0] == 1 and np.shape(v)[1] == 1
    # a zero radius or a non-finite value gives NaN (0/0) pixels that the window would not reach: whole grid then
    regular = np.all(np.isfinite([cx, cy, rx, ry, edge])) and rx != 0 and ry != 0
    if not (on_grid and regular):
        return _ellipse_values(u, v, cx, cy, rx, ry, edge)
    reach = 1.0 + max(edge, 0.0)
    # 1e-3 of slack: float32 rounding of r is ~1e-7 relative, so no non-zero pixel falls outside.
    cols = _window(np.abs(u[0] - cx) <= abs(rx) * reach * (1 + 1e-3))
    rows = _window(np.abs(v[:, 0] - cy) <= abs(ry) * reach * (1 + 1e-3))
    out = np.zeros((v.shape[0], u.shape[1]), dtype=np.float32)
    if cols is not None and rows is not None:
        out[rows, cols] = _ellipse_values(u[:, cols], v[rows, :], cx, cy, rx, ry, edge)
    return out


def _ellipse_values(u, v, cx, cy, rx, ry, edge: float) -> np.ndarray:
    """The soft ellipse indicator of :func:`_ellipse` at every point of ``u`` x ``v``."""
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    if edge <= 0:
        return (r <= 1.0).astype(np.float32)
    return np.clip((1.0 + edge - r) / (2 * edge), 0.0, 1.0).astype(np.float32)


def _window(near: np.ndarray) -> slice | None:
    """The indices where ``near`` is true, widened by one on each side, as a slice (None when there are none)."""
    index = np.flatnonzero(near)
    if index.size == 0:
        return None
    return slice(max(0, int(index[0]) - 1), min(near.size, int(index[-1]) + 2))


def _smooth_noise(rng: np.random.Generator, cells: int, size: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a ``cells`` x ``cells`` random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _sample_geometry(rng: np.random.Generator, class_index: int, confounder: bool) -> dict:
    """Draw the anatomy of one phantom in normalized coordinates (independent of the resolution)."""
    pediatric = confounder and CLASS_NAMES[class_index] == "Viral Pneumonia"
    s = rng.uniform(0.66, 0.76) if pediatric else rng.uniform(0.9, 1.04)
    cx = 0.5 + rng.uniform(-0.03, 0.03)
    cy = 0.5 + rng.uniform(-0.03, 0.03) + (0.04 if pediatric else 0.0)
    geo = {
        "s": s,
        "cx": cx,
        "cy": cy,
        "lung_dx": 0.175 * s * rng.uniform(0.95, 1.05),
        "lung_rx": 0.125 * s * rng.uniform(0.92, 1.08),
        "lung_ry": 0.27 * s * rng.uniform(0.92, 1.08),
        "heart_dx": 0.055 * s,
        "heart_dy": 0.13 * s * rng.uniform(0.9, 1.1),
        "heart_rx": 0.12 * s * rng.uniform(0.9, 1.1),
        "heart_ry": 0.1 * s * rng.uniform(0.9, 1.1),
        "rib_spacing": 0.058 * s * rng.uniform(0.92, 1.08),
        "rib_phase": rng.uniform(0, 1),
        "rib_curve": rng.uniform(2.6, 3.4),
        "tissue": rng.uniform(0.5, 0.6),
        "lung_level": rng.uniform(0.14, 0.22),
        "marker_letter": "L" if rng.random() < 0.5 else "R",
        "marker_corner": int(rng.integers(4)),
        "marker_scale": rng.uniform(0.9, 1.15),
        "gamma": rng.uniform(0.75, 1.3),
        "contrast": rng.uniform(0.75, 1.2),
        "brightness": rng.uniform(-0.1, 0.1),
        "noise": rng.uniform(0.01, 0.03),
        "vessels": [(rng.uniform(-0.9, 0.9), rng.uniform(0.25, 0.55)) for _ in range(8)],
    }
    return geo


def _lung_centres(geo: dict) -> list[tuple[float, float]]:
    """Centres of the image-left (patient's right) and image-right lungs."""
    cy = geo["cy"] - 0.02 * geo["s"]
    return [(geo["cx"] - geo["lung_dx"], cy), (geo["cx"] + geo["lung_dx"], cy)]


def _lung_field(geo: dict, u, v) -> np.ndarray:
    """Binary lung fields: two ellipses minus the heart and the mediastinum."""
    lungs = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for side, (lx, ly) in enumerate(_lung_centres(geo)):
        ry = geo["lung_ry"] * (0.93 if side == 1 else 1.0)
        lungs |= _ellipse(u, v, lx, ly, geo["lung_rx"], ry) > 0.5
    heart = (
        _ellipse(u, v, geo["cx"] + geo["heart_dx"], geo["cy"] + geo["heart_dy"], geo["heart_rx"], geo["heart_ry"]) > 0.5
    )
    mediastinum = np.abs(u - geo["cx"]) < 0.05 * geo["s"]
    return lungs & ~heart & ~mediastinum


def _draw_lines(size: int, lines: Iterable[tuple[float, float, float, float, float]], thickness: int) -> np.ndarray:
    """Anti-aliased lines (normalized endpoints, intensity) on a float canvas.

    Each line is drawn alone (so overlapping lines combine by their maximum, not by cv2's blending) and merged
    only inside its bounding box, where all its pixels lie.
    """
    canvas = np.zeros((size, size), dtype=np.float32)
    layer = np.zeros_like(canvas)
    shift = 4  # sub-pixel precision of cv2's drawing functions
    scale = size * (1 << shift)
    reach = thickness + 3  # anti-aliasing and the line's width stay within this many pixels of its end points
    for u0, v0, u1, v1, value in lines:
        if not math.isfinite(value):
            raise ValueError(f"a line's intensity must be finite, got {value!r}")
        p0 = (int(u0 * scale), int(v0 * scale))
        p1 = (int(u1 * scale), int(v1 * scale))
        cv2.line(layer, p0, p1, 1.0, thickness, cv2.LINE_AA, shift)
        x0, x1 = sorted((p0[0] >> shift, p1[0] >> shift))
        y0, y1 = sorted((p0[1] >> shift, p1[1] >> shift))
        box = (slice(max(0, y0 - reach), max(0, y1 + reach + 1)), slice(max(0, x0 - reach), max(0, x1 + reach + 1)))
        np.maximum(canvas[box], layer[box] * value, out=canvas[box])
        layer[box] = 0.0
    return canvas


def _finding(
    rng: np.random.Generator, class_index: int, geo: dict, size: int, u, v, lungs: np.ndarray, lungs_soft: np.ndarray
):
    """Additive opacity of the class's finding and its lesion mask (bool), both (size, size)."""
    name = CLASS_NAMES[class_index]
    opacity = np.zeros((size, size), dtype=np.float32)
    mask = np.zeros((size, size), dtype=bool)
    s = geo["s"]
    centres = _lung_centres(geo)
    if name == "COVID":
        # Bilateral, peripheral, lower-zone ground-glass patches with a mottled texture.
        mottle = 0.75 + 0.25 * np.clip(_smooth_noise(rng, 12, size), -1, 1)
        for side, (lx, ly) in enumerate(centres):
            outward = -1.0 if side == 0 else 1.0
            for _ in range(int(rng.integers(1, 3))):
                bx = lx + outward * geo["lung_rx"] * rng.uniform(0.35, 0.7)
                by = ly + geo["lung_ry"] * rng.uniform(0.15, 0.6)
                sx = 0.055 * s * rng.uniform(0.8, 1.25)
                sy = 0.075 * s * rng.uniform(0.8, 1.25)
                blob = np.exp(-0.5 * (((u - bx) / sx) ** 2 + ((v - by) / sy) ** 2)).astype(np.float32)
                amp = rng.uniform(0.26, 0.34)
                opacity = np.maximum(opacity, amp * blob)
                mask |= blob > 0.3
        opacity *= mottle
    elif name == "Lung_Opacity":
        # One dense lobar consolidation in one lung, upper or lower zone, sharply bounded.
        side = int(rng.integers(2))
        lx, ly = centres[side]
        upper = rng.random() < 0.5
        by = ly + geo["lung_ry"] * (rng.uniform(-0.55, -0.3) if upper else rng.uniform(0.25, 0.5))
        bx = lx + geo["lung_rx"] * rng.uniform(-0.2, 0.2)
        region = _ellipse(
            u, v, bx, by, geo["lung_rx"] * rng.uniform(0.8, 1.0), geo["lung_ry"] * rng.uniform(0.35, 0.45), edge=0.08
        )
        amp = rng.uniform(0.3, 0.4)
        texture = 0.85 + 0.15 * np.clip(_smooth_noise(rng, 10, size), -1, 1)
        opacity = amp * region * texture
        mask = region > 0.5
    elif name == "Viral Pneumonia":
        # Diffuse bilateral interstitial streaks radiating from the hila, with a perihilar haze.
        lines = []
        haze = np.zeros((size, size), dtype=np.float32)
        for side, (lx, ly) in enumerate(centres):
            outward = -1.0 if side == 0 else 1.0
            hx = lx + outward * -0.55 * geo["lung_rx"]
            hy = ly + 0.05 * geo["lung_ry"]
            for _ in range(int(rng.integers(9, 14))):
                angle = rng.uniform(-1.2, 1.2) + (math.pi if side == 0 else 0.0)
                length = rng.uniform(0.09, 0.17) * s
                start = rng.uniform(0.0, 0.03) * s
                lines.append(
                    (
                        hx + start * math.cos(angle),
                        hy + start * math.sin(angle),
                        hx + (start + length) * math.cos(angle),
                        hy + (start + length) * math.sin(angle),
                        rng.uniform(0.13, 0.2),
                    )
                )
            haze = np.maximum(haze, np.exp(-0.5 * (((u - hx) / (0.09 * s)) ** 2 + ((v - hy) / (0.12 * s)) ** 2)))
        thickness = max(1, int(round(size / 128)))
        streaks = _draw_lines(size, lines, thickness)
        opacity = np.maximum(streaks, 0.12 * haze.astype(np.float32))
        support = cv2.GaussianBlur(streaks, (0, 0), sigmaX=max(1.0, 0.02 * size))
        mask = (support > 0.02) | (haze > 0.4)
    opacity = opacity * lungs_soft
    mask &= lungs > 0.5
    return opacity, mask


def render_phantom(
    class_name: str,
    seed: int,
    n: int,
    image_size: int = 299,
    mask_size: int = 256,
    confounder: bool = False,
    finding: bool = True,
) -> dict:
    """Render one phantom chest X-ray: ``image`` (H, W) uint8, ``lung_mask`` (M, M, 3) uint8 0/255, ``lesion_mask`` (H, W) uint8 0/255.

    The random stream is derived from ``(seed, class index, n)``, so each image is reproducible on its own;
    ``finding=False`` renders the same phantom without its class finding (anatomy, exposure and noise are
    identical), which shows exactly what the finding adds.
    """
    if class_name not in CLASS_NAMES:
        raise DatasetError(f"class_name must be one of {CLASS_NAMES}, got {class_name!r}")
    seed = _check_int("seed", seed, 0)
    n = _check_int("n", n, 1)
    size = _check_int("image_size", image_size, 8)
    mask_size = _check_int("mask_size", mask_size, 8)
    class_index = CLASS_NAMES.index(class_name)
    geo_rng, finding_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, class_index, n]).spawn(3)
    )
    geo = _sample_geometry(geo_rng, class_index, confounder)
    s, cx, cy = geo["s"], geo["cx"], geo["cy"]
    u, v = _grid(size, size)

    # Body: soft tissue trunk with shoulders, brighter towards the centre; air outside.
    body = _ellipse(u, v, cx, cy + 0.12 * s, 0.42 * s, 0.62 * s, edge=0.03)
    neck = ((np.abs(u - cx) < 0.09 * s) & (v < cy - 0.3 * s)).astype(np.float32)
    body = np.maximum(body, neck)
    tissue = geo["tissue"] * (1.0 - 0.25 * ((u - cx) / (0.45 * s)) ** 2)
    img = 0.04 + body * tissue

    # Lungs: dark fields, a little brighter at the bases; low-frequency parenchymal texture.
    lungs = _lung_field(geo, u, v).astype(np.float32)
    lungs_soft = cv2.GaussianBlur(lungs, (0, 0), sigmaX=max(0.6, 0.006 * size))
    lung_tone = geo["lung_level"] + 0.1 * (v - (cy - 0.3 * s)) / (0.6 * s)
    texture = 0.03 * _smooth_noise(geo_rng, 24, size)
    img = img * (1 - lungs_soft) + (lung_tone + texture) * lungs_soft

    # Mediastinum and spine, heart shadow.
    spine = np.clip(1.0 - np.abs(u - cx) / (0.045 * s), 0, 1) ** 0.5 * body
    img = np.maximum(img, 0.62 * spine)
    heart = _ellipse(u, v, cx + geo["heart_dx"], cy + geo["heart_dy"], geo["heart_rx"], geo["heart_ry"], edge=0.06)
    img = np.maximum(img, 0.55 * heart * body)

    # Ribs: periodic curved bands, brightest over the lungs, sloping down laterally.
    lateral = np.abs(u - cx) / s
    phase = (v - geo["rib_curve"] * lateral**2 * s * 0.5) / geo["rib_spacing"] + geo["rib_phase"]
    ribs = np.clip((np.cos(2 * np.pi * phase) - 0.55) / 0.45, 0, 1)
    thorax = _ellipse(u, v, cx, cy - 0.02 * s, 0.34 * s, 0.31 * s, edge=0.05)
    ribs *= thorax * (lateral > 0.03)
    img = img + 0.1 * ribs

    # Vascular markings from the hila (every class, so that streaks alone do not mean pneumonia).
    vessel_lines = []
    for side, (lx, ly) in enumerate(_lung_centres(geo)):
        outward = -1.0 if side == 0 else 1.0
        hx, hy = lx - outward * 0.55 * geo["lung_rx"], ly + 0.05 * geo["lung_ry"]
        for angle, length in geo["vessels"][side * 4 : (side + 1) * 4]:
            a = angle + (math.pi if side == 0 else 0.0)
            vessel_lines.append(
                (
                    hx,
                    hy,
                    hx + length * geo["lung_rx"] * 2 * math.cos(a),
                    hy + length * geo["lung_rx"] * 2 * math.sin(a),
                    0.06,
                )
            )
    img = img + _draw_lines(size, vessel_lines, max(1, int(round(size / 160)))) * lungs_soft

    # The class finding.
    lesion = np.zeros((size, size), dtype=bool)
    if finding:
        opacity, lesion = _finding(finding_rng, class_index, geo, size, u, v, lungs, lungs_soft)
        img = img + opacity

    # Corner text marker (class-independent), drawn before exposure like a burnt-in label.
    marker = np.zeros((size, size), dtype=np.uint8)
    font_scale = size / 300 * 1.2 * geo["marker_scale"]
    thick = max(1, int(round(size / 120)))
    (tw, th), _ = cv2.getTextSize(geo["marker_letter"], cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    pad = max(1, int(0.04 * size))
    corner = geo["marker_corner"]
    x0 = pad if corner in (0, 2) else size - pad - tw
    y0 = pad + th if corner in (0, 1) else size - pad
    cv2.putText(marker, geo["marker_letter"], (x0, y0), cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, thick, cv2.LINE_AA)
    img = np.maximum(img, marker.astype(np.float32) * (0.95 / 255))

    # Exposure (gamma, contrast, brightness), detector blur and noise.
    img = np.clip(img, 0, 1) ** geo["gamma"]
    img = geo["contrast"] * (img - 0.5) + 0.5 + geo["brightness"]
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigmaX=max(0.5, 0.003 * size))
    img = img + noise_rng.normal(0.0, geo["noise"], img.shape).astype(np.float32)
    image = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)

    mu, mv = _grid(mask_size, mask_size)
    lung_mask = _lung_field(geo, mu, mv).astype(np.uint8) * 255
    return {
        "image": image,
        "lung_mask": np.repeat(lung_mask[:, :, None], 3, axis=2),
        "lesion_mask": lesion.astype(np.uint8) * 255,
    }


#: PNG encoder settings: the image with the "up" filter and run-length zlib, the 0/255 masks unfiltered (both
#: lossless; about 4x faster to write than libpng's adaptive filters, and no larger).
_PNG_IMAGE = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
_PNG_MASK = list(_PNG_IMAGE)
if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11
    _PNG_IMAGE += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    _PNG_MASK += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


#: Each array of :func:`render_phantom`: the class subfolder it is written to and its PNG settings.
OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "image": ("images", _PNG_IMAGE),
    "lung_mask": ("masks", _PNG_MASK),
    "lesion_mask": (LESION_DIRNAME, _PNG_MASK),
}


def render_and_write(
    folder: Path, name: str, seed: int, n: int, image_size: int, mask_size: int, confounder: bool
) -> None:
    """Render phantom ``n`` of class ``name`` and write its image, lung mask and lesion mask under ``folder``."""
    arrays = render_phantom(name, seed, n, image_size, mask_size, confounder)
    for key, (subfolder, params) in OUTPUTS.items():
        path = folder / name / subfolder / f"{name}-{n}.png"
        if not cv2.imwrite(str(path), arrays[key], params):
            raise OSError(f"could not write {path}")


def synthesize_dataset(
    root: str | os.PathLike,
    per_class,
    image_size: int = 299,
    seed: int = 0,
    confounder: bool = False,
    mask_size: int = 256,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write ``per_class`` phantom X-rays per class in the Kaggle layout under ``root`` and return the dataset folder.

    ``per_class``: one count for every class, or four (a list in class order or a dict by class name,
    :func:`class_counts`) for an imbalanced set such as the real one's.

    Images go to ``<Class>/images/<Class>-<n>.png``, 3-channel lung masks (``mask_size``) to ``<Class>/masks/``
    and lesion masks (image size, empty for Normal) to ``<Class>/lesion_masks/``. The folder is generated
    beside the target and renamed; an existing dataset with the same parameters is reused, a different one
    raises :class:`helpers.data.layout.DatasetError`. ``confounder=True`` gives Viral Pneumonia smaller (pediatric-like) chests.
    ``workers`` processes render in parallel (default: every core, :func:`helpers.common.parallel.worker_count`); every
    phantom is a function of its class, number and seed only, so the files are the same whatever their number.
    """
    counts = class_counts(per_class)
    same = _uniform(counts)
    image_size = _check_int("image_size", image_size, 8)
    mask_size = _check_int("mask_size", mask_size, 8)
    seed = _check_int("seed", seed, 0)
    params = {
        "generator": GENERATOR_NAME,
        "version": PHANTOM_VERSION,
        "per_class": same if same is not None else counts,
        "image_size": image_size,
        "mask_size": mask_size,
        "seed": seed,
        "confounder": bool(confounder),
        "classes": list(CLASS_NAMES),
    }
    root = Path(root).expanduser()
    target = root / DATASET_DIRNAME
    if target.exists():
        _check_existing_synthetic(target, params)
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DATASET_DIRNAME}.", suffix=".tmp", dir=root))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the dataset is an ordinary folder
        jobs = [(name, n) for name in CLASS_NAMES for n in range(1, counts[name] + 1)]
        for name in CLASS_NAMES:
            for sub, _ in OUTPUTS.values():
                (tmp / name / sub).mkdir(parents=True)
        work = [(tmp, name, seed, n, image_size, mask_size, confounder) for name, n in jobs]
        with progress_updates(len(work), progress, "phantoms") as update:
            parallel_map(render_and_write, work, workers, update)
        save_json(params, tmp / SYNTHETIC_MARKER)
        try:
            os.rename(tmp, target)
        except OSError:
            if target.exists():  # written meanwhile by another process: accept it only if identical
                _check_existing_synthetic(target, params)
                return target
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_existing_synthetic(target: Path, params: dict) -> None:
    marker = target / SYNTHETIC_MARKER
    if not marker.is_file():
        raise DatasetError(
            f"{target} already exists and is not a synthetic dataset written by synthesize_dataset "
            f"(no {SYNTHETIC_MARKER}); choose another root or remove it"
        )
    existing = load_json(marker)
    if existing != params:
        diff = {k: (existing.get(k), params[k]) for k in params if existing.get(k) != params[k]}
        raise DatasetError(
            f"{target} holds a synthetic dataset with other parameters (existing, requested): {diff}; "
            "choose another root or remove it"
        )
