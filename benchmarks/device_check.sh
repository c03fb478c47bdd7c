#!/usr/bin/env bash
# The study's speed on one GPU under JAX, in one call of at most BUDGET seconds (default 560):
#   1. benchmarks/gpu_study.py once: the notebooks through the runner on the paper profile's models and sizes on
#      phantoms, with an empty compilation cache (notebook and stage times, compilations per notebook);
#   2. benchmarks/bench_paper_study.py at the paper's sizes, VGG16 and DenseNet201, float32 (stage times,
#      compilations per stage, AOPC stage vs bare forward);
#   3. the same in mixed_bfloat16 when enough time is left (AOPC stage vs bare forward in bfloat16);
#   4. only when PARTS names them, bench_autotune0 .. bench_autotune4: the float32 benchmark with XLA's
#      convolution autotuning at that level (XLA_FLAGS=--xla_gpu_autotune_level=N; 0 = off, 4 = XLA's default, which
#      also checks every candidate's results; levels 1-3 skip that check), always on an empty compilation cache:
#      what the backbone's first compile costs at each level, and what the forward rate loses.
# Each part runs under `timeout`, so one part cannot use the others' time. JSON files and logs go to $OUT
# (default ./device-check), with a summary in $OUT/device_check.json. Wheels in .whl/ (if any) are installed into
# /tmp/site first, without an index.
#
#   bash benchmarks/device_check.sh            # on the GPU machine
#   bash benchmarks/device_check.sh --smoke    # toy sizes on a CPU: checks the script itself in a few minutes
#
# PARTS picks the parts (default "gpu_study bench_float32 bench_bfloat16"); STUDY_CAP and BUDGET bound the notebooks
# and the whole call. STUDY_PARAMS adds -p overrides to the notebook check. BENCH_CACHE names a persistent compilation
# cache folder for the benchmarks (default: none, every benchmark compiles afresh; remove the folder first for an
# empty-cache run); a second call on the same machine with the same folder shows what the cache saves. Within ten-
# minute calls: PARTS="gpu_study bench_float32" STUDY_CAP=530 BUDGET=588 BENCH_CACHE=/tmp/benchcache, then
# PARTS=bench_float32 BENCH_CACHE=/tmp/benchcache on the warm cache (README, "Measured on one GPU").
set -u

SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/device-check}
mkdir -p "$OUT"
BUDGET=${BUDGET:-560}
PY=${PYTHON:-python}
START=$(date +%s)

if ls .whl/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl > "$OUT/pip.log" 2>&1 \
        || echo "pip install of .whl/ failed: see $OUT/pip.log"
fi
export PYTHONPATH="/tmp/site:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax
export TF_CPP_MIN_LOG_LEVEL=2

if [ "$SMOKE" = 1 ]; then
    STUDY_ARGS=(--per-class 20 --image-size 32 --region-size 16 --epochs 1
        -p segmentation_size=32 -p unet_depth=2 -p unet_epochs=1)
    BENCH_ARGS=(--per-class 20 --image-size 32 --region-size 16 --epochs 1 --aopc-batch 34
        --backbones small_vgg small_densenet)
    STUDY_CAP=400; BENCH_CAP=200; BF16_MIN=30
else
    STUDY_ARGS=()
    BENCH_ARGS=()
    STUDY_CAP=${STUDY_CAP:-390}; BENCH_CAP=${BENCH_CAP:-160}; BF16_MIN=100
fi
BENCH_ARGS+=(--compilation-cache "${BENCH_CACHE:-}")
read -r -a EXTRA <<< "${STUDY_PARAMS:-}"  # e.g. STUDY_PARAMS="-p 02.mixed_precision=mixed_bfloat16"
STUDY_ARGS+=("${EXTRA[@]}")
PARTS=${PARTS:-gpu_study bench_float32 bench_bfloat16}
wanted() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

left() { echo $((BUDGET - ($(date +%s) - START))); }
cap() { local l; l=$(($(left) - 5)); if [ "$1" -lt "$l" ]; then echo "$1"; else echo "$l"; fi; }

# part NAME CAP COMMAND...: run COMMAND under timeout, log to $OUT/NAME.log, record rc and seconds
SUMMARY="$OUT/parts.tsv"
: > "$SUMMARY"
part() {
    local name=$1 limit=$2
    shift 2
    if [ "$limit" -lt 10 ]; then
        echo "== $name: skipped (${limit} s left)"
        printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 "$limit" >> "$SUMMARY"
        return
    fi
    echo "== $name (at most ${limit} s): $*"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$limit" >> "$SUMMARY"
    echo "   rc $rc after $(($(date +%s) - t0)) s; log $OUT/$name.log"
    grep -E '^\||^compilation:|^the study|ratio' "$OUT/$name.log" | tail -40
}

"$PY" -c "from helpers.report import describe; print(describe.device_line())" > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

if wanted gpu_study; then
    part gpu_study "$(cap "$STUDY_CAP")" "$PY" benchmarks/gpu_study.py --runs 1 --work-dir "$OUT/gpu-study-work" \
        --out "$OUT/gpu_study.json" "${STUDY_ARGS[@]}"
    rm -rf "$OUT/gpu-study-work"  # phantoms and models: not needed after the run
fi

if wanted bench_float32; then
    part bench_float32 "$(cap "$BENCH_CAP")" "$PY" benchmarks/bench_paper_study.py --work-dir "$OUT/bench-work" \
        --out "$OUT/bench_float32.json" "${BENCH_ARGS[@]}"
fi

if ! wanted bench_bfloat16; then
    :
elif [ "$(left)" -ge "$BF16_MIN" ]; then  # the phantoms of the float32 run are reused
    part bench_bfloat16 "$(cap "$BENCH_CAP")" "$PY" benchmarks/bench_paper_study.py --work-dir "$OUT/bench-work" \
        --mixed-precision mixed_bfloat16 --out "$OUT/bench_bfloat16.json" "${BENCH_ARGS[@]}"
else
    printf '%s\t%s\t%s\t%s\n' bench_bfloat16 skipped 0 "$(left)" >> "$SUMMARY"
    echo "== bench_bfloat16: skipped ($(left) s left)"
fi
for level in 0 1 2 3 4; do  # bench_autotuneN: XLA's autotuning at level N, on an empty cache (no BENCH_CACHE)
    if wanted "bench_autotune$level"; then
        XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=$level" part "bench_autotune$level" "$(cap "$BENCH_CAP")" \
            "$PY" benchmarks/bench_paper_study.py --work-dir "$OUT/bench-work" --out "$OUT/bench_autotune$level.json" \
            "${BENCH_ARGS[@]}" --compilation-cache ""
    fi
done
rm -rf "$OUT/bench-work"

"$PY" - "$OUT" "$(($(date +%s) - START))" "$SMOKE" << 'EOF'
import json, pathlib, sys

out, seconds, smoke = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
parts = {}
for line in (out / "parts.tsv").read_text().splitlines():
    name, rc, took, limit = line.split("\t")
    result = out / f"{name}.json"
    parts[name] = {
        "rc": rc, "seconds": int(took), "limit_s": int(limit),
        "result": json.loads(result.read_text()) if result.is_file() else None,
    }
summary = {"smoke": smoke, "total_seconds": seconds, "device": (out / "device.txt").read_text().strip(), "parts": parts}
(out / "device_check.json").write_text(json.dumps(summary, indent=2))
for name, p in parts.items():
    print(f"{name}: rc {p['rc']}, {p['seconds']} s (limit {p['limit_s']} s), result {'yes' if p['result'] else 'no'}")
print(f"total {seconds} s; summary in {out / 'device_check.json'}")
EOF
