"""ROAD's noisy linear imputation, solved in batch on the device by (multigrid-preconditioned) conjugate gradients.

Every removed pixel p becomes the weighted mean of its 8 neighbours q inside the image, ``x_p = sum_q c_pq x_q /
sum_q c_pq`` with ``c = 1/6`` for the 4 direct and ``1/12`` for the 4 diagonal neighbours (renormalised at the
image border), kept pixels acting as the boundary; then N(0, sigma^2) noise (sigma = 0.01 in [0, 1] pixel space) is
added to the removed pixels and the image clipped to [0, 1]. Each channel is one linear system.

Multiplying row p by ``s_p = sum_q c_pq`` makes the system symmetric positive definite: ``s_p v_p - sum_{q removed}
c_pq v_q = sum_{q kept} c_pq x_q`` (a weighted graph Laplacian with the kept pixels as Dirichlet boundary; it is
nonsingular while at least one pixel is kept). It is solved by conjugate gradients, all systems of a batch at once:

* the operator is the 8-neighbour stencil written as weighted neighbour differences ``sum_q c_pq (v_p - v_q)``, so
  float32 rounding scales with the differences, not with the pixel values (this is what lets float32 reach ~1e-6);
* ``solver="multigrid"`` preconditions with one symmetric V-cycle: bilinear prolongation, its transpose as
  restriction, the same operator on every coarser grid (a coarse point is unknown when its fine point is), one
  damped Jacobi sweep before and after each coarse correction, 20 sweeps on the coarsest (3 x 3) grid. It takes
  about 20 iterations whatever the image size, plain CG (``solver="cg"``) a number that grows with the side (~600
  at 299 px); the V-cycle costs a longer compilation, so ``"auto"`` uses it from :data:`MULTIGRID_FROM` px;
* systems stop individually once ``||b - A v|| <= tol * ||b||``; the final true residual is returned.

Everything is ``keras.ops`` in one compiled function per batch shape.

References: Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML
(ROAD, noisy linear imputation); Hestenes & Stiefel 1952 (conjugate gradients); Briggs, Henson & McCormick 2000,
"A Multigrid Tutorial", SIAM (V-cycle); Tatebe 1993, "The multigrid preconditioned conjugate gradient method",
Copper Mountain Conference on Multigrid Methods.
"""

from __future__ import annotations

import numpy as np

from helpers.backend.compilation import backend, compiled_function
from helpers.backend.transfer import pad_rows, to_device
from helpers.common.checks import check_int, check_seed, image_array
from helpers.common.seeds import image_rng

__all__ = [
    "NEIGHBOUR_WEIGHTS",
    "ROAD_NOISE",
    "SOLVERS",
    "use_multigrid",
    "imputation_system",
    "impute_function",
    "impute_batch",
    "default_iterations",
    "with_xla",
    "road_noise",
    "road_impute",
]

#: Weights of the 8 neighbours (row offset -1..1, column offset -1..1; the centre unused).
NEIGHBOUR_WEIGHTS = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
#: Standard deviation of ROAD's noise in [0, 1] pixel space.
ROAD_NOISE = 0.01
#: Random stream of ROAD's noise (apart from the perturbation module's streams).
STREAM_ROAD_NOISE = 12

_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
_NEIGHBOURS = [(dy, dx) for dy, dx in _OFFSETS if (dy, dx) != (0, 0)]
_BILINEAR = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
#: Damping of the Jacobi smoother and its sweeps on the coarsest grid.
_OMEGA, _COARSEST_SWEEPS = 0.8, 20
#: Grids with a side of at most this many points are the coarsest.
_COARSEST = 3
#: Solvers: plain conjugate gradients, or preconditioned by a multigrid V-cycle; "auto" takes multigrid from
#: :data:`MULTIGRID_FROM` pixels on the shorter side (below, the plain solver's few iterations cost less than
#: compiling the V-cycle).
SOLVERS: tuple[str, ...] = ("auto", "cg", "multigrid")
#: Shorter image side (px) from which ``solver="auto"`` preconditions with multigrid.
MULTIGRID_FROM = 64


