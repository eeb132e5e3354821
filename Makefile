# fused_attn — the two commands (README's Quick start):
#   make bench    set up (venv, torch==2.13.0, triton, build) and run the main job
#   make test     set up and run the whole test suite (+ nvcc compile check of csrc/cuda when nvcc exists,
#                 + ahead-of-time compile check of the Triton kernels for sm_80 / sm_90, no GPU needed,
#                 + the GPU machine's torch 2.11+cu130 / triton 3.6 stack: CUDA extension built, suite run again)
# VENV= (empty) uses the current python3 as it is: for machines with torch preinstalled and no network.
VENV ?= .venv
PYTHON ?= python3
ifeq ($(strip $(VENV)),)
PY := $(PYTHON)
else
PY := $(VENV)/bin/python
endif
PYTEST_ARGS ?=
TRITON_CHECK_ARGS ?=
GPU_STACK_CHECK ?= 1
GPU_STACK_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup test bench info cuda-check triton-check gpu-stack-check clean

setup:
	$(PYTHON) tools/setup_env.py --venv "$(VENV)"

cuda-check:
	bash tools/check_cuda_kernels.sh

# every Triton kernel, as the launchers specialise it, compiled for sm_80 / sm_90 (to cubin) without a GPU;
# skipped when triton is not installed. TRITON_CHECK_ARGS=--quick for a smaller matrix (docs/triton.md)
triton-check: setup
	$(PY) tools/check_triton_kernels.py $(TRITON_CHECK_ARGS)

# the GPU machine's stack minus the GPU (torch 2.11.0+cu130, triton 3.6.0: the oldest supported): a venv under
# build/gpu_stack (~5 GB from PyPI), the extension built WITH its CUDA kernels, the whole suite run on it
# (tools/check_gpu_stack.py). Skipped without nvcc, disk or network; in `make test` unless GPU_STACK_CHECK=0 or VENV=
gpu-stack-check:
	$(PYTHON) tools/check_gpu_stack.py $(GPU_STACK_ARGS)

test: setup cuda-check triton-check
	$(PY) -m pytest -q $(PYTEST_ARGS)
ifneq ($(strip $(VENV)),)
ifeq ($(GPU_STACK_CHECK),1)
	$(PYTHON) tools/check_gpu_stack.py $(GPU_STACK_ARGS)
endif
endif

bench: setup
	$(PY) -m fused_attn.info
	$(PY) -m bench $(BENCH_ARGS)

info: setup
	$(PY) -m fused_attn.info

clean:
	rm -rf build *.egg-info fused_attn/_C*.so .pytest_cache
