"""The per-image explorer: ``explorer.html``, one self-contained page showing every test image of a study.

A card per test image (true class, each model's prediction and probability, per-image AOPC (MoRF), MoRF − random,
mask energy), filters, sorting, and a detail view: the heatmap overlays of both models with the mask outlines, the
perturbation curves f(xᵏ) of every order, and a step slider showing xᵏ with a marker on the curves. Built only from
the files notebooks 01, 05, 06 and 07 saved; xᵏ is recomputed with :mod:`helpers.metrics.perturbation` (the seeded noise and
region orders of notebook 07), never with a model. In the page, xᵏ is composed from x and its perturbed copy g(x)
(one per image, shared by both models and all orders) and the step of every region, so every step can be shown.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.common.config import CLASS_NAMES
from helpers.common.files import atomic_path
from helpers.data import dataset, layout
from helpers.explain.maps import jet, normalize, upsample
from helpers.metrics import perturbation
from helpers.metrics.aopc import per_image_aopc
from helpers.metrics.energy import mask_energy
from helpers.study import files as study
from helpers.study import split_files
from helpers.study.lung_files import load_lung_masks, lung_masks_path

__all__ = [
    "EXPLORER_FILE",
    "ExplorerInputError",
    "ExplorerData",
    "missing_inputs",
    "load_explorer_data",
    "select_images",
    "write_explorer",
    "chromium_driver",
    "screenshot",
]

#: The page's file name in the report folder.
EXPLORER_FILE = "explorer.html"
#: Colours of the mask outlines in the page and the widget.
OUTLINE_COLOURS = {"lung": "#2ca02c", "lesion": "#ff00ff", "predicted lung": "#17becf"}
ORDER_COLOURS = {"morf": "#d62728", "random": "#7f7f7f", "lerf": "#1f77b4"}
#: What a browser test needs, in words (the page itself needs only a browser).
BROWSER_HINT = "apt-get install -y chromium chromium-driver; pip install selenium (or set $CHROMIUM and $CHROMEDRIVER)"


class ExplorerInputError(FileNotFoundError):
    """A study file the explorer needs is missing or unusable; the message names it and the notebook that writes it."""


def _required(paths, model_names) -> list[tuple[Path, str, str]]:
    """(file, what it holds, the notebook that writes it) of every input of the explorer."""
    files = [
        (paths.split_manifest, "the split manifest", "01_data"),
        (study.metrics_file(paths, "aopc"), "the AOPC settings", "07_aopc"),
    ]
    for name in model_names:
        files += [
            (study.predictions_path(paths, name), f"{name}'s test predictions", "05_report"),
            (study.heatmaps_path(paths, name), f"{name}'s heatmaps", "06_gradcam"),
            (study.curves_path(paths, name), f"{name}'s per-image perturbation curves", "07_aopc"),
        ]
    return files


def missing_inputs(paths, model_names=None) -> list[str]:
    """One line per missing input of the explorer: the file, what it holds and the notebook that writes it."""
    names = _model_names(paths, model_names)
    return [
        f"{path} ({what}): written by notebook {nb}" for path, what, nb in _required(paths, names) if not path.is_file()
    ]


def _model_names(paths, model_names) -> list[str]:
    if model_names:
        return list(model_names)
    default = list(study.MODEL_NOTEBOOKS)
    aopc = study.metrics_file(paths, "aopc")
    if not aopc.is_file():
        return default
    found = list(study.load_json(aopc).get("report", {}).get("models", {})) or default
    return [n for n in default if n in found] + sorted(n for n in found if n not in default)


def _refuse(problems: list[str], paths) -> None:
    if problems:
        first = min(re.findall(r"notebook (\d\d)_", " ".join(problems)) or ["01"])
        raise ExplorerInputError(
            f"the explorer of {paths.report} cannot be built (a report of an interrupted or older study):\n  "
            + "\n  ".join(problems)
            + f"\nrerun from notebook {first} (python -m helpers.runner.pipeline --from {first})"
        )


@dataclass
class ExplorerData:
    """Everything the explorer shows, read from a study's files; xᵏ recomputed on demand (no model)."""

    images: np.ndarray  # uint8 (N, H, W): the test images as the classifiers saw them
    labels: np.ndarray  # int64 (N,)
    names: list  # (N,) image names (file stems)
    outputs: dict  # model -> {"probabilities", "predicted", "classes", "correct"}
    heatmaps: dict  # model -> {method: (N, h, w)}; the first method is the one AOPC scored
    curves: dict  # model -> {order: (N, L+1)}
    masks: dict  # kind -> uint8 (N, H, W), kinds with at least one non-empty mask
    settings: dict  # notebook 07's settings (aopc.json)
    class_names: tuple = CLASS_NAMES
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def models(self) -> list[str]:
        """The model slots, in the study's order."""
        return list(self.outputs)

    @property
    def orders(self) -> list[str]:
        """The region orders with curves (MoRF first)."""
        return list(next(iter(self.curves.values())))

    @property
    def steps(self) -> int:
        """L, the number of perturbation steps."""
        return next(iter(next(iter(self.curves.values())).values())).shape[1] - 1

    def scored_method(self, model: str) -> str:
        """The heatmap method whose region order notebook 07 scored."""
        return next(iter(self.heatmaps[model]))

    def grid(self) -> perturbation.RegionGrid:
        """The region grid of notebook 07."""
        return perturbation.region_grid(self.images.shape[1:], self.settings["region_size"])

    def region_steps(self, model: str, order: str) -> np.ndarray:
        """(N, R) step (1..L) at which each region is perturbed, as in notebook 07."""
        key = ("steps", model, order)
        if key not in self._cache:
            s = self.settings
            heat = self.heatmaps[model][self.scored_method(model)]
            scores = perturbation.region_scores(heat, self.images.shape[1:], s["region_size"], s["region_scores"])
            ids = np.arange(len(self.images))
            self._cache[key] = perturbation.step_of_region(perturbation.region_order(scores, order, s["seed"], ids))
        return self._cache[key]

    def perturbed_copies(self) -> np.ndarray:
        """g(x) of every image, float32 (N, H, W): the same seeded copies notebook 07 perturbed with."""
        if "g" not in self._cache:
            s = self.settings
            blur = perturbation.default_blur_sigma(s["region_size"])
            g = perturbation.perturbed_images(self.images, s["perturbation"], s["sigma"], s["seed"], blur_sigma=blur)
            self._cache["g"] = g[..., 0]
        return self._cache["g"]

    def perturbed_image(self, model: str, order: str, index: int, step: int) -> np.ndarray:
        """xᵏ of one image, float32 (H, W) in [0, 1]: regions perturbed at steps 1..k from g(x), the rest from x."""
        if not 0 <= step <= self.steps:
            raise ValueError(f"step must lie in [0, {self.steps}], got {step}")
        pixel_steps = self.region_steps(model, order)[index][self.grid().region_map]
        clean = self.images[index].astype(np.float32) / np.float32(255)
        return np.where(pixel_steps <= step, self.perturbed_copies()[index], clean)

    def metrics(self) -> dict:
        """Per-image numbers to sort by: key -> (label, (N,) float64; NaN where undefined)."""
        if "metrics" in self._cache:
            return self._cache["metrics"]
        rows, n = np.arange(len(self.labels)), len(self.labels)
        out, contrast = {}, {}
        for m in self.models:
            probs = self.outputs[m]["probabilities"]
            out[f"{m}:prob"] = (f"{m}: probability of its prediction", probs[rows, self.outputs[m]["predicted"]])
            out[f"{m}:true"] = (f"{m}: probability of the true class", probs[rows, self.labels])
            final = {o: per_image_aopc(c)[:, -1] for o, c in self.curves[m].items()}
            out[f"{m}:aopc"] = (f"{m}: AOPC (MoRF)", final["morf"])
            for base in ("random", "lerf"):
                if base in final:
                    name = "LeRF" if base == "lerf" else base
                    out[f"{m}:morf-{base}"] = (f"{m}: MoRF − {name}", final["morf"] - final[base])
            contrast[m] = final["morf"] - final["random"] if "random" in final else None
            heat = upsample(self.heatmaps[m][self.scored_method(m)], self.images.shape[1:]) if self.masks else None
            for kind, mask in self.masks.items():
                energy = mask_energy(heat, mask)
                energy[~mask.reshape(n, -1).any(axis=1)] = np.nan
                out[f"{m}:energy:{kind}"] = (f"{m}: {kind} mask energy", energy)
        if len(self.models) >= 2 and all(contrast[m] is not None for m in self.models[:2]):
            a, b = self.models[:2]
            diff = contrast[a] - contrast[b]
            out["diff:morf-random"] = (f"MoRF − random: {a} minus {b}", diff)
            out["absdiff:morf-random"] = (f"MoRF − random: |{a} − {b}| (where the models differ most)", np.abs(diff))
        self._cache["metrics"] = {k: (label, np.asarray(v, dtype=np.float64)) for k, (label, v) in out.items()}
        return self._cache["metrics"]


