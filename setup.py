"""Build of fused_attn and its C++/CUDA extension fused_attn._C.

  pip install -e . --no-build-isolation     build in place against the installed torch (`make setup` does this)
  FUSED_ATTN_NO_EXT=1                        skip the extension: the package runs on reference/Triton
  FORCE_CUDA=1                               build the CUDA kernels even where torch/nvcc detection says no
  TORCH_CUDA_ARCH_LIST="8.0;9.0"             CUDA architectures (default 8.0;9.0 when no GPU is visible)

CUDA is built when torch is a CUDA build and CUDA_HOME (nvcc) is found, never because a GPU is visible.
Build isolation would download a second torch: always pass --no-build-isolation.
"""
import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension_modules():
    if os.environ.get("FUSED_ATTN_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    with_cuda = os.environ.get("FORCE_CUDA") == "1" or (torch.version.cuda is not None and CUDA_HOME is not None)
    sources = ["csrc/fused_attn.cpp"] + _sources("csrc/cpu/*.cpp")
    cxx = ["-O3", "-std=c++17", "-fopenmp"]  # BuildExtension adds -DPy_LIMITED_API (CPython 3.10) for abi3
    link = ["-fopenmp"]  # without it at::parallel_for runs on one thread
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu")
        ext = CUDAExtension(
            "fused_attn._C", sources, py_limited_api=True, extra_link_args=link,
            extra_compile_args={"cxx": cxx + ["-DFUSED_ATTN_WITH_CUDA"],
                                "nvcc": ["-O3", "-std=c++17", "-lineinfo", "-DFUSED_ATTN_WITH_CUDA"]})
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
