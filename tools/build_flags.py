"""Compiler settings every build of the C++/CUDA sources shares: setup.py (the extension), tools/cuda_emu/build.py
(the CPU emulator of the CUDA kernels), tools/check_cuda_kernels.sh (the nvcc compile check) and
tools/check_gpu_stack.py (the oldest-version stack). Standard library only: setup.py loads it before torch's
build helpers.

  python3 tools/build_flags.py std     print the C++ standard for the installed torch (c++17 or c++20)
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys


def cxx_standard(torch_version: str) -> str:
    """The C++ standard torch's headers need: C++20 from torch 2.14 on (ATen's `#error C++20 or later`), C++17
    before (2.11 to 2.13 build with either; C++17 keeps older compilers working)."""
    major, minor = (int(re.match(r"\d+", part).group()) for part in torch_version.split(".")[:2])
    return "c++20" if (major, minor) >= (2, 14) else "c++17"


def cuda_home_of(nvcc: str) -> str:
    """The CUDA toolkit root of this nvcc (it may be a wrapper script, so ask it rather than follow the path)."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", "/dev/null", "-o", "/dev/null"],
                         capture_output=True, text=True).stderr
    m = re.search(r"^#\$ TOP=(.*)$", out, re.M)
    return os.path.realpath(m.group(1) if m else os.path.join(os.path.dirname(nvcc), ".."))


def cuda_build_wanted(torch) -> bool:
    """Whether setup.py builds the CUDA kernels and bindings: FORCE_CUDA=1 / 0 decides; unset, a CUDA build of
    torch with nvcc on PATH and a visible GPU (as torchvision decides). A machine without a GPU gets the CPU-only
    build (about a minute) unless FORCE_CUDA=1 (CI, and images built for GPU machines)."""
    force = os.environ.get("FORCE_CUDA", "")
    if force not in ("", "0", "1"):
        raise SystemExit(f"FORCE_CUDA must be 0 or 1, got {force!r}")
    if force:
        return force == "1"
    return torch.version.cuda is not None and shutil.which("nvcc") is not None and torch.cuda.is_available()


if __name__ == "__main__":
    if sys.argv[1:] != ["std"]:
        sys.exit("usage: build_flags.py std")
    import torch
    print(cxx_standard(torch.__version__))
