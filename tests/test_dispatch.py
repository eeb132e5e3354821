"""The one dispatch point: requests per call / scope / process, auto order, and errors that say why."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fused_attn
from fused_attn import _ext, dispatch
from fused_attn import functional as FA

ROOT = Path(__file__).resolve().parents[1]


def _run_python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=ROOT)


def test_default_request_is_auto():
    assert fused_attn.current_backend() == "auto"


def test_use_backend_scopes_nest_and_restore():
    with fused_attn.use_backend("reference"):
        assert fused_attn.current_backend() == "reference"
        with fused_attn.use_backend("triton"):
            assert fused_attn.current_backend() == "triton"
        assert fused_attn.current_backend() == "reference"
    assert fused_attn.current_backend() == "auto"


def test_use_backend_restores_after_an_exception():
    with pytest.raises(KeyError):
        with fused_attn.use_backend("reference"):
            raise KeyError
    assert fused_attn.current_backend() == "auto"


def test_set_backend_is_the_process_default_and_scopes_win():
    try:
        fused_attn.set_backend("reference")
        assert fused_attn.current_backend() == "reference"
        with fused_attn.use_backend("auto"):
            assert fused_attn.current_backend() == "auto"
    finally:
        fused_attn.set_backend("auto")


def test_use_backend_scopes_are_per_thread():
    """Two threads inside different scopes at the same time each see their own request, and their op calls
    resolve by it; a thread started inside a scope starts with none (the process default)."""
    import threading
    barrier = threading.Barrier(2, timeout=30)
    seen, errors = {}, []
    x = torch.randn(1, 2, 3, 3)

    def worker(name):
        try:
            with fused_attn.use_backend(name):
                barrier.wait()  # both scopes are open now
                seen[name] = [fused_attn.current_backend()]
                if name == "cuda":  # no CUDA device here: the explicit request must fail, not see "reference"
                    with pytest.raises(fused_attn.BackendUnavailable):
                        FA.apply_gates(x, torch.rand(1, 2))
                else:
                    FA.apply_gates(x, torch.rand(1, 2))
                barrier.wait()  # the other thread has run inside its scope too
                seen[name].append(fused_attn.current_backend())
            seen[name].append(fused_attn.current_backend())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    with fused_attn.use_backend("triton"):  # the main thread's scope is not inherited
        threads = [threading.Thread(target=worker, args=(n,)) for n in ("reference", "cuda")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert fused_attn.current_backend() == "triton"
    assert not errors, errors
    assert seen == {"reference": ["reference", "reference", "auto"], "cuda": ["cuda", "cuda", "auto"]}


@pytest.mark.parametrize("bad", ["gpu", "", "Reference", None])
def test_unknown_backend_names_are_rejected(bad):
    with pytest.raises(ValueError, match="unknown fused_attn backend"):
        fused_attn.use_backend(bad).__enter__()
    if bad is not None:
        with pytest.raises(ValueError, match="unknown fused_attn backend"):
            FA.apply_gates(torch.randn(1, 2, 3, 3), backend=bad)


def test_call_argument_wins_over_scope():
    x = torch.randn(1, 2, 3, 3)
    with fused_attn.use_backend("cuda"):
        with pytest.raises(fused_attn.BackendUnavailable):
            FA.apply_gates(x, torch.rand(1, 2))
        FA.apply_gates(x, torch.rand(1, 2), backend="reference")  # runs


def test_explicit_cuda_on_this_machine_says_why():
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(fused_attn.BackendUnavailable) as info:
        FA.channel_pool(x, backend="cuda")
    msg = str(info.value)
    assert "'cuda'" in msg and "channel_pool" in msg
    # the reason names the actual cause: no extension, built without CUDA, or the tensor's device
    assert any(s in msg for s in ("not available", "without CUDA", "on cpu", "no CUDA device"))


def test_explicit_backend_never_falls_back():
    """An explicit request that cannot serve raises, even though reference could."""
    x = torch.randn(1, 4, 3, 3)
    for backend in ("cuda", "triton", "cpu"):
        reason = dispatch.unavailable_reason(backend, "channel_pool", "cpu", torch.float32)
        if reason is None:
            continue
        with pytest.raises(fused_attn.BackendUnavailable, match=reason.split("(")[0][:30].replace(".", r"\.")):
            FA.channel_pool(x, backend=backend)


def test_triton_without_interpreter_refuses_cpu_tensors():
    assert dispatch._unavailable_reason("triton", "apply_gates", "cpu", torch.float32, False) == \
        "Triton runs CPU tensors only under TRITON_INTERPRET=1"


def test_auto_on_cpu_picks_the_first_serving_backend_of_the_cpu_order():
    for op in dispatch.OPS:
        picked = dispatch.resolve(op, "auto", "cpu", torch.float32)
        expected = next(b for b in dispatch.AUTO_ORDER["cpu"]
                        if dispatch.unavailable_reason(b, op, "cpu", torch.float32) is None)
        assert picked == expected
        assert picked in ("cpu", "reference")


def test_auto_uses_the_cpu_backend_exactly_when_it_serves_the_op():
    for op in dispatch.OPS:
        serves = all(_ext.has_kernel(name, "cpu") for name in dispatch.OP_PASSES[op])
        assert (dispatch.resolve(op, "auto", "cpu", torch.float32) == "cpu") == serves


def test_auto_order_per_op_override(monkeypatch):
    monkeypatch.setitem(dispatch.AUTO_ORDER_PER_OP, ("apply_gates", "cpu"), ("reference",))
    assert dispatch.resolve("apply_gates", "auto", "cpu", torch.float32) == "reference"


def test_reference_refuses_integer_tensors_with_a_reason():
    reason = dispatch.unavailable_reason("reference", "apply_gates", "cpu", torch.int64)
    assert "dtype int64" in reason
    with pytest.raises(fused_attn.BackendUnavailable, match="no fused_attn backend"):
        dispatch.resolve("apply_gates", "auto", "cpu", torch.int64)


def test_available_backends_on_cpu_lists_reference():
    names = fused_attn.available_backends("cpu")
    assert names[0] == "reference" and set(names) <= set(dispatch.BACKENDS)
    assert "cuda" not in names


def test_env_variable_sets_the_process_default():
    code = ("import torch, fused_attn; from fused_attn import functional as FA\n"
            "print(fused_attn.current_backend())\n"
            "try:\n    FA.apply_gates(torch.randn(1, 2, 3, 3), torch.rand(1, 2))\n"
            "except fused_attn.BackendUnavailable as e:\n    print('unavailable')\n")
    res = _run_python(code, FUSED_ATTN_BACKEND="cuda")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["cuda", "unavailable"]
    res = _run_python(code, FUSED_ATTN_BACKEND="reference")
    assert res.stdout.split() == ["reference"]


def test_invalid_env_variable_fails_loudly():
    res = _run_python("import fused_attn", FUSED_ATTN_BACKEND="gpu")
    assert res.returncode != 0 and "FUSED_ATTN_BACKEND" in res.stderr


def test_info_runs_and_names_every_op():
    res = _run_python("import fused_attn.info as i; i.main()")
    assert res.returncode == 0, res.stderr
    for op in dispatch.OPS:
        assert op in res.stdout
    assert "torch" in res.stdout and "extension fused_attn._C" in res.stdout


def test_info_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "fused_attn.info"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "cpu: available backends:" in res.stdout


def test_selfcheck_passes():
    res = subprocess.run([sys.executable, "-m", "fused_attn.selfcheck"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all backends agree" in res.stdout


def test_compiled_calls_follow_the_scope_they_run_in():
    """torch.compile guards on the thread's scope: a graph traced outside a scope is not reused inside one."""
    x, g = torch.randn(1, 2, 3, 3), torch.rand(1, 2)
    fn = torch.compile(lambda x, g: FA.apply_gates(x, g), fullgraph=True)
    expected = FA.apply_gates(x, g, backend="reference")
    torch.testing.assert_close(fn(x, g), expected)
    with fused_attn.use_backend("cuda"):
        with pytest.raises(Exception, match="cuda"):
            fn(x, g)
    with fused_attn.use_backend("reference"):
        torch.testing.assert_close(fn(x, g), expected)