# ----------------------------------------------------------------------------------------------------
# The reference system (host, scipy): what the device solves
# ----------------------------------------------------------------------------------------------------


def imputation_system(image, removed):
    """The sparse system of one channel: ``(A, b, rows, cols)`` with ``A v = b`` for the removed pixels (rows, cols).

    ``A`` (scipy CSR) has 1 on the diagonal and ``-c_pq / s_p`` for removed neighbours; ``b_p = sum_{q kept}
    c_pq x_q / s_p`` (the row-normalised form, as ROAD states it). For tests and the benchmark.
    References: Rong et al. 2022 (ICML), ROAD.
    """
    import scipy.sparse as sp

    image = np.asarray(image, np.float64)
    removed = np.asarray(removed, bool)
    height, width = image.shape
    rows, cols = np.nonzero(removed)
    index = -np.ones((height, width), np.int64)
    index[rows, cols] = np.arange(len(rows))
    total = np.zeros(len(rows))
    entries = []
    for dy, dx in _NEIGHBOURS:
        y, x = rows + dy, cols + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        total[inside] += NEIGHBOUR_WEIGHTS[dy + 1, dx + 1]
        entries.append((dy, dx, y, x, inside))
    a_rows, a_cols, values = [np.arange(len(rows))], [np.arange(len(rows))], [np.ones(len(rows))]
    b = np.zeros(len(rows))
    for dy, dx, y, x, inside in entries:
        at = np.flatnonzero(inside)
        weight = NEIGHBOUR_WEIGHTS[dy + 1, dx + 1] / total[at]
        unknown = removed[y[at], x[at]]
        a_rows.append(at[unknown])
        a_cols.append(index[y[at][unknown], x[at][unknown]])
        values.append(-weight[unknown])
        np.add.at(b, at[~unknown], weight[~unknown] * image[y[at][~unknown], x[at][~unknown]])
    matrix = sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(a_rows), np.concatenate(a_cols))), shape=(len(rows), len(rows))
    )
    return matrix, b, rows, cols


# ----------------------------------------------------------------------------------------------------
# Stencils, transfers and the multigrid levels (keras.ops, inside the compiled solver; grids are (S, h, w, 1))
# ----------------------------------------------------------------------------------------------------


def _conv(u, kernel: np.ndarray):
    """3x3 correlation with zero padding of (S, h, w, 1) grids, as shifted slices of one padded copy (fused on XLA)."""
    from keras import ops

    h, w = u.shape[1], u.shape[2]
    padded = ops.pad(u, [[0, 0], [1, 1], [1, 1], [0, 0]])
    terms = [
        float(kernel[dy + 1, dx + 1]) * padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        for dy, dx in _OFFSETS
        if kernel[dy + 1, dx + 1] != 0
    ]
    return sum(terms[1:], terms[0])


def _neighbour_sum(inside: np.ndarray) -> np.ndarray:
    """``s_p = sum_q c_pq`` over the neighbours q of p that lie inside ``inside`` (numpy, (h, w))."""
    h, w = inside.shape
    padded = np.pad(inside, 1)
    total = sum(
        NEIGHBOUR_WEIGHTS[dy + 1, dx + 1] * padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _NEIGHBOURS
    )
    return (total * inside).astype(np.float32)


def _prolong(e, h: int, w: int):
    """Bilinear prolongation of a coarse grid (S, hc, wc, 1) (coarse point i at fine point 2i) to (S, h, w, 1)."""
    from keras import ops

    hc, wc = e.shape[1], e.shape[2]
    wide = ops.reshape(ops.stack([e, ops.zeros_like(e)], axis=3), (-1, hc, 2 * wc, 1))[:, :, : 2 * wc - 1]
    tall = ops.reshape(ops.stack([wide, ops.zeros_like(wide)], axis=2), (-1, 2 * hc, 2 * wc - 1, 1))
    return _conv(tall[:, : 2 * hc - 1], _BILINEAR)[:, :h, :w]