def _load_curves(paths, model: str, shape: tuple, orders) -> dict:
    path = study.curves_path(paths, model)
    arrays = study.load_curves(paths, model)
    missing = [o for o in orders if o not in arrays]
    if "morf" not in arrays or missing:
        raise ExplorerInputError(f"{path} lacks the curves of {missing or ['morf']}: rerun notebook 07_aopc")
    curves = {o: np.asarray(arrays[o], dtype=np.float64) for o in orders}
    shapes = sorted({c.shape for c in curves.values()})
    if shapes != [shape]:
        raise ExplorerInputError(f"{path} holds curves of shapes {shapes}, expected {shape}: rerun notebook 07_aopc")
    return curves


def _test_masks(paths, frame, image_size: int) -> dict:
    """Ground-truth lung and lesion masks of the test images, and 02's predicted lungs, where they exist."""
    masks = {}
    for kind in ("lung", "lesion"):
        try:
            mask = dataset.load_masks(frame, image_size, kind=kind)
        except layout.DatasetError as exc:
            warnings.warn(f"no {kind} outlines in the explorer: {exc}", stacklevel=3)
            continue
        if mask.any():
            masks[kind] = mask
    if lung_masks_path(paths).is_file():
        try:
            masks["predicted lung"] = load_lung_masks(paths, "test", image_size, len(frame))
        except (study.LineageError, ValueError) as exc:
            warnings.warn(f"no predicted lung outlines in the explorer: {exc}", stacklevel=3)
    return masks


