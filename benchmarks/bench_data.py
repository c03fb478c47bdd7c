"""Benchmark of the data layer: phantom synthesis speed, image decoding, and (optionally) learnability.

    python benchmarks/bench_data.py                       # 1,000 phantoms at 128 px (250 per class)
    python benchmarks/bench_data.py --per-class 500 --size 96
    python benchmarks/bench_data.py --learnability        # also train a small CNN on 400/50/50 per class at 96 px
    python benchmarks/bench_data.py --size 299            # the paper's size

It also renders a sample of phantoms in this process and writes them with libpng's adaptive filters at zlib
level 3 (the generator's encoder before) and with the generator's encoder settings (``helpers.data.phantoms``), side
by side: milliseconds per phantom (image, lung mask, lesion mask), bytes, and the ratio; the decoded pixels of
both must be equal.

The learnability check trains a small from-scratch CNN (the demo's ``small_vgg`` classifier when
``helpers.models.classifiers`` provides it, trainable) on phantoms and prints its macro test recall: the phantoms are
meant to be learnable (recall >= 0.85 within a few epochs) while the class is not visible in the global
brightness (printed as the accuracy of a nearest-class-mean rule on mean intensity).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_synthesis(workdir: Path, per_class: int, size: int, seed: int) -> Path:
    """Time synthesize_dataset, scan_dataset and load_images in ``workdir``; print images per second."""
    from helpers.data import dataset as ds
    from helpers.data import phantoms

    start = time.perf_counter()
    dataset = phantoms.synthesize_dataset(workdir, per_class=per_class, image_size=size, seed=seed, progress=False)
    elapsed = time.perf_counter() - start
    total = per_class * 4
    print(
        f"synthesize_dataset: {total} images at {size}x{size} in {elapsed:.2f} s = {total / elapsed:.0f} images/s "
        f"(images, lung masks and lesion masks written)"
    )
    start = time.perf_counter()
    frame = ds.scan_dataset(dataset)
    elapsed = time.perf_counter() - start
    print(f"scan_dataset (with header checks of images and masks): {len(frame)} images in {elapsed:.3f} s")
    start = time.perf_counter()
    ds.load_images(frame, size, cache_dir=workdir / "cache", progress=False)
    elapsed = time.perf_counter() - start
    print(
        f"load_images (decode + resize + cache write): {len(frame)} images in {elapsed:.2f} s = {len(frame) / elapsed:.0f} images/s"
    )
    start = time.perf_counter()
    ds.load_images(frame, size, cache_dir=workdir / "cache", progress=False)
    print(f"load_images from the cache: {time.perf_counter() - start:.3f} s")
    return dataset


def bench_writing(size: int, seed: int, per_class: int = 10, repeats: int = 3) -> dict:
    """Render ``4 * per_class`` phantoms in-process, then time PNG writing with the old and the current encoder."""
    import cv2

    from helpers.common.config import CLASS_NAMES
    from helpers.data import phantoms

    cv2.setNumThreads(1)  # one core, as each worker of the process pool has
    phantoms.render_phantom(CLASS_NAMES[0], seed, 1, size)  # first-call set-up (fonts, kernels) is not per phantom
    start = time.perf_counter()
    sample = [phantoms.render_phantom(name, seed, n, size) for name in CLASS_NAMES for n in range(1, per_class + 1)]
    render_ms = (time.perf_counter() - start) * 1000 / len(sample)
    adaptive = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    settings = {
        "adaptive filters, zlib 3 (before)": dict.fromkeys(phantoms.OUTPUTS, adaptive),
        "current encoder": {key: params for key, (_, params) in phantoms.OUTPUTS.items()},
    }
    for label, params in settings.items():  # both lossless: checked once, outside the timing
        for arrays in sample:
            for key, flags in params.items():
                ok, buffer = cv2.imencode(".png", arrays[key], flags)
                assert ok and np.array_equal(cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED), arrays[key]), (label, key)
    timings = {}
    for label, params in settings.items():
        best, size_bytes = float("inf"), 0
        for _ in range(repeats):
            start, size_bytes = time.perf_counter(), 0
            for arrays in sample:
                for key, flags in params.items():
                    size_bytes += cv2.imencode(".png", arrays[key], flags)[1].size
            best = min(best, time.perf_counter() - start)
        timings[label] = (best * 1000 / len(sample), size_bytes / len(sample) / 1024)
    before, now = timings.values()
    print(f"render one phantom at {size} px: {render_ms:.1f} ms ({len(sample)} phantoms, one process)")
    for label, (ms, kib) in timings.items():
        print(f"write its three PNGs, {label}: {ms:.2f} ms, {kib:.0f} KiB")
    print(
        f"writing: {before[0] / now[0]:.1f}x faster, files {now[1] / before[1]:.2f}x the size; "
        f"render + write: {(render_ms + before[0]) / (render_ms + now[0]):.2f}x faster per phantom"
    )
    return {"render_ms": render_ms, "write_ms_before": before[0], "write_ms": now[0]}


def learnability(dataset: Path, image_size: int, epochs: int, seed: int) -> float:
    """Train a small CNN from scratch on the phantoms and return the macro test recall."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from helpers.data import dataset as ds

    frame = ds.scan_dataset(dataset)
    train, val, test = ds.balance_and_split(frame, seed=seed)
    x_train, x_test = (ds.load_images(part, image_size, cache_dir=False, progress=False) for part in (train, test))
    y_train, y_test = train["label_index"].to_numpy(), test["label_index"].to_numpy()

    means_train = x_train.reshape(len(x_train), -1).mean(axis=1)
    means_test = x_test.reshape(len(x_test), -1).mean(axis=1)
    centres = np.array([means_train[y_train == c].mean() for c in range(4)])
    brightness_acc = float(np.mean(np.argmin(np.abs(means_test[:, None] - centres[None]), axis=1) == y_test))
    print(f"nearest-class-mean on global brightness: test accuracy {brightness_acc:.3f} (chance 0.25)")

    keras.utils.set_random_seed(seed)
    try:
        from helpers.models.classifiers import build_classifier

        model = build_classifier("small_vgg", image_size, weights=None, freeze_backbone=False, seed=seed)
        name = "small_vgg classifier"
    except Exception as exc:  # helpers.models.classifiers missing or changed: an equivalent plain CNN
        print(f"(helpers.models.classifiers.build_classifier unavailable: {exc}; using a plain CNN)")
        layers = keras.layers
        model = keras.Sequential(
            [keras.Input((image_size, image_size, 1))]
            + [
                layer
                for f in (16, 32, 48, 64)
                for layer in (layers.Conv2D(f, 3, padding="same", activation="relu"), layers.MaxPooling2D())
            ]
            + [layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(4, activation="softmax")]
        )
        name = "plain CNN"
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train.astype("float32") / 255, y_train, epochs=epochs, batch_size=32, verbose=2)
    elapsed = time.perf_counter() - start
    predicted = model.predict(x_test.astype("float32") / 255, verbose=0).argmax(axis=1)
    recalls = [float(np.mean(predicted[y_test == c] == c)) for c in range(4)]
    macro = float(np.mean(recalls))
    print(
        f"{name}, {epochs} epochs on {len(x_train)} images at {image_size} px ({elapsed:.0f} s): "
        f"test recall per class {np.round(recalls, 3).tolist()}, macro {macro:.3f}"
    )
    return macro


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=250, help="phantoms per class (default 250: 1,000 images)")
    parser.add_argument("--size", type=int, default=128, help="phantom side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learnability", action="store_true", help="also train a small CNN on 500 phantoms per class")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--confounder", action="store_true", help="learnability run with the pediatric confounder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_data_") as workdir:
        bench_synthesis(Path(workdir) / "speed", args.per_class, args.size, args.seed)
        bench_writing(args.size, args.seed)
        if args.learnability:
            run_learnability(Path(workdir) / "learn", args)


def run_learnability(root: Path, args) -> None:
    """Generate 500 phantoms per class at 128 px and train the small CNN on them at 96 px."""
    from helpers.data import phantoms

    start = time.perf_counter()
    dataset = phantoms.synthesize_dataset(
        root, per_class=500, image_size=128, seed=args.seed, confounder=args.confounder, progress=False
    )
    print(f"500 phantoms per class at 128 px in {time.perf_counter() - start:.1f} s")
    learnability(dataset, 96, args.epochs, args.seed)


if __name__ == "__main__":
    main()
