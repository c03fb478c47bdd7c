"""Model-parameter randomisation (the cascading sanity check): do the heatmaps change when the weights do?

A copy of the model is randomised stage by stage from the logits down (the head's layers, then the backbone's last
blocks), cumulatively; after each stage every method's heatmaps of the same images and classes are compared with
the trained model's by Spearman rank correlation and SSIM (:mod:`helpers.metrics.similarity`), with bootstrap
intervals over images. A method that explains the model loses its similarity once the explained layer is random;
a model-independent map (the edge baseline) keeps a similarity of exactly 1, which is what such maps are.

Re-drawing, not re-initialising: every variable of a stage's layers is drawn i.i.d. from a normal distribution
truncated at two standard deviations, with the trained variable's own mean and standard deviation (0.1 |mean|, at
least 0.01, for a constant variable); a variable whose trained values are all non-negative (e.g. a batch-norm
variance) gets the absolute values. The draws come from a generator seeded by (seed, stage, variable) only, so the
same seed gives the same weights. The trained model is never changed; every randomised variable is checked to differ
from its trained values (an error otherwise), so trained weights are never silently reused.

References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS (cascading randomisation, Spearman and
SSIM of the maps); Wang et al. 2004, IEEE TIP (SSIM).
"""

from __future__ import annotations

import numpy as np

from helpers.common import config
from helpers.common.checks import check_int, check_seed
from helpers.explain.maps import normalize, upsample
from helpers.metrics.intervals import bootstrap_ci
from helpers.metrics.similarity import spearman, ssim

__all__ = ["randomisation_stages", "randomised_copy", "randomise_layers", "randomisation_test"]

_STREAM = 0x5A1D


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _layer(model, path: str):
    """The layer at ``path`` ("name" or "outer/inner")."""
    current = model
    for part in str(path).split("/"):
        current = current.get_layer(part)
    return current


def _weighted(layers, prefix: str = "") -> list[tuple[str, object]]:
    return [(prefix + layer.name, layer) for layer in layers if layer.weights and not _is_model(layer)]


def randomisation_stages(model, backbone_layers: int = 2, backbone: str = config.FEATURE_LAYER) -> list[tuple]:
    """The cascade's stages from the top: ``[(stage name, (layer paths...)), ...]``.

    Every head layer with weights (top-level layers other than the nested ``backbone``) from the logits down, one
    stage each; then the ``backbone_layers`` last convolution/dense layers of the backbone, each stage together with
    the weight-carrying layers between it and the previous stage (e.g. its batch normalisation). Stage names are the
    paths of the kernel layers ("backbone/block5_conv3").
    References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS (cascading randomisation).
    """
    backbone_layers = check_int("backbone_layers", backbone_layers, 0)
    stages = [(path, (path,)) for path, _ in reversed(_weighted(model.layers))]
    nested = next((layer for layer in model.layers if layer.name == backbone and _is_model(layer)), None)
    if nested is None or backbone_layers == 0:
        return stages
    pending: list[str] = []
    for path, layer in reversed(_weighted(nested.layers, f"{backbone}/")):
        pending.append(path)
        if hasattr(layer, "kernel"):
            stages.append((path, tuple(pending)))
            pending = []
            if sum(1 for name, _ in stages if name.startswith(f"{backbone}/")) == backbone_layers:
                break
    return stages


