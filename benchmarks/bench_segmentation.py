"""Benchmark: lung segmentation on the demo profile's phantoms, training time and test Dice/IoU.

Phantoms as the demo profile makes them (500 per class at 128 px, read at the classifier's 96 px, split 80/10/10
with seed 0); the U-Net segments at ``--segmentation-size`` and its masks are scored at the classifier's size
against the lung masks read at that size. Prints the settings, the training time, the kept epoch and the test
Dice and IoU (mean, with a bootstrap 95% interval, and the worst image).

Usage (the defaults are the demo's settings)::

    python benchmarks/bench_segmentation.py [--data-dir DIR] [--per-class 500] [--segmentation-size 64] [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from helpers.data import dataset, phantoms
from helpers.models import segmentation


def main(argv=None) -> dict:
    """Run the benchmark, print its numbers and return them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding (or to receive) the phantoms")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--synthetic-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--segmentation-size", type=int, default=64)
    parser.add_argument("--base-filters", type=int, default=8)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    root = args.data_dir or tempfile.mkdtemp(prefix="bench_segmentation_")
    folder = phantoms.synthesize_dataset(
        root, args.per_class, args.synthetic_size, seed=args.seed, mask_size=256, progress=False
    )
    train, val, test = dataset.balance_and_split(dataset.scan_dataset(folder), seed=args.seed)
    data = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        part = dataset.masked_rows(part, "lung")
        images = dataset.load_images(part, args.image_size, cache_dir=False, progress=False)
        data[name] = (images, dataset.load_masks(part, args.image_size, "lung", required=True), part)

    t0 = time.perf_counter()
    model = segmentation.build_unet(args.segmentation_size, args.base_filters, args.depth, seed=args.seed)
    build_s = time.perf_counter() - t0
    result = segmentation.train_segmentation(
        model, *data["train"][:2], *data["val"][:2], epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed, progress=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    images, masks, part = data["test"]
    predicted = segmentation.predict_masks(result.model, images, batch_size=args.batch_size)
    predict_s = time.perf_counter() - t0
    d, j = segmentation.dice(predicted, masks), segmentation.iou(predicted, masks)
    summary = segmentation.segmentation_summary(d, j, part["label_index"].to_numpy(), seed=args.seed)
    out = {
        "backend": keras.backend.backend(),
        "settings": vars(args),
        "parameters": int(model.count_params()),
        "train_size": len(data["train"][0]),
        "build_s": build_s,
        "train_s": result.timings["fit_s"],
        "predict_s": predict_s,
        "best_epoch": result.best_epoch,
        "val_dice": result.best_val_dice,
        "test_dice": summary["all"]["dice"],
        "test_iou": summary["all"]["iou"],
        "worst_test_dice": float(d.min()),
    }
    print(f"backend {out['backend']}, U-Net {out['parameters']:,} parameters, {out['train_size']} training images")
    print(
        f"segmentation_size {args.segmentation_size}, base_filters {args.base_filters}, depth {args.depth}, "
        f"epochs {args.epochs}, batch_size {args.batch_size}, learning_rate {args.learning_rate}"
    )
    print(f"build {build_s:.1f} s, training {out['train_s']:.1f} s, test prediction {predict_s:.2f} s")
    print(f"kept epoch {result.best_epoch} (validation Dice {out['val_dice']:.4f})")
    print(result.history[["epoch", "loss", "val_dice", "seconds"]].to_string(index=False))
    for key in ("dice", "iou"):
        e = summary["all"][key]
        print(f"test {key}: {e['estimate']:.4f} [{e['low']:.4f}, {e['high']:.4f}] over {len(d)} images")
    print(f"worst test Dice {out['worst_test_dice']:.4f}")
    return out


if __name__ == "__main__":
    main()
