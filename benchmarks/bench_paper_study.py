"""The whole study at the paper's sizes on synthetic phantoms: time of each stage, AOPC images/s vs bare forwards.

Runs, without notebooks, what the ``paper`` profile runs: 5,380 phantoms at 299x299 (1,345 per class),
balance and split (4,304 / 536 / 540), VGG16 and DenseNet201 classifiers (frozen backbones; ``--weights none``
where ImageNet weights cannot be downloaded), 20 epochs on cached backbone features, test predictions,
Grad-CAM of the test set, and MoRF curves with 34 px regions (9x9, L = 81) on the correctly classified test
images (the curves of every test image are timed). For the AOPC stage it prints the rate of scored perturbed inputs next
to the rate of bare forward passes of the same number of inputs at the same batch size (device-resident input, same
compiled forward), both timed after the study's own call, one pass each, interleaved (``--aopc-repeats``: the best of
several), and where a gap would come from: the inputs built on the device alone, and the host's perturbed copies.

Meant for a GPU machine under JAX::

    KERAS_BACKEND=jax python benchmarks/bench_paper_study.py                    # paper sizes, float32
    KERAS_BACKEND=jax python benchmarks/bench_paper_study.py --mixed-precision mixed_bfloat16
    python benchmarks/bench_paper_study.py --per-class 20 --image-size 64 --epochs 2 \\
        --backbones small_vgg small_densenet --region-size 16                   # a CPU check in a minute

Writes the timings as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from _timing import work_folder  # noqa: E402

from helpers.data import layout

if __name__ != "__mp_main__":  # the phantom workers re-run this module's top level (spawn): keep their start light
    import keras
    from keras import ops

    from helpers import gradcam
    from helpers.backend import device
    from helpers.backend.transfer import to_device
    from helpers.common import config
    from helpers.data import dataset as ds
    from helpers.data import phantoms
    from helpers.metrics import aopc as scores
    from helpers.metrics import perturbation
    from helpers.models import classification as evaluation
    from helpers.models import classifiers as models
    from helpers.models import training
    from helpers.report import describe
    from helpers.study import files as study
    from helpers.study import split_files

    COMPILES = device.CompileLog()


class Stopwatch:
    """Collects named stage times and prints each as it ends."""

    def __init__(self):
        self.times = {}

    def __call__(self, name):
        watch = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()
                self.scope = COMPILES.stage(name)
                self.scope.__enter__()
                print(f"-- {name} ...", flush=True)

            def __exit__(self, *exc):
                self.scope.__exit__(*exc)
                watch.times[name] = time.perf_counter() - self.t0
                c = COMPILES.stats.get(name, {})
                print(
                    f"   {name}: {watch.times[name]:.1f} s ({c.get('count', 0)} compilations, "
                    f"{c.get('seconds', 0.0):.1f} s; {c.get('hits', 0)} from the persistent cache)",
                    flush=True,
                )

        return _Stage()


def bare_forward_pass(model, image_size: int, n_inputs: int, batch_size: int):
    """A function timing one pass of the compiled forward on a device-resident batch, for as many inputs as the AOPC stage scored (s).

    Compiled and warmed here, so that every timed pass is like the AOPC stage's second call.
    """
    forward = device.forward(model, batch_size, "float32")
    batch = ops.convert_to_tensor(
        np.random.default_rng(0).random((batch_size, image_size, image_size, 1), dtype=np.float32)
    )
    ops.convert_to_numpy(forward(batch))  # compile
    calls = max(1, -(-n_inputs // batch_size))  # the same useful inputs as the AOPC stage, in as many padded batches

    def one_pass() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            out = forward(batch)
        ops.convert_to_numpy(out)
        return time.perf_counter() - t0

    return one_pass


def _wait(value) -> None:
    """Block until a device value is computed (without reading it back where the backend allows)."""
    if hasattr(value, "block_until_ready"):
        value.block_until_ready()
    else:
        ops.convert_to_numpy(value)


def curve_inputs_seconds(images, image_size: int, region_size: int, n_inputs: int, batch_size: int):
    """Seconds to build the AOPC stage's perturbed inputs on the device alone, no forward (its device-side extra over bare).

    One group of images is made resident as :func:`helpers.metrics.perturbation.perturbation_curves` does (the clean copy, a
    float copy, a step per region), and as many batches of (image, step) pairs as the stage scores are built from it;
    the work does not depend on the values, so no noise or heatmap order is drawn for it.
    """
    grid = perturbation.region_grid(image_size, region_size)
    n_steps = grid.n_regions + 1
    group = min(len(images), perturbation.GROUP_IMAGES)
    x = images[:group] if images.ndim == 4 else images[:group, ..., None]
    steps = np.tile(np.arange(1, n_steps, dtype=np.int32), (group, 1))
    resident = [to_device(a) for a in (x, x.astype(np.float32) / 255, steps, grid.region_map.astype(np.int32))]
    build = perturbation._curve_inputs(batch_size)
    pairs, calls = group * n_steps, max(1, -(-n_inputs // batch_size))
    starts = [to_device(np.int32((c * batch_size) % pairs)) for c in range(calls)]
    n_steps_t = to_device(np.int32(n_steps))
    _wait(build(*resident, starts[0], n_steps_t))  # warm (compiles only where the stage's group shape differs)
    t0 = time.perf_counter()
    for start in starts:
        out = build(*resident, start, n_steps_t)
    _wait(out)
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    """Run the study's stages at the given sizes and print a timing table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=1345)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--backbones", nargs="+", default=["vgg16", "densenet201"])
    parser.add_argument("--weights", default="none", help="'none', 'imagenet' or a local backbone weights file")
    parser.add_argument("--mixed-precision", default="float32", help="float32, mixed_float16 or mixed_bfloat16")
    parser.add_argument("--region-size", type=int, default=34)
    parser.add_argument(
        "--aopc-batch",
        type=int,
        default=246,
        help="inputs per forward of backbone features, test predictions and the AOPC stage (3 images x 82 steps)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of training and Grad-CAM")
    parser.add_argument(
        "--aopc-repeats",
        type=int,
        default=1,
        help="timed passes of the AOPC stage and of the bare forward, interleaved (the best of each is compared)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=None, help="where phantoms and caches go (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the timings as JSON here")
    parser.add_argument("--compilation-cache", default="", help="persistent compilation cache folder (JAX); '' = off")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes for phantom synthesis (default: all cores)"
    )
    args = parser.parse_args(argv)
    device.configure_compilation_cache(args.compilation_cache or None)
    COMPILES.install()
    if args.aopc_repeats < 1:
        parser.error(f"--aopc-repeats must be at least 1, got {args.aopc_repeats}")
    with work_folder(args.work_dir, "paper-bench-") as work:
        return run(args, work)


def run(args, work: Path) -> dict:
    """The study's stages in ``work``, timed (``args``: :func:`main`'s options)."""
    weights = None if args.weights.lower() == "none" else args.weights
    paths = study.study_paths("paper-bench", work)
    watch = Stopwatch()
    print(describe.device_line())
    print(
        f"{4 * args.per_class} phantoms at {args.image_size} px, backbones {args.backbones}, weights {weights}, "
        f"precision {args.mixed_precision}, work folder {work}"
        + ("" if args.work_dir else " (temporary, removed after a run that finishes; --work-dir keeps one)")
    )

    with watch("synthesize phantoms"):
        root = paths.raw / phantoms.synthetic_dir_name(args.image_size, args.per_class, args.seed)
        dataset = phantoms.synthesize_dataset(
            root, args.per_class, image_size=args.image_size, seed=args.seed, progress=False, workers=args.workers
        )
    with watch("scan, balance, split"):
        frame = ds.scan_dataset(dataset)
        train, val, test = ds.balance_and_split(frame, seed=args.seed)
        split_files.write_manifest([train, val, test], paths.split_manifest, paths=paths)
    with watch("decode and cache images"):
        arrays = {s: study.load_split(paths, s, args.image_size, progress=False) for s in layout.SPLITS}
    print(f"   split sizes: {', '.join(f'{s} {len(arrays[s][1])}' for s in layout.SPLITS)}")
    x_test, y_test = arrays["test"]

    # the stage times and compilations as they accrue: a JSON saved after a model holds what finished
    results = {"settings": vars(args), "stages": watch.times, "compilations": COMPILES.stats, "models": {}}
    references = []  # stages timed for comparison only: the AOPC stage's repeat against bare forwards
    for backbone in args.backbones:
        keras.utils.set_random_seed(args.seed)
        training.configure_precision(args.mixed_precision)
        with watch(f"{backbone}: build"):
            model = models.build_classifier(
                backbone, image_size=args.image_size, weights=weights, freeze_backbone=True, seed=args.seed
            )
        with watch(f"{backbone}: train {args.epochs} epochs (cached features)"):
            result = training.train_classifier(
                model,
                *arrays["train"],
                *arrays["val"],
                epochs=args.epochs,
                batch_size=args.batch_size,
                feature_batch_size=args.aopc_batch,  # backbone features, predictions and curves: one compilation
                seed=args.seed,
                progress=False,
            )
        model = result.model
        with watch(f"{backbone}: predict test"):  # at the AOPC batch: the curves reuse this compiled forward
            probabilities = evaluation.predict_probabilities(model, x_test, batch_size=args.aopc_batch)
        predicted = probabilities.argmax(axis=1)
        metrics = evaluation.classification_metrics(y_test, probabilities, config.CLASS_NAMES)
        with watch(f"{backbone}: Grad-CAM of the test set"):
            # at the AOPC batch: Grad-CAM differentiates the head on the same compiled backbone
            heatmaps = gradcam(model, x_test, classes=predicted, batch_size=args.aopc_batch)
        correct = scores.correct_mask(predicted, y_test)
        grid = perturbation.region_grid(args.image_size, args.region_size)
        n_inputs = len(y_test) * (grid.n_regions + 1)  # curves of every test image; AOPC over the correct ones
        stage = f"{backbone}: MoRF curves ({len(y_test)} images x {grid.n_regions + 1} steps)"
        score_curves = functools.partial(
            perturbation.perturbation_curves, model, x_test, heatmaps, predicted, args.region_size,
            batch_size=args.aopc_batch, seed=args.seed, progress=False,
        )  # fmt: skip

        with watch(stage):  # the study's one call (it compiles what the earlier stages did not)
            curves = score_curves()
        # the AOPC stage's rate against bare forwards of as many inputs: timed alike (one pass each, interleaved)
        compare = f"{backbone}: AOPC stage vs bare forward, {args.aopc_repeats} interleaved pass(es) each (reference)"
        with watch(compare):
            bare_pass = bare_forward_pass(model, args.image_size, n_inputs, args.aopc_batch)
            stage_times, bare_times = [], []
            for _ in range(args.aopc_repeats):
                t0 = time.perf_counter()
                score_curves()  # the same curves as the study's call: only its time is new
                stage_times.append(time.perf_counter() - t0)
                bare_times.append(bare_pass())
            # where a gap would come from: the inputs built on the device alone, and the host's perturbed copies
            # (which overlap the device's work except for the first group's)
            inputs_s = curve_inputs_seconds(x_test, args.image_size, args.region_size, n_inputs, args.aopc_batch)
            t0 = time.perf_counter()
            perturbation.perturbed_images(x_test, seed=args.seed)
            host_s = time.perf_counter() - t0
        references.append(compare)
        aopc_rate, bare_rate = n_inputs / min(stage_times), n_inputs / min(bare_times)
        final_aopc = scores.aopc(curves, mask=correct if correct.any() else None)["final"]
        results["models"][backbone] = {
            "test_macro_recall": float(metrics["macro_avg"]["recall"]),
            "aopc": final_aopc,
            "aopc_inputs": int(n_inputs),
            "aopc_images_per_s": aopc_rate,
            "bare_forward_images_per_s": bare_rate,
            "aopc_over_bare": aopc_rate / bare_rate,
            "aopc_stage_seconds": stage_times,
            "bare_forward_seconds": bare_times,
            "curve_inputs_alone_seconds": inputs_s,
            "host_perturbed_copies_seconds": host_s,
            "chosen_epoch": int(result.chosen_epoch),
            "train_timings": result.timings,
        }
        print(
            f"   {backbone}: macro test recall {results['models'][backbone]['test_macro_recall']:.3f}, AOPC {final_aopc:.3f}; "
            f"AOPC stage {aopc_rate:,.0f} img/s vs bare forward {bare_rate:,.0f} img/s "
            f"(ratio {aopc_rate / bare_rate:.2f}); of the stage's {min(stage_times):.2f} s, building its inputs on the "
            f"device alone takes {inputs_s:.2f} s, the host's perturbed copies {host_s:.2f} s",
            flush=True,
        )
        if args.out:  # what finished so far, in case a time cap stops the next model
            study.save_json(results, args.out)
        training.configure_precision("float32")
        keras.backend.clear_session()

    results["total_seconds"] = sum(watch.times.values())
    total = COMPILES.total()
    results["compilation_seconds"] = total["seconds"]
    print("\n| stage | seconds | compilations | compile s | over 0.5 s | cache hits |\n|---|---|---|---|---|---|")
    for name, seconds in watch.times.items():
        c = COMPILES.stats.get(name, {"count": 0, "seconds": 0.0, "over_half_second": 0, "hits": 0})
        print(f"| {name} | {seconds:.1f} | {c['count']} | {c['seconds']:.1f} | {c['over_half_second']} | {c['hits']} |")
    print(
        f"| total | {results['total_seconds']:.1f} | {total['count']} | {total['seconds']:.1f} | "
        f"{total['over_half_second']} | {total['hits']} |"
    )
    if results["total_seconds"] > 0:
        print(f"compilation: {100 * total['seconds'] / results['total_seconds']:.0f}% of the run")
    study_stages = [name for name in watch.times if name not in references]
    study_seconds = sum(watch.times[name] for name in study_stages)
    study_compile = sum(COMPILES.stats.get(name, {}).get("seconds", 0.0) for name in study_stages)
    results["study_seconds"], results["study_compilation_seconds"] = study_seconds, study_compile
    if study_seconds > 0:
        print(
            f"the study (every stage once, without the comparison with bare forwards): {study_seconds:.1f} s, "
            f"of which compilation {study_compile:.1f} s ({100 * study_compile / study_seconds:.0f}%)"
        )
    print("\n| model | AOPC stage img/s | bare forward img/s | ratio |\n|---|---|---|---|")
    for name, row in results["models"].items():
        print(
            f"| {name} | {row['aopc_images_per_s']:,.0f} | {row['bare_forward_images_per_s']:,.0f} | "
            f"{row['aopc_over_bare']:.2f} |"
        )
    if args.out:
        study.save_json(results, args.out)
        print(f"timings written to {args.out}")
    return results


if __name__ == "__main__":
    main()
