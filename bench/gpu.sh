#!/usr/bin/env bash
# The GPU procedure (docs/bench.md), for a CUDA machine with torch preinstalled and no network, in about
# 9 minutes: build the extension in place, print the environment, run the GPU tests and compute-sanitizer's
# memcheck over every CUDA kernel (tools/sanitize_cuda.py), then benchmark float32
# and bfloat16. Writes gpu.log and each benchmark's JSON, Markdown and PNG to $OUT (else bench/out).
#
#   bash bench/gpu.sh
#   BUDGET_S=540       seconds for the whole procedure (the benchmarks share what build and tests leave)
#   BENCH_ARGS=...     extra options for both benchmark runs (e.g. "--full", "--module SEBlock")
#   SKIP_TESTS=1       no tests: all the time left after the build goes to the benchmarks
#   MODELS=a,b         real-model rows (python -m bench --model; default tv:efficientnet_b0, at most 150 s;
#                      MODELS= for none)
#   PYTHON=python3     the interpreter that has torch
#   BENCH_GIT_SHA=...  the revision, recorded in the results where the tree has no .git
# Exit status: 0 when every step passed (benchmark rows skipped for time do not count as failures).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
OUT=${OUT:-bench/out}
BUDGET_S=${BUDGET_S:-540}
BENCH_ARGS=${BENCH_ARGS:-}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: >"$LOG"
export PYTHONUNBUFFERED=1
START=$SECONDS
FAILED=()

left() { echo $((BUDGET_S - (SECONDS - START))); }
step() { echo "=== $1 [$((SECONDS - START)) s elapsed, $(left) s left]" | tee -a "$LOG"; }
# run NAME TIMEOUT CMD...: run CMD under a timeout, output to the terminal and the log; remember failures
run() {
    local name=$1 limit=$2
    shift 2
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 5 ] && [[ $name == pytest* ]]; then
        echo "($name: no tests selected)" | tee -a "$LOG"
    elif [ "$rc" -ne 0 ]; then
        echo "!!! $name failed (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after $limit s"))" | tee -a "$LOG"
        FAILED+=("$name")
    fi
}

step "build: pip install -e . --no-build-isolation --no-deps, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
run build 240 "$PY" -m pip install -e . --no-build-isolation --no-deps -q

step "environment"
run info 60 "$PY" -m fused_attn.info
# the module rows' eager baselines (bench/baselines): CBAM's is timm's where timm is installed, else the official code
"$PY" -c "from bench import baselines; print('eager baselines (module rows):', baselines.describe())" 2>&1 |
    tee -a "$LOG"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 |
    tee -a "$LOG"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
    step "GPU tests: pytest -m cuda, then the Triton / CUDA backend test files"
    run "pytest -m cuda" 120 "$PY" -m pytest -q -m cuda -p no:cacheprovider
    # not the CPU emulator's file (tests/test_cuda_emulated.py): CI runs it, and here the real kernels run
    backend_tests=$(ls tests/test_*triton*.py tests/test_*cuda*.py 2>/dev/null | grep -v emulated | tr '\n' ' ')
    if [ -n "$backend_tests" ]; then
        # shellcheck disable=SC2086  # a list of files
        run "pytest backend files" "$(($(left) > 300 ? 120 : 60))" "$PY" -m pytest -q -p no:cacheprovider $backend_tests
    else
        echo "(no tests/test_*triton*.py or tests/test_*cuda*.py yet)" | tee -a "$LOG"
    fi

    # every CUDA kernel op once, fwd + bwd, NCHW and channels_last (tools/sanitize_cuda.py); errors fail the step
    SANITIZER=${SANITIZER:-$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)}
    if [ -n "$SANITIZER" ]; then
        step "compute-sanitizer --tool memcheck: tools/sanitize_cuda.py"
        run "compute-sanitizer memcheck" 90 "$SANITIZER" --tool memcheck --error-exitcode 1 "$PY" tools/sanitize_cuda.py
    else
        echo "(compute-sanitizer not found: memcheck skipped)" | tee -a "$LOG"
    fi
fi

# real models (bench/models.py): eager, torch.compile, convert, compile(convert); inference, a training step, the
# attention blocks alone, peak memory
MODELS=${MODELS-tv:efficientnet_b0}
if [ -n "$MODELS" ] && [ "$(left)" -gt 300 ]; then
    step "real models: python -m bench --model $MODELS"
    run "bench models" 150 "$PY" -m bench --model "$MODELS" --device cuda --out "$OUT"
fi

# The benchmarks share what is left; each stops starting rows at its --time-limit (those rows are reported
# as skipped) and is killed 60 s after it, so the files of both always get written.
for dtype in float32 bfloat16; do
    remaining=$(left)
    share=$([ "$dtype" = float32 ] && echo $(((remaining - 20) / 2)) || echo $((remaining - 20)))
    if [ "$share" -lt 30 ]; then
        echo "!!! no time left for the $dtype benchmark" | tee -a "$LOG"
        FAILED+=("bench $dtype (no time)")
        continue
    fi
    step "benchmark $dtype (time limit $share s)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
    run "bench $dtype" $((share + 60)) "$PY" -m bench --dtype "$dtype" --out "$OUT" --time-limit "$share" $BENCH_ARGS
done

step "done"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed steps: ${FAILED[*]}" | tee -a "$LOG"
    exit 1
fi
echo "all steps passed; files in $OUT:" | tee -a "$LOG"
ls -l "$OUT" | tee -a "$LOG"
