"""The per-image explorer in JupyterLab and Colab: ``explore(profile=...)``, an ipywidgets view of one image at a time.

What is shown is kept apart from how: :class:`ExplorerState` holds the filters, the sort, the chosen image, model,
heatmap method, region order, step and overlay alpha, and :meth:`ExplorerState.view` returns what they show (the
image, its overlay, xᵏ computed live with :mod:`helpers.metrics.perturbation`, the curves and the marker); :func:`render`
draws a view with matplotlib; :class:`ExplorerWidget` binds widgets to a state. A test sets the widgets' values from
Python and reads :attr:`ExplorerWidget.shown`. Where widgets cannot be shown (a notebook run by the runner, a
rendered notebook) :func:`explore` returns a static figure.
"""

from __future__ import annotations

import base64
import functools
import io
import os
from pathlib import Path

import numpy as np

from helpers.common.config import NOTEBOOK_ENV
from helpers.explain.maps import overlay
from helpers.report.explorer import OUTLINE_COLOURS, ExplorerData, load_explorer_data, select_images
from helpers.study import files as study

__all__ = ["ExplorerState", "render", "ExplorerWidget", "explore", "explorer_paths"]

_ORDER_STYLES = {"morf": ("#d62728", "-"), "random": ("#7f7f7f", "--"), "lerf": ("#1f77b4", ":")}


class ExplorerState:
    """The explorer's choices without any widget: filters, sort, image position, model, method, order, step, alpha."""

    def __init__(self, data: ExplorerData):
        self.data = data
        self.true_class: int | None = None
        self.correct: dict = {m: None for m in data.models}  # model -> True (correct), False (incorrect), None (any)
        self.agree: bool | None = None
        self.sort: str | None = None
        self.descending = True
        self.position = 0  # in the filtered, sorted list
        self.model = data.models[0]
        self.method = data.scored_method(self.model)
        self.order = data.orders[0]
        self.step = 0
        self.alpha = 0.5

    def visible(self) -> np.ndarray:
        """Indices of the images passing the filters, in sort order (as in ``explorer.html``)."""
        return select_images(self.data, self.true_class, self.correct, self.agree, self.sort, self.descending)

    @property
    def index(self) -> int | None:
        """The chosen image's index in the test split, None when no image passes the filters."""
        visible = self.visible()
        return int(visible[min(max(self.position, 0), len(visible) - 1)]) if len(visible) else None

    def view(self) -> dict:
        """What the choices show: the image and its names, overlay, masks, xᵏ, the curves f(xᵏ) and the marker."""
        data, i, visible = self.data, self.index, self.visible()
        if i is None:
            return {"index": None, "count": 0}
        methods = data.heatmaps[self.model]
        method = self.method if self.method in methods else data.scored_method(self.model)
        order = self.order if self.order in data.orders else data.orders[0]
        step = int(min(max(self.step, 0), data.steps))
        out = data.outputs[self.model]
        curves = {o: data.curves[self.model][o][i] for o in data.orders}
        return {
            "index": i,
            "name": data.names[i],
            "count": len(visible),
            "position": int(np.flatnonzero(visible == i)[0]),
            "label": data.class_names[data.labels[i]],
            "model": self.model,
            "prediction": data.class_names[out["predicted"][i]],
            "probability": float(out["probabilities"][i, out["predicted"][i]]),
            "method": method,
            "order": order,
            "step": step,
            "alpha": float(self.alpha),
            "image": data.images[i],
            "heatmap": methods[method][i],
            "overlay": overlay(data.images[i], methods[method][i], alpha=float(self.alpha)),
            "masks": {kind: mask[i] for kind, mask in data.masks.items() if mask[i].any()},
            "perturbed": data.perturbed_image(self.model, order, i, step),
            "curves": curves,
            "marker": (step, float(curves[order][step])),
        }


@functools.cache
def _figure_class():
    """A matplotlib Figure that shows itself as a PNG in any IPython front end (also where pyplot was never imported)."""
    from matplotlib.figure import Figure

    class ExplorerFigure(Figure):
        def _repr_png_(self) -> bytes:
            return _png(self)

    return ExplorerFigure