def _restrict(r, hc: int, wc: int):
    """The transpose of :func:`_prolong`: (S, h, w, 1) -> (S, hc, wc, 1)."""
    from keras import ops

    h, w = r.shape[1], r.shape[2]
    padded = ops.pad(r, [[0, 0], [0, 2 * hc - 1 - h], [0, 2 * wc - 1 - w], [0, 0]])
    return _conv(padded, _BILINEAR)[:, ::2, ::2]


class _Level:
    """``A v = m (s m v - conv(m v)) + (1 - m) v`` on one grid: unknowns ``m``, identity elsewhere (SPD).

    ``shape``: the grid's (h, w); ``extent``: its leading (rows, cols) that lie inside the image (a coarse grid of an
    even side has one point past the image's edge: never unknown, and no neighbour of any point).
    """

    def __init__(self, removed, shape: tuple[int, int], extent: tuple[int, int]):
        inside = np.zeros(shape, np.float32)
        inside[: extent[0], : extent[1]] = 1.0
        self.shape, self.extent = shape, extent
        self.m = removed * inside[None, :, :, None]
        self.s = _neighbour_sum(inside)[None, :, :, None]
        self.diagonal = self.m * self.s + (1.0 - self.m)

    def __call__(self, v):
        mv = self.m * v
        return self.m * (self.s * mv - _conv(mv, NEIGHBOUR_WEIGHTS)) + (1.0 - self.m) * v

    def coarser(self) -> "_Level":
        """The same operator on the grid of every other point: a point is unknown when its fine point is."""
        from keras import ops

        h, w = self.shape
        hc, wc = h // 2 + 1, w // 2 + 1
        removed = ops.pad(self.m, [[0, 0], [0, 2 * hc - 1 - h], [0, 2 * wc - 1 - w], [0, 0]])[:, ::2, ::2]
        return _Level(removed, (hc, wc), ((self.extent[0] + 1) // 2, (self.extent[1] + 1) // 2))


def _levels(removed, height: int, width: int) -> list:
    """The fine level and its coarser copies down to a side of at most 3 points."""
    levels = [_Level(removed, (height, width), (height, width))]
    while min(levels[-1].shape) > _COARSEST:
        levels.append(levels[-1].coarser())
    return levels


def _v_cycle(levels: list, r, index: int = 0):
    """One symmetric V-cycle from a zero guess (one damped Jacobi sweep before and after): an SPD approximation of ``A^-1 r``."""
    from keras import ops

    level = levels[index]
    if index == len(levels) - 1:
        sweep = lambda _, x: x + _OMEGA * (r - level(x)) / level.diagonal  # noqa: E731
        return ops.fori_loop(0, _COARSEST_SWEEPS, sweep, ops.zeros_like(r))
    x = _OMEGA * r / level.diagonal
    coarse = levels[index + 1]
    correction = _v_cycle(levels, _restrict(r - level(x), *coarse.shape), index + 1)
    x = x + _prolong(correction, *level.shape)
    return x + _OMEGA * (r - level(x)) / level.diagonal


def _differences(x, weights: dict):
    """``sum_q c_pq (x_q - x_p)`` over the neighbours inside the image: conv(x) - s x without float32 cancellation."""
    from keras import ops

    h, w = x.shape[1], x.shape[2]
    padded = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return sum(
        weight * (padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] - x) for (dy, dx), weight in weights.items()
    )


def _solve(x, removed, tol: float, max_iter: int, multigrid: bool):
    """Imputed values and relative residuals of systems (S, H, W, 1): x the image, removed 1 where unknown."""
    from keras import ops

    height, width = x.shape[1], x.shape[2]
    levels = _levels(removed, height, width) if multigrid else None
    padded = np.pad(np.ones((height, width), np.float32), 1)
    weights = {
        (dy, dx): (NEIGHBOUR_WEIGHTS[dy + 1, dx + 1] * padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width])[
            None, :, :, None
        ].astype(np.float32)
        for dy, dx in _NEIGHBOURS
    }

    def norm(u):
        return ops.sqrt(ops.sum(u * u, axis=(1, 2, 3)))

    def dot(u, v):
        return ops.sum(u * v, axis=(1, 2, 3))

    def operator(p):  # A p for p zero on the kept pixels, in the accurate difference form
        return -removed * _differences(removed * p, weights)

    def precondition(r):
        return removed * _v_cycle(levels, r) if multigrid else r

    def true_residual(v):
        return removed * _differences(ops.where(removed > 0, v, x), weights)

    b = true_residual(ops.zeros_like(x))
    scale = ops.maximum(norm(b), 1e-30)

    def active(r):
        return norm(r) > tol * scale

    def condition(i, v, r, p, rz):
        return ops.logical_and(i < max_iter, ops.any(active(r)))

    def body(i, v, r, p, rz):  # one preconditioned CG step; rz = 0 marks the first (p = z)
        on = active(r)
        z = precondition(r)
        rz_new = dot(r, z)
        beta = ops.where(rz > 0, rz_new / ops.where(rz > 0, rz, 1.0), 0.0)[:, None, None, None]
        p = ops.where(on[:, None, None, None], z + beta * p, p)
        ap = operator(p)
        pap = dot(p, ap)
        alpha = ops.where(on & (pap > 0), rz_new / ops.where(pap > 0, pap, 1.0), 0.0)[:, None, None, None]
        return i + 1, v + alpha * p, r - alpha * ap, p, ops.where(on, rz_new, rz)

    zeros = ops.zeros_like(x)
    start = (ops.convert_to_tensor(0, "int32"), zeros, b, zeros, ops.zeros_like(scale))
    _, v, _, _, _ = ops.while_loop(condition, body, start)
    return ops.where(removed > 0, v, x), norm(true_residual(v)) / scale


