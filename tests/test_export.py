"""Export: torch.export keeps the fused ops as graph ops; torch.onnx.export gives standard ONNX only.

torch.export.export traces the modules through the ops' fake kernels: each fused_attn::<op> appears as one
call in the graph, with dynamic batch and spatial sizes, and the exported program reproduces eager.

torch.onnx.export: fused_attn.functional runs the pure-PyTorch reference while
torch.onnx.is_in_onnx_export() is true, which both exporters set: the default torch.export-based one
(dynamo=True since torch 2.9; needs onnxscript) and the TorchScript one (dynamo=False, deprecated). The
graphs are checked with onnx.checker (full check: shape inference included), must contain only operators of
the standard ONNX domain, and, where onnxruntime is installed, run there and match the module in PyTorch.
"""
from __future__ import annotations

import functools
import io
import warnings

import pytest
import torch
from common import assert_close

import fused_attn
from fused_attn import nn as fnn

SHAPE = (2, 32, 6, 5)
EMAX_OPS = {"squeeze_excite", "apply_gates", "ema_strip_pool", "ema_core"}

# name -> (constructor, the fused_attn ops its forward calls)
MODULES = {
    "SEBlock": (lambda: fnn.SEBlock(32, 8), {"squeeze_excite"}),
    "MultiScaleAttention": (lambda: fnn.MultiScaleAttention(32, 8), {"channel_squeeze", "channel_pool", "apply_gates"}),
    "DualAttention": (lambda: fnn.DualAttention(32), {"dual_attention"}),
    "LiteDualAttention": (lambda: fnn.LiteDualAttention(32), {"dual_attention"}),
    "AttnResBlock": (lambda: fnn.AttnResBlock(32), {"dual_attention"}),
    "EMA": (lambda: fnn.EMA(32, factor=4), {"ema_strip_pool", "ema_core"}),
    "EMAX": (lambda: fnn.EMAX(32, factor=4, reduction=8), EMAX_OPS),
    "EMAX-dynamic": (lambda: fnn.EMAX(32, factor=4, reduction=8, dynamic_groups=True), EMAX_OPS),
    "CBAM": (lambda: fnn.CBAM(32, reduction=8), {"channel_squeeze", "channel_pool", "apply_gates"}),
    "SimAM": (lambda: fnn.SimAM(32), {"simam"}),
    "CoordAtt": (lambda: fnn.CoordAtt(32, 32, reduction=4), {"ema_strip_pool", "coord_gate"}),
    "GlobalContext": (lambda: fnn.GlobalContext(32, fuse_add=True), {"global_context_pool", "apply_gates"}),
}
ONNX_MODULES = [n for n in MODULES if n != "EMAX-dynamic"] + ["vgg16_se"]
EXPORTERS = ("dynamo", "torchscript")


def _module(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """(module in eval mode with seeded random weights, its input)."""
    torch.manual_seed(0)
    if name == "vgg16_se":
        return fused_attn.models.vgg16_se(num_classes=10).eval(), torch.randn(1, 3, 32, 32)
    module = MODULES[name][0]().eval()
    if hasattr(module, "gamma"):            # EMAX's gamma starts at 0, which would hide its SE path
        with torch.no_grad():
            module.gamma.fill_(0.5)
    return module, torch.randn(SHAPE)


def _fused_targets(ep: torch.export.ExportedProgram) -> set:
    return {n.target.name().split("::")[1].split(".")[0] for n in ep.graph.nodes
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
            and n.target.namespace == "fused_attn"}


# --------------------------------------------------------------------------------------------- torch.export
@pytest.mark.parametrize("name", list(MODULES))
def test_torch_export_keeps_fused_ops_and_matches_eager(name):
    """The exported program calls exactly the module's fused ops, with batch, H and W dynamic, and matches
    eager at the export shape and at another shape."""
    module, x = _module(name)
    dims = {0: torch.export.Dim("B", max=64), 2: torch.export.Dim("H", min=2, max=64),
            3: torch.export.Dim("W", min=2, max=64)}
    ep = torch.export.export(module, (x,), dynamic_shapes=(dims,))
    assert _fused_targets(ep) == MODULES[name][1]
    for inp in (x, torch.randn(3, 32, 4, 7)):
        with torch.no_grad():
            expected = module(inp)
            with fused_attn.use_backend("reference"):
                reference = module(inp)
        got = ep.module()(inp)
        assert_close(got, expected, what=f"{name} exported vs eager {tuple(inp.shape)}")
        assert_close(got, reference, what=f"{name} exported vs eager reference {tuple(inp.shape)}")


def test_torch_export_save_load_round_trip():
    """An exported program with fused ops serialises and loads back (the ops are registered at import)."""
    module, x = _module("MultiScaleAttention")
    buf = io.BytesIO()
    torch.export.save(torch.export.export(module, (x,)), buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    assert _fused_targets(loaded) == MODULES["MultiScaleAttention"][1]
    with torch.no_grad():
        assert_close(loaded.module()(x), module(x), what="loaded program vs eager")


# ---------------------------------------------------------------------------------------------------- ONNX
@functools.lru_cache(maxsize=None)
def _onnx_export(name: str, exporter: str):
    """(onnx ModelProto, input, the module's PyTorch output); one export per (module, exporter)."""
    onnx = pytest.importorskip("onnx")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="the default (dynamo=True) ONNX exporter needs onnxscript")
    if name == "vgg16_se" and exporter == "torchscript":
        pytest.skip("the TorchScript exporter cannot export AdaptiveAvgPool2d(7) of a 1x1 map (a torch limit); "
                    "vgg16_se exports with the default exporter")
    module, x = _module(name)
    with torch.no_grad():
        expected = module(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # the TorchScript exporter's deprecation warning
        if exporter == "dynamo":
            model = torch.onnx.export(module, (x,), dynamo=True, verbose=False).model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(module, (x,), buf, dynamo=False)
            model = onnx.load_from_string(buf.getvalue())
    return model, x, expected


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ONNX_MODULES)
def test_onnx_export_is_valid_standard_onnx(name, exporter):
    """onnx.checker (with shape inference) accepts the model; every node is a standard ONNX operator."""
    model, x, expected = _onnx_export(name, exporter)
    import onnx
    onnx.checker.check_model(model, full_check=True)
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in ("", "ai.onnx")})
    assert not foreign, f"non-standard ONNX nodes: {foreign}"
    unknown = sorted({n.op_type for n in nodes if not onnx.defs.has(n.op_type)})
    assert not unknown, f"operators outside the ONNX standard: {unknown}"
    assert not any("fused_attn" in n.op_type for n in nodes)
    assert [len(model.graph.input), len(model.graph.output)] == [1, 1]
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out_shape == list(expected.shape)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ONNX_MODULES)
def test_onnx_runtime_matches_pytorch(name, exporter):
    """ONNX Runtime's output of the exported model == the module's PyTorch output (fp32 tolerance)."""
    ort = pytest.importorskip("onnxruntime")
    model, x, expected = _onnx_export(name, exporter)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert_close(torch.from_numpy(out), expected, what=f"{name} ({exporter}) onnxruntime vs PyTorch")


def test_onnx_export_needs_the_reference_routing(monkeypatch):
    """Control: with functional's ONNX routing switched off, the custom ops reach the exporter and it fails,
    so the standard-ONNX graphs above come from the routing."""
    pytest.importorskip("onnx")
    monkeypatch.setattr(fused_attn.functional, "_exporting", lambda: False)
    module, x = _module("SEBlock")
    with warnings.catch_warnings(), pytest.raises(Exception, match="fused_attn::squeeze_excite"):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), io.BytesIO(), dynamo=False)