def load_explorer_data(paths, model_names=None, extra_heatmaps=None) -> ExplorerData:
    """Read what the explorer shows from a study's files (:class:`ExplorerInputError` naming what is missing).

    ``extra_heatmaps``: {model: {method: (N, h, w)}} of other heatmap methods to show beside the scored one.
    """
    names = _model_names(paths, model_names)
    _refuse(missing_inputs(paths, names), paths)
    settings = study.load_metrics_file(paths, "aopc").get("settings") or {}
    needed = ("image_size", "region_size", "perturbation", "sigma", "seed", "orders")
    lacking = [k for k in needed if k not in settings]
    if lacking or "morf" not in settings["orders"]:
        path = study.metrics_file(paths, "aopc")
        _refuse([f"{path} (AOPC settings) lacks {lacking or ['the morf order']}: written by notebook 07_aopc"], paths)
    settings = {"region_scores": "grid", "input_mask": "none", "mask_margin": 0, **settings}
    size = settings["image_size"]
    images, labels = study.load_split(
        paths, "test", size, progress=False, input_mask=settings["input_mask"], mask_margin=settings["mask_margin"]
    )
    manifest = split_files.read_manifest(paths.split_manifest)
    frame = manifest[manifest["split"] == "test"].reset_index(drop=True)
    outputs, heat, curves = {}, {}, {}
    shape = (len(images), perturbation.region_grid(size, settings["region_size"]).n_regions + 1)
    for name in names:
        out = study.load_model_outputs(paths, name, n_images=len(images))
        outputs[name] = {k: out[k] for k in ("probabilities", "predicted", "classes", "correct")}
        heat[name] = {out["method"]: out["heatmaps"], **(extra_heatmaps or {}).get(name, {})}
        curves[name] = _load_curves(paths, name, shape, settings["orders"])
    return ExplorerData(
        images=images[..., 0],
        labels=labels,
        names=[Path(p).stem for p in frame["path"]],
        outputs=outputs,
        heatmaps=heat,
        curves=curves,
        masks=_test_masks(paths, frame, size),
        settings=settings,
    )


def select_images(data: ExplorerData, true_class=None, correct=None, agree=None, sort=None, descending=True):
    """Indices of the images passing the filters, in sort order (the page's rule): NaN last, ties by index.

    ``true_class``: a class index; ``correct``: {model: True/False}; ``agree``: True (same prediction) or False;
    ``sort``: a key of :meth:`ExplorerData.metrics`.
    """
    keep = np.ones(len(data.labels), dtype=bool)
    if true_class is not None:
        keep &= data.labels == int(true_class)
    for model, wanted in (correct or {}).items():
        if wanted is not None:
            keep &= (data.outputs[model]["predicted"] == data.labels) == bool(wanted)
    if agree is not None:
        first = data.outputs[data.models[0]]["predicted"]
        same = np.all([data.outputs[m]["predicted"] == first for m in data.models], axis=0)
        keep &= same == bool(agree)
    index = np.flatnonzero(keep)
    if sort:
        values = data.metrics()[sort][1][index]
        key = np.where(np.isnan(values), np.inf, -values if descending else values)
        index = index[np.lexsort((index, key))]
    return index


