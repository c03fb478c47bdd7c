"""The dataset: scan the Kaggle layout, balance and split, decode, resize and cache images and masks.

The dataset on disk always has the layout of the Kaggle COVID-19 Radiography Database::

    <root>/COVID-19_Radiography_Dataset/<Class>/images/<Class>-<n>.png
                                        <Class>/masks/<Class>-<n>.png         (lung masks, 256x256 RGB)
                                        <Class>/lesion_masks/<Class>-<n>.png  (synthetic phantoms only)

:func:`scan_dataset` lists any such folder (the real download or phantoms from :mod:`helpers.data.phantoms`),
:func:`balance_and_split` makes the study's balanced 80/10/10 split, and :func:`load_images` decodes, converts
to grayscale, resizes and caches the images.

References: M. E. H. Chowdhury et al., "Can AI help in screening viral and COVID-19 pneumonia?",
IEEE Access 8 (2020); T. Rahman et al., "Exploring the effect of image enhancement techniques on
COVID-19 detection using chest X-ray images", Computers in Biology and Medicine 132 (2021).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
import warnings
import zlib
from functools import partial
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from helpers.common.checks import check_int

# Sampling strategies: ``downsample`` (the paper: every class cut to the smallest), ``class_weight`` and
# ``oversample`` (every image in the training split; the loss weighted, or minority classes resampled per epoch).
from helpers.common.choices import SAMPLINGS
from helpers.common.config import CLASS_NAMES
from helpers.common.files import atomic_path, find_project_root
from helpers.common.parallel import each_index, io_thread_count, parallel_map, progress_updates
from helpers.data.layout import (
    IMAGE_EXTENSIONS,
    LESION_DIRNAME,
    MANIFEST_COLUMNS,
    SPLITS,
    DatasetError,
    dataset_folder,
    layout_problem,
)

__all__ = [
    "scan_dataset",
    "SAMPLINGS",
    "split_sizes",
    "balance_and_split",
    "class_counts",
    "decode_gray",
    "resize_square",
    "load_images",
    "decode_mask",
    "load_masks",
    "rows_without_mask",
    "masked_rows",
    "cache_path",
]


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_CACHE_VERSION = 1


_check_int = partial(check_int, error=DatasetError)


# ----------------------------------------------------------------------------------------------
# Scanning a dataset folder
# ----------------------------------------------------------------------------------------------


def _natural_key(text: str):
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))


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


def _decode_check(path: Path) -> tuple[str | None, tuple[int, ...] | None]:
    """Header check, then a full decode (cv2 releases the GIL): ``(problem or None, (height, width) or None)``."""
    problem = _image_header_problem(path)
    if problem:
        return problem, None
    if path.suffix.lower() in (".jpg", ".jpeg"):
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 2))
            if handle.read(2) != b"\xff\xd9":
                return "is a truncated JPEG image (no end marker)", None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return "cannot be decoded (truncated or corrupt image data)", None
    return None, tuple(image.shape[:2])


def _decode_all(files: list[Path]) -> list[tuple[str | None, tuple[int, ...] | None]]:
    """:func:`_decode_check` of every file, in input order, on threads (:func:`helpers.common.parallel.io_thread_count`)."""
    if len(files) < 16:
        return [_decode_check(f) for f in files]
    return parallel_map(_decode_check, [(f,) for f in files], io_thread_count(), threads=True)


def scan_dataset(root: str | os.PathLike, skip_unreadable: bool = False) -> pd.DataFrame:
    """List a dataset in the Kaggle layout as a DataFrame (``path``, ``label``, ``label_index``, ``mask_path``, ``lesion_mask_path``).

    ``root`` is the ``COVID-19_Radiography_Dataset`` folder or a folder containing it. Images are
    ``<Class>/images/*.png`` (or, as in older releases, directly in ``<Class>/``); masks are matched by
    file name in ``<Class>/masks`` and ``<Class>/lesion_masks``. Files beside the class folders (metadata
    spreadsheets, README) are ignored. Every image and mask is decoded once (in parallel threads), so a truncated,
    corrupt or non-image file raises :class:`DatasetError` naming it before any training, or with
    ``skip_unreadable=True`` is left out, warned about and listed in ``frame.attrs["skipped"]``. A mask whose
    aspect ratio differs from its image's is warned about (both are stretched to a square later, so they would not
    line up). Rows are sorted by class, then image number.
    """
    problem = layout_problem(root)  # a missing folder or class folder, named before any file is read
    if problem:
        raise DatasetError(problem)
    dataset = dataset_folder(root)
    candidates, class_dirs = [], {}
    for label_index, name in enumerate(CLASS_NAMES):
        folder = dataset / name
        image_dir = folder / "images" if (folder / "images").is_dir() else folder
        class_dirs[name] = image_dir
        files = sorted(
            (p for p in image_dir.iterdir() if p.is_file() and not p.name.startswith(".")),
            key=lambda p: _natural_key(p.name),
        )
        if image_dir == folder:  # old layout: ignore non-image files beside the images (metadata)
            files = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        # Mask folders are listed once (no per-image stat); the old layout has no masks.
        mask_names = {
            sub: (
                {p.name for p in (folder / sub).iterdir()} if image_dir != folder and (folder / sub).is_dir() else set()
            )
            for sub in ("masks", LESION_DIRNAME)
        }
        for path in files:
            masks = [folder / sub / path.name if path.name in mask_names[sub] else None for sub in mask_names]
            candidates.append((name, label_index, image_dir, path, masks))
    rows, skipped, misshapen = _checked_rows(candidates, skip_unreadable, class_dirs)
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS[:-1]))
    frame["label_index"] = frame["label_index"].astype(np.int64)
    frame.attrs["skipped"] = skipped
    frame.attrs["root"] = str(dataset)
    if misshapen:
        warnings.warn(
            f"{len(misshapen)} mask(s) have another aspect ratio than their image and will not line up with it "
            f"once both are resized to a square: {_listed(misshapen, 3)}",
            stacklevel=2,
        )
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable file(s) in {dataset}: {_listed(skipped)}",
            stacklevel=2,
        )
    return frame


def _listed(items: list, limit: int = 5) -> str:
    """The first ``limit`` items for a message, and " ..." when there are more."""
    return f"{items[:limit]}" + (" ..." if len(items) > limit else "")


def _checked_rows(candidates, skip_unreadable: bool, class_dirs: dict) -> tuple[list[dict], list[str], list[str]]:
    """Decode every candidate image and mask; the manifest rows, the skipped files and the misshapen masks."""
    files = [path for _, _, _, path, masks in candidates for path in (path, *masks) if path is not None]
    checked = dict(zip(files, _decode_all(files)))
    rows, skipped, misshapen = [], [], []
    for name, label_index, _, path, masks in candidates:
        for file in (path, *masks):
            problem = checked[file][0] if file is not None else None
            if problem and not skip_unreadable:
                raise DatasetError(f"{file} {problem} (pass skip_unreadable=True to skip such files)")
            if problem:
                skipped.append(str(file))
        if checked[path][0]:
            continue
        shape = checked[path][1]
        kept = [m if m is not None and not checked[m][0] else None for m in masks]
        for mask in kept:
            h, w = checked[mask][1] if mask is not None else shape
            if abs(h / w - shape[0] / shape[1]) > 0.01:
                misshapen.append(f"{mask} ({w}x{h}, image {shape[1]}x{shape[0]})")
        rows.append(
            {
                "path": str(path),
                "label": name,
                "label_index": label_index,
                "mask_path": str(kept[0]) if kept[0] else "",
                "lesion_mask_path": str(kept[1]) if kept[1] else "",
            }
        )
    for name, image_dir in class_dirs.items():
        if not any(row["label"] == name for row in rows):
            raise DatasetError(f"class folder {image_dir} holds no readable images ({IMAGE_EXTENSIONS})")
    return rows, skipped, misshapen


# ----------------------------------------------------------------------------------------------
# Balancing and splitting
# ----------------------------------------------------------------------------------------------


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise DatasetError(f"fractions must be three numbers (train, val, test), got {fractions!r}") from None
    if len(values) != 3 or any(not math.isfinite(f) or f <= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise DatasetError(
            f"fractions must be three positive numbers summing to 1 (train, val, test), got {fractions!r}"
        )
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


def balance_and_split(
    frame: pd.DataFrame,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    per_class: int | None = None,
    sampling: str = "downsample",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Down-sample every class to the smallest (or ``per_class``) and split each class into train/val/test.

    Per class, rows are put in natural path order, shuffled with a generator seeded by ``(seed, class)``,
    the first n kept, then split by :func:`split_sizes` (1345 per class -> 1076/134/135, totals
    4304/536/540). Returns three frames with a ``split`` column, in class order.

    ``sampling="class_weight"`` or ``"oversample"`` (:data:`SAMPLINGS`) keeps the same balanced validation and test
    rows, and the training split takes every other image of the class: its first rows are the down-sampled training
    split, followed by the rest of the class in the same shuffled order (the weighting or resampling happens in
    training, :func:`helpers.models.training.train_classifier`).
    """
    if sampling not in SAMPLINGS:
        raise DatasetError(f"sampling must be one of {', '.join(map(repr, SAMPLINGS))}, got {sampling!r}")
    fractions = _check_fractions(fractions)
    seed = _check_int("seed", seed, 0)
    frame = _with_label_index(frame)
    if frame.empty:
        raise DatasetError("the frame is empty: nothing to split")
    if frame["path"].duplicated().any():
        raise DatasetError(
            f"duplicate paths in the frame, e.g. {frame.loc[frame['path'].duplicated(), 'path'].iloc[0]}"
        )
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
        raise DatasetError(
            f"{n} images per class with fractions {fractions} leave a split empty "
            f"({n_train}/{n_val}/{n_test}); use more images per class"
        )
    parts = {split: [] for split in SPLITS}
    for name in present:
        rows = frame[frame["label"] == name]
        rows = rows.iloc[sorted(range(len(rows)), key=lambda i: _natural_key(rows["path"].iloc[i]))]
        rng = np.random.default_rng([seed, CLASS_NAMES.index(name)])
        order = rng.permutation(len(rows))
        kept = rows.iloc[order[:n]]
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        for split, (lo, hi) in bounds.items():
            part = kept.iloc[lo:hi]
            if split == "train" and sampling != "downsample":
                part = pd.concat([part, rows.iloc[order[n:]]])
            parts[split].append(part.assign(split=split))
    return tuple(
        pd.concat(parts[split], ignore_index=True)[list(MANIFEST_COLUMNS) + _extra_columns(frame)] for split in SPLITS
    )


def _extra_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in MANIFEST_COLUMNS]


def class_counts(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows, with a ``Total`` row) and split (columns ``train``, ``val``, ``test``, ``total``)."""
    table = pd.DataFrame(
        {
            split: part["label"].value_counts().reindex(list(CLASS_NAMES), fill_value=0)
            for split, part in zip(SPLITS, (train, val, test))
        }
    ).astype(np.int64)
    table.index.name = "class"
    table["total"] = table.sum(axis=1)
    table.loc["Total"] = table.sum(axis=0)
    return table


# ----------------------------------------------------------------------------------------------
# Decoding, resizing and caching
# ----------------------------------------------------------------------------------------------


def decode_gray(path: str) -> np.ndarray:
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


def resize_square(image: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """``image`` resized to ``size`` x ``size`` with the cv2 ``interpolation`` (unchanged when it has that size)."""
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


def _decode_resized(path: str, image_size: int) -> np.ndarray:
    """One image decoded to grayscale and resized (INTER_AREA) to ``image_size``."""
    return resize_square(decode_gray(path), image_size, cv2.INTER_AREA)


def cache_path(frame: pd.DataFrame, image_size: int, cache_dir: str | os.PathLike) -> Path:
    """The file in ``cache_dir`` that :func:`load_images` caches ``frame``'s images at ``image_size`` in."""
    return Path(cache_dir) / f"{_cache_key([str(p) for p in frame['path']], image_size)}.npy"


def load_images(
    frame: pd.DataFrame,
    image_size: int,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """Decode, convert to grayscale and resize (INTER_AREA) the frame's images into uint8 (N, H, W, 1), cached.

    The cache file ``<cache_dir>/<hash>.npy`` is keyed by the paths, their sizes and modification times and
    ``image_size``; it is written atomically and reused when its shape matches. ``cache_dir=None`` uses
    ``<project root>/data/processed/cache``; ``cache_dir=False`` disables caching. Decoding runs on ``workers``
    threads (OpenCV releases the GIL; default every core), with the same result whatever their number.
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
    with progress_updates(len(paths), progress, f"decode {image_size}px") as update:
        decoded = parallel_map(_decode_resized, [(path, image_size) for path in paths], workers, update, threads=True)
    for i, image in enumerate(decoded):
        images[i, :, :, 0] = image
    if cache_file is not None:
        with atomic_path(cache_file, suffix=".npy") as tmp:
            np.save(tmp, images, allow_pickle=False)
    return images


_MASK_COLUMNS = {"lesion": "lesion_mask_path", "lung": "mask_path"}


def _mask_paths(frame: pd.DataFrame, kind: str) -> list[str]:
    """The ``kind`` mask path of every row ("" where a row has none)."""
    if kind not in _MASK_COLUMNS:
        raise DatasetError(f"kind must be 'lesion' or 'lung', got {kind!r}")
    column = _MASK_COLUMNS[kind]
    return list(frame[column].fillna("").astype(str)) if column in frame.columns else [""] * len(frame)


def rows_without_mask(frame: pd.DataFrame, kind: str = "lung") -> list[str]:
    """Image paths of the rows whose ``kind`` mask is absent or no longer a file."""
    return [str(p) for p, m in zip(frame["path"], _mask_paths(frame, kind)) if not m or not os.path.isfile(m)]


def masked_rows(frame: pd.DataFrame, kind: str = "lung", skip_missing: bool = False) -> pd.DataFrame:
    """The rows of ``frame`` that have a ``kind`` mask file; rows without one raise :class:`DatasetError` naming them.

    With ``skip_missing=True`` (the runner's ``-p skip_missing_masks=true``) those rows are dropped instead, counted
    in a printed note, and their image paths listed in ``frame.attrs["skipped_masks"]`` of the result (an unreadable
    mask is already left out, or an error, in :func:`scan_dataset`, depending on its ``skip_unreadable``).
    """
    missing = rows_without_mask(frame, kind)
    if missing and len(missing) == len(frame):
        raise DatasetError(
            f"no image of the dataset has a {kind} mask ({len(missing)} image(s) without one, e.g. {missing[0]})"
        )
    if missing and not skip_missing:
        raise DatasetError(
            f"{len(missing)} image(s) have no {kind} mask (or it is no longer on disk): {_listed(missing)}; "
            f"leave them out with -p skip_missing_masks=true"
        )
    kept = frame[~frame["path"].astype(str).isin(set(missing))].copy()
    kept.attrs = {**frame.attrs, "skipped_masks": missing}
    if missing:
        print(f"note: left out {len(missing)} image(s) without a {kind} mask: {_listed(missing)}")
    return kept


def decode_mask(path: str) -> np.ndarray:
    """A mask file as bool (H, W) by one rule for every common encoding: channels reduced by their maximum, then a
    pixel is set when its value is above half the file's largest value.

    So 0/1 and 0/255 masks (8 bit), 0/1 and 0/65535 (16 bit), grey, RGB, RGBA (alpha ignored) and palette PNGs read
    alike, a coloured mask (e.g. red lungs) is not lost to a grey conversion, and soft (anti-aliased) edges are cut
    at half height. A file whose pixels are all equal (all 0, or all 255) has no set pixel or only set pixels.
    """
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DatasetError(f"{path} cannot be decoded as an image (missing, corrupt or not an image)")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise DatasetError(f"{path} has unsupported pixel type {image.dtype}")
    if image.ndim == 3:
        if image.shape[2] not in (1, 3, 4):
            raise DatasetError(f"{path} has {image.shape[2]} channels; expected 1, 3 or 4")
        image = image[:, :, : min(image.shape[2], 3)].max(axis=2)
    return image > image.max() / 2


def load_masks(frame: pd.DataFrame, image_size: int, kind: str = "lesion", required: bool = False) -> np.ndarray:
    """Masks of the frame's rows as 0/1 uint8 (N, H, W): ``kind`` ``"lesion"`` or ``"lung"``; zeros where a row has none.

    Each file is read by :func:`decode_mask` (any bit depth, grey or colour, 0/1 or 0/255) and resized with nearest
    neighbour; an unreadable mask file raises :class:`DatasetError` naming it. ``required=True`` (segmentation, where
    a lung must be) raises naming the images without a mask instead of giving them zeros (:func:`masked_rows` drops
    them first), and naming the lung masks whose pixels all read alike (no lung, or nothing but lung: e.g. a mask
    set misread, or broken files). Non-square masks are stretched to the square size like the images, with a
    warning naming them.
    """
    image_size = _check_int("image_size", image_size, 1)
    values = _mask_paths(frame, kind)
    if required:
        masked_rows(frame, kind)  # raises, naming the images without a mask
    masks = np.zeros((len(frame), image_size, image_size), dtype=np.uint8)

    def decode(i: int) -> tuple[str, str]:
        """Decode row i's mask into its slot: ("path (WxH)" if it is not square, the path if a lung mask is constant)."""
        if not values[i]:
            return "", ""
        mask = decode_mask(values[i])
        masks[i] = resize_square(mask.view(np.uint8), image_size, cv2.INTER_NEAREST)
        stretched = f"{values[i]} ({mask.shape[1]}x{mask.shape[0]})" if mask.shape[0] != mask.shape[1] else ""
        return stretched, values[i] if required and kind == "lung" and (mask.all() or not mask.any()) else ""

    notes = each_index(decode, len(values))
    constant = [path for _, path in notes if path]
    if constant:
        raise DatasetError(
            f"{len(constant)} of {sum(map(bool, values))} lung mask(s) show no lung, or nothing but lung (every "
            f"pixel reads alike: set above half the file's largest value, channels reduced by their maximum): "
            f"{_listed(constant)}; fix or remove these files (images without a mask file are left out of the lung "
            "segmentation)"
        )
    stretched = [note for note, _ in notes if note]
    if stretched:
        warnings.warn(
            f"{len(stretched)} {kind} mask(s) are not square and were stretched to {image_size}x{image_size} "
            f"(as their images are): {_listed(stretched, 3)}",
            stacklevel=2,
        )
    return masks