def render(view: dict, figure=None):
    """Draw a view of :meth:`ExplorerState.view` (overlay with mask outlines, xᵏ, curves with the marker); return the figure."""
    fig = figure or _figure_class()(figsize=(12, 4), layout="constrained")
    fig.clear()
    if view["index"] is None:
        fig.text(0.5, 0.5, "no image passes the filters", ha="center", va="center")
        return fig
    ax_heat, ax_step, ax_curve = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.3]})
    ax_heat.imshow(view["overlay"])
    for kind, mask in view["masks"].items():
        ax_heat.contour(mask, levels=[0.5], colors=[OUTLINE_COLOURS.get(kind, "yellow")], linewidths=1.2)
    ax_heat.set_title(f"{view['name']} (true {view['label']})\n{view['model']} {view['method']}: "
                      f"{view['prediction']} {view['probability']:.2f}", fontsize=10)  # fmt: skip
    ax_step.imshow(view["perturbed"], cmap="gray", vmin=0.0, vmax=1.0)
    k, value = view["marker"]
    ax_step.set_title(f"$x^{{{k}}}$ ({view['order']}), f = {value:.3f}", fontsize=10)
    for ax in (ax_heat, ax_step):
        ax.set_axis_off()
    for order, curve in view["curves"].items():
        colour, style = _ORDER_STYLES.get(order, ("black", "-"))
        ax_curve.plot(curve, style, color=colour, lw=2.2 if order == view["order"] else 1.2, label=order)
    ax_curve.axvline(k, color="black", ls=":", lw=1)
    ax_curve.plot([k], [value], "o", color=_ORDER_STYLES.get(view["order"], ("black",))[0])
    ax_curve.set(xlabel="step k", ylabel=f"f($x^k$), {view['model']}", ylim=(-0.02, 1.02))
    ax_curve.legend(fontsize=8)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    return buffer.getvalue()


try:
    import ipywidgets as _widgets

    _Box = _widgets.VBox
except ImportError:  # the static figure still works
    _widgets, _Box = None, object