# ----------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------


def _jpeg(image, quality: int, size: int | None = None) -> str:
    import cv2

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    if size is not None and size < max(array.shape[:2]):
        array = cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode a JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def _outline(mask) -> str:
    """SVG path (image pixel coordinates) of a binary mask's outer and inner boundaries."""
    import cv2

    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    parts = []
    for contour in contours:
        points = cv2.approxPolyDP(contour, 0.7, True)[:, 0]
        parts.append("M" + "L".join(f"{x + 0.5:g},{y + 0.5:g}" for x, y in points) + "Z")
    return "".join(parts)


def _metric_parts(key: str, label: str, models) -> tuple[str, str]:
    """(model, label without the model) of a per-model number; ("", label) of a comparison of the models."""
    model = key.split(":")[0]
    return (model, label[len(model) + 2 :]) if model in models else ("", label)


def _number(value) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 5)


def page_data(data: ExplorerData, thumb_size: int = 112, quality: int = 85, noise_quality: int = 70) -> dict:
    """The page's JSON: settings, per-image thumbnails, images x and g(x), heatmaps, outlines, curves, steps, numbers."""
    grid, metrics, g = data.grid(), data.metrics(), data.perturbed_copies()
    heat = {
        m: {k: np.round(normalize(v) * 255).astype(np.uint8) for k, v in data.heatmaps[m].items()} for m in data.models
    }
    steps = {m: {o: data.region_steps(m, o) for o in data.orders} for m in data.models}
    items = []
    for i in range(len(data.labels)):
        models = {}
        for m in data.models:
            out = data.outputs[m]
            models[m] = {
                "pred": int(out["predicted"][i]),
                "prob": round(float(out["probabilities"][i, out["predicted"][i]]), 4),
                "heat": {k: base64.b64encode(v[i].tobytes()).decode("ascii") for k, v in heat[m].items()},
                "curves": {o: np.round(c[i], 4).tolist() for o, c in data.curves[m].items()},
                "steps": {o: s[i].tolist() for o, s in steps[m].items()},
            }
        items.append(
            {
                "id": data.names[i],
                "label": int(data.labels[i]),
                "thumb": _jpeg(data.images[i], quality, thumb_size),
                "x": _jpeg(data.images[i], quality),
                "g": _jpeg(g[i], noise_quality),
                "outline": {kind: _outline(mask[i]) for kind, mask in data.masks.items() if mask[i].any()},
                "models": models,
                "num": {key: _number(values[i]) for key, (_, values) in metrics.items()},
            }
        )
    return {
        "classes": list(data.class_names),
        "models": data.models,
        "methods": {m: list(data.heatmaps[m]) for m in data.models},
        "heatShape": {m: {k: list(v.shape[1:]) for k, v in data.heatmaps[m].items()} for m in data.models},
        "orders": data.orders,
        "steps": data.steps,
        "size": list(data.images.shape[1:]),
        "grid": {"rows": grid.row_bounds.tolist(), "cols": grid.col_bounds.tolist()},
        "metrics": [[key, label, *_metric_parts(key, label, data.models)] for key, (label, _) in metrics.items()],
        "outlineColours": {k: OUTLINE_COLOURS.get(k, "#ff0") for k in data.masks},
        "orderColours": {o: ORDER_COLOURS.get(o, "#000") for o in data.orders},
        "jet": np.round(jet(np.linspace(0.0, 1.0, 256)) * 255).astype(int).ravel().tolist(),
        "items": items,
    }


