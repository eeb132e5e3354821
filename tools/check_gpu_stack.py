#!/usr/bin/env python3
"""The GPU machine's software stack, minus the GPU: build and test fused_attn on torch 2.11.0+cu130 and triton 3.6.0.

Those are the oldest torch and triton this project supports and what the GPU machines run, while `make setup`
installs the newest (torch 2.14.1, its triton). Here, without a GPU:

  1. a venv, build/gpu_stack/venv: torch==2.11.0 from PyPI (its CUDA 13.0 build with the CUDA runtime packages,
     ~4.7 GB), triton==3.6.0 (torch 2.11's own pin), numpy<2.4 (triton 3.6's interpreter converts 1-element arrays
     to Python ints, which numpy 2.4 refuses), and the test tools;
  2. a copy of the working tree (tracked and untracked-not-ignored files) in build/gpu_stack/tree;
  3. the extension built there WITH its CUDA kernels, as bench/gpu.sh builds it on the GPU machine: the bindings
     against torch's CUDA headers, the kernels by nvcc for sm_80 and sm_90, linked against the CUDA runtime;
     the build must load and report cuda=1;
  4. the test suite there in parallel on that build (Triton through its 3.6 interpreter, the CUDA-device tests
     skipped; the `ci`-marked CUDA emulator tests are left to make ci's run on the newest stack), then
     tools/check_triton_kernels.py --quick with triton 3.6.

  python3 tools/check_gpu_stack.py                 all four steps (cached: the venv, the build when unchanged)
  python3 tools/check_gpu_stack.py -- -k ema -x    pytest arguments after --
  --require     exit 1 when the stack cannot be installed (default: say SKIPPED and exit 0, as without nvcc)

Skipped (exit 0) without nvcc, with less than 12 GB free disk, or when torch 2.11 cannot be installed
(no network; with --require that fails). Test or build failures always fail (exit 1).
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from setup_env import build_is_current, run, sources_digest  # noqa: E402

WORK = ROOT / "build" / "gpu_stack"
STACK = ["torch==2.11.0", "triton==3.6.0"]
TOOLS = ["numpy<2.4", "pytest", "pytest-xdist", "expecttest", "hypothesis", "setuptools>=64", "wheel", "ninja"]
STACK_VERSIONS = "import torch, triton; assert torch.__version__ == '2.11.0+cu130' and triton.__version__ == '3.6.0'"
MIN_FREE_GB = 12
# what a build leaves in the tree copy; everything else there mirrors the working tree
BUILD_OUTPUTS = ("build", "__pycache__", ".egg-info", ".so", ".pytest_cache", ".hypothesis")


def say(msg: str) -> None:
    print(f"gpu-stack: {msg}", flush=True)


def skip(msg: str, require: bool) -> None:
    say(("FAILED (--require): " if require else "SKIPPED: ") + msg)
    sys.exit(1 if require else 0)


def setup_venv(require: bool) -> Path:
    python = WORK / "venv" / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", STACK_VERSIONS], capture_output=True).returncode == 0:
        say(f"venv {python.parent.parent} has torch 2.11.0+cu130 and triton 3.6.0")
    else:
        shutil.rmtree(WORK / "venv", ignore_errors=True)
        run([sys.executable, "-m", "venv", WORK / "venv"])
        t0 = time.time()
        if run([python, "-m", "pip", "install", "-q", *STACK, *TOOLS], check=False):
            skip("could not install torch 2.11.0 / triton 3.6.0 from the package index", require)
        say(f"installed {' '.join(STACK)} in {time.time() - t0:.0f} s")
    return python


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


def mirror_tree(dest: Path) -> None:
    """dest mirrors the working tree's files; unchanged files keep their timestamps (no needless rebuild)."""
    files = tracked_files()
    wanted = set(files)
    for f in files:
        src, dst = ROOT / f, dest / f
        if not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for p in sorted(dest.rglob("*"), reverse=True):  # files gone from the tree, not build outputs
        rel = p.relative_to(dest).as_posix()
        if any(part in BUILD_OUTPUTS or part.endswith(BUILD_OUTPUTS) for part in Path(rel).parts):
            continue
        if p.is_file() and rel not in wanted:
            p.unlink()
    say(f"tree copy {dest}: {len(files)} files")


def build(python: Path, tree: Path) -> None:
    stamp = WORK / "build-stamp"
    digest = sources_digest(tree)
    probe = "import fused_attn._ext as e; assert e.built_with_cuda(), e.load_error() or e.build_info()"
    if build_is_current(stamp, digest, python, probe, cwd=tree):
        say("extension (with CUDA) is built and up to date")
        return
    # setup.py finds CUDA_HOME from nvcc, the arch list (sm_80, sm_90) and the CUDA wheels' headers itself
    env = dict(os.environ, FORCE_CUDA="1", MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 2)))
    t0 = time.time()
    run([python, "-m", "pip", "install", "-q", "-e", ".", "--no-build-isolation", "--no-deps"], cwd=tree, env=env)
    say(f"built the extension with CUDA (sm_80, sm_90) in {time.time() - t0:.0f} s")
    run([python, "-c", probe], cwd=tree)
    stamp.write_text(digest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--require", action="store_true", help="fail when the stack cannot be installed")
    ap.add_argument("pytest_args", nargs="*",
                    help="after --: arguments for pytest (default: -n auto -m \"not ci and not models\")")
    args = ap.parse_args()
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc:
        skip("nvcc not found (the check builds the CUDA kernels)", args.require)
    WORK.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(WORK).free / 2**30
    if free_gb < MIN_FREE_GB and not (WORK / "venv").exists():
        skip(f"{free_gb:.1f} GB free disk, the stack needs {MIN_FREE_GB}", args.require)
    t0 = time.time()
    python = setup_venv(args.require)
    tree = WORK / "tree"
    mirror_tree(tree)
    build(python, tree)
    run([python, "-m", "fused_attn.info"], cwd=tree)
    pytest_args = args.pytest_args or ["-n", "auto", "-m", "not ci and not models"]
    run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args], cwd=tree)
    if not args.pytest_args:
        run([python, "tools/check_triton_kernels.py", "--quick"], cwd=tree)
    say(f"OK: torch 2.11.0+cu130 / triton 3.6.0, CUDA extension built, tests passed ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
