"""The data layer: synthetic phantom X-rays, dataset scan, balanced split, decoded-image cache.

The dataset on disk always has the layout of the Kaggle COVID-19 Radiography Database::

    <root>/COVID-19_Radiography_Dataset/<Class>/images/<Class>-<n>.png
                                        <Class>/masks/<Class>-<n>.png         (lung masks, 256x256 RGB)
                                        <Class>/lesion_masks/<Class>-<n>.png  (synthetic phantoms only)

:func:`synthesize_dataset` writes phantoms in that layout, :func:`scan_dataset` lists any such folder
(the real download or phantoms), :func:`balance_and_split` makes the study's balanced 80/10/10 split,
and :func:`load_images` decodes, converts to grayscale, resizes and caches the images.

References: M. E. H. Chowdhury et al., "Can AI help in screening viral and COVID-19 pneumonia?",
IEEE Access 8 (2020); T. Rahman et al., "Exploring the effect of image enhancement techniques on
COVID-19 detection using chest X-ray images", Computers in Biology and Medicine 132 (2021).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import pandas as pd

from .config import CLASS_NAMES, DATASET_DIRNAME, atomic_path, find_project_root, load_json, save_json

__all__ = [
    "DatasetError",
    "MANIFEST_COLUMNS",
    "SPLITS",
    "synthetic_dir_name",
    "render_phantom",
    "synthesize_dataset",
    "scan_dataset",
    "balance_and_split",
    "load_images",
    "load_masks",
    "write_manifest",
    "read_manifest",
    "load_split",
    "dataset_from_parameters",
    "split_sizes",
    "class_counts",
    "plot_examples",
    "plot_masks_overlay",
]

#: Columns of the split manifest (``paths.split_manifest``), in order.
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "label_index", "mask_path", "lesion_mask_path", "split")
#: Split names, in order.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Extensions accepted as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
#: Name of the JSON marker that records a synthetic dataset's parameters (written last).
SYNTHETIC_MARKER = "synthetic.json"
#: Version of the phantom generator; part of the marker, so a changed generator never reuses old files.
PHANTOM_VERSION = 1
#: Subfolder of a class holding lesion masks (synthetic phantoms only).
LESION_DIRNAME = "lesion_masks"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_CACHE_VERSION = 1


class DatasetError(ValueError):
    """A dataset folder, file or parameter that the data layer cannot use (the message names it)."""


# ----------------------------------------------------------------------------------------------
# Synthetic phantoms
# ----------------------------------------------------------------------------------------------


def synthetic_dir_name(image_size: int, per_class: int, seed: int, confounder: bool = False) -> str:
    """Folder name of a synthetic dataset under ``paths.raw``: ``synthetic-<size>-<n>-<seed>[-confounder]``."""
    return f"synthetic-{int(image_size)}-{int(per_class)}-{int(seed)}" + ("-confounder" if confounder else "")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DatasetError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalized pixel-centre coordinates (u horizontal, v vertical), both in (0, 1)."""
    u = (np.arange(width, dtype=np.float32) + 0.5) / width
    v = (np.arange(height, dtype=np.float32) + 0.5) / height
    return u[None, :], v[:, None]


def _ellipse(u, v, cx, cy, rx, ry, edge: float = 0.0) -> np.ndarray:
    """Soft ellipse indicator in [0, 1]; ``edge`` is the width of the soft border (in radius units)."""
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    if edge <= 0:
        return (r <= 1.0).astype(np.float32)
    return np.clip((1.0 + edge - r) / (2 * edge), 0.0, 1.0).astype(np.float32)


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
    heart = _ellipse(u, v, geo["cx"] + geo["heart_dx"], geo["cy"] + geo["heart_dy"], geo["heart_rx"], geo["heart_ry"]) > 0.5
    mediastinum = np.abs(u - geo["cx"]) < 0.05 * geo["s"]
    return lungs & ~heart & ~mediastinum


