"""The tools that read the sample registry outside pytest run on this machine: the compute-sanitizer driver
(tools/sanitize_cuda.py, on the native CPU kernels here: the same calls the GPU machine runs under memcheck)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fused_attn import _ext
from fused_attn.testing import registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not _ext.available(), reason="needs the C++ extension")
def test_sanitizer_driver_calls_every_pass_on_every_sanitizer_case():
    res = subprocess.run([sys.executable, "tools/sanitize_cuda.py", "--device", "cpu"], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    calls = sum(registry.pass_args(name, case, "meta") is not None
                for name in registry.PASSES for case in registry.pass_cases(name, "sanitizer"))
    assert f"{calls} kernel pass calls ran on cpu" in res.stdout, res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the driver on cuda (bench/gpu.sh)")
def test_sanitizer_driver_without_a_gpu_says_so():
    res = subprocess.run([sys.executable, "tools/sanitize_cuda.py"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "cuda backend unavailable" in res.stdout, res.stdout + res.stderr
