# fused_attn — the commands (README's Quick start):
#   make test     the fast loop: set up (venv, torch 2.14.1 + torchvision, timm, ultralytics, build) and run the
#                 test suite in parallel, without the heavy checks
#   make ci       everything CI runs (.ci/run): the CUDA build of the extension, lint, the suite with the CUDA
#                 emulator, the nvcc and Triton ahead-of-time compile checks, the oldest-version stack
#   make bench    set up and run the benchmarks
# VENV= (empty) uses the current python3 as it is: for machines with torch preinstalled and no network.
VENV ?= .venv
PYTHON ?= python3
ifeq ($(strip $(VENV)),)
PY := $(PYTHON)
BIN :=
else
PY := $(VENV)/bin/python
BIN := $(VENV)/bin/
endif
PYTEST_ARGS ?=
PYTEST_JOBS ?= auto
TRITON_CHECK_ARGS ?=
GPU_STACK_ARGS ?=
BENCH_ARGS ?=
# ultralytics must never reach the network (its settings file, asset downloads)
export YOLO_OFFLINE := 1

.PHONY: setup test ci lint format bench info cuda-check triton-check gpu-stack-check clean

setup:
	$(PYTHON) tools/setup_env.py --venv "$(VENV)"

test: setup
	$(PY) -m pytest -q -n $(PYTEST_JOBS) -m "not ci and not models" $(PYTEST_ARGS)

# CI builds the extension WITH its CUDA kernels and bindings (sm_80, sm_90, linked to cudart), as the GPU machine
# does, and runs the suite on that build; the developer loop (`make test`) builds CPU-only on machines without a GPU.
ci: export FORCE_CUDA := 1
ci: setup lint cuda-check triton-check
	$(PY) -c "import fused_attn._ext as e; assert e.built_with_cuda(), e.load_error() or e.build_info()"
	$(PY) -m pytest -q -n $(PYTEST_JOBS) -m "not models" $(PYTEST_ARGS)
	$(PYTHON) tools/check_gpu_stack.py $(GPU_STACK_ARGS)

# ruff (pyproject.toml) over the Python tree, clang-format (.clang-format) over csrc/ and tools/cuda_emu
CXX_SOURCES = $(shell git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh' 'tools/cuda_emu/*.h' \
                'tools/cuda_emu/*.cpp' 'tools/cuda_emu/*.cu')
lint: setup
	$(BIN)ruff check .
	$(BIN)clang-format --dry-run --Werror $(CXX_SOURCES)

format: setup
	$(BIN)ruff check --fix .
	$(BIN)clang-format -i $(CXX_SOURCES)

# every torch-free kernel file with nvcc for sm_80 / sm_90, warnings as errors (skipped without nvcc)
cuda-check:
	PYTHON=$(PY) bash tools/check_cuda_kernels.sh

# every Triton kernel, as the launchers specialise it, compiled for sm_80 / sm_90 (to cubin) without a GPU;
# skipped when triton is not installed. TRITON_CHECK_ARGS=--quick for a smaller matrix (docs/triton.md)
triton-check: setup
	$(PY) tools/check_triton_kernels.py $(TRITON_CHECK_ARGS)

# the GPU machine's stack minus the GPU (torch 2.11.0+cu130, triton 3.6.0: the oldest supported): a venv under
# build/gpu_stack (~5 GB from PyPI), the extension built WITH its CUDA kernels, the whole suite run on it
# (tools/check_gpu_stack.py). Skipped without nvcc, disk or network
gpu-stack-check:
	$(PYTHON) tools/check_gpu_stack.py $(GPU_STACK_ARGS)

bench: setup
	$(PY) -m fused_attn.info
	$(PY) -m bench $(BENCH_ARGS)

info: setup
	$(PY) -m fused_attn.info

clean:
	rm -rf build *.egg-info fused_attn/_C*.so .pytest_cache