def _draw_lines(size: int, lines: Iterable[tuple[float, float, float, float, float]], thickness: int) -> np.ndarray:
    """Anti-aliased lines (normalized endpoints, intensity) on a float canvas."""
    canvas = np.zeros((size, size), dtype=np.float32)
    shift = 4  # sub-pixel precision of cv2's drawing functions
    scale = size * (1 << shift)
    for u0, v0, u1, v1, value in lines:
        layer = np.zeros_like(canvas)
        cv2.line(layer, (int(u0 * scale), int(v0 * scale)), (int(u1 * scale), int(v1 * scale)), 1.0, thickness, cv2.LINE_AA, shift)
        np.maximum(canvas, layer * value, out=canvas)
    return canvas


def _finding(rng: np.random.Generator, class_index: int, geo: dict, size: int, u, v, lungs: np.ndarray,
             lungs_soft: np.ndarray):
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
        region = _ellipse(u, v, bx, by, geo["lung_rx"] * rng.uniform(0.8, 1.0), geo["lung_ry"] * rng.uniform(0.35, 0.45), edge=0.08)
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
                lines.append((hx + start * math.cos(angle), hy + start * math.sin(angle),
                              hx + (start + length) * math.cos(angle), hy + (start + length) * math.sin(angle),
                              rng.uniform(0.13, 0.2)))
            haze = np.maximum(haze, np.exp(-0.5 * (((u - hx) / (0.09 * s)) ** 2 + ((v - hy) / (0.12 * s)) ** 2)))
        thickness = max(1, int(round(size / 128)))
        streaks = _draw_lines(size, lines, thickness)
        opacity = np.maximum(streaks, 0.12 * haze.astype(np.float32))
        support = cv2.GaussianBlur(streaks, (0, 0), sigmaX=max(1.0, 0.02 * size))
        mask = (support > 0.02) | (haze > 0.4)
    opacity = opacity * lungs_soft
    mask &= lungs > 0.5
    return opacity, mask


def render_phantom(class_name: str, seed: int, n: int, image_size: int = 299, mask_size: int = 256,
                   confounder: bool = False, finding: bool = True) -> dict:
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
    geo_rng, finding_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, class_index, n]).spawn(3))
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
    phase = (v - geo["rib_curve"] * lateral ** 2 * s * 0.5) / geo["rib_spacing"] + geo["rib_phase"]
    ribs = np.clip((np.cos(2 * np.pi * phase) - 0.55) / 0.45, 0, 1)
    thorax = _ellipse(u, v, cx, cy - 0.02 * s, 0.34 * s, 0.31 * s, edge=0.05)
    ribs *= thorax * (lateral > 0.03)
    img = img + 0.1 * ribs

    # Vascular markings from the hila (every class, so that streaks alone do not mean pneumonia).
    vessel_lines = []
    for side, (lx, ly) in enumerate(_lung_centres(geo)):
        outward = -1.0 if side == 0 else 1.0
        hx, hy = lx - outward * 0.55 * geo["lung_rx"], ly + 0.05 * geo["lung_ry"]
        for angle, length in geo["vessels"][side * 4:(side + 1) * 4]:
            a = angle + (math.pi if side == 0 else 0.0)
            vessel_lines.append((hx, hy, hx + length * geo["lung_rx"] * 2 * math.cos(a), hy + length * geo["lung_rx"] * 2 * math.sin(a), 0.06))
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


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"could not write {path}")


