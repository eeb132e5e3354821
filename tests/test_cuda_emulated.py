"""The CUDA kernels (csrc/cuda/*_kernels.cu) and their bindings (csrc/cuda/*.cpp) on a CPU emulator of the CUDA
execution model (tools/cuda_emu), against the reference backend: the GPU backend's logic tested on machines
without a GPU, CI included.

tools/cuda_emu/build.py compiles the kernel files unchanged as C++ (blocks run one at a time, each as blockDim
cooperative fibers with real __syncthreads and warp-shuffle semantics) and the bindings for CPU tensors under
torch.ops.fused_attn_cuda_emu. The tests patch the C++ shims (fused_attn/cpp) to call that library, then run
  * the kernel contracts of tests/test_cuda_backend.py on its case grid (tests/cuda_cases.py): every pass, dtype,
    layout, the odd and multi-tile shapes, both EMA tile paths;
  * every kernel under three fiber schedules (forward, reverse, seeded random) with bitwise-equal results (a missing
    barrier shows as a difference) and with use_deterministic_algorithms (NaN-filled outputs: no unwritten
    element);
  * the public functions, custom ops (gradcheck, opcheck) and modules through backend="cpu", whose shims now
    reach the emulated CUDA kernels;
  * the emulator itself: shuffles against known sums, and the bugs it must report (tools/cuda_emu/
    selftest_kernels.cu).
What it cannot check: speed, the device code nvcc generates (tools/check_cuda_kernels.sh compiles it), memory
ordering beyond barriers, hardware limits on registers, and anything about streams (the emulator is synchronous).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from fused_attn import _backend
from fused_attn._layout import memory_format
from fused_attn.cpp import apply_gates as cpp_gates
from fused_attn.cpp import channel_pool as cpp_pool
from fused_attn.cpp import dual_attention as cpp_dual
from fused_attn.cpp import ema as cpp_ema
from fused_attn.cpp import squeeze_excite as cpp_se

import kernel_contracts as kc
from common import assert_close, rand
from cuda_cases import LAYOUTS, KernelContracts, kernel_calls, kernel_inputs

ROOT = Path(__file__).resolve().parents[1]
CPU_REASON = _backend.unavailable_reason("cpu", "channel_pool", "cpu", torch.float32)
pytestmark = pytest.mark.skipif(CPU_REASON is not None, reason=f"the C++ extension is needed: {CPU_REASON}")
SHIMS = (cpp_gates, cpp_pool, cpp_dual, cpp_ema, cpp_se)


def _builder():
    spec = importlib.util.spec_from_file_location("cuda_emu_build", ROOT / "tools" / "cuda_emu" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def emu():
    """torch.ops.fused_attn_cuda_emu (built on first use, ~1 min on 2 cores; cached under build/cuda_emu)."""
    build = _builder()
    try:
        lib = build.load()
    except build.Unavailable as e:
        pytest.skip(f"CUDA emulator unavailable: {e}")
    lib.emu_set_schedule("forward")
    return lib


@pytest.fixture(autouse=True)
def _on_emulator(emu, monkeypatch):
    """Route the C++ shims to the emulated CUDA kernels, and insist that the test launched some."""
    for shim in SHIMS:
        monkeypatch.setattr(shim, "ops", lambda: emu)
    emu.emu_stats(True)
    yield
    emu.emu_set_schedule("forward")
    assert emu.emu_stats(True)[0] > 0, "no kernel ran on the emulator"


def check(actual, expected, dtype, what, like=None):
    assert actual.device.type == "cpu", f"{what}: on {actual.device}"
    assert_close(actual, expected, dtype, what)
    if like is not None:  # 4-D outputs follow the input's memory format (fused_attn/_layout.py)
        assert actual.is_contiguous(memory_format=memory_format(like)), f"{what}: layout of {tuple(actual.stride())}"


# ------------------------------------------------------------------------------- kernel contracts (GPU grid)
class TestKernelContracts(KernelContracts):
    rand = staticmethod(rand)
    check = staticmethod(check)


def test_errors_name_the_problem(emu):
    x = rand((2, 8, 3, 3))
    with pytest.raises(RuntimeError, match="divisible by groups"):
        cpp_ema.ema_core_forward(x, rand((2, 8, 6)), x, rand((3,)), rand((3,)), 3, 1e-5)
    with pytest.raises(RuntimeError, match="unknown channel_pool stat"):
        emu.channel_pool_forward(x, "max,median")
    with pytest.raises(RuntimeError, match="dtype"):
        emu.channel_squeeze_forward(x.to(torch.int32))
    emu.channel_squeeze_forward(x)  # (the fixture wants a launch)


# ------------------------------------------------------------------------------ schedules and determinism
@pytest.mark.parametrize("layout", LAYOUTS)
def test_results_do_not_depend_on_the_schedule(emu, layout):
    """Every kernel, with the fibers of each block run forward, in reverse and in a seeded random order between
    barriers: bitwise-equal results (a read of shared memory that a missing barrier leaves unordered differs),
    under use_deterministic_algorithms (new tensors NaN-filled: an unwritten output element shows as NaN)."""
    inputs = kernel_inputs(rand, layout, shape=(2, 16, 13, 11))
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        results = {}
        for mode, seed in (("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)):
            emu.emu_set_schedule(mode, seed)
            results[f"{mode}{seed}"] = kernel_calls(*inputs)
    finally:
        torch.use_deterministic_algorithms(before)
    first = results.pop("forward0")
    for k, a in enumerate(first):
        assert not a.is_floating_point() or not a.isnan().any(), f"result {k} has NaN (an unwritten element?)"
    for name, res in results.items():
        for k, (a, b) in enumerate(zip(first, res)):
            assert torch.equal(a, b), f"result {k} differs under the {name} schedule"


# ------------------------------------------------------------------- public functions, custom ops, modules
# backend="cpu" runs the shims, which the fixture routed to the emulated CUDA kernels.
@pytest.mark.parametrize("case", range(len(kc.PUBLIC_CASES)), ids=kc.PUBLIC_CASES)
def test_gradcheck_fp64(case):
    name, fn, inputs = kc.public_cases(rand, torch.float64, "channels_last", (2, 4, 2, 3))[case]
    inputs = [t.detach().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *t: fn(t, "cpu"), inputs, eps=1e-6, atol=1e-7, rtol=1e-5), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(kc.PUBLIC_CASES)), ids=kc.PUBLIC_CASES)
def test_public_functions_match_reference(case, layout, dtype):
    """Forward and every input gradient through the custom ops vs the reference backend on float64 copies."""
    kc.public_function(rand, check, case, layout, dtype, "cpu")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(kc.OPCHECK_CASES)), ids=kc.OPCHECK_CASES)
def test_opcheck(case, layout):
    op, args = kc.opcheck_cases(rand, layout, "cpu")[case]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", list(kc.MODULES))
def test_module_matches_reference(kind, layout):
    """Each module on the emulated CUDA kernels vs the same module (same parameters) on the reference backend."""
    kc.module_matches_reference(rand, kind, layout, "cpu")


# ------------------------------------------------------------------------------------ the emulator itself
def _selftest(emu, name, threads=64, arg=0):
    out = torch.zeros(threads)
    code, message = emu.emu_selftest(name, out, threads, arg)
    return code, message, out


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32])
def test_emulated_shuffle_sums(emu, width):
    """__shfl_xor_sync butterflies over `width`-lane segments give each lane its segment's sum of (lane + 1)."""
    code, message, out = _selftest(emu, "shuffle_sums", threads=96, arg=width)
    assert code == 0, message
    lane = torch.arange(96) % 32
    first = lane - lane % width
    expected = width * (first + 1) + width * (width - 1) / 2
    assert torch.equal(out, expected.float())


