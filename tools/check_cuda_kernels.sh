#!/usr/bin/env bash
# Compile-check the CUDA backend on machines without a GPU or a CUDA torch, so it cannot rot:
#  1. every torch-free kernel file (csrc/cuda/*_kernels.cu) with nvcc for sm_80 and sm_90, warnings as errors, with
#     the defines torch's CUDAExtension adds;
#  2. every binding (csrc/cuda/*.cpp) with g++ -fsyntax-only -Wall -Wextra -Werror against the include
#     dirs of the torch that PYTHON has (the bindings use no torch CUDA header, see csrc/cuda/binding.h) and the
#     CUDA runtime headers of that nvcc; skipped when no python with torch is found.
# Both in the C++ standard the extension builds with (tools/build_flags.py: C++20 for torch >= 2.14, else
# C++17; C++17 without a python with torch). Skips (exit 0) when nvcc is absent.
#   NVCC=...      nvcc to use (default: the one on PATH)
#   PYTHON=...    interpreter with torch for step 2 (default: .venv/bin/python, else python3)
#   CXX=...       host compiler for step 2 (default: g++)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ]; then
  echo "cuda-check: nvcc not found, skipped"
  exit 0
fi
shopt -s nullglob
files=(csrc/cuda/*_kernels.cu)
if [ ${#files[@]} -eq 0 ]; then
  echo "cuda-check: no csrc/cuda/*_kernels.cu files yet"
  exit 0
fi
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=$(command -v python3 || true); fi
fi
torch_inc=""
std=c++17
if [ -n "$PY" ] && torch_inc=$("$PY" -c \
    "from torch.utils.cpp_extension import include_paths; print(' '.join(include_paths()))" 2>/dev/null); then
  std=$("$PY" tools/build_flags.py std)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "${files[@]}"; do
  echo "cuda-check: $f"
  # the -D__CUDA_NO_* defines are what torch's CUDAExtension passes nvcc (no implicit half / bfloat16 conversions)
  "$NVCC" -c -std="$std" -O3 -Xcompiler -Wall -Werror all-warnings --expt-relaxed-constexpr \
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
    -D__CUDA_NO_HALF2_OPERATORS__ \
    -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90 \
    -o "$out/$(basename "$f").o" "$f"
done
echo "cuda-check: ${#files[@]} kernel file(s) compiled for sm_80 and sm_90"

bindings=(csrc/cuda/*.cpp)
[ ${#bindings[@]} -eq 0 ] && exit 0
if [ -z "$torch_inc" ]; then
  echo "cuda-check: no python with torch (PYTHON=${PY:-none}): bindings not syntax-checked"
  exit 0
fi
# the CUDA runtime headers of this nvcc (it may be a wrapper script: ask it)
cuda_inc=$("$NVCC" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/.*INCLUDES="-I\([^"]*\)".*/\1/p' | head -1)
flags=(-fsyntax-only -std="$std" -Wall -Wextra -Werror -DFA_WITH_CUDA)
for d in $torch_inc; do flags+=(-isystem "$d"); done  # torch's own headers warn under -Wextra
[ -n "$cuda_inc" ] && flags+=(-isystem "$cuda_inc")
for f in "${bindings[@]}"; do
  echo "cuda-check: $f (syntax only)"
  "${CXX:-g++}" "${flags[@]}" "$f"
done
echo "cuda-check: ${#bindings[@]} binding file(s) syntax-checked"
