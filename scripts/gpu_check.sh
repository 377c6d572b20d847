#!/usr/bin/env bash
# Every GPU check of the HyperLinear kernel (plugins/hyperlinear), in one go, on one GPU.
#
#   bash scripts/gpu_check.sh
#
# Needs one CUDA GPU, PyTorch with CUDA and nvcc; not TensorRT. Steps (each timed, each
# reported, a failing one does not stop the next):
#   1 info       the GPU, its compute capability, torch, driver, nvcc
#   2 build      the kernel for that capability (SASS + PTX), ptxas -v per kernel
#   3 tests      tests/test_hyperlinear_kernel.py (encoded layers cached across cases/steps)
#   4 memcheck   compute-sanitizer --tool memcheck on odd shapes, every kernel path
#   5 racecheck  compute-sanitizer --tool racecheck, the same program
#   6 bitexact   X = identity, no bias: Y equals the CPU-decoded weight (fp32), its half rounding (fp16)
#   7 bench      fused, decode + cuBLASLt and dense fp16 (fp32 at small M), vit_b shapes, M in {1, 64, 4096, 16384}
#   8 demo       the demo model with the fused kernel vs the HyperLinear CUDA forward
#   9 page       docs/benchmarks/hyperlinear-kernel.md from all of the above
# About 4-7 minutes on an H100; the whole run keeps within GPU_CHECK_BUDGET_S (default 540 s):
# a step that would not fit is cut short (reported failed: timed out) or skipped (not run).
#
# Exit status: 0 every step passed; 1 a step failed; 2 no CUDA GPU is visible (nothing run,
# the page left as it is); 3 nothing failed but a step could not run (no compute-sanitizer,
# a missing package, out of time).
#
# Environment: PYTHON (default: the first of .venv/bin/python, python3, python whose torch
# sees a GPU), GPU_CHECK_WORK (work folder, default a new temporary one), GPU_CHECK_BUDGET_S,
# GPU_CHECK_OUT (default $OUT when set: the page, the JSON results and the logs are copied
# there). Packages the chosen Python lacks (segment_anything, onnxruntime, tqdm, safetensors,
# Pillow, pytest) are linked in from .venv/lib/python3.*/site-packages when that folder is there,
# e.g. carried alone to a machine whose Python has torch but not segment_anything.
set -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
BUDGET=${GPU_CHECK_BUDGET_S:-540}
START=$SECONDS
export PATH="$PATH:/usr/local/cuda/bin"  # nvcc and compute-sanitizer where the toolkit is not on PATH
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# ---- a Python whose torch sees the GPU -------------------------------------------------------
PY=""
FIRST_TORCH=""
for candidate in "${PYTHON:-}" "$REPO/.venv/bin/python" python3 python; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c "import torch" >/dev/null 2>&1; then
        [ -n "$FIRST_TORCH" ] || FIRST_TORCH=$candidate
        if "$candidate" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
            PY=$candidate
            break
        fi
    fi
done
if [ -z "$PY" ]; then
    {
        echo "gpu_check: no CUDA GPU is visible, so nothing was checked and docs/benchmarks/hyperlinear-kernel.md"
        echo "           is left as it is (its figures need a GPU)."
        if [ -n "$FIRST_TORCH" ]; then
            echo "           $FIRST_TORCH: torch $("$FIRST_TORCH" -c 'import torch; print(torch.__version__)' 2>/dev/null)," \
                 "torch.cuda.is_available() is False"
        else
            echo "           no Python here imports torch (set PYTHON=... to one that does)"
        fi
        if command -v nvidia-smi >/dev/null 2>&1; then
            echo "           nvidia-smi -L: $(nvidia-smi -L 2>&1 | head -3 | tr '\n' ' ')"
        else
            echo "           nvidia-smi: not found"
        fi
    } >&2
    exit 2
fi

WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
RESULTS=$WORK/results
LOGS=$WORK/logs
mkdir -p "$RESULTS" "$LOGS" "$WORK/site"
: >"$RESULTS/steps.tsv"
export SAMEDGE_KERNEL_CACHE=$WORK/kernel  # step 2 builds, later steps load the same library
export SAMEDGE_LAYER_CACHE=$WORK/layers   # each encoded layer is encoded once for all steps
echo "gpu_check: python $PY, work folder $WORK, budget ${BUDGET} s"

# ---- packages the chosen Python lacks, from a (carried) .venv site-packages ---------------------
VENV_SITE=$(ls -d "$REPO"/.venv/lib/python3*/site-packages 2>/dev/null | head -1)
link_missing() {  # module, then the folders/files that make it up
    local module=$1
    shift
    "$PY" -c "import $module" >/dev/null 2>&1 && return 0
    if [ -n "$VENV_SITE" ] && [ -e "$VENV_SITE/$1" ]; then
        for part in "$@"; do
            [ -e "$VENV_SITE/$part" ] && ln -sfn "$VENV_SITE/$part" "$WORK/site/$part"
        done
        echo "gpu_check: $module is not installed for $PY; linked from $VENV_SITE"
    else
        echo "gpu_check: $module is not importable with $PY (the steps that need it will say so)"
    fi
}
link_missing tqdm tqdm
link_missing safetensors safetensors
link_missing PIL PIL pillow.libs
link_missing segment_anything segment_anything
link_missing onnxruntime onnxruntime  # runtime (which compress imports) opens ONNX Runtime
link_missing pytest pytest _pytest pluggy iniconfig py.py packaging
export PYTHONPATH="$PYTHONPATH:$WORK/site"

