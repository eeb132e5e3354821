"""The CUDA kernels (csrc/cuda/*_kernels.cu) and their bindings (csrc/cuda/*.cpp) on a CPU emulator of the CUDA
execution model (tools/cuda_emu), against the reference backend: the GPU backend's logic tested on machines
without a GPU, CI included.

tools/cuda_emu/build.py compiles the kernel files unchanged as C++ (blocks run one at a time, each as blockDim
cooperative fibers with real __syncthreads and warp-shuffle semantics) and the bindings for CPU tensors under
torch.ops.fused_attn_cuda_emu. The tests patch the native shims (fused_attn/backends/native) to call that library,
then run
  * every kernel pass on the sample registry's "cuda" grid, as tests/test_cuda_backend.py does on a GPU: every
    dtype, layout, the odd and multi-tile shapes, both EMA tile paths;
  * every pass under three fiber schedules (forward, reverse, seeded random) with bitwise-equal results (a missing
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

import importlib
import importlib.util
import math
from pathlib import Path

import backend_contracts as bc
import pytest
import torch

from fused_attn import dispatch

ROOT = Path(__file__).resolve().parents[1]
CPU_REASON = dispatch.unavailable_reason("cpu", "channel_pool", "cpu", torch.float32)
# heavy (the emulator's build and fibers): `make ci` runs it, `make test` leaves it out
pytestmark = [pytest.mark.ci,
              pytest.mark.skipif(CPU_REASON is not None, reason=f"the C++ extension is needed: {CPU_REASON}")]
SHIMS = [importlib.import_module(f"fused_attn.backends.native.{family}") for family in set(dispatch.OP_FAMILY.values())]
native = bc.backend_module("native")


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
    """Route the native shims to the emulated CUDA kernels, and insist that the test launched some."""
    for shim in SHIMS:
        monkeypatch.setattr(shim, "kernels", lambda: emu)
    emu.emu_stats(True)
    yield
    emu.emu_set_schedule("forward")
    assert emu.emu_stats(True)[0] > 0, "no kernel ran on the emulator"


# ------------------------------------------------------------------------------- kernel contracts (GPU grid)
@pytest.mark.parametrize("name,case", bc.pass_params("cuda"))
def test_pass_matches_reference(name, case):
    bc.check_pass(native, name, case)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_channel_pool_ties_nan_and_large_mean(layout):
    bc.check_channel_pool_specials(native, layout)


def test_errors_name_the_problem(emu):
    x = torch.randn(2, 8, 3, 3)
    with pytest.raises(RuntimeError, match="divisible by groups"):
        native("ema_core").ema_core_combine(x, torch.randn(2, 8, 6), x, torch.rand(3), torch.rand(3), 3, 1e-5)
    with pytest.raises(RuntimeError, match="unknown channel_pool stat"):
        emu.channel_pool_reduce(x, "max,median")
    with pytest.raises(RuntimeError, match="dtype"):
        emu.channel_squeeze_reduce(x.to(torch.int32))
    emu.channel_squeeze_reduce(x)  # (the fixture wants a launch)


# ------------------------------------------------------------------------------ schedules and determinism
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_results_do_not_depend_on_the_schedule(emu, layout):
    """Every pass, with the fibers of each block run forward, in reverse and in a seeded random order between
    barriers: bitwise-equal results (a read of shared memory that a missing barrier leaves unordered differs),
    under use_deterministic_algorithms (new tensors NaN-filled: an unwritten output element shows as NaN)."""
    calls = bc.pass_calls(native, layout)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        results = {}
        for mode, seed in (("forward", 0), ("reverse", 0), ("random", 1), ("random", 2)):
            emu.emu_set_schedule(mode, seed)
            results[f"{mode}{seed}"] = bc.run_calls(calls)
    finally:
        torch.use_deterministic_algorithms(before)
    first = results.pop("forward0")
    for what, a in first:
        assert not a.is_floating_point() or not a.isnan().any(), f"{what} has NaN (an unwritten element?)"
    for name, res in results.items():
        for (what, a), (_, b) in zip(first, res):
            assert torch.equal(a, b), f"{what} differs under the {name} schedule"


# ------------------------------------------------------------------- public functions, custom ops, modules
# backend="cpu" runs the native shims, which the fixture routed to the emulated CUDA kernels.
@pytest.mark.parametrize("op,case", bc.public_params("gradcheck", variants_per_op=1))
def test_gradcheck_fp64(op, case):
    bc.check_gradcheck(op, case, "cpu")


@pytest.mark.parametrize("op,case", bc.public_params("gradcheck", variants_per_op=1))
def test_gradgradcheck_fp64(op, case):
    bc.check_gradgradcheck(op, case, "cpu")


@pytest.mark.parametrize("op,case", bc.public_params("public", variants_per_op=2))
def test_public_function_matches_reference(op, case):
    """Forward and every input gradient through the custom ops vs the reference backend on float64 copies."""
    bc.check_public(op, case, "cpu")


@pytest.mark.parametrize("op,case", bc.public_params("opcheck", variants_per_op=2))
def test_opcheck(op, case):
    bc.check_opcheck(op, case, "cpu")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("kind", list(bc.MODULES))
def test_module_matches_reference(kind, layout):
    """Each module on the emulated CUDA kernels vs the same module (same parameters) on the reference backend."""
    bc.module_matches_reference(kind, layout, "cpu")


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
