"""Batched versus one-image-at-a-time Grad-CAM on the same images: times, ratio and agreement.

Usage::

    KERAS_BACKEND=jax python benchmarks/bench_gradcam.py --n 200 --image-size 96
    python benchmarks/bench_gradcam.py --backbones small_vgg --batch-size 64 --method gradcam++

Both paths run the same compiled per-batch function (feature map once, gradient of the head only);
"one at a time" calls it with batch size 1, as a per-image loop would. Each path is warmed up (traced
or compiled) before it is timed, and timed ``--repeats`` times (the best run is reported).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import best_time  # noqa: E402

from helpers.explain import grad_cam as G
from helpers.models import classifiers as models


def main(argv=None) -> int:
    """Run the benchmark and print one line per backbone."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="number of images")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbones", default="small_vgg,small_densenet")
    parser.add_argument("--method", default="gradcam", choices=G.VARIANTS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    images = rng.integers(0, 256, (args.n, args.image_size, args.image_size, 1), dtype=np.uint8)
    print(
        f"backend {keras.backend.backend()}, {args.n} images of {args.image_size} px, method {args.method}, "
        f"batch size {args.batch_size}, best of {args.repeats}"
    )
    for backbone in args.backbones.split(","):
        start = time.perf_counter()
        model = models.build_classifier(backbone, image_size=args.image_size, weights=None, seed=args.seed)
        # Random heads give near-constant logits; spread the weights so the maps are not all zero.
        model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
        built = time.perf_counter() - start

        def batched():
            return G.gradcam(model, images, batch_size=args.batch_size, method=args.method)  # noqa: B023

        def one_by_one():
            return G.gradcam(model, images, batch_size=1, method=args.method)  # noqa: B023

        start = time.perf_counter()
        G.gradcam(model, images[: args.batch_size], batch_size=args.batch_size, method=args.method)
        G.gradcam(model, images[:1], batch_size=1, method=args.method)
        warm = time.perf_counter() - start
        t_batch, maps_batch = best_time(batched, args.repeats)
        t_single, maps_single = best_time(one_by_one, args.repeats)
        scale = max(float(maps_batch.max()), 1e-12)
        diff = float(np.abs(maps_batch - maps_single).max()) / scale
        agree = diff < 1e-4
        print(
            f"{backbone:>15}: grid {maps_batch.shape[1]}x{maps_batch.shape[2]}, "
            f"batched {t_batch:.2f} s ({args.n / t_batch:.0f} img/s), "
            f"one at a time {t_single:.2f} s ({args.n / t_single:.0f} img/s), "
            f"ratio {t_single / t_batch:.1f}x; max |diff| / max = {diff:.1e} ({'agree' if agree else 'DIFFER'}); "
            f"zero maps {int((maps_batch.max(axis=(1, 2)) == 0).sum())}/{args.n}; "
            f"build {built:.1f} s, warm-up {warm:.1f} s"
        )
        if not agree:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