# ---- steps -------------------------------------------------------------------------------------
STEPS=(info build tests memcheck racecheck bitexact bench demo page)
FLOOR=20  # seconds kept back for each later step
FAILED=()
NOT_RUN=()

step_command() {  # the command of step $1 given its time limit $2
    local limit=$2
    case $1 in
    info) echo "$PY -m plugins.hyperlinear.kernel_checks info --json $RESULTS/info.json" ;;
    build) echo "$PY -m plugins.hyperlinear.harness --ptxas --json $RESULTS/build.json" ;;
    tests) echo "$PY -m pytest -q -p no:cacheprovider tests/test_hyperlinear_kernel.py --junitxml=$RESULTS/tests.xml" ;;
    memcheck | racecheck)
        echo "$PY -m plugins.hyperlinear.kernel_checks sanitize --tool $1 --timeout $((limit - 15))" \
             "--json $RESULTS/$1.json --log $LOGS/$1-sanitizer.log" ;;
    bitexact) echo "$PY -m plugins.hyperlinear.kernel_checks bitexact --json $RESULTS/bitexact.json" ;;
    bench) echo "$PY -m benchmarks.run hyperlinear-kernel --repeats 30 --inner 10 --no-page --json $RESULTS/bench.json" ;;
    demo) echo "$PY -m plugins.hyperlinear.kernel_checks demo --count 16 --json $RESULTS/demo.json" ;;
    page) echo "$PY -m benchmarks.run hyperlinear-kernel --page-from $RESULTS" ;;
    esac
}

step_cap() {  # the most seconds step $1 may take
    case $1 in
    info | page) echo 60 ;;
    build) echo 120 ;;
    tests) echo 200 ;;
    memcheck) echo 150 ;;
    racecheck) echo 200 ;;
    bitexact | bench | demo) echo 120 ;;
    esac
}

for index in "${!STEPS[@]}"; do
    name=${STEPS[$index]}
    later=$((${#STEPS[@]} - index - 1))
    remaining=$((BUDGET - (SECONDS - START) - later * FLOOR))
    limit=$(step_cap "$name")
    [ "$remaining" -lt "$limit" ] && limit=$remaining
    label="[$((index + 1))/${#STEPS[@]}] $name"
    if [ "$name" = "page" ]; then
        [ "$limit" -lt 30 ] && limit=30  # always written (timeout 0 would mean no limit)
    elif [ "$limit" -lt 25 ]; then
        echo "== $label: not run (out of time: ${limit} s left of the ${BUDGET} s budget)"
        printf '%s\tnot run (out of time)\t0\n' "$name" >>"$RESULTS/steps.tsv"
        NOT_RUN+=("$name")
        continue
    fi
    if [ "$name" = "tests" ] && ! "$PY" -c "import pytest" >/dev/null 2>&1; then
        echo "== $label: not run (pytest is not importable with $PY)"
        printf '%s\tnot run (no pytest)\t0\n' "$name" >>"$RESULTS/steps.tsv"
        NOT_RUN+=("$name")
        continue
    fi
    command=$(step_command "$name" "$limit")
    echo "== $label (at most ${limit} s): $command"
    began=$SECONDS
    # shellcheck disable=SC2086  # the command is words, none with spaces
    timeout --kill-after=10 "$limit" $command 2>&1 | tee "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    seconds=$((SECONDS - began))
    case $rc in
    0) status=passed ;;
    3) status="not run"; NOT_RUN+=("$name") ;;
    124 | 137) status="failed (timed out after ${limit} s)"; FAILED+=("$name") ;;
    *) status="failed (exit $rc)"; FAILED+=("$name") ;;
    esac
    echo "== $label: $status in ${seconds} s"
    # The step table is on the page, so the page step itself is not in it.
    [ "$name" != "page" ] && printf '%s\t%s\t%s\n' "$name" "$status" "$seconds" >>"$RESULTS/steps.tsv"
done

OUT_DIR=${GPU_CHECK_OUT:-${OUT:-}}
if [ -n "$OUT_DIR" ]; then
    mkdir -p "$OUT_DIR/gpu_check"
    cp -r "$RESULTS" "$LOGS" "$OUT_DIR/gpu_check/" 2>/dev/null
    cp docs/benchmarks/hyperlinear-kernel.md "$OUT_DIR/gpu_check/" 2>/dev/null
    echo "gpu_check: results, logs and the page copied to $OUT_DIR/gpu_check"
fi

echo
echo "gpu_check: $((SECONDS - START)) s in all; results in $RESULTS, logs in $LOGS"
column -t -s $'\t' "$RESULTS/steps.tsv" 2>/dev/null || cat "$RESULTS/steps.tsv"
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "gpu_check: FAILED: ${FAILED[*]}${NOT_RUN:+; not run: ${NOT_RUN[*]}}"
    exit 1
fi
if [ "${#NOT_RUN[@]}" -gt 0 ]; then
    echo "gpu_check: nothing failed, but not run: ${NOT_RUN[*]}"
    exit 3
fi
echo "gpu_check: every step passed"
exit 0
