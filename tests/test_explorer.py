"""The per-image explorer: explorer.html in headless Chromium, the widget driven from Python, and bad report folders.

A fake study (eight test images, two models, heatmaps, curves, lung and lesion masks) is written through the study's
own save functions, with curves whose per-image AOPC is known in closed form: MoRF falls linearly by d over the L
steps, so its per-image AOPC is d / 2.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from helpers.common.config import CLASS_NAMES
from helpers.explain.maps import overlay
from helpers.metrics import perturbation as pt
from helpers.report.explorer import (
    BROWSER_HINT,
    ExplorerInputError,
    chromium_driver,
    load_explorer_data,
    missing_inputs,
    screenshot,
    write_explorer,
)
from helpers.report.explorer_widget import ExplorerState, ExplorerWidget, explore, render
from helpers.study import files as study
from helpers.study import split_files

SIZE, REGION, SEED = 32, 8, 3
STEPS = (SIZE // REGION) ** 2  # L = 16
MODELS = ("vgg16", "densenet201")
LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])
PREDICTED = {"vgg16": np.array([0, 0, 1, 2, 2, 2, 3, 0]), "densenet201": np.array([0, 1, 1, 1, 2, 3, 3, 3])}
#: Per-image drop of f over the L steps: MoRF per-image AOPC = DROP / 2, random-order AOPC = RANDOM_DROP / 2.
DROP = {"vgg16": np.array([0.30, 0.62, 0.10, 0.44, 0.20, 0.71, 0.05, 0.38]),
        "densenet201": np.array([0.50, 0.12, 0.66, 0.28, 0.09, 0.40, 0.58, 0.31])}  # fmt: skip
RANDOM_DROP = {"vgg16": np.full(8, 0.2), "densenet201": np.array([0.1, 0.3, 0.2, 0.1, 0.2, 0.3, 0.1, 0.2])}
N = len(LABELS)


def _phantom(rng, label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small chest-like image (body, two dark lungs, a bright finding), its lung mask and its lesion mask."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    lungs = (((xx - 10) / 5.0) ** 2 + ((yy - 16) / 9.0) ** 2 < 1) | (
        ((xx - 22) / 5.0) ** 2 + ((yy - 16) / 9.0) ** 2 < 1
    )
    lesion = (((xx - 9) / 2.5) ** 2 + ((yy - 18) / 2.5) ** 2 < 1) if label != 2 else np.zeros_like(lungs)
    image = 170 - 80 * lungs + 60 * lesion + rng.normal(0, 12, lungs.shape)
    return np.clip(image, 0, 255).astype(np.uint8), lungs.astype(np.uint8) * 255, lesion.astype(np.uint8) * 255


def _probabilities(model: str) -> np.ndarray:
    probs = np.full((N, 4), 0.1, dtype=np.float32)
    probs[np.arange(N), PREDICTED[model]] = 0.7
    probs += np.linspace(0, 0.08, N)[:, None] * (np.arange(4) == PREDICTED[model][:, None])  # distinct values
    return probs / probs.sum(axis=1, keepdims=True)


def _curves(model: str) -> dict:
    k = np.arange(STEPS + 1) / STEPS
    f0 = _probabilities(model)[np.arange(N), PREDICTED[model]].astype(np.float64)[:, None]
    return {
        "morf": f0 - DROP[model][:, None] * k,
        "random": f0 - RANDOM_DROP[model][:, None] * k,
        "lerf": f0 - 0.02 * k + 0 * DROP[model][:, None],
    }


def make_study(root: Path, curves: bool = True, heatmaps: bool = True, curve_steps: int = STEPS):
    """A study report folder holding what notebooks 01, 05, 06 and 07 save (optionally without curves or heatmaps)."""
    paths = study.study_paths("fake", root, root / "reports" / "fake")
    rng, rows = np.random.default_rng(0), []
    for i, label in enumerate(LABELS):
        name = CLASS_NAMES[label]
        image, lung, lesion = _phantom(rng, label)
        files = {kind: root / "raw" / name / kind / f"{name}-{i}.png" for kind in ("images", "masks", "lesions")}
        for kind, array in zip(files, (image, lung, lesion)):
            files[kind].parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(files[kind]), array)
        rows.append({"path": str(files["images"]), "label": name, "label_index": int(label),
                     "mask_path": str(files["masks"]), "lesion_mask_path": str(files["lesions"]) if lesion.any() else "",
                     "split": "test"})  # fmt: skip
    split_files.write_manifest(pd.DataFrame(rows), paths.split_manifest, paths=paths)
    heat_rng = np.random.default_rng(1)
    for model in MODELS:
        study.save_predictions(paths, model, _probabilities(model), LABELS)
        maps = heat_rng.uniform(0, 1, (N, SIZE // REGION, SIZE // REGION)).astype(np.float32)
        maps[5] = 0.0 if model == "densenet201" else maps[5]  # an all-zero map: no mask energy
        if heatmaps:
            study.save_heatmaps(paths, model, maps, PREDICTED[model], "gradcam")
        if curves:
            k = np.arange(curve_steps + 1) / curve_steps
            arrays = {o: c[:, :1] - (c[:, :1] - c[:, -1:]) * k for o, c in _curves(model).items()}
            study.save_curves(paths, model, arrays)
    settings = {"image_size": SIZE, "region_size": REGION, "region_scores": "grid", "perturbation": "gaussian",
                "sigma": 0.1, "seed": SEED, "orders": ["morf", "random", "lerf"], "method": "gradcam",
                "input_mask": "none", "mask_margin": 4, "steps": STEPS}  # fmt: skip
    study.save_metrics_file(paths, "aopc", {"settings": settings, "report": {"models": {m: {} for m in MODELS}}})
    return paths


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """The fake study's paths and its explorer data."""
    paths = make_study(tmp_path_factory.mktemp("explorer"))
    return paths, load_explorer_data(paths)


