"""Benchmark: training the head on cached backbone features vs ``model.fit`` through the frozen backbone.

Both sides run the same epochs over the same images, labels, seed, batch size and initial weights:

* ``fit through backbone``: ``model.fit`` on the whole classifier with the backbone frozen (every epoch
  runs every image through the backbone);
* ``cached features``: the backbone's features computed once (``split_classifier``), then ``model.fit`` of the
  head (sharing the classifier's head layers) on them; the time includes the feature extraction.

Also reported: ``helpers.models.training.train_classifier`` with its fast path (which adds per-epoch validation
recall), and the largest difference between the two sides' final head weights.

Usage (the default size runs in a few minutes on two CPU cores; on a GPU try ``--image-size 299 --n 1024``)::

    python benchmarks/bench_training.py [--backbone vgg16] [--image-size 64] [--n 256] [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from helpers.backend import device
from helpers.common import choices
from helpers.models import classifiers as models
from helpers.models import training


def _data(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    return images, labels


def main(argv=None) -> int:
    """Run the benchmark and print both times and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vgg16", choices=choices.BACKBONES)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=256, help="training images")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-train-classifier", action="store_true", help="skip the train_classifier timing")
    args = parser.parse_args(argv)

    x, y = _data(args.n, args.image_size, args.seed)
    x_val, y_val = _data(max(args.n // 8, 4), args.image_size, args.seed + 1)
    onehot = np.eye(4, dtype=np.float32)[y]
    print(
        f"backend {keras.backend.backend()}, backbone {args.backbone} (frozen, random init) at {args.image_size} px, "
        f"{args.n} images, {args.epochs} epochs, batch {args.batch_size}"
    )

    def fresh():
        return models.build_classifier(
            args.backbone, args.image_size, weights=None, freeze_backbone=True, seed=args.seed
        )

    # Warm-up on a separate model so that compilation is not timed on either side.
    warm = fresh()
    warm.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    warm.fit(x[: args.batch_size] / 255.0, onehot[: args.batch_size], epochs=1, batch_size=args.batch_size, verbose=0)

    # Side 1: model.fit through the frozen backbone.
    full = fresh()
    full.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    keras.utils.set_random_seed(args.seed)
    t0 = time.perf_counter()
    x_float = x.astype(np.float32) / np.float32(255.0)
    full.fit(x_float, onehot, epochs=args.epochs, batch_size=args.batch_size, shuffle=True, verbose=0)
    t_full = time.perf_counter() - t0

    # Side 2: features once, then model.fit of the head on them.
    cached = fresh()
    feature_model, _ = models.split_classifier(cached)
    head = models.head_probability_model(cached)
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    keras.utils.set_random_seed(args.seed)
    t0 = time.perf_counter()
    features = device.predict_batches(feature_model, x, max(args.batch_size, 64))
    t_features = time.perf_counter() - t0
    head.fit(features, onehot, epochs=args.epochs, batch_size=args.batch_size, shuffle=True, verbose=0)
    t_cached = time.perf_counter() - t0

    diff = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(full.get_layer("logits").get_weights(), cached.get_layer("logits").get_weights())
    )
    print(f"fit through backbone : {t_full:8.2f} s")
    print(
        f"cached features      : {t_cached:8.2f} s  (feature extraction {t_features:.2f} s, head fit {t_cached - t_features:.2f} s)"
    )
    print(f"speed-up             : {t_full / t_cached:8.1f}x  (goal >= 10x)")
    print(f"max |difference| of the final logits weights between the two sides: {diff:.2e}")

    if not args.skip_train_classifier:
        result = training.train_classifier(
            fresh(), x, y, x_val, y_val, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, progress=False
        )
        t = result.timings
        print(
            f"train_classifier (fast path, with per-epoch validation recall): {t['total_s']:.2f} s "
            f"(features {t['features_s']:.2f} s, {args.epochs} epochs {t['fit_s']:.2f} s); "
            f"{t_full / t['total_s']:.1f}x faster than fit through the backbone"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