@pytest.mark.parametrize("name,needle", [("divergent_barrier", "divergent __syncthreads"),
                                         ("exited_barrier", "exited"),
                                         ("partial_shuffle", "shuffle"),
                                         ("big_smem", "dynamic shared memory")])
def test_emulator_reports_undefined_behaviour(emu, name, needle):
    code, message, _ = _selftest(emu, name)
    assert code != 0 and needle in message, (code, message)
    assert emu.emu_selftest("shuffle_sums", torch.zeros(32), 32, 32)[0] == 0  # the next launch is unaffected


def test_emulator_allows_opted_in_shared_memory(emu):
    code, message, out = _selftest(emu, "big_smem_allowed")
    assert code == 0, message
    assert torch.equal(out, (torch.arange(64) + 1) % 64 * 1.0)


@pytest.mark.parametrize("kernel", ["neighbour", "static_neighbour"])
def test_missing_barrier_shows_under_another_schedule(emu, kernel):
    """A neighbour read without __syncthreads differs between schedules (forward: the neighbour has not written
    yet and the 0xff-filled shared memory reads NaN, although the static array held the right values from the
    previous launch); with the barrier every schedule gives the neighbour's index. Dynamic and static shared
    memory."""
    runs = {}
    for barrier in (1, 0):
        for mode in ("forward", "reverse"):
            emu.emu_set_schedule(mode)
            code, message, out = _selftest(emu, kernel, arg=barrier)
            assert code == 0, message
            runs[barrier, mode] = out
    expected = (torch.arange(64) + 1) % 64 * 1.0
    assert torch.equal(runs[1, "forward"], expected) and torch.equal(runs[1, "reverse"], expected)
    assert not torch.equal(runs[0, "forward"], runs[0, "reverse"])
    assert math.isnan(runs[0, "forward"][0].item())