def expected_xk(data, model: str, order: str, index: int, step: int) -> np.ndarray:
    """xᵏ from the study's perturbation functions, as notebook 07 builds it (image ids 0..N-1)."""
    scores = pt.region_scores(data.heatmaps[model]["gradcam"], SIZE, REGION, "grid")
    steps = pt.step_of_region(pt.region_order(scores, order, SEED, np.arange(N)))
    g = pt.perturbed_images(data.images, "gaussian", 0.1, SEED)[..., 0]
    pixel = steps[index][pt.region_grid(SIZE, REGION).region_map]
    return np.where(pixel <= step, g[index], data.images[index] / np.float32(255))


# ----------------------------------------------------------------------------------------------------
# The data behind both views
# ----------------------------------------------------------------------------------------------------


def test_data_holds_the_study_files_and_closed_form_aopc(fake):
    paths, data = fake
    assert data.models == list(MODELS) and data.orders == ["morf", "random", "lerf"] and data.steps == STEPS
    assert set(data.masks) >= {"lung", "lesion"} and data.names[0] == "COVID-0"
    metrics = data.metrics()
    for m in MODELS:
        np.testing.assert_allclose(metrics[f"{m}:aopc"][1], DROP[m] / 2, atol=1e-12)
        np.testing.assert_allclose(metrics[f"{m}:morf-random"][1], (DROP[m] - RANDOM_DROP[m]) / 2, atol=1e-12)
    energy = metrics["densenet201:energy:lung"][1]
    assert np.isnan(energy[5]) and np.all((energy[:5] >= 0) & (energy[:5] <= 1))
    assert np.isnan(metrics["vgg16:energy:lesion"][1][LABELS == 2]).all()  # Normal images have no lesion


def test_perturbed_images_are_the_sequence_notebook_07_scores(fake):
    """f(xᵏ) of the explorer's xᵏ equals perturbation_curves' curve of a Keras model, step by step."""
    import keras

    _, data = fake
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Conv2D(4, 5, strides=2, activation="tanh"),
                              keras.layers.Flatten(), keras.layers.Dense(4), keras.layers.Softmax()])  # fmt: skip
    for order in ("morf", "random", "lerf"):
        heat = data.heatmaps["vgg16"]["gradcam"]
        curves = pt.perturbation_curves(model, data.images, heat, PREDICTED["vgg16"], REGION, sigma=0.1, order=order,
                                        seed=SEED, batch_size=17, progress=False)  # fmt: skip
        for i in (0, 3, 7):
            xs = np.stack([data.perturbed_image("vgg16", order, i, k) for k in range(STEPS + 1)])[..., None]
            probs = keras.ops.convert_to_numpy(model(xs))[:, PREDICTED["vgg16"][i]]
            np.testing.assert_allclose(probs, curves[i], atol=1e-5)
    np.testing.assert_array_equal(data.perturbed_image("vgg16", "morf", 2, 0), data.images[2] / np.float32(255))


