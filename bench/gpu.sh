#!/usr/bin/env bash
# The GPU procedure (docs/bench.md), for a CUDA machine with torch preinstalled and no network, in about
# 9 minutes: build the extension in place, print the environment, run the GPU tests (pytest -m cuda, in
# parallel) and compute-sanitizer's memcheck over every CUDA kernel (tools/sanitize_cuda.py), then benchmark
# float32 op and module rows, the real models, and bfloat16. Writes gpu.log and each benchmark's JSON,
# Markdown and PNG to $OUT (else bench/out).
#
#   bash bench/gpu.sh
#   BUDGET_S=540       seconds for the whole procedure (the benchmarks share what build and tests leave)
#   BENCH_ARGS=...     extra options for both benchmark runs (e.g. "--full", "--module SEBlock")
#   DTYPES="float32 bfloat16"   the op and module benchmark runs (float32 before the models, the rest after)
#   SKIP_BUILD=1       no build: fused_attn/_C*.so is already in the tree (built there before; PYTHONPATH=.)
#   SKIP_TESTS=1       no tests: all the time left after the build goes to the benchmarks
#   TEST_ARGS=...      the GPU tests' selection (default: -m cuda, every test that needs a GPU)
#   TESTS_S=...        the GPU tests' cap (default 240 s, 150 s when under 400 s are left; 14 workers on an H200
#                      took over 190 s for the 4851 tests)
#   FUSED_ATTN_TEST_LOG  where the GPU tests write each failure and each test over 1 s as it happens (default
#                      $OUT/tests.log: kept when the step is cut off by its cap)
#   PYTEST_JOBS=12     pytest-xdist workers for the GPU tests (each its own CUDA context; Triton compiles on the CPUs)
#   MODELS=a,b         real-model rows (python -m bench --model; default tv:efficientnet_b0; MODELS= for none)
#   MODEL_ARGS=...     their options (default "--batch 16 --train-batch 16"), MODELS_S their cap (default 150 s)
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

if [ "${SKIP_BUILD:-0}" = 1 ]; then
    step "build skipped (SKIP_BUILD=1): $(ls fused_attn/_C*.so 2>/dev/null || echo 'no fused_attn/_C*.so!')"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    step "build: pip install -e . --no-build-isolation --no-deps, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}"
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
    run build 240 "$PY" -m pip install -e . --no-build-isolation --no-deps -q
fi

step "environment"
run info 60 "$PY" -m fused_attn.info
# the module rows' eager baselines (bench/baselines): CBAM's is timm's where timm is installed, else the official code
"$PY" -c "from bench import baselines; print('eager baselines (module rows):', baselines.describe())" 2>&1 |
    tee -a "$LOG"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>&1 |
    tee -a "$LOG"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
    # the C++ error paths alone first: on the first H200 run one of them segfaulted; if one crashes again, run it
    # under cuda-gdb (it debugs host code there) for the C++ backtrace
    step "C++ error paths: pytest tests/test_cuda_backend.py -k test_errors_name_the_problem"
    run "pytest error paths" 60 "$PY" -X faulthandler -m pytest -q -p no:cacheprovider tests/test_cuda_backend.py \
        -k test_errors_name_the_problem
    GDB=${GDB:-$(command -v cuda-gdb || ls /usr/local/cuda*/bin/cuda-gdb 2>/dev/null | head -1)}
    if [[ " ${FAILED[*]} " == *" pytest error paths "* ]] && [ -n "$GDB" ]; then
        for case in ema_core_groups gate_on_cpu unknown_stat int_dtype; do
            echo "--- cuda-gdb backtrace: $case" | tee -a "$LOG"
            timeout 60 "$GDB" -batch -ex run -ex bt --args "$PY" -m pytest -q -p no:cacheprovider \
                "tests/test_cuda_backend.py::test_errors_name_the_problem[$case]" 2>&1 | tail -40 | tee -a "$LOG"
        done
    fi

    step "GPU tests: pytest ${TEST_ARGS:--m cuda} -n ${PYTEST_JOBS:-12}"
    export FUSED_ATTN_TEST_LOG=${FUSED_ATTN_TEST_LOG:-$OUT/tests.log}
    # shellcheck disable=SC2086  # TEST_ARGS is a list of options
    run "pytest GPU tests" "${TESTS_S:-$(($(left) > 400 ? 240 : 150))}" "$PY" -m pytest -q -p no:cacheprovider -n "${PYTEST_JOBS:-12}" \
        -rfE ${TEST_ARGS:--m cuda}

    # every CUDA kernel op once, fwd + bwd, NCHW and channels_last (tools/sanitize_cuda.py); errors fail the step
    SANITIZER=${SANITIZER:-$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)}
    if [ -n "$SANITIZER" ]; then
        step "compute-sanitizer --tool memcheck: tools/sanitize_cuda.py"
        run "compute-sanitizer memcheck" 90 "$SANITIZER" --tool memcheck --error-exitcode 1 "$PY" tools/sanitize_cuda.py
    else
        echo "(compute-sanitizer not found: memcheck skipped)" | tee -a "$LOG"
    fi
fi

# bench NAME SHARE ARGS...: one op/module benchmark run that stops starting rows at SHARE seconds (those rows are
# reported as skipped) and is killed 60 s after it, so its files always get written
bench() {
    local dtype=$1 share=$2
    shift 2
    if [ "$share" -lt 30 ]; then
        echo "!!! no time left for the $dtype benchmark" | tee -a "$LOG"
        FAILED+=("bench $dtype (no time)")
        return
    fi
    step "benchmark $dtype (time limit $share s)"
    run "bench $dtype" $((share + 60)) "$PY" -m bench --dtype "$dtype" --out "$OUT" --time-limit "$share" "$@"
}

read -r -a dtypes <<<"${DTYPES:-float32 bfloat16}"
MODELS=${MODELS-tv:efficientnet_b0}
MODELS_S=${MODELS_S:-150}
# the first dtype gets half of what the models leave, the others share the rest after the models
models_s=$([ -n "$MODELS" ] && echo "$MODELS_S" || echo 0)
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
[ ${#dtypes[@]} -gt 0 ] && bench "${dtypes[0]}" $((($(left) - models_s - 20) / (${#dtypes[@]} > 1 ? 2 : 1))) $BENCH_ARGS

# real models (bench/models.py): eager, torch.compile, convert, compile(convert); inference, a training step, the
# attention blocks alone, peak memory
if [ -n "$MODELS" ] && [ "$(left)" -gt $((models_s / 2)) ]; then
    step "real models: python -m bench --model $MODELS ${MODEL_ARGS:---batch 16 --train-batch 16}"
    # shellcheck disable=SC2086  # MODEL_ARGS is a list of options
    run "bench models" "$MODELS_S" "$PY" -m bench --model "$MODELS" --device cuda --out "$OUT" \
        ${MODEL_ARGS:---batch 16 --train-batch 16}
fi

for ((i = 1; i < ${#dtypes[@]}; i++)); do
    # shellcheck disable=SC2086
    bench "${dtypes[i]}" $((($(left) - 20) / (${#dtypes[@]} - i))) $BENCH_ARGS
done

step "done"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed steps: ${FAILED[*]}" | tee -a "$LOG"
    exit 1
fi
echo "all steps passed; files in $OUT:" | tee -a "$LOG"
ls -l "$OUT" | tee -a "$LOG"