def synthesize_dataset(root: str | os.PathLike, per_class: int, image_size: int = 299, seed: int = 0,
                       confounder: bool = False, mask_size: int = 256, progress: bool = True) -> Path:
    """Write ``per_class`` phantom X-rays per class in the Kaggle layout under ``root`` and return the dataset folder.

    Images go to ``<Class>/images/<Class>-<n>.png``, 3-channel lung masks (``mask_size``) to ``<Class>/masks/``
    and lesion masks (image size, empty for Normal) to ``<Class>/lesion_masks/``. The folder is generated
    beside the target and renamed; an existing dataset with the same parameters is reused, a different one
    raises :class:`DatasetError`. ``confounder=True`` gives Viral Pneumonia smaller (pediatric-like) chests.
    """
    per_class = _check_int("per_class", per_class, 1)
    image_size = _check_int("image_size", image_size, 8)
    mask_size = _check_int("mask_size", mask_size, 8)
    seed = _check_int("seed", seed, 0)
    params = {
        "generator": "helpers.data.render_phantom",
        "version": PHANTOM_VERSION,
        "per_class": per_class,
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
        jobs = [(name, n) for name in CLASS_NAMES for n in range(1, per_class + 1)]
        for name in CLASS_NAMES:
            for sub in ("images", "masks", LESION_DIRNAME):
                (tmp / name / sub).mkdir(parents=True)
        for name, n in _progress(jobs, progress, desc="phantoms"):
            arrays = render_phantom(name, seed, n, image_size, mask_size, confounder)
            stem = f"{name}-{n}.png"
            _write_png(tmp / name / "images" / stem, arrays["image"])
            _write_png(tmp / name / "masks" / stem, arrays["lung_mask"])
            _write_png(tmp / name / LESION_DIRNAME / stem, arrays["lesion_mask"])
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
        raise DatasetError(f"{target} already exists and is not a synthetic dataset written by synthesize_dataset "
                           f"(no {SYNTHETIC_MARKER}); choose another root or remove it")
    existing = load_json(marker)
    if existing != params:
        diff = {k: (existing.get(k), params[k]) for k in params if existing.get(k) != params[k]}
        raise DatasetError(f"{target} holds a synthetic dataset with other parameters (existing, requested): {diff}; "
                           "choose another root or remove it")


def _progress(iterable, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return iterable
    from .progress import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="img")


# ----------------------------------------------------------------------------------------------
# Scanning a dataset folder
# ----------------------------------------------------------------------------------------------


def _natural_key(text: str):
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))