def use_multigrid(solver: str, height: int, width: int) -> bool:
    """Whether ``solver`` ("auto", "cg" or "multigrid") preconditions with multigrid on an image of this size."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return solver == "multigrid" or (solver == "auto" and min(height, width) >= MULTIGRID_FROM)


def impute_function(batch_shape: tuple, tol: float = 1e-5, max_iter: int | None = None, solver: str = "auto"):
    """Compiled ``(x (B, H, W, C) float32, removed (B, H, W) bool, noise (B, H, W, C)) -> (imputed, residual (B,))``.

    ``imputed`` = the solved system plus ``noise`` on the removed pixels, clipped to [0, 1]; ``residual`` the largest
    relative residual ``||b - A v|| / ||b||`` (of the symmetric form) over the image's channels. ``max_iter`` None:
    100 with multigrid, 20 (H + W) without. Compiled once per shape and settings.
    References: Rong et al. 2022 (ICML), ROAD.
    """
    batch, height, width, channels = (int(d) for d in batch_shape)
    multigrid = use_multigrid(solver, height, width)
    max_iter = default_iterations(max_iter, multigrid, height, width)
    if not 0 < float(tol) < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}")

    def impute(x, removed, noise):
        return impute_batch(x, removed, noise, float(tol), max_iter, multigrid)

    key = ("road impute", batch, height, width, channels, float(tol), max_iter, multigrid)
    return compiled_function(key, with_xla(impute))


def with_xla(function):
    """``function`` compiled by XLA on TensorFlow as well (``tf.function(jit_compile=True)``), unchanged elsewhere.

    The solver's loop is hundreds of small operations per iteration: TensorFlow's graph executor runs it about 3x
    slower than XLA on a CPU. JAX compiles every jitted function with XLA already.
    """
    if backend() != "tensorflow":
        return function
    import tensorflow as tf

    return tf.function(function, jit_compile=True)


def default_iterations(max_iter: int | None, multigrid: bool, height: int, width: int) -> int:
    """``max_iter``, or when None the default: 100 with multigrid, 20 (H + W) without."""
    if max_iter is None:
        return 100 if multigrid else 20 * (height + width)
    return check_int("max_iter", max_iter, 1)


def impute_batch(x, removed, noise, tol: float, max_iter: int, multigrid: bool):
    """Traceable (keras.ops) imputation of a batch: ``x`` (B, H, W, C), ``removed`` (B, H, W), ``noise`` like x.

    Returns ``(imputed, residual (B,))`` as :func:`impute_function`; call it inside a compiled function.
    References: Rong et al. 2022 (ICML), ROAD.
    """
    from keras import ops

    _, height, width, channels = (int(d) for d in x.shape)
    systems = ops.reshape(ops.transpose(ops.cast(x, "float32"), (0, 3, 1, 2)), (-1, height, width, 1))
    mask = ops.cast(removed, "float32")
    unknown = ops.reshape(ops.repeat(mask[:, None], channels, axis=1), (-1, height, width, 1))
    solved, residual = _solve(systems, unknown, float(tol), int(max_iter), multigrid)
    solved = ops.transpose(ops.reshape(solved, (-1, channels, height, width)), (0, 2, 3, 1))
    imputed = ops.clip(solved + mask[..., None] * ops.cast(noise, "float32"), 0.0, 1.0)
    return imputed, ops.max(ops.reshape(residual, (-1, channels)), axis=1)


def road_noise(shape: tuple, seed: int, image_ids, sigma: float = ROAD_NOISE) -> np.ndarray:
    """N(0, sigma^2) noise (N, H, W, C) float32, each image's from a generator seeded by (seed, image id) only."""
    seed = check_seed(seed)
    return np.stack(
        [
            np.float32(sigma) * image_rng(seed, i, STREAM_ROAD_NOISE).standard_normal(shape, np.float32)
            for i in image_ids
        ]
    )


