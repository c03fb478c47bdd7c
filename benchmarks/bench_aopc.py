"""Speed of the batched MoRF curves against a per-step loop and against the bare forward passes.

On the same images and heatmaps, measured side by side in one run:

(a) ``helpers.metrics.perturbation.perturbation_curves``: the L+1 cumulative inputs built on the device, steps of several
    images scored together, ``batch_size`` inputs per forward;
(b) a per-step, one-image-at-a-time loop (how reference implementations run MoRF): perturb the next region
    on the host, ``model.predict`` that one image, repeat; (b') the same loop through the compiled forward
    (the fastest a per-step loop can be; on a CPU a small CNN is already compute-bound at batch 1);
(c) the bare forward passes of the same N*(L+1) inputs, pre-built and resident on the device, at the same
    batch size and through the same kind of compiled forward.

(d) the host's perturbed copies g(x) at the paper's sizes (540 test images at 299 px): one thread vs one per
    core (the curves make each group's copies while the device scores the previous group).

Prints a/b (speed-up over the loop; goal >= 10x on two CPU cores) and a/c (overhead of building the
perturbed inputs; goal <= 1.15) from the best of interleaved runs, both as wall-clock and as process CPU
time (the latter is steadier on a machine shared with other work), and checks that (a), (b) and (c) agree.

    KERAS_BACKEND=tensorflow python benchmarks/bench_aopc.py --images 60
    KERAS_BACKEND=jax python benchmarks/bench_aopc.py --images 60 --backbone small_densenet
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from helpers.backend import device
from helpers.metrics import perturbation as pt
from helpers.models import classifiers as models


def block(values):
    """Wait for device values (JAX dispatches asynchronously) and return them as numpy."""
    return [ops.convert_to_numpy(v) for v in values]


def make_inputs(n: int, size: int, seed: int):
    """Smooth random uint8 images and ReLU-like raw heatmaps on the 6x6-style backbone grid."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((n, size, size)).astype(np.float32)
    images = np.stack([cv2.GaussianBlur(im, (0, 0), 3.0) for im in noise])
    images = (255 * (images - images.min()) / (images.max() - images.min())).astype(np.uint8)[..., None]
    return images


def per_step_loop(forward, images, g, orders, grid, classes):
    """(b): perturb the next region of one image on the host, predict that one image, next step (``forward``: batch -> probabilities)."""
    n = len(images)
    curves = np.empty((n, grid.n_regions + 1))
    masks = [grid.region_map == r for r in range(grid.n_regions)]
    for i in range(n):
        xk = images[i : i + 1].copy()
        curves[i, 0] = ops.convert_to_numpy(forward(xk))[0, classes[i]]
        for k, region in enumerate(orders[i], start=1):
            xk[0, masks[region]] = g[i, masks[region]]
            curves[i, k] = ops.convert_to_numpy(forward(xk))[0, classes[i]]
    return curves


