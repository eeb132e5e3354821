"""Independent oracles for the module tests (the seed modules, the official EMA, a plain CBAM), shared helpers,
and checks of the oracles themselves."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from common import serving_backends


# ---------------------------------------------------------------------------------------------- the seeds
def _load_baseline(name: str):
    """A module of bench/baselines/ (the bench's eager baselines, plain PyTorch), loaded by path: the seed
    modules as the project's four design notes wrote them, and the blocks as their official code writes them."""
    path = Path(__file__).resolve().parents[1] / "bench" / "baselines" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SEED = _load_baseline("seed_modules")


# -------------------------------------------------------------------------------------- the official EMA
class OfficialEMA(_load_baseline("official").EMA):
    """EMA as published (github.com/YOLOonMe/EMA-attention-module), bench/baselines/official.py's verbatim copy
    under a name of its own (convert recognises it by structure, whatever the class is called)."""


# ------------------------------------------------------------------------------------------- plain CBAM
class PlainCBAM(nn.Module):
    """CBAM in plain PyTorch (paper order: channel, then spatial on the channel-refined map), fused_attn's keys."""

    def __init__(self, channels, hidden, kernel=7, act=nn.ReLU, gate=nn.Sigmoid, bias=False):
        super().__init__()
        self.channel = nn.Module()
        self.channel.fc1 = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.channel.act = act()
        self.channel.fc2 = nn.Conv2d(hidden, channels, 1, bias=bias)
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)
        self.gate = gate()

    def mlp(self, p):
        return self.channel.fc2(self.channel.act(self.channel.fc1(p)))

    def forward(self, x):
        c = self.gate(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        y = x * c
        pooled = torch.cat([y.max(dim=1, keepdim=True)[0], y.mean(dim=1, keepdim=True)], dim=1)
        return y * self.gate(self.spatial(pooled))


# ------------------------------------------------------------------------------------------------ helpers
def perturb_(module: nn.Module, scale: float = 0.5) -> nn.Module:
    """Random parameters (default inits leave gamma = 0, GroupNorm affine = 1 / 0: too kind to a test)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return module


def backends_for(*ops: str) -> list[str]:
    """The backends that serve every one of `ops` on CPU float32 (a module calls them all)."""
    sets = [serving_backends(op) for op in ops]
    return [b for b in sets[0] if all(b in s for s in sets[1:])]


def assert_close_rel(actual, expected, what: str, tol: float = 1e-5) -> None:
    """max |actual - expected| <= tol * max(max |expected|, 1), compared in float64 (tests/common's convention)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double(), expected.detach().double()
    scale = max(e.abs().max().item(), 1.0)
    err = (a - e).abs().max().item()
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:.0e} * {scale:.3e}"


def check_parity(ours: nn.Module, ref: nn.Module, x: torch.Tensor, ref_forward=None, tol: float = 1e-5):
    """Forward, input gradient and every parameter's gradient of `ours` vs `ref` (same parameter names)."""
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    out_a = ours(xa)
    out_b = ref_forward(xb) if ref_forward else ref(xb)
    assert_close_rel(out_a, out_b, "forward", tol)
    g = torch.randn_like(out_b)
    pa, pb = dict(ours.named_parameters()), dict(ref.named_parameters())
    assert pa.keys() == pb.keys()
    names = sorted(pa)
    grads_a = torch.autograd.grad(out_a, [xa] + [pa[n] for n in names], g, allow_unused=True)
    grads_b = torch.autograd.grad(out_b, [xb] + [pb[n] for n in names], g, allow_unused=True)
    for name, ga, gb in zip(["input"] + names, grads_a, grads_b):
        if gb is None:
            assert ga is None or not ga.any(), f"grad of {name}: the reference has none"
            continue
        assert ga is not None, f"grad of {name} missing"
        assert_close_rel(ga, gb, f"grad of {name}", tol)
    return out_a


# --------------------------------------------------------------------------------- checks of the oracles
def test_official_ema_is_the_seed_emax_spatial_path():
    """EMAX(x, groups=factor) with gamma = 0 and a global gate of exactly 1 is the official EMA."""
    seed = perturb_(SEED.EMAX(16, factor=4)).double()
    with torch.no_grad():
        seed.gamma.zero_()
        seed.global_attn[3].weight.zero_()
        seed.global_attn[3].bias.fill_(100.0)   # sigmoid(100) == 1 in float64
    ema = OfficialEMA(16, factor=4).double()
    ema.load_state_dict({k: v for k, v in seed.state_dict().items() if k.split(".")[0] in ("gn", "conv1x1", "conv3x3")})
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(seed(x, groups=4), ema(x), rtol=0, atol=1e-12)


def test_seed_emax_dynamic_grouping_cannot_run():
    """Why EMAX's dynamic grouping is redesigned: the printed forward fails on every call."""
    with pytest.raises(RuntimeError):
        SEED.EMAX(64, factor=8)(torch.randn(2, 64, 4, 4))
