"""The paper profile's models and sizes on phantoms, through the notebooks: notebook and stage times on one GPU.

Runs the study runner (papermill, every notebook) on the ``paper`` profile with ``source=synthetic``,
1,345 phantoms per class at 299 px (5,380 images: 4,304 / 536 / 540), VGG16 and DenseNet201 with ``weights=None``
(frozen, 20 epochs on cached features), 34 px MoRF regions, under JAX. It runs the study twice in the same work
folder: the second run shows what the persistent compilation cache saves. Every kernel logs its compilations
(``STUDY_COMPILE_LOG``); the script prints one table of notebook times, compilations and training stages, and
writes everything as JSON::

    KERAS_BACKEND=jax python benchmarks/gpu_study.py --out gpu-study.json
    python benchmarks/gpu_study.py --per-class 20 --image-size 64 --region-size 16 --runs 1   # a CPU check

``make gpu-study`` runs the first form.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

from _timing import work_folder

ROOT = Path(__file__).resolve().parents[1]


def run_once(work: Path, args, label: str) -> dict:
    """One runner call; returns notebook seconds, compilations per notebook and the training timings."""
    from helpers.runner import pipeline

    log_file = work / f"compile-log-{label}.jsonl"
    log_file.unlink(missing_ok=True)
    os.environ["STUDY_COMPILE_LOG"] = str(log_file)
    overrides = [
        "source=synthetic",
        f"synthetic_per_class={args.per_class}",
        f"synthetic_size={args.image_size}",
        f"image_size={args.image_size}",
        "weights=None",
        f"region_size={args.region_size}",
        f"epochs={args.epochs}",
    ] + list(args.param)
    t0 = time.perf_counter()
    pipeline.run_study(
        profile="paper",
        overrides=overrides,
        project_dir=ROOT,
        work_dir=work,
        progress=False,
        export_html=False,
        log=lambda *a: print(*a, flush=True),
    )
    wall = time.perf_counter() - t0
    run = json.loads((work / "reports" / "paper" / "run.json").read_text())
    compiles = defaultdict(lambda: {"count": 0, "seconds": 0.0, "over_half_second": 0, "hits": 0})
    if log_file.is_file():
        for line in log_file.read_text().splitlines():
            event = json.loads(line)
            entry = compiles[event.get("notebook", "?")]
            if event["kind"] == "compile":
                entry["count"] += 1
                entry["seconds"] += event["seconds"]
                entry["over_half_second"] += int(event["seconds"] > 0.5)
            else:
                entry["hits"] += 1
    training = {}
    for name in ("vgg16", "densenet201"):
        info = work / "data" / "models" / "paper" / f"{name}_training.json"
        if info.is_file():
            training[name] = json.loads(info.read_text()).get("timings", {})
    return {"wall_seconds": wall, "notebooks": run["seconds"], "compilations": dict(compiles), "training": training}


def table(results: list[dict]) -> str:
    """Markdown table: one row per notebook, columns per run (seconds, compilations, compile seconds)."""
    header = (
        "| notebook | "
        + " | ".join(
            f"run {i + 1} s | run {i + 1} compilations (s) | run {i + 1} cache hits" for i in range(len(results))
        )
        + " |"
    )
    lines = [header, "|---|" + "---|---|---|" * len(results)]
    for nb in results[0]["notebooks"]:
        cells = []
        for r in results:
            c = r["compilations"].get(nb, {"count": 0, "seconds": 0.0, "hits": 0})
            cells += [
                f"{r['notebooks'].get(nb, float('nan')):.1f}",
                f"{c['count']} ({c['seconds']:.1f})",
                str(c["hits"]),
            ]
        lines.append(f"| {nb} | " + " | ".join(cells) + " |")
    cells = []
    for r in results:
        count = sum(c["count"] for c in r["compilations"].values())
        seconds = sum(c["seconds"] for c in r["compilations"].values())
        hits = sum(c["hits"] for c in r["compilations"].values())
        cells += [f"{sum(r['notebooks'].values()):.1f}", f"{count} ({seconds:.1f})", str(hits)]
    lines.append("| all notebooks | " + " | ".join(cells) + " |")
    for name in results[0]["training"]:
        t = results[0]["training"][name]
        lines.append(
            f"\n{name} training (run 1): backbone features {t.get('features_s', 0):.1f} s, "
            f"head epochs {t.get('fit_s', 0):.1f} s, total {t.get('total_s', 0):.1f} s"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Run the study ``--runs`` times on phantoms at the given sizes and print the notebook table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=1345)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--region-size", type=int, default=34)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--runs", type=int, default=2, help="runs in the same work folder (the 2nd reuses compilations)"
    )
    parser.add_argument("--work-dir", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("-p", "--param", action="append", default=[], help="extra runner overrides, key=value")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT / "src"))
    results = []
    with work_folder(args.work_dir, "gpu-study-") as work:
        kept = "kept" if args.work_dir else "temporary, removed after runs that finish (--work-dir keeps one)"
        print(f"work folder {work} ({kept}); backend {os.environ['KERAS_BACKEND']}", flush=True)
        for i in range(args.runs):
            print(f"== run {i + 1} of {args.runs}", flush=True)
            results.append(run_once(work, args, f"run{i + 1}"))
            if args.out:  # keep what finished even if a later run is cut short
                Path(args.out).write_text(json.dumps({"settings": vars(args), "runs": results}, indent=2))
    print()
    print(table(results))
    if len(results) > 1:
        first = sum(c["seconds"] for c in results[0]["compilations"].values())
        second = sum(c["seconds"] for c in results[1]["compilations"].values())
        if first > 0:
            print(
                f"\nsecond run's compile time: {second:.1f} s = {100 * second / first:.0f}% of the first run's {first:.1f} s"
            )
    return {"runs": results}


if __name__ == "__main__":
    main()