def _canonical(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _image_header_problem(path: Path) -> str | None:
    """Cheap validity check of an image file: signature and (for PNG) the IHDR chunk; None when fine."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(33)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    suffix = path.suffix.lower()
    if suffix == ".png":
        if len(head) < 33 or not head.startswith(_PNG_SIGNATURE):
            return "is not a PNG image (bad signature)"
        length, kind = struct.unpack(">I4s", head[8:16])
        if kind != b"IHDR" or length != 13:
            return "is not a valid PNG image (no IHDR header)"
        crc = struct.unpack(">I", head[29:33])[0]
        if zlib.crc32(head[12:29]) & 0xFFFFFFFF != crc:
            return "is a corrupt PNG image (header checksum mismatch)"
        width, height = struct.unpack(">II", head[16:24])
        if width == 0 or height == 0:
            return "is a PNG image of size zero"
        return None
    if suffix in (".jpg", ".jpeg"):
        return None if head.startswith(_JPEG_SIGNATURE) else "is not a JPEG image (bad signature)"
    return f"is not an image (extension {path.suffix or 'none'!r}; expected one of {IMAGE_EXTENSIONS})"


def _resolve_dataset_dir(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    nested = root / DATASET_DIRNAME
    return nested if nested.is_dir() else root


def scan_dataset(root: str | os.PathLike, skip_unreadable: bool = False) -> pd.DataFrame:
    """List a dataset in the Kaggle layout as a DataFrame (``path``, ``label``, ``label_index``, ``mask_path``, ``lesion_mask_path``).

    ``root`` is the ``COVID-19_Radiography_Dataset`` folder or a folder containing it. Images are
    ``<Class>/images/*.png`` (or, as in older releases, directly in ``<Class>/``); masks are matched by
    file name in ``<Class>/masks`` and ``<Class>/lesion_masks``. Files beside the class folders (metadata
    spreadsheets, README) are ignored. Each file gets a cheap header check; an unreadable or non-image
    file raises :class:`DatasetError` naming it, or with ``skip_unreadable=True`` is left out, warned
    about and listed in ``frame.attrs["skipped"]``. Rows are sorted by class, then image number.
    """
    dataset = _resolve_dataset_dir(root)
    found = sorted(p.name for p in dataset.iterdir() if p.is_dir() and not p.name.startswith("."))
    rows, skipped = [], []
    for label_index, name in enumerate(CLASS_NAMES):
        folder = dataset / name
        if not folder.is_dir():
            near = [f for f in found if _canonical(f) == _canonical(name)]
            hint = f"; found {near[0]!r}, rename it to {name!r}" if near else ""
            raise DatasetError(f"class folder {folder} is missing (expected the folders {list(CLASS_NAMES)} in "
                               f"{dataset}, found {found}){hint}")
        image_dir = folder / "images" if (folder / "images").is_dir() else folder
        files = sorted((p for p in image_dir.iterdir() if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: _natural_key(p.name))
        if image_dir == folder:  # old layout: ignore non-image files beside the images (metadata)
            files = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        # Mask folders are listed once (no per-image stat); the old layout has no masks.
        mask_names = {sub: ({p.name for p in (folder / sub).iterdir()} if image_dir != folder and (folder / sub).is_dir() else set())
                      for sub in ("masks", LESION_DIRNAME)}
        class_rows = []
        for path in files:
            problem = _image_header_problem(path)
            if problem:
                if not skip_unreadable:
                    raise DatasetError(f"{path} {problem} (pass skip_unreadable=True to skip such files)")
                skipped.append(str(path))
                continue
            masks = []
            for sub in ("masks", LESION_DIRNAME):
                mask = folder / sub / path.name
                if path.name in mask_names[sub]:
                    problem = _image_header_problem(mask)
                    if problem:
                        if not skip_unreadable:
                            raise DatasetError(f"{mask} {problem} (pass skip_unreadable=True to skip such files)")
                        skipped.append(str(mask))
                        mask = None
                else:
                    mask = None
                masks.append(str(mask) if mask else "")
            class_rows.append({"path": str(path), "label": name, "label_index": label_index,
                               "mask_path": masks[0], "lesion_mask_path": masks[1]})
        if not class_rows:
            raise DatasetError(f"class folder {image_dir} holds no readable images ({IMAGE_EXTENSIONS})")
        rows.extend(class_rows)
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS[:-1]))
    frame["label_index"] = frame["label_index"].astype(np.int64)
    frame.attrs["skipped"] = skipped
    frame.attrs["root"] = str(dataset)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable file(s) in {dataset}: {skipped[:5]}"
                      + (" ..." if len(skipped) > 5 else ""), stacklevel=2)
    return frame


# ----------------------------------------------------------------------------------------------
# Balancing and splitting
# ----------------------------------------------------------------------------------------------


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise DatasetError(f"fractions must be three numbers (train, val, test), got {fractions!r}") from None
    if len(values) != 3 or any(not math.isfinite(f) or f <= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise DatasetError(f"fractions must be three positive numbers summing to 1 (train, val, test), got {fractions!r}")
    return values


def split_sizes(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """Per-class split sizes: train = floor(f_train n), val = floor(f_val n), test takes the rest (1345 -> 1076/134/135)."""
    f_train, f_val, _ = _check_fractions(fractions)
    n_train = int(math.floor(f_train * n + 1e-9))
    n_val = int(math.floor(f_val * n + 1e-9))
    return n_train, n_val, n - n_train - n_val


def _with_label_index(frame: pd.DataFrame) -> pd.DataFrame:
    if "path" not in frame.columns or "label" not in frame.columns:
        raise DatasetError(f"the frame needs the columns 'path' and 'label', it has {list(frame.columns)}")
    unknown = sorted(set(frame["label"]) - set(CLASS_NAMES))
    if unknown:
        raise DatasetError(f"unknown labels {unknown}; expected {list(CLASS_NAMES)}")
    frame = frame.copy()
    frame["label_index"] = frame["label"].map(CLASS_NAMES.index).astype(np.int64)
    for column in ("mask_path", "lesion_mask_path"):
        if column not in frame.columns:
            frame[column] = ""
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def balance_and_split(frame: pd.DataFrame, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                      per_class: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Down-sample every class to the smallest (or ``per_class``) and split each class into train/val/test.

    Per class, rows are put in natural path order, shuffled with a generator seeded by ``(seed, class)``,
    the first n kept, then split by :func:`split_sizes` (1345 per class -> 1076/134/135, totals
    4304/536/540). Returns three frames with a ``split`` column, in class order.
    """
    fractions = _check_fractions(fractions)
    seed = _check_int("seed", seed, 0)
    frame = _with_label_index(frame)
    if frame.empty:
        raise DatasetError("the frame is empty: nothing to split")
    if frame["path"].duplicated().any():
        raise DatasetError(f"duplicate paths in the frame, e.g. {frame.loc[frame['path'].duplicated(), 'path'].iloc[0]}")
    present = [name for name in CLASS_NAMES if (frame["label"] == name).any()]
    sizes = {name: int((frame["label"] == name).sum()) for name in present}
    if per_class is None:
        n = min(sizes.values())
    else:
        n = _check_int("per_class", per_class, 1)
        short = {name: size for name, size in sizes.items() if size < n}
        if short:
            raise DatasetError(f"per_class={n} exceeds the size of {short}")
    n_train, n_val, n_test = split_sizes(n, fractions)
    if min(n_train, n_val, n_test) <= 0:
        raise DatasetError(f"{n} images per class with fractions {fractions} leave a split empty "
                           f"({n_train}/{n_val}/{n_test}); use more images per class")
    parts = {split: [] for split in SPLITS}
    for name in present:
        rows = frame[frame["label"] == name]
        rows = rows.iloc[sorted(range(len(rows)), key=lambda i: _natural_key(rows["path"].iloc[i]))]
        rng = np.random.default_rng([seed, CLASS_NAMES.index(name)])
        rows = rows.iloc[rng.permutation(len(rows))[:n]]
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        for split, (lo, hi) in bounds.items():
            parts[split].append(rows.iloc[lo:hi].assign(split=split))
    return tuple(pd.concat(parts[split], ignore_index=True)[list(MANIFEST_COLUMNS) + _extra_columns(frame)]
                 for split in SPLITS)


def _extra_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in MANIFEST_COLUMNS]


def dataset_from_parameters(paths, source: str = "synthetic", data_dir: str | os.PathLike = "",
                            synthetic_per_class: int = 500, synthetic_size: int = 128, seed: int = 0,
                            confounder: bool = False, progress: bool = True) -> Path:
    """The dataset folder named by notebook 01's parameters: the Kaggle download at ``data_dir``, or phantoms generated under ``paths.raw``."""
    if source == "kaggle":
        if not str(data_dir):
            raise DatasetError("source='kaggle' needs data_dir: the folder holding COVID-19_Radiography_Dataset")
        return _resolve_dataset_dir(data_dir)
    if source == "synthetic":
        root = Path(paths.raw) / synthetic_dir_name(synthetic_size, synthetic_per_class, seed, confounder)
        return synthesize_dataset(root, synthetic_per_class, image_size=synthetic_size, seed=seed,
                                  confounder=confounder, progress=progress)
    raise DatasetError(f"source must be 'synthetic' or 'kaggle', got {source!r}")


def class_counts(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows, with a ``Total`` row) and split (columns ``train``, ``val``, ``test``, ``total``)."""
    table = pd.DataFrame({split: part["label"].value_counts().reindex(list(CLASS_NAMES), fill_value=0)
                          for split, part in zip(SPLITS, (train, val, test))}).astype(np.int64)
    table.index.name = "class"
    table["total"] = table.sum(axis=1)
    table.loc["Total"] = table.sum(axis=0)
    return table


# ----------------------------------------------------------------------------------------------
# Decoding, resizing and caching
# ----------------------------------------------------------------------------------------------


def _decode_gray(path: str) -> np.ndarray:
    """Decode an image file to a 2-D uint8 grayscale array (RGB/RGBA converted, 16-bit scaled)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path} cannot be decoded as an image (missing, corrupt or not an image)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DatasetError(f"{path} has unsupported pixel type {image.dtype}")
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        else:
            raise DatasetError(f"{path} has {channels} channels; expected 1, 3 or 4")
    return image


def _resize(image: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _cache_key(paths: Sequence[str], image_size: int) -> str:
    digest = hashlib.sha256(f"load_images v{_CACHE_VERSION} size={image_size} n={len(paths)}\n".encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            raise DatasetError(f"{path} does not exist or cannot be read") from None
        digest.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def load_images(frame: pd.DataFrame, image_size: int, cache_dir: str | os.PathLike | None = None,
                progress: bool = True) -> np.ndarray:
    """Decode, convert to grayscale and resize (INTER_AREA) the frame's images into uint8 (N, H, W, 1), cached.

    The cache file ``<cache_dir>/<hash>.npy`` is keyed by the paths, their sizes and modification times and
    ``image_size``; it is written atomically and reused when its shape matches. ``cache_dir=None`` uses
    ``<project root>/data/processed/cache``; ``cache_dir=False`` disables caching.
    """
    image_size = _check_int("image_size", image_size, 1)
    if "path" not in frame.columns:
        raise DatasetError(f"the frame needs a 'path' column, it has {list(frame.columns)}")
    paths = [str(p) for p in frame["path"]]
    shape = (len(paths), image_size, image_size, 1)
    cache_file = None
    if cache_dir is not False:
        folder = Path(cache_dir) if cache_dir is not None else find_project_root() / "data" / "processed" / "cache"
        cache_file = folder / f"{_cache_key(paths, image_size)}.npy"
        if cache_file.is_file():
            try:
                cached = np.load(cache_file, allow_pickle=False)
                if cached.shape == shape and cached.dtype == np.uint8:
                    return cached
            except (OSError, ValueError):
                pass  # unreadable cache file: rebuild it below
    images = np.empty(shape, dtype=np.uint8)
    for i, path in enumerate(_progress(paths, progress, desc=f"decode {image_size}px", total=len(paths))):
        images[i, :, :, 0] = _resize(_decode_gray(path), image_size, cv2.INTER_AREA)
    if cache_file is not None:
        with atomic_path(cache_file, suffix=".npy") as tmp:
            np.save(tmp, images, allow_pickle=False)
    return images


def load_masks(frame: pd.DataFrame, image_size: int, kind: str = "lesion") -> np.ndarray:
    """Masks of the frame's rows as 0/1 uint8 (N, H, W): ``kind`` ``"lesion"`` or ``"lung"``; zeros where a row has none."""
    columns = {"lesion": "lesion_mask_path", "lung": "mask_path"}
    if kind not in columns:
        raise DatasetError(f"kind must be 'lesion' or 'lung', got {kind!r}")
    image_size = _check_int("image_size", image_size, 1)
    column = columns[kind]
    values = frame[column].fillna("").astype(str) if column in frame.columns else [""] * len(frame)
    masks = np.zeros((len(frame), image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(values):
        if path:
            mask = _resize(_decode_gray(path), image_size, cv2.INTER_NEAREST)
            masks[i] = mask > 127
    return masks


# ----------------------------------------------------------------------------------------------
# The split manifest
# ----------------------------------------------------------------------------------------------


def write_manifest(frames, path: str | os.PathLike) -> Path:
    """Write the split manifest CSV (columns :data:`MANIFEST_COLUMNS`) from (train, val, test) frames or one frame with ``split``, atomically."""
    frame = pd.concat(list(frames), ignore_index=True) if isinstance(frames, (list, tuple)) else frames
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"cannot write the manifest {path}: the frames lack the columns {missing}")
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise DatasetError(f"cannot write the manifest {path}: unknown split names {bad}")
    path = Path(path)
    with atomic_path(path, suffix=".csv") as tmp:
        frame[list(MANIFEST_COLUMNS)].to_csv(tmp, index=False)
    return path


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read the split manifest CSV, checking its columns, labels and split names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split manifest {path} does not exist: run notebook 01 (01_data) first")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"split manifest {path} is not a readable CSV: {exc}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"split manifest {path} lacks the columns {missing} (has {list(frame.columns)})")
    if frame.empty:
        raise DatasetError(f"split manifest {path} has no rows")
    bad_labels = sorted(set(frame["label"]) - set(CLASS_NAMES))
    bad_splits = sorted(set(frame["split"]) - set(SPLITS))
    if bad_labels or bad_splits:
        raise DatasetError(f"split manifest {path} has unknown labels {bad_labels} or splits {bad_splits}")
    expected = frame["label"].map(CLASS_NAMES.index)
    if not frame["label_index"].str.fullmatch(r"\d+").all() or (frame["label_index"].astype(np.int64) != expected).any():
        raise DatasetError(f"split manifest {path} has label_index values that do not match its labels")
    frame["label_index"] = frame["label_index"].astype(np.int64)
    return frame[list(MANIFEST_COLUMNS)]


def load_split(paths, split: str, image_size: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, H, W, 1) and labels int64 (N,) of one split of ``paths.split_manifest``, cached in ``paths.cache``."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    frame = read_manifest(paths.split_manifest)
    part = frame[frame["split"] == split].reset_index(drop=True)
    if part.empty:
        raise DatasetError(f"split manifest {paths.split_manifest} has no {split!r} rows")
    images = load_images(part, image_size, cache_dir=paths.cache, progress=progress)
    return images, part["label_index"].to_numpy(dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def plot_examples(frame: pd.DataFrame, image_size: int | None = None, seed: int | None = None, cmap: str = "gray"):
    """The paper's Figure 1: one example image per class (class names as titles); ``seed`` picks random examples, else the first."""
    import matplotlib.pyplot as plt

    present = [name for name in CLASS_NAMES if (frame["label"] == name).any()]
    if not present:
        raise DatasetError("the frame has no rows to plot")
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.6), squeeze=False)
    for ax, name in zip(axes[0], present):
        rows = frame[frame["label"] == name]
        row = rows.iloc[0] if seed is None else rows.iloc[int(np.random.default_rng([seed, CLASS_NAMES.index(name)]).integers(len(rows)))]
        image = _decode_gray(row["path"])
        if image_size:
            image = _resize(image, image_size, cv2.INTER_AREA)
        ax.imshow(image, cmap=cmap, vmin=0, vmax=255)
        ax.set_title(name)
        ax.set_xlabel(f"{Path(row['path']).name} ({image.shape[1]}x{image.shape[0]})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("One example per class")
    fig.tight_layout()
    return fig


def plot_masks_overlay(frame: pd.DataFrame, image_size: int | None = None, seed: int | None = None,
                       index: int | None = None):
    """An image, its lung-mask outline and its lesion mask overlaid.

    ``index`` picks the row; otherwise a row whose lesion mask is not empty (the first, or a seeded random
    one when ``seed`` is given), falling back to a row with a lung mask, then to the first row.
    """
    import matplotlib.pyplot as plt

    if frame.empty:
        raise DatasetError("the frame has no rows to plot")
    if index is None:
        order = np.arange(len(frame)) if seed is None else np.random.default_rng([seed, 1]).permutation(len(frame))
        lesion_col = frame["lesion_mask_path"].fillna("").astype(str) if "lesion_mask_path" in frame else None
        lung_col = frame["mask_path"].fillna("").astype(str) if "mask_path" in frame else None
        index = next((int(i) for i in order if lesion_col is not None and lesion_col.iloc[i]
                      and load_masks(frame.iloc[[int(i)]], 32, "lesion").any()), None)
        if index is None:
            index = next((int(i) for i in order if lung_col is not None and lung_col.iloc[i]), int(order[0]))
    row = frame.iloc[[index]]
    image = _decode_gray(row["path"].iloc[0])
    size = image_size or image.shape[0]
    image = _resize(image, size, cv2.INTER_AREA)
    lung = load_masks(row, size, "lung")[0]
    lesion = load_masks(row, size, "lesion")[0]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title(f"{row['label'].iloc[0]}: {Path(row['path'].iloc[0]).name}")
    if lung.any():
        axes[1].contour(lung, levels=[0.5], colors=["tab:cyan"], linewidths=1.2)
    axes[1].set_title("lung mask (outline)" if lung.any() else "no lung mask")
    if lesion.any():
        axes[2].imshow(np.ma.masked_where(lesion == 0, lesion), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
        axes[2].contour(lesion, levels=[0.5], colors=["tab:red"], linewidths=1.0)
    axes[2].set_title("lesion mask (overlay)" if lesion.any() else "no lesion mask")
    fig.tight_layout()
    return fig