def test_compile_policy_is_checked_and_switches_the_compiled_graph():
    """set_compile_policy rejects unknown names (nothing changed) and a compiled function follows a switch:
    "inline" traces the math (no fused_attn op in the graph), "kernels" keeps the op."""
    assert fused_attn.compile_policy() == "inline"
    with pytest.raises(ValueError, match="compile policy 'fast'"):
        fused_attn.set_compile_policy("fast")
    assert fused_attn.compile_policy() == "inline"
    graphs = []

    def keep(gm, example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return gm
    x, g = torch.randn(1, 2, 3, 3), torch.rand(1, 2)
    torch._dynamo.reset()
    fn = torch.compile(lambda x, g: FA.apply_gates(x, g), fullgraph=True, backend=keep)
    try:
        torch.testing.assert_close(fn(x, g), x * g[:, :, None, None])
        fused_attn.set_compile_policy("kernels")
        torch.testing.assert_close(fn(x, g), x * g[:, :, None, None])
    finally:
        fused_attn.set_compile_policy("inline")
        torch._dynamo.reset()
    assert len(graphs) == 2
    assert not any("fused_attn" in t for t in graphs[0]) and any("fused_attn" in t for t in graphs[1])


def test_invalid_compile_policy_env_variable_fails_loudly():
    res = _run_python("import fused_attn", FUSED_ATTN_COMPILE="fast")
    assert res.returncode != 0 and "FUSED_ATTN_COMPILE" in res.stderr
    res = _run_python("import fused_attn; print(fused_attn.compile_policy())", FUSED_ATTN_COMPILE="kernels")
    assert res.stdout.split() == ["kernels"], res.stderr
