"""Build of fused_attn and its C++/CUDA extension fused_attn._C.

  pip install -e . --no-build-isolation     build in place against the installed torch (`make setup` does this)
  FA_NO_EXT=1                        skip the extension: the package runs on reference/Triton
  FORCE_CUDA=1                               build the CUDA kernels and bindings (needs a CUDA torch and nvcc)
  FORCE_CUDA=0                               never build them
  TORCH_CUDA_ARCH_LIST="8.0;9.0"             CUDA architectures (default 8.0;9.0)

Without FORCE_CUDA the CUDA part is built when torch is a CUDA build, nvcc is found AND a GPU is visible (as
torchvision decides): a machine without a GPU gets the CPU-only build, which skips the nvcc work. Build
images for GPU machines on a machine without one with FORCE_CUDA=1. The C++ standard follows torch: C++20 from
torch 2.14 on (its headers require it), C++17 before. Build isolation would download a second torch: always
pass --no-build-isolation.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from build_flags import cuda_build_wanted, cuda_home_of, cxx_standard  # noqa: E402


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def prepare_cuda_environment() -> None:
    """CUDA_HOME from nvcc when unset; the pip CUDA packages' headers and libraries (nvidia/cu*/) that a CUDA
    wheel of torch depends on and its headers include (cublas, cusparse, ...) on the compiler's search paths."""
    nvcc = shutil.which("nvcc")
    if not os.environ.get("CUDA_HOME") and nvcc:
        os.environ["CUDA_HOME"] = cuda_home_of(nvcc)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    import sysconfig
    for nv in sorted(glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu*"))):
        for var, sub in (("CPATH", "include"), ("LIBRARY_PATH", "lib")):
            path = os.path.join(nv, sub)
            if os.path.isdir(path):
                os.environ[var] = os.pathsep.join(filter(None, [path, os.environ.get(var)]))


def extension_modules():
    if os.environ.get("FA_NO_EXT") == "1":
        return [], {}
    import torch

    with_cuda = cuda_build_wanted(torch)
    if with_cuda:
        prepare_cuda_environment()
    # imported after CUDA_HOME is settled: cpp_extension reads it at import
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    std = cxx_standard(torch.__version__)
    sources = ["csrc/fused_attn.cpp"] + _sources("csrc/cpu/*.cpp")
    cxx = ["-O3", f"-std={std}", "-fopenmp"]  # BuildExtension adds -DPy_LIMITED_API (CPython 3.10) for abi3
    link = ["-fopenmp"]  # without it at::parallel_for runs on one thread
    if with_cuda:
        sources += _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu")
        ext = CUDAExtension(
            "fused_attn._C", sources, py_limited_api=True, extra_link_args=link,
            extra_compile_args={"cxx": cxx + ["-DFA_WITH_CUDA"],
                                "nvcc": ["-O3", f"-std={std}", "-lineinfo", "-DFA_WITH_CUDA"]})
    else:
        ext = CppExtension("fused_attn._C", sources, py_limited_api=True,
                           extra_compile_args={"cxx": cxx}, extra_link_args=link)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = extension_modules()

setup(
    packages=find_packages(include=["fused_attn", "fused_attn.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
)