def randomised_copy(model):
    """A copy of ``model`` (same architecture and layer names) holding the trained weights, to be randomised."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _draw(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """I.i.d. values from a normal with the mean and standard deviation of ``values``, truncated at 2 sigma."""
    mean, std = float(values.mean()), float(values.std())
    if not std > 0:
        std = max(0.1 * abs(mean), 0.01)
    z = rng.standard_normal(values.shape)
    outside = np.abs(z) > 2
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > 2
    drawn = mean + std * z
    if values.size and values.min() >= 0:
        drawn = np.abs(drawn)
    return drawn.astype(values.dtype)


def randomise_layers(model, paths, seed: int = 0, stage: int = 0) -> dict:
    """Re-draw every variable of the layers at ``paths`` in place (see the module doc); returns ``{variable path: share changed}``.

    Raises RuntimeError when a variable keeps any of its trained values after the draw was written.
    References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS.
    """
    from keras import ops

    seed = check_seed(seed)
    changed = {}
    for index, path in enumerate(paths):
        layer = _layer(model, path)
        for number, variable in enumerate(layer.weights):
            before = np.asarray(ops.convert_to_numpy(variable))
            rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, int(stage), index, number]))
            variable.assign(_draw(before, rng))
            after = np.asarray(ops.convert_to_numpy(variable))
            share = float(np.mean(after != before)) if before.size else 1.0
            if share < 1.0:
                raise RuntimeError(
                    f"variable {variable.path} of layer {path!r} kept {1 - share:.1%} of its trained values"
                )
            changed[f"{path}/{variable.name}"] = share
    return changed


def _comparable(maps, size) -> np.ndarray:
    return normalize(upsample(np.asarray(maps, np.float32), size))


def randomisation_test(
    model,
    images,
    methods=("gradcam", "sobel"),
    classes=None,
    layer=None,
    stages=None,
    backbone_layers: int = 2,
    seed: int = 0,
    batch_size: int = 32,
    size=None,
    n_boot: int = 2000,
    level: float = 0.95,
    keep: int = 1,
    method_options: dict | None = None,
) -> dict:
    """Cascading model-parameter randomisation of ``methods`` on ``images``: similarity to the trained maps per stage.

    ``stages``: :func:`randomisation_stages`' list (default, with ``backbone_layers``) or a list of
    ``(name, paths)``. The trained model explains ``classes`` (default its predictions) and every randomised stage
    explains the same classes. Maps are upsampled to ``size`` (default the images') and scaled to [0, 1] per image
    before Spearman and SSIM (data range 1). Returns ``stages`` (names), ``layers`` {stage: paths}, ``changed``
    {stage: {variable: share of values changed}}, ``classes`` and per method ``spearman`` and ``ssim`` (S, N),
    ``summary`` (one row per stage: ``stage``, ``spearman`` and ``ssim`` bootstrap entries over the images with a
    finite value) and ``maps`` (S + 1, keep, h, w): the first ``keep`` images' maps, trained first.
    References: Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS.
    """
    from helpers.explain.base import prepare_images
    from helpers.explain.registry import get_method

    seed = check_seed(seed)
    methods = list(methods)
    options = dict(method_options or {})
    functions = {name: get_method(name) for name in methods}
    x = prepare_images(model, images)
    size = tuple(x.shape[1:3]) if size is None else tuple(size)
    stages = randomisation_stages(model, backbone_layers) if stages is None else [(n, tuple(p)) for n, p in stages]
    if not stages:
        raise ValueError(f"model {model.name!r} has no layer with weights to randomise")
    keep = min(check_int("keep", keep, 0), len(x))

    trained, explained = {}, classes
    for name in methods:  # the first method fixes the explained classes (the predictions when none are given)
        maps, chosen = functions[name](
            model,
            x,
            classes=explained,
            layer=layer,
            batch_size=batch_size,
            return_classes=True,
            **options.get(name, {}),
        )
        trained[name] = maps
        explained = chosen if explained is None else explained
    reference = {name: _comparable(maps, size) for name, maps in trained.items()}
    results = {name: {"spearman": [], "ssim": [], "summary": [], "maps": [trained[name][:keep]]} for name in methods}
    copy = randomised_copy(model)
    changed = {}
    for index, (stage, paths) in enumerate(stages):
        changed[stage] = randomise_layers(copy, paths, seed, index)
        for name in methods:
            maps = functions[name](
                copy, x, classes=explained, layer=layer, batch_size=batch_size, **options.get(name, {})
            )
            current = _comparable(maps, size)
            rho, structural = spearman(reference[name], current), ssim(reference[name], current, data_range=1.0)
            entry = results[name]
            entry["spearman"].append(rho)
            entry["ssim"].append(structural)
            entry["maps"].append(maps[:keep])
            row = {"stage": stage}
            for metric, values in (("spearman", rho), ("ssim", structural)):
                finite = values[np.isfinite(values)]
                row[metric] = bootstrap_ci(finite, n_boot, seed, level) if finite.size else None
                row[f"{metric}_n_nan"] = int(values.size - finite.size)
            entry["summary"].append(row)
    for entry in results.values():
        entry["spearman"] = np.stack(entry["spearman"])
        entry["ssim"] = np.stack(entry["ssim"])
        entry["maps"] = np.stack(entry["maps"])
    return {
        "stages": [stage for stage, _ in stages],
        "layers": {stage: list(paths) for stage, paths in stages},
        "changed": changed,
        "classes": np.asarray(explained),
        "seed": seed,
        "n_images": int(len(x)),
        "methods": results,
    }