# ----------------------------------------------------------------------------------------------------
# explorer.html in headless Chromium
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium; skipped with the install command when absent, except in CI (CI=true) where that fails."""
    try:
        driver = chromium_driver()
    except Exception as exc:  # selenium missing, no browser, or a driver that does not start
        message = f"headless Chromium is not available ({exc}); install it: {BROWSER_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield driver
    driver.quit()


def _visible(driver) -> list[int]:
    cards = driver.find_elements("css selector", "#grid .card")
    return [int(c.get_attribute("data-index")) for c in cards if c.is_displayed()]


def _choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def _wait(driver, script: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _canvas(driver, canvas_id: str) -> np.ndarray:
    """The grey values of a canvas, (H, W) uint8."""
    flat = driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);",
        canvas_id,
    )
    return np.asarray(flat, dtype=np.uint8).reshape(SIZE, SIZE, 4)[..., 0]


def test_page_in_a_browser(fake, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    paths, data = fake
    page = write_explorer(paths, data)
    assert page == paths.report / "explorer.html" and "<script src" not in page.read_text()
    browser.get_log("browser")  # drop earlier entries
    browser.get(page.as_uri())
    _wait(browser, "return window.explorerReady === true")
    count = lambda: int(browser.find_element("id", "count").text)  # noqa: E731
    assert count() == N and _visible(browser) == list(range(N))

    # filters: each reduces the count to the right number
    vgg_wrong = np.flatnonzero(PREDICTED["vgg16"] != LABELS)
    _choose(browser, "f-correct-vgg16", "incorrect")
    assert count() == len(vgg_wrong) and _visible(browser) == list(vgg_wrong)
    _choose(browser, "f-correct-vgg16", "any")
    _choose(browser, "f-agree", "disagree")
    disagree = np.flatnonzero(PREDICTED["vgg16"] != PREDICTED["densenet201"])
    assert count() == len(disagree) and _visible(browser) == list(disagree)
    _choose(browser, "f-class", "1")
    assert _visible(browser) == [i for i in disagree if LABELS[i] == 1]
    _choose(browser, "f-class", "all")
    _choose(browser, "f-agree", "any")
    assert count() == N

    # sorting by a per-image number puts the right image first
    _choose(browser, "sort", "vgg16:aopc")
    assert _visible(browser) == list(np.argsort(-DROP["vgg16"], kind="stable"))
    _choose(browser, "sort-dir", "asc")
    assert _visible(browser)[0] == int(np.argmin(DROP["vgg16"]))
    _choose(browser, "sort-dir", "desc")
    contrast = {m: DROP[m] - RANDOM_DROP[m] for m in MODELS}
    _choose(browser, "sort", "absdiff:morf-random")
    order = _visible(browser)
    assert order[0] == int(np.argmax(np.abs(contrast["vgg16"] - contrast["densenet201"])))

    # the detail view: the image's curves, the step slider moves xᵏ and the marker
    first = order[0]
    browser.find_element("css selector", f'.card[data-index="{first}"]').click()
    _wait(browser, "return window.explorer.drawn === true")
    assert browser.find_element("id", "detail").get_attribute("data-index") == str(first)
    assert data.names[first] in browser.find_element("id", "d-title").text
    for m in MODELS:
        for o, curve in data.curves[m].items():
            title = browser.find_element("css selector", f'svg.curves[data-model="{m}"] path[data-order="{o}"] title')
            shown = [float(v) for v in title.get_attribute("textContent").split(": ")[1].split()]
            np.testing.assert_allclose(shown, curve[first], atol=1e-4)
    assert len(browser.find_elements("css selector", "#d-heat canvas")) == 2
    assert browser.find_elements("css selector", '#d-heat path.outline[data-kind="lung"]')
    marker = lambda: browser.find_element("css selector", 'svg.curves[data-model="vgg16"] line.marker')  # noqa: E731
    x0 = float(marker().get_attribute("x1"))
    assert marker().get_attribute("data-step") == "0"
    assert np.abs(_canvas(browser, "xk-vgg16") / 255 - data.images[first] / 255).mean() < 0.03  # x⁰ = x (JPEG)
    slider = browser.find_element("id", "step")
    for _ in range(5):
        slider.send_keys(Keys.ARROW_RIGHT)
    _wait(browser, "return document.getElementById('xk-vgg16').dataset.step === '5'")
    assert marker().get_attribute("data-step") == "5" and float(marker().get_attribute("x1")) > x0
    assert "k = 5 of 16" in browser.find_element("id", "step-label").text
    dot = browser.find_element("css selector", 'svg.curves[data-model="vgg16"] circle.marker-dot')
    assert float(dot.get_attribute("data-value")) == pytest.approx(data.curves["vgg16"]["morf"][first][5], abs=1e-4)
    shown = _canvas(browser, "xk-vgg16").astype(np.float64) / 255
    right = np.abs(shown - expected_xk(data, "vgg16", "morf", first, 5)).mean()
    wrong = np.abs(shown - expected_xk(data, "vgg16", "morf", first, 0)).mean()
    assert right < 0.03 < wrong  # xᵏ up to JPEG error, and not x⁰

    # keyboard: right and left arrows go through the current order
    browser.execute_script("document.activeElement.blur()")
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    assert browser.find_element("id", "detail").get_attribute("data-index") == str(order[1])
    ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
    assert browser.find_element("id", "detail").get_attribute("data-index") == str(order[0])
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    assert not browser.find_element("id", "detail").is_displayed()

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    png = screenshot(page, tmp_path / "explorer.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------------
# The widget, driven from Python
# ----------------------------------------------------------------------------------------------------


def test_widget_shows_what_its_values_choose(fake):
    _, data = fake
    widget = ExplorerWidget(data)
    c = widget.controls
    assert widget.shown["index"] == 0 and widget.shown["count"] == N
    assert widget.picture.value[:4] == b"\x89PNG"

    c["sort"].value = "densenet201:aopc"
    ranked = list(np.argsort(-DROP["densenet201"], kind="stable"))
    assert widget.shown["index"] == ranked[0]
    c["image"].value = 2
    assert widget.shown["index"] == ranked[2] and widget.shown["name"] == data.names[ranked[2]]
    i = ranked[2]

    c["model"].value = "densenet201"
    c["order"].value = "random"
    c["step"].value = 7
    np.testing.assert_array_equal(widget.shown["perturbed"], expected_xk(data, "densenet201", "random", i, 7))
    assert widget.shown["marker"] == (7, pytest.approx(data.curves["densenet201"]["random"][i][7]))
    c["alpha"].value = 0.8
    heat = data.heatmaps["densenet201"]["gradcam"][i]
    np.testing.assert_allclose(widget.shown["overlay"], overlay(data.images[i], heat, alpha=0.8))
    assert "f(x<sup>7</sup>)" in widget.caption.value

    # the filters keep the chosen image while it passes them, and say when none does
    c["correct:densenet201"].value = True
    assert widget.shown["index"] == i and widget.shown["count"] == int((PREDICTED["densenet201"] == LABELS).sum())
    c["true_class"].value = 1
    c["correct:vgg16"].value = False
    c["correct:densenet201"].value = False
    assert widget.shown["index"] is None and "0</b> images" in widget.caption.value
    assert "image/png" in widget._repr_mimebundle_()


def test_state_and_static_figure_without_widgets(fake):
    paths, data = fake
    state = ExplorerState(data)
    state.agree, state.model, state.order, state.step = False, "vgg16", "lerf", STEPS
    view = state.view()
    assert view["index"] == int(np.flatnonzero(PREDICTED["vgg16"] != PREDICTED["densenet201"])[0])
    np.testing.assert_array_equal(view["perturbed"], expected_xk(data, "vgg16", "lerf", view["index"], STEPS))
    fig = render(view)
    assert len(fig.axes) == 3 and fig.axes[2].get_lines()
    static = explore(paths=paths, static=True)  # what a rendered notebook shows: a figure, as PNG in any front end
    assert isinstance(static, Figure) and static._repr_png_()[:4] == b"\x89PNG"
    assert f"x^{{{STEPS // 4}}}" in static.axes[1].get_title()


# ----------------------------------------------------------------------------------------------------
# Bad input: a report folder from an interrupted or older study
# ----------------------------------------------------------------------------------------------------


def test_missing_curves_name_the_file_and_notebook_07(tmp_path):
    paths = make_study(tmp_path, curves=False)
    with pytest.raises(ExplorerInputError) as error:
        write_explorer(paths)
    text = str(error.value)
    assert "curves_vgg16.npz" in text and "curves_densenet201.npz" in text and "07_aopc" in text
    assert "--from 07" in text and not (paths.report / "explorer.html").exists()


def test_missing_heatmaps_name_the_file_and_notebook_06(tmp_path):
    paths = make_study(tmp_path, heatmaps=False)
    assert len(missing_inputs(paths)) == 2
    with pytest.raises(ExplorerInputError, match=r"heatmaps_vgg16\.npz.*06_gradcam(.|\n)*--from 06"):
        load_explorer_data(paths)


def test_curves_of_another_grid_and_a_missing_report_are_refused(tmp_path):
    paths = make_study(tmp_path / "older", curve_steps=9)
    with pytest.raises(ExplorerInputError, match=r"curves_vgg16\.npz holds curves of shapes .*rerun notebook 07_aopc"):
        load_explorer_data(paths)
    shutil.rmtree(paths.metrics)
    with pytest.raises(ExplorerInputError, match=r"aopc\.json \(the AOPC settings\): written by notebook 07_aopc"):
        load_explorer_data(paths)
