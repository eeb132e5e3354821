#!/usr/bin/env bash
# Compile-check every torch-free CUDA kernel file (csrc/cuda/*_kernels.cu) with nvcc for sm_80 and sm_90,
# so CUDA code cannot rot on machines without a GPU or a CUDA torch. Skips (exit 0) when nvcc is absent.
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
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "${files[@]}"; do
  echo "cuda-check: $f"
  "$NVCC" -c -std=c++17 -O3 -Xcompiler -Wall -Werror all-warnings \
    -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90 \
    -o "$out/$(basename "$f").o" "$f"
done
echo "cuda-check: ${#files[@]} file(s) compiled for sm_80 and sm_90"
