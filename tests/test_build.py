"""The C++ extension: built by `make setup` (unless FUSED_ATTN_NO_EXT=1), and optional at run time."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fused_attn import _ext, dispatch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_flags  # noqa: E402


@pytest.mark.skipif(os.environ.get("FUSED_ATTN_NO_EXT") == "1", reason="extension skipped by FUSED_ATTN_NO_EXT=1")
def test_extension_is_built_and_loads():
    assert _ext.load_error() is None, _ext.load_error()
    info = _ext.build_info()
    assert info["version"] == "1"
    assert info["openmp"] == "1", "built without OpenMP: at::parallel_for would run on one thread"
    # the CUDA kernels are built exactly when tools/build_flags.py's policy asks for them (FORCE_CUDA=0/1, else a
    # CUDA torch with nvcc and a visible GPU): CPU-only in `make test` here, with CUDA in `make ci`
    assert info["cuda"] == ("1" if build_flags.cuda_build_wanted(torch) else "0"), (info, os.environ.get("FORCE_CUDA"))


def test_package_works_without_the_extension():
    code = ("import torch, fused_attn\nfrom fused_attn import functional as FA, _ext\n"
            "x = torch.randn(2, 4, 3, 3)\n"
            "assert _ext.load_error().startswith('disabled')\n"
            "assert torch.allclose(FA.channel_pool(x, ('mean',)), x.mean(1, keepdim=True))\n"
            "try:\n    FA.channel_pool(x, backend='cpu')\nexcept fused_attn.BackendUnavailable as e:\n"
            "    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "FUSED_ATTN_NO_EXT": "1"})
    assert res.returncode == 0, res.stderr
    assert "C++ extension fused_attn._C is not available" in res.stdout
    assert "FUSED_ATTN_NO_EXT" in res.stdout


def test_cpu_and_cuda_backends_need_the_extension():
    """Without fused_attn._C the reasons say so (checked through a fresh cache with the extension masked)."""
    _ext.load_error.cache_clear()
    dispatch.clear_caches()
    old = os.environ.get("FUSED_ATTN_NO_EXT")
    os.environ["FUSED_ATTN_NO_EXT"] = "1"
    try:
        for backend in ("cpu", "cuda"):
            reason = dispatch.unavailable_reason(backend, "apply_gates", backend, torch.float32)
            assert "extension fused_attn._C is not available" in reason
    finally:
        if old is None:
            del os.environ["FUSED_ATTN_NO_EXT"]
        else:
            os.environ["FUSED_ATTN_NO_EXT"] = old
        _ext.load_error.cache_clear()
        _ext.build_info.cache_clear()
        dispatch.clear_caches()


def test_cuda_kernel_files_are_torch_free():
    """csrc/cuda/*_kernels.cu must compile without torch headers (CI compile-checks them with nvcc)."""
    for path in (ROOT / "csrc" / "cuda").glob("*_kernels.cu"):
        text = path.read_text()
        for banned in ("#include <torch", "#include <ATen", "#include <c10"):
            assert banned not in text, f"{path.name} includes {banned[10:]} headers"