def write_explorer(paths, data: ExplorerData | None = None, title: str | None = None, **encoding) -> Path:
    """Write ``<report>/explorer.html`` from a study's files (or ``data``), atomically; return its path.

    ``encoding``: ``thumb_size``, ``quality``, ``noise_quality`` of :func:`page_data`.
    """
    data = load_explorer_data(paths) if data is None else data
    payload = json.dumps(page_data(data, **encoding), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    s = data.settings
    title = title or f"Per-image explorer ({getattr(paths, 'profile', '')} profile)"
    note = (
        f"{len(data.labels)} test images; {s['perturbation']} perturbation (sigma {s['sigma']}) of {s['region_size']} px "
        f"regions, {data.steps} steps, seed {s['seed']}. Per-image AOPC follows the explained (predicted) class; "
        "the study's AOPC averages only the correctly classified images."
    )
    page = _PAGE.replace("__TITLE__", html.escape(title)).replace("__NOTE__", html.escape(note))
    target = Path(paths.report) / EXPLORER_FILE
    with atomic_path(target, suffix=".html") as tmp:
        tmp.write_text(page.replace("__DATA__", payload), encoding="utf-8")
    return target


def chromium_driver(width: int = 1400, height: int = 1000):
    """A headless Chromium driven by selenium (``$CHROMIUM``, ``$CHROMEDRIVER`` or found on PATH), logging the console."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise RuntimeError(f"selenium is not installed: {BROWSER_HINT}") from None
    names = ("chromium", "chromium-browser", "google-chrome")
    binary = os.environ.get("CHROMIUM") or next((shutil.which(n) for n in names if shutil.which(n)), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver:
        raise RuntimeError(f"no Chromium and chromedriver found: {BROWSER_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def screenshot(html_path, png_path, open_image: int | None = 0, width: int = 1400, height: int = 1000) -> Path:
    """Save a PNG of an explorer page (with the detail view of the ``open_image``-th card open, unless None)."""
    from selenium.webdriver.support.ui import WebDriverWait

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    driver = chromium_driver(width, height)
    try:
        driver.get(Path(html_path).resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return window.explorerReady === true"))
        if open_image is not None:
            script = "const E = window.explorer; E.open(arguments[0]); E.setStep(Math.round(E.data.steps / 4));"
            driver.execute_script(script, open_image)
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.explorer.drawn === true"))
        driver.save_screenshot(str(png_path))
    finally:
        driver.quit()
    return png_path


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title><link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f5f5f5;color:#222}h3{margin:8px 0 4px;font-size:14px}[hidden]{display:none!important}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:6px 12px;z-index:2}
h1{font-size:17px;margin:2px 0}.note{color:#555;margin:2px 0 6px}#controls label{margin-right:10px;white-space:nowrap}
#controls select{font-size:12px;max-width:300px}#grid{display:flex;flex-wrap:wrap;gap:8px;padding:10px}
.card{background:#fff;border:1px solid #ccc;border-radius:4px;width:236px;padding:6px;cursor:pointer;display:flex;gap:6px}
.card:hover,.card:focus{outline:2px solid #1f77b4}.card img{width:80px;height:80px}.t{font-size:11px}.ok{color:#2a7d2a}.bad{color:#c0392b}
#detail{position:fixed;inset:0;background:rgba(0,0,0,.35);z-index:3;overflow:auto}
#panel{background:#fff;margin:12px auto;max-width:1180px;padding:8px 14px;border-radius:6px}
#bar{display:flex;gap:8px;align-items:center}#bar span{flex:1;font-weight:600;font-size:15px}.row{display:flex;gap:18px;flex-wrap:wrap}
table{border-collapse:collapse;font-size:12px}td,th{border-bottom:1px solid #ddd;padding:2px 6px;text-align:right}th.l{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-end}.fig{text-align:center;font-size:12px}
.frame{position:relative;width:200px;height:200px}.frame canvas,.frame svg{position:absolute;left:0;top:0;width:200px;height:200px}
.legend span{margin-right:10px}#orders label{margin-right:8px}
</style></head><body>
<header><h1>__TITLE__</h1><p class="note">__NOTE__</p><div id="controls">
<label>True class <select id="f-class"></select></label><span id="f-models"></span>
<label>Predictions <select id="f-agree"><option value="any">any</option><option value="agree">models agree</option>
<option value="disagree">models disagree</option></select></label><label>Sort by <select id="sort"></select></label>
<select id="sort-dir"><option value="desc">descending</option><option value="asc">ascending</option></select>
&nbsp; <b id="count"></b> of <span id="total"></span> images shown</div></header><main id="grid"></main>
<div id="detail" hidden><div id="panel"><div id="bar"><button id="prev" title="previous (left arrow)">&#9664;</button>
<span id="d-title"></span><button id="next" title="next (right arrow)">&#9654;</button><button id="close" title="close (Esc)">&#10005;</button></div>
<div class="row"><div><h3>Numbers</h3><div id="d-info"></div></div><div><h3>Heatmaps</h3>
<label>overlay alpha <input type="range" id="alpha" min="0" max="100" value="50"></label> <span class="legend" id="d-legend"></span>
<div class="figs" id="d-heat"></div></div></div><h3>Perturbation: x<sup>k</sup> and f(x<sup>k</sup>)</h3><span id="orders"></span>
<label>step <input type="range" id="step" min="0" value="0" style="width:300px"></label> <b id="step-label"></b>
<div class="figs" id="d-steps"></div></div></div>
<script type="application/json" id="explorer-data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("explorer-data").textContent), NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id), fmt = (v, d = 3) => (v === null || v === undefined ? "–" : v.toFixed(d));
function el(tag, attrs, ...kids) { const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v); e.append(...kids); return e; }
const S = { view: [], pos: -1, step: 0, order: D.orders[0], alpha: 0.5, token: 0, px: null }, E = { data: D, drawn: false }, cards = [];
const item = () => D.items[S.view[S.pos]], numKey = {};
for (const [k, , m, short] of D.metrics) if (m) numKey[m + "|" + short] = k;
function setup() {
  $("total").textContent = D.items.length; $("f-class").append(new Option("all", "all"));
  D.classes.forEach((c, i) => $("f-class").append(new Option(c, String(i))));
  for (const m of D.models) { const s = el("select", { id: "f-correct-" + m });
    for (const v of ["any", "correct", "incorrect"]) s.append(new Option(v, v)); $("f-models").append(el("label", {}, m + " ", s)); }
  $("sort").append(new Option("test-set order", "")); for (const [k, label] of D.metrics) $("sort").append(new Option(label, k));
  for (const id of ["f-class", "f-agree", "sort", "sort-dir", ...D.models.map((m) => "f-correct-" + m)]) $(id).addEventListener("change", update);
  D.items.forEach((it, i) => {
    const rows = D.models.map((m) => { const r = it.models[m], ok = r.pred === it.label, n = it.num;
      const energy = Object.keys(it.outline).map((k) => k + " " + fmt(n[m + ":energy:" + k], 2)).join(" · ");
      return el("div", {}, el("b", {}, m + ": "), el("span", { class: ok ? "ok" : "bad" }, D.classes[r.pred] + " " + fmt(r.prob, 2) + (ok ? " ✓" : " ✗")),
        el("div", { class: "t", title: "per-image AOPC (MoRF) · MoRF − random · mask energy" }, "AOPC " + fmt(n[m + ":aopc"]) + " · M−R " + fmt(n[m + ":morf-random"]) + (energy ? " · " + energy : ""))); });
    const card = el("div", { class: "card", tabindex: "0", "data-index": String(i), "data-id": it.id }, el("img", { src: it.thumb, alt: it.id }),
      el("div", {}, el("b", {}, it.id), el("div", { class: "t" }, "true: " + D.classes[it.label]), ...rows));
    card.addEventListener("click", () => openDetail(S.view.indexOf(i)));
    card.addEventListener("keydown", (e) => { if (e.key === "Enter") openDetail(S.view.indexOf(i)); }); cards.push(card); $("grid").append(card); });
  for (const o of D.orders) { const r = el("input", { type: "radio", name: "order", value: o, id: "order-" + o }); r.checked = o === S.order;
    r.addEventListener("change", () => { S.order = o; drawSteps(); }); $("orders").append(el("label", { style: "color:" + D.orderColours[o] }, r, " " + o)); }
  $("step").max = D.steps; $("step").addEventListener("input", () => setStep(+$("step").value));
  $("alpha").addEventListener("input", () => { S.alpha = $("alpha").value / 100; drawHeat(); });
  $("prev").onclick = () => move(-1); $("next").onclick = () => move(1); $("close").onclick = closeDetail;
  document.addEventListener("keydown", (e) => { if ($("detail").hidden || ["INPUT", "SELECT"].includes(e.target.tagName)) return;
    if (e.key === "ArrowRight") move(1); else if (e.key === "ArrowLeft") move(-1); else if (e.key === "Escape") closeDetail(); else return; e.preventDefault(); });
  $("d-legend").append(...Object.entries(D.outlineColours).map(([k, c]) => el("span", { style: "color:" + c }, "— " + k)));
  update(); }
function update() {
  const cls = $("f-class").value, agree = $("f-agree").value, key = $("sort").value, asc = $("sort-dir").value === "asc", view = [];
  D.items.forEach((it, i) => { if (cls !== "all" && it.label !== +cls) return;
    for (const m of D.models) { const f = $("f-correct-" + m).value, ok = it.models[m].pred === it.label; if ((f === "correct" && !ok) || (f === "incorrect" && ok)) return; }
    const same = D.models.every((m) => it.models[m].pred === it.models[D.models[0]].pred);
    if ((agree === "agree" && !same) || (agree === "disagree" && same)) return; view.push(i); });
  if (key) view.sort((a, b) => { const x = D.items[a].num[key], y = D.items[b].num[key];
    if (x === null || y === null) return x === y ? a - b : x === null ? 1 : -1; return (asc ? x - y : y - x) || a - b; });
  S.view = view; $("count").textContent = view.length; const shown = new Set(view);
  cards.forEach((c, i) => { c.hidden = !shown.has(i); }); for (const i of view) $("grid").append(cards[i]);
  if (!$("detail").hidden) { const at = view.indexOf(+$("detail").dataset.index); if (at < 0) closeDetail(); else S.pos = at; } }
function decode(src) { return new Promise((resolve, reject) => { const img = new Image(), [H, W] = D.size;
  img.onload = () => { const g = el("canvas", { width: W, height: H }).getContext("2d"); g.drawImage(img, 0, 0, W, H); resolve(g.getImageData(0, 0, W, H)); };
  img.onerror = () => reject(new Error("cannot decode an image")); img.src = src; }); }
function info(it) {
  const shorts = [...new Set(D.metrics.filter((r) => r[2]).map((r) => r[3]))], head = el("tr", {}, el("th", {}), ...D.models.map((m) => el("th", {}, m)));
  const pred = el("tr", {}, el("th", { class: "l" }, "prediction"), ...D.models.map((m) => el("td", { class: it.models[m].pred === it.label ? "ok" : "bad" }, D.classes[it.models[m].pred])));
  const rows = shorts.map((s) => el("tr", {}, el("th", { class: "l" }, s), ...D.models.map((m) => el("td", {}, fmt(it.num[numKey[m + "|" + s]])))));
  const both = D.metrics.filter((r) => !r[2]).map(([k, label]) => el("tr", {}, el("th", { class: "l" }, label), el("td", { colspan: D.models.length }, fmt(it.num[k]))));
  return el("table", {}, head, pred, ...rows, ...both); }
function openDetail(pos) {
  if (pos < 0 || pos >= S.view.length) return; S.pos = pos; const i = S.view[pos], it = D.items[i], token = ++S.token;
  E.drawn = false; $("detail").hidden = false; $("detail").dataset.index = i;
  $("d-title").textContent = it.id + " — true class " + D.classes[it.label] + " (" + (pos + 1) + " of " + S.view.length + ")";
  $("d-info").replaceChildren(info(it)); S.px = null; $("d-heat").replaceChildren(); drawSteps();
  Promise.all([decode(it.x), decode(it.g)]).then(([x, g]) => { if (token !== S.token) return; S.px = { x, g }; drawHeat(); drawSteps(); })
    .catch((err) => console.warn(err.message)); }
function closeDetail() { $("detail").hidden = true; S.token++; const c = cards[+$("detail").dataset.index]; if (c) c.focus(); }
function move(d) { if (!$("detail").hidden) openDetail(Math.min(S.view.length - 1, Math.max(0, S.pos + d))); }
function frame(canvas, it) { const svg = el("svg:svg", { viewBox: "0 0 " + D.size[1] + " " + D.size[0], preserveAspectRatio: "none" });
  for (const [k, d] of Object.entries(it.outline)) svg.append(el("svg:path", { d, fill: "none", stroke: D.outlineColours[k] || "#ff0", "stroke-width": D.size[0] / 130, class: "outline", "data-kind": k }));
  return el("div", { class: "frame" }, canvas, svg); }
function upsample(bytes, h, w) {
  const [H, W] = D.size, out = new Float32Array(H * W), ys = new Float32Array(H * 2), xs = new Float32Array(W * 2);
  const axis = (n, N, a) => { for (let i = 0; i < N; i++) { const s = Math.min(Math.max(((i + 0.5) * n) / N - 0.5, 0), n - 1); a[2 * i] = Math.floor(s); a[2 * i + 1] = s - Math.floor(s); } };
  axis(h, H, ys); axis(w, W, xs);
  for (let y = 0; y < H; y++) { const y0 = ys[2 * y], fy = ys[2 * y + 1], y1 = Math.min(y0 + 1, h - 1);
    for (let x = 0; x < W; x++) { const x0 = xs[2 * x], fx = xs[2 * x + 1], x1 = Math.min(x0 + 1, w - 1);
      out[y * W + x] = (bytes[y0 * w + x0] * (1 - fx) + bytes[y0 * w + x1] * fx) * (1 - fy) + (bytes[y1 * w + x0] * (1 - fx) + bytes[y1 * w + x1] * fx) * fy; } }
  return out; }
function drawHeat() {
  if (!S.px) return; const it = item(), [H, W] = D.size, figs = [];
  for (const m of D.models) for (const method of D.methods[m]) {
    const raw = Uint8Array.from(atob(it.models[m].heat[method]), (c) => c.charCodeAt(0)), [h, w] = D.heatShape[m][method];
    const heat = upsample(raw, h, w), c = el("canvas", { width: W, height: H, id: "heat-" + m + "-" + method }), g = c.getContext("2d");
    const img = g.createImageData(W, H), x = S.px.x.data, a = S.alpha;
    for (let p = 0; p < H * W; p++) { const v = Math.min(255, Math.max(0, Math.round(heat[p]))) * 3;
      for (let ch = 0; ch < 3; ch++) img.data[4 * p + ch] = (1 - a) * x[4 * p + ch] + a * D.jet[v + ch]; img.data[4 * p + 3] = 255; }
    g.putImageData(img, 0, 0); figs.push(el("div", { class: "fig" }, frame(c, it), el("div", {}, m + " · " + method))); }
  $("d-heat").replaceChildren(...figs); }
function xk(m) { const it = item(), [H, W] = D.size, rows = D.grid.rows, cols = D.grid.cols, gw = cols.length - 1;
  const out = new ImageData(new Uint8ClampedArray(S.px.x.data), W, H), g = S.px.g.data;
  it.models[m].steps[S.order].forEach((s, r) => { if (s > S.step) return; const gy = Math.floor(r / gw), c0 = cols[r % gw], c1 = cols[(r % gw) + 1];
    for (let y = rows[gy]; y < rows[gy + 1]; y++) out.data.set(g.subarray(4 * (y * W + c0), 4 * (y * W + c1)), 4 * (y * W + c0)); });
  return out; }
function chart(m) {
  const it = item(), Wd = 300, Hd = 200, l = 34, r = 8, t = 8, b = 28, L = D.steps, X = (k) => l + ((Wd - l - r) * k) / L, Y = (v) => t + (Hd - t - b) * (1 - v);
  const svg = el("svg:svg", { class: "curves", width: Wd, height: Hd, viewBox: "0 0 " + Wd + " " + Hd, "data-model": m }), txt = { "font-size": 10, "text-anchor": "middle" };
  svg.append(el("svg:path", { d: "M" + l + "," + t + "V" + (Hd - b) + "H" + (Wd - r), stroke: "#444", fill: "none" }));
  for (const v of [0, 0.5, 1]) svg.append(el("svg:text", { ...txt, x: l - 12, y: Y(v) + 4 }, String(v)));
  for (const k of [0, L]) svg.append(el("svg:text", { ...txt, x: X(k), y: Hd - b + 12 }, String(k)));
  svg.append(el("svg:text", { ...txt, x: (l + Wd) / 2, y: Hd - 3 }, m + ": f(x^k) against step k"));
  for (const o of D.orders) { const c = it.models[m].curves[o], dash = { random: "4 3", lerf: "1 2" }[o] || "";
    svg.append(el("svg:path", { d: c.map((v, k) => (k ? "L" : "M") + X(k).toFixed(1) + "," + Y(v).toFixed(1)).join(""), fill: "none", stroke: D.orderColours[o],
      "stroke-width": o === S.order ? 2.2 : 1.2, "stroke-dasharray": dash, class: "curve", "data-order": o }, el("svg:title", {}, m + " " + o + ": " + c.map((v) => v.toFixed(4)).join(" ")))); }
  const f = it.models[m].curves[S.order][S.step];
  svg.append(el("svg:line", { x1: X(S.step), x2: X(S.step), y1: t, y2: Hd - b, stroke: "#000", "stroke-dasharray": "2 2", class: "marker", "data-step": S.step }));
  svg.append(el("svg:circle", { cx: X(S.step), cy: Y(f), r: 4, fill: D.orderColours[S.order], class: "marker-dot", "data-value": f }));
  return svg; }
function drawSteps() {
  if (S.pos < 0) return; const it = item(), [H, W] = D.size, figs = [];
  $("step").value = S.step; $("step-label").textContent = "k = " + S.step + " of " + D.steps + " (" + Math.round((100 * S.step) / D.steps) + " % of the regions perturbed)";
  for (const m of D.models) { const c = el("canvas", { width: W, height: H, id: "xk-" + m, class: "xk" }), f = it.models[m].curves[S.order][S.step];
    if (S.px) { c.getContext("2d").putImageData(xk(m), 0, 0); c.dataset.step = S.step; c.dataset.order = S.order; }
    figs.push(el("div", { class: "fig" }, frame(c, it), el("div", {}, m + " · " + S.order + " · f(x^" + S.step + ") = " + f.toFixed(3))), el("div", { class: "fig" }, chart(m))); }
  $("d-steps").replaceChildren(...figs); E.drawn = S.px !== null; }
function setStep(k) { S.step = Math.min(D.steps, Math.max(0, Math.round(k))); drawSteps(); }
Object.assign(E, { open: openDetail, close: closeDetail, setStep, state: S, update });
window.explorer = E; setup(); window.explorerReady = true;
</script></body></html>
"""