class ExplorerWidget(_Box):
    """ipywidgets bound to an :class:`ExplorerState`; :attr:`shown` is the view on screen, :attr:`controls` the widgets."""

    def __init__(self, data: ExplorerData, state: ExplorerState | None = None, draw: bool = True):
        if _widgets is None:
            raise ImportError("the explorer widget needs ipywidgets (pip install ipywidgets)")
        w, self.state, self.draw, self._busy = _widgets, state or ExplorerState(data), draw, False
        s = self.state
        classes = [("all", None)] + [(name, i) for i, name in enumerate(data.class_names)]
        choice = [("any", None), ("correct", True), ("incorrect", False)]
        sorts = [("test-set order", None)] + [(label, key) for key, (label, _) in data.metrics().items()]
        wide = {"style": {"description_width": "initial"}}
        c = self.controls = {"true_class": w.Dropdown(options=classes, value=s.true_class, description="true class")}
        for m in data.models:
            c[f"correct:{m}"] = w.Dropdown(options=choice, value=s.correct[m], description=m, **wide)
        agree = [("any", None), ("models agree", True), ("models disagree", False)]
        c["agree"] = w.Dropdown(options=agree, value=s.agree, description="predictions", **wide)
        c["sort"] = w.Dropdown(options=sorts, value=s.sort, description="sort by", **wide)
        c["descending"] = w.Checkbox(value=s.descending, description="descending")
        c["image"] = w.Dropdown(options=self._image_options(), value=s.position, description="image")
        c["model"] = w.Dropdown(options=data.models, value=s.model, description="model")
        c["method"] = w.Dropdown(options=list(data.heatmaps[s.model]), value=s.method, description="heatmap")
        c["order"] = w.ToggleButtons(options=data.orders, value=s.order, description="order")
        c["step"] = w.IntSlider(value=s.step, min=0, max=data.steps, description="step k", continuous_update=False)
        c["alpha"] = w.FloatSlider(value=s.alpha, min=0.0, max=1.0, step=0.05, description="alpha")
        self.picture, self.caption = w.Image(format="png"), w.HTML()
        for control in c.values():
            control.observe(self._changed, names="value")
        filters = [c["true_class"], *(c[f"correct:{m}"] for m in data.models), c["agree"]]
        super().__init__(
            [
                w.HBox(filters),
                w.HBox([c["sort"], c["descending"], c["image"]]),
                w.HBox([c["model"], c["method"], c["order"]]),
                w.HBox([c["step"], c["alpha"]]),
                self.caption,
                self.picture,
            ]
        )
        self.shown: dict = {}
        self.refresh()

    def _image_options(self) -> list:
        data = self.state.data
        return [
            (f"{data.names[i]} ({data.class_names[data.labels[i]]})", p) for p, i in enumerate(self.state.visible())
        ]

    def _changed(self, change) -> None:
        if self._busy:
            return
        c, s = self.controls, self.state
        s.position = c["image"].value or 0
        before = s.index
        s.true_class, s.agree, s.sort = c["true_class"].value, c["agree"].value, c["sort"].value
        s.correct = {m: c[f"correct:{m}"].value for m in s.data.models}
        s.descending = c["descending"].value
        s.model, s.method, s.order = c["model"].value, c["method"].value, c["order"].value
        s.step, s.alpha = c["step"].value, c["alpha"].value
        self._busy = True
        try:
            listing = [c["true_class"], c["agree"], c["sort"], c["descending"], *(c[f"correct:{m}"] for m in s.correct)]
            if any(change["owner"] is w for w in listing):  # a new sort starts at its top; a filter keeps the image
                visible = s.visible()
                resorted = change["owner"] is c["sort"] or change["owner"] is c["descending"]
                s.position = int(np.flatnonzero(visible == before)[0]) if before in visible and not resorted else 0
                c["image"].options = self._image_options()
                c["image"].value = s.position if len(visible) else None
            if change["owner"] is c["model"]:
                c["method"].options = list(s.data.heatmaps[s.model])
                s.method = s.method if s.method in s.data.heatmaps[s.model] else s.data.scored_method(s.model)
                c["method"].value = s.method
        finally:
            self._busy = False
        self.refresh()

    def refresh(self) -> None:
        """Show the state's current view (and redraw the figure unless ``draw`` is False)."""
        self.shown = view = self.state.view()
        if view["index"] is None:
            self.caption.value = "<b>0</b> images pass the filters"
        else:
            self.caption.value = (
                f"<b>{view['count']}</b> images shown; image {view['position'] + 1}: <b>{view['name']}</b>, "
                f"f(x<sup>{view['step']}</sup>) = {view['marker'][1]:.3f} ({view['order']}, {view['model']})"
            )
        if self.draw:
            self.picture.value = _png(render(view))

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}
        if self.picture.value:  # what a viewer without widgets (a rendered notebook) shows instead
            data["image/png"] = base64.b64encode(self.picture.value).decode("ascii")
        return data


def explorer_paths(profile: str = "demo", work_dir="", report_dir=""):
    """The study paths the explorer reads: ``report_dir``, else the runner's ``reports/<profile>/`` when it holds AOPC results, else the interactive report."""
    if not str(report_dir):
        root = Path(work_dir).expanduser().resolve() if str(work_dir) else study.find_project_root()
        published = root / "reports" / profile
        if (published / "metrics" / "aopc.json").is_file():
            report_dir = published
    return study.study_paths(profile, work_dir, report_dir)


def _widgets_shown() -> bool:
    """Whether a widget front end can show widgets here: an interactive Jupyter kernel, not a runner's notebook."""
    if os.environ.get(NOTEBOOK_ENV) or _widgets is None:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def explore(
    profile: str = "demo", work_dir="", report_dir="", paths=None, static: bool | None = None, model_names=None
):
    """The explorer of a study: an :class:`ExplorerWidget` in JupyterLab or Colab, a static figure elsewhere (``static``).

    ``paths`` (a notebook's :class:`helpers.study.files.StudyPaths`) replaces ``profile``/``work_dir``/``report_dir``.
    """
    paths = paths or explorer_paths(profile, work_dir, report_dir)
    data = load_explorer_data(paths, model_names)
    if static is None:
        static = not _widgets_shown()
    if static:
        state = ExplorerState(data)
        state.step = round(data.steps / 4)  # a figure that cannot move shows the perturbation under way
        return render(state.view())
    return ExplorerWidget(data)
