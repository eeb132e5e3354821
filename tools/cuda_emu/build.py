"""Build the CUDA backend for the CPU emulator (tools/cuda_emu/cuda_emu.h): csrc/cuda/*_kernels.cu compiled as C++
with the emulator's definitions, csrc/cuda/*.cpp (the bindings) with FA_CUDA_EMULATION, runtime.cpp,
selftest_kernels.cu and library.cpp, linked into one library that registers torch.ops.fused_attn_cuda_emu for CPU
tensors.

  python tools/cuda_emu/build.py            build (cached by a digest of the sources and flags) and print the path
  python tools/cuda_emu/build.py --force    rebuild

Needs g++, the CUDA headers of an nvcc install (cuda_runtime.h, cuda_fp16.h, cuda_bf16.h: nothing is linked from
CUDA) and torch. `library()` is the Python entry point (tests/test_cuda_emulated.py); it raises Unavailable when
the headers or the compiler are missing.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from build_flags import cxx_standard  # noqa: E402

HERE = Path(__file__).resolve().parent
BUILD = ROOT / "build" / "cuda_emu"
# the defines torch's CUDAExtension passes nvcc (tools/check_cuda_kernels.sh uses the same)
CUDA_DEFINES = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
COMMON = ["-fPIC", "-fno-strict-aliasing", "-DFA_CUDA_EMULATION", "-Wall", "-Wextra",
          "-Wno-unused-parameter"]


class Unavailable(RuntimeError):
    """The emulator cannot be built here (no CUDA headers or no C++ compiler)."""


def cuda_include() -> Path:
    """The include directory with cuda_runtime.h: $CUDA_HOME/include, else the one nvcc uses."""
    cands = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            cands += [Path(os.environ[var]) / "include", Path(os.environ[var]) / "targets/x86_64-linux/include"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        try:
            out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", "/dev/null", "-o", "/dev/null"],
                                 capture_output=True, text=True, timeout=60).stderr
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            if 'INCLUDES="-I' in line:
                cands.append(Path(line.split('INCLUDES="-I', 1)[1].split('"', 1)[0]))
        cands.append(Path(nvcc).resolve().parent.parent / "include")
    cands.append(Path("/usr/local/cuda/include"))
    for c in cands:
        if (c / "cuda_runtime.h").is_file() and (c / "cuda_bf16.h").is_file():
            return c
    raise Unavailable("no CUDA headers (cuda_runtime.h) found: set CUDA_HOME or put nvcc on PATH")


def _jobs(cuda_inc: Path):
    import torch
    from torch.utils.cpp_extension import include_paths

    cxx = os.environ.get("CXX", "g++")
    if not shutil.which(cxx):
        raise Unavailable(f"no C++ compiler ({cxx})")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"
    common = [f"-std={cxx_standard(torch.__version__)}"] + COMMON
    kernel_flags = common + CUDA_DEFINES + ["-O2", "-isystem", str(cuda_inc), "-include", str(HERE / "cuda_emu.h")]
    torch_flags = common + CUDA_DEFINES + ["-O1", abi, "-isystem", str(cuda_inc)]
    for d in include_paths():
        torch_flags += ["-isystem", d]
    jobs = []
    for src in sorted((ROOT / "csrc" / "cuda").glob("*_kernels.cu")):
        jobs.append((src, [cxx, "-x", "c++"] + kernel_flags))
    jobs.append((HERE / "selftest_kernels.cu", [cxx, "-x", "c++"] + kernel_flags))
    jobs.append((HERE / "runtime.cpp", [cxx] + kernel_flags[:-2]))
    for src in sorted((ROOT / "csrc" / "cuda").glob("*.cpp")) + [HERE / "library.cpp"]:
        jobs.append((src, [cxx] + torch_flags))
    return cxx, jobs


def _digest(jobs, link) -> str:
    import torch

    h = hashlib.sha256(torch.__version__.encode())
    files = sorted({*(ROOT / "csrc").rglob("*.h"), *(ROOT / "csrc" / "cuda").glob("*"), *HERE.glob("*.h"),
                    *HERE.glob("*.cpp"), *HERE.glob("*.cu")})
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    for _, cmd in jobs:
        h.update(" ".join(cmd).encode())
    h.update(" ".join(link).encode())
    return h.hexdigest()[:16]


def library(force: bool = False, verbose: bool = False) -> Path:
    """Path of the built emulator library (building it if its sources changed)."""
    from torch.utils.cpp_extension import library_paths

    cuda_inc = cuda_include()
    cxx, jobs = _jobs(cuda_inc)
    libs = library_paths()
    # libraries after the objects (linkers that default to --as-needed drop those named first). -Bsymbolic: the
    # kernels' cudaGetLastError, cudaFuncSetAttribute, ... bind to runtime.cpp's, never to a real libcudart that a
    # CUDA build of torch has already loaded into the process (whose answer, without a GPU, is "no driver")
    link = [f"-L{d}" for d in libs] + [f"-Wl,-rpath,{d}" for d in libs] + ["-lc10", "-ltorch_cpu", "-ltorch",
                                                                           "-Wl,-Bsymbolic"]
    out_dir = BUILD / _digest(jobs, [cxx] + link)
    lib = out_dir / "libfused_attn_cuda_emu.so"
    if lib.is_file() and not force:
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    # one builder at a time (pytest-xdist workers all reach here on a fresh checkout): the others wait on the
    # lock, then find the library built
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.is_file() and not force:
            return lib
        _build(cxx, jobs, link, out_dir, lib, verbose)
    return lib


def _build(cxx: str, jobs: list, link: list, out_dir: Path, lib: Path, verbose: bool) -> None:
    """Compile every job into out_dir and link them into lib (written to a temporary name, then moved)."""
    def compile_one(job):
        src, cmd = job
        obj = out_dir / (src.name + ".o")
        full = cmd + ["-c", str(src), "-o", str(obj)]
        if verbose:
            print(" ".join(full), flush=True)
        r = subprocess.run(full, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"cuda_emu: compiling {src.relative_to(ROOT)} failed:\n{r.stderr[-6000:]}")
        return obj

    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        objs = list(pool.map(compile_one, jobs))
    tmp = lib.with_suffix(".tmp.so")
    r = subprocess.run([cxx, "-shared", "-o", str(tmp)] + [str(o) for o in objs] + link, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cuda_emu: linking failed:\n{r.stderr[-6000:]}")
    os.replace(tmp, lib)


def load(force: bool = False):
    """Build if needed and load the library: torch.ops.fused_attn_cuda_emu."""
    import torch

    torch.ops.load_library(str(library(force)))
    return torch.ops.fused_attn_cuda_emu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild even if the cached library is current")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the compiler commands")
    args = ap.parse_args(argv)
    try:
        print(library(args.force, args.verbose))
    except Unavailable as e:
        print(f"cuda_emu: unavailable: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