def road_impute(
    images,
    removed,
    sigma: float = ROAD_NOISE,
    seed: int = 0,
    image_ids=None,
    batch_size: int = 32,
    tol: float = 1e-5,
    max_iter: int | None = None,
    solver: str = "auto",
):
    """ROAD's noisy linear imputation of ``removed`` pixels: ``(imputed (N, H, W, C) float32, residual (N,))``.

    ``images`` (N, H, W[, C]) uint8 or float in [0, 1]; ``removed`` (N, H, W) boolean, at least one pixel kept per
    image. ``sigma`` = 0 gives the plain linear imputation. ``residual``: each image's relative residual of the solve.
    ``solver``: "cg", "multigrid" or "auto" (:func:`use_multigrid`), ``tol`` and ``max_iter`` as :func:`impute_function`.
    References: Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML.
    """
    from keras import ops

    x = image_array(images)
    mask = np.asarray(removed, bool)
    if mask.shape != x.shape[:3]:
        raise ValueError(f"removed must have shape {x.shape[:3]} (one mask per image), got {mask.shape}")
    if mask.reshape(len(mask), -1).all(axis=1).any():
        raise ValueError("every image must keep at least one pixel (the imputation needs a boundary)")
    if not float(sigma) >= 0:
        raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
    batch_size = check_int("batch_size", batch_size, 1)
    ids = np.arange(len(x)) if image_ids is None else np.asarray(image_ids, np.int64)
    if ids.shape != (len(x),):
        raise ValueError(f"image_ids must have one id per image ({len(x)}), got shape {ids.shape}")
    noise = road_noise(x.shape[1:], seed, ids, float(sigma))
    run = impute_function((batch_size, *x.shape[1:]), tol, max_iter, solver)
    pending = []
    for start in range(0, len(x), batch_size):
        stop = min(len(x), start + batch_size)
        args = (pad_rows(a[start:stop], batch_size) for a in (x, mask, noise))
        pending.append((start, stop, run(*(to_device(a) for a in args))))
    imputed = np.empty_like(x)
    residual = np.empty(len(x), np.float64)
    for start, stop, (values, res) in pending:
        imputed[start:stop] = np.asarray(ops.convert_to_numpy(values))[: stop - start]
        residual[start:stop] = np.asarray(ops.convert_to_numpy(res))[: stop - start]
    return imputed, residual