def bare_forward(forward, batches):
    """(c): the forward passes alone on pre-built, device-resident batches."""
    return block([forward(b) for b in batches])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--region-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="small_vgg")
    parser.add_argument("--perturbation", default="gaussian")
    parser.add_argument("--repeats", type=int, default=5, help="runs of (a) and (c), interleaved; the best is kept")
    parser.add_argument(
        "--loop-images", type=int, default=8, help="images timed in (b) with model.predict (scaled to all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host-images", type=int, default=540, help="images of (d), the host's perturbed copies")
    parser.add_argument("--host-size", type=int, default=299, help="image size of (d)")
    args = parser.parse_args()

    n, size, batch = args.images, args.image_size, args.batch_size
    model = models.build_classifier(args.backbone, image_size=size, weights=None, seed=args.seed)
    images = make_inputs(n, size, args.seed)
    grid_side = int(model.get_layer("backbone").output.shape[1])
    rng = np.random.default_rng(args.seed + 1)
    heatmaps = np.maximum(rng.normal(0, 1, (n, grid_side, grid_side)), 0).astype(np.float32)  # ReLU: ties at 0
    classes = ops.convert_to_numpy(model(images[:8].astype(np.float32) / 255)).argmax(-1)
    classes = np.resize(classes, n)
    grid = pt.region_grid(size, args.region_size)
    steps = grid.n_regions + 1
    print(
        f"backend {keras.backend.backend()}, {args.backbone} at {size} px, {n} images, "
        f"{grid.grid_shape[0]}x{grid.grid_shape[1]} regions (L = {grid.n_regions}), "
        f"{n * steps} forward inputs, batch {batch}, perturbation {args.perturbation}"
    )

    def run_a():
        return pt.perturbation_curves(
            model,
            images,
            heatmaps,
            classes,
            args.region_size,
            args.perturbation,
            seed=args.seed,
            batch_size=batch,
            progress=False,
        )

    # (c) inputs: exactly (a)'s inputs, built once on the host and moved to the device in batches of `batch`
    x = images.astype(np.float32) / 255
    g = pt.perturbed_images(images, args.perturbation, seed=args.seed)
    orders = pt.region_order(pt.region_scores(heatmaps, size, args.region_size), "morf", args.seed)
    step_pix = pt.step_of_region(orders)[:, grid.region_map]
    k = np.arange(steps)
    all_inputs = np.where(step_pix[:, None, :, :, None] <= k[None, :, None, None, None], g[:, None], x[:, None])
    all_inputs = all_inputs.reshape((n * steps,) + x.shape[1:]).astype(np.float32)
    pad = (-len(all_inputs)) % batch
    all_inputs = np.concatenate([all_inputs, np.repeat(all_inputs[-1:], pad, axis=0)])
    batches = [ops.convert_to_tensor(all_inputs[i : i + batch]) for i in range(0, len(all_inputs), batch)]
    del all_inputs
    forward = device.forward(model, batch, "float32")  # the study's compiled forward, at the curves' batch
    one_image = device.forward(model, 1, "float32")

    # warm-up: compile (a)'s batch function, the batch-B forward and the batch-1 forward
    t0 = time.perf_counter()
    run_a()
    bare_forward(forward, batches[:2])
    ops.convert_to_numpy(one_image(x[:1]))
    print(f"warm-up (compilation) {time.perf_counter() - t0:.1f} s")

    times_a, times_c, cpu_a, cpu_c = [], [], [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        curves_a = run_a()
        times_a.append(time.perf_counter() - t0)
        cpu_a.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        outputs_c = bare_forward(forward, batches)
        times_c.append(time.perf_counter() - t0)
        cpu_c.append(time.process_time() - c0)
    time_a, time_c = min(times_a), min(times_c)

    n_loop = min(n, args.loop_images)
    t0 = time.perf_counter()
    curves_b = per_step_loop(
        lambda v: model.predict(v, verbose=0), x[:n_loop], g[:n_loop], orders[:n_loop], grid, classes[:n_loop]
    )
    time_b = (time.perf_counter() - t0) * n / n_loop
    t0 = time.perf_counter()
    curves_b1 = per_step_loop(one_image, x, g, orders, grid, classes)
    time_b1 = time.perf_counter() - t0

    probs_c = np.concatenate(outputs_c)[: n * steps]
    curves_c = probs_c[np.arange(n * steps), np.repeat(classes, steps)].reshape(n, steps)
    err_ab = max(np.abs(curves_a[:n_loop] - curves_b).max(), np.abs(curves_a - curves_b1).max())
    err_ac = np.abs(curves_a - curves_c).max()

    total = n * steps
    print(
        f"(a) batched morf_curves    {time_a:8.2f} s  {total / time_a:8.0f} inputs/s  (runs: {', '.join(f'{t:.2f}' for t in times_a)})"
    )
    print(
        f"(b) per-step, model.predict {time_b:7.2f} s  {total / time_b:8.0f} inputs/s  ({n_loop} images timed, scaled to {n})"
    )
    print(f"(b') per-step, compiled fwd {time_b1:7.2f} s  {total / time_b1:8.0f} inputs/s")
    print(
        f"(c) bare forward passes    {time_c:8.2f} s  {total / time_c:8.0f} inputs/s  (runs: {', '.join(f'{t:.2f}' for t in times_c)})"
    )
    print(f"a/b speed-up: {time_b / time_a:.1f}x   (goal >= 10x);  a/b' speed-up: {time_b1 / time_a:.1f}x")
    print(
        f"a/c time ratio: {time_a / time_c:.3f} best runs, {np.median(times_a) / np.median(times_c):.3f} median runs  (goal <= 1.15)"
    )
    print(
        f"a/c CPU-time ratio: {min(cpu_a) / min(cpu_c):.3f}  (process CPU seconds {min(cpu_a):.2f} / {min(cpu_c):.2f}; "
        f"less sensitive to other processes on a shared machine)"
    )
    print(f"max |a - b| = {err_ab:.2e}, max |a - c| = {err_ac:.2e}")
    if err_ab > 1e-4 or err_ac > 1e-4:
        raise SystemExit("batched curves disagree with the per-step loop or the pre-built inputs")
    host_perturbed_copies(args)


def host_perturbed_copies(args) -> None:
    """(d): the host's perturbed copies g(x) at the paper's sizes, on one thread vs one per core (equal arrays checked)."""
    from helpers.common.parallel import worker_count

    size, n, cores = args.host_size, args.host_images, worker_count()
    x = np.random.default_rng(args.seed).random((n, size, size, 1), dtype=np.float32)
    best, arrays = {}, {}
    for _ in range(args.repeats):  # interleaved
        for workers in (1, cores):
            t0 = time.perf_counter()
            arrays[workers] = pt.perturbed_images(x, args.perturbation, seed=args.seed, workers=workers)
            best[workers] = min(best.get(workers, float("inf")), time.perf_counter() - t0)
    if not np.array_equal(arrays[1], arrays[cores]):
        raise SystemExit("perturbed copies differ with the number of threads")
    print(
        f"(d) perturbed copies ({args.perturbation}) of {n} images at {size} px on the host: one thread "
        f"{best[1]:.2f} s, {cores} threads {best[cores]:.2f} s ({best[1] / best[cores]:.1f}x; arrays equal)"
    )


if __name__ == "__main__":
    main()
