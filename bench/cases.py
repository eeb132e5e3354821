"""What the benchmark measures: op rows and module rows.

An op row runs one fused_attn op (or op variant) on random inputs. Its providers are the eager, seed-style
PyTorch formulation (`eager`), `torch.compile` of that formulation (`compile`), and the fused_attn function
through its custom op on each backend that serves it (`reference` is the pure-PyTorch oracle behind the op).

Minimal bytes (the figure behind GB/s). x is [B, C, H, W], e = bytes per element of the row's dtype,
N = B*C*H*W, P = B*H*W, Q = B*C, S = B*C*(H+W), k = number of pooled stats, Cr = C // 16, cg = C / groups:
  forward   every input read once + every output written once
  backward  grad_out read once + the forward inputs the backward needs read once + every gradient written
            once (a gradient that is grad_out itself, like a residual's, aliases it and moves nothing)
  fwd+bwd   forward + backward
The per-op formulas are the `Bytes` of each OpCase below (`Bytes.formula()` writes them out, as the JSON and
Markdown do); docs/bench.md lists them.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .env import ROOT

Dims = tuple  # (B, C, H, W)
MODES = ("fwd", "fwd+bwd")


def ema_groups(c: int) -> int:
    """EMA's groups (factor 32 by default), reduced for small C so that every group has >= 2 channels."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if c % g == 0 and (c // g >= 2 or g == 1))


def se_hidden(c: int) -> int:
    """Squeeze-excite hidden width, reduction 16 as SEBlock's default."""
    return max(c // 16, 1)


# --------------------------------------------------------------------------------------------------- inputs
def _randn(shape, dtype, device, scale=1.0) -> Tensor:
    return (torch.randn(shape, device=device, dtype=torch.float32) * scale).to(dtype)


def _gate(shape, dtype, device) -> Tensor:
    """A gate in (0, 1), like a sigmoid's output."""
    return torch.sigmoid(torch.randn(shape, device=device, dtype=torch.float32)).to(dtype)


# ------------------------------------------------------------------------------------ eager, seed-style ops
def load_module(name: str, path) -> object:
    """Import a file as module `name`, registered in sys.modules (torch.compile re-imports traced code's module)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# tests/seed_style.py: the ops written in plain PyTorch as the seed modules and the official EMA write them (the
# tests' independent oracle); the eager rows time exactly those
SEED_STYLE = load_module("fused_attn_bench_seed_style", ROOT / "tests" / "seed_style.py")


def eager_channel_pool3(x):
    """MultiScaleAttention's spatial descriptor: cat(max, mean, std over channels)."""
    return SEED_STYLE.channel_pool(x, ("max", "mean", "std"))


def eager_channel_pool2(x):
    """CBAM's spatial descriptor: cat(max, mean over channels)."""
    return SEED_STYLE.channel_pool(x, ("max", "mean"))


def eager_squeeze_excite(x, w1, w2):
    """SEBlock / channel attention: pool, 1x1, ReLU, 1x1, sigmoid, x * gate.expand_as(x)."""
    return SEED_STYLE.squeeze_excite(x, w1, None, w2, None)


def eager_dual_attention(x, w1, w2, ws):
    """DualAttention: x * channel_att(x) * sigmoid(conv1x1 C -> 1 (x))."""
    return SEED_STYLE.dual_attention(x, w1, None, w2, None, ws, None)


def eager_gates_full(y, channel, spatial, residual):
    """MultiScaleAttention's tail: x + fused_feat * channel_att * spatial_att."""
    return SEED_STYLE.apply_gates(y, channel, spatial, residual)


def eager_gates_channel(y, channel):
    """A channel gate alone: x * channel_weights."""
    return SEED_STYLE.apply_gates(y, channel)


def eager_channel_squeeze(x):
    """AdaptiveAvgPool2d(1), flattened."""
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def eager_ema_strip_pool(x):
    """EMA's pool_h, pool_w (permuted) and cat, as [B, C, H + W]."""
    return SEED_STYLE.ema_strip_pool(x)


def eager_ema_core(x, hw, x2, gn_weight, gn_bias):
    """The official EMA forward after its two convolutions (hw = conv1x1 output, x2 = conv3x3 output)."""
    return SEED_STYLE.ema_core(x, hw, x2, gn_weight, gn_bias, ema_groups(x.shape[1]))


# ---------------------------------------------------------------------------------------------- fused calls
def _fa():
    from fused_attn import functional
    return functional


def fused_channel_pool3(x, backend):
    return _fa().channel_pool(x, ("max", "mean", "std"), backend=backend)


def fused_channel_pool2(x, backend):
    return _fa().channel_pool(x, ("max", "mean"), backend=backend)


def fused_squeeze_excite(x, w1, w2, backend):
    return _fa().squeeze_excite(x, w1, None, w2, None, backend=backend)


def fused_dual_attention(x, w1, w2, ws, backend):
    return _fa().dual_attention(x, w1, None, w2, None, ws, None, backend=backend)


def fused_gates_full(y, channel, spatial, residual, backend):
    return _fa().apply_gates(y, channel=channel, spatial=spatial, residual=residual, backend=backend)


def fused_gates_channel(y, channel, backend):
    return _fa().apply_gates(y, channel=channel, backend=backend)


def fused_channel_squeeze(x, backend):
    return _fa().channel_squeeze(x, backend=backend)


def fused_ema_strip_pool(x, backend):
    return _fa().ema_strip_pool(x, backend=backend)


def fused_ema_core(x, hw, x2, gn_weight, gn_bias, backend):
    return _fa().ema_core(x, hw, x2, gn_weight, gn_bias, ema_groups(x.shape[1]), backend=backend)


# ------------------------------------------------------------------------------------------------ op cases
@dataclass(frozen=True)
class Bytes:
    """Minimal bytes e (n N + p P + q Q + s S + g cg + w Cr C): how many elements of each size are moved."""
    what: str
    n: int = 0
    p: int = 0
    q: int = 0
    s: int = 0
    g: int = 0
    w: int = 0

    def __call__(self, dims: Dims, elem: int) -> int:
        b, c, h, w = dims
        sizes = (b * c * h * w, b * h * w, b * c, b * c * (h + w), c // ema_groups(c), se_hidden(c) * c)
        return elem * sum(k * size for k, size in zip(self._coefficients(), sizes))

    def _coefficients(self) -> tuple:
        return self.n, self.p, self.q, self.s, self.g, self.w

    def formula(self) -> str:
        terms = [f"{'' if k == 1 else k}{sym}" for k, sym in zip(self._coefficients(), ("N", "P", "Q", "S", "cg", "CrC"))
                 if k]
        return f"e ({' + '.join(terms)}): {self.what}"


@dataclass(frozen=True)
class OpCase:
    name: str                                   # row label
    op: str                                     # the fused_attn op whose backends serve the row
    make: Callable[[Dims, torch.dtype, str], list]   # random inputs
    grads: tuple                                # indices of the inputs that receive gradients
    eager: Callable                             # seed-style PyTorch, eager(*inputs)
    fused: Callable                             # fused(*inputs, backend)
    fwd_bytes: Bytes                            # minimal bytes of the forward
    bwd_bytes: Bytes                            # minimal bytes of the backward

    def bytes(self, dims: Dims, elem: int, mode: str) -> int:
        fwd = self.fwd_bytes(dims, elem)
        return fwd if mode == "fwd" else fwd + self.bwd_bytes(dims, elem)


def _pool_bytes(k: int) -> tuple:
    return (Bytes(f"read x, write {k} planes", n=1, p=k),
            Bytes("read grad_out and x, write grad_x", n=2, p=k))


def _x(d, dt, dev):
    return [_randn(d, dt, dev)]


def _se_inputs(d, dt, dev):
    c, cr = d[1], se_hidden(d[1])
    return [_randn(d, dt, dev), _randn((cr, c), dt, dev, c ** -0.5), _randn((c, cr), dt, dev, cr ** -0.5)]


def _dual_inputs(d, dt, dev):
    c = d[1]
    return _se_inputs(d, dt, dev) + [_randn((1, c, 1, 1), dt, dev, c ** -0.5)]


def _gates_full_inputs(d, dt, dev):
    b, c, h, w = d
    return [_randn(d, dt, dev), _gate((b, c), dt, dev), _gate((b, h, w), dt, dev), _randn(d, dt, dev)]


def _gates_channel_inputs(d, dt, dev):
    return [_randn(d, dt, dev), _gate(d[:2], dt, dev)]


def _ema_inputs(d, dt, dev):
    b, c, h, w = d
    cg = c // ema_groups(c)
    return [_randn(d, dt, dev), _randn((b, c, h + w), dt, dev), _randn(d, dt, dev),
            1 + _randn((cg,), dt, dev, 0.1), _randn((cg,), dt, dev, 0.1)]


OP_CASES = (
    OpCase("channel_pool(max,mean,std)", "channel_pool", _x, (0,), eager_channel_pool3, fused_channel_pool3,
           *_pool_bytes(3)),
    OpCase("channel_pool(max,mean)", "channel_pool", _x, (0,), eager_channel_pool2, fused_channel_pool2,
           *_pool_bytes(2)),
    OpCase("squeeze_excite", "squeeze_excite", _se_inputs, (0, 1, 2), eager_squeeze_excite, fused_squeeze_excite,
           Bytes("read x, w1, w2, write y", n=2, w=2),
           Bytes("read grad_y, x, w1, w2; write grad_x and the weights' gradients", n=3, w=4)),
    OpCase("dual_attention", "dual_attention", _dual_inputs, (0, 1, 2, 3), eager_dual_attention,
           fused_dual_attention, Bytes("read x, w1, w2, write out", n=2, w=2),
           Bytes("read grad_out, x, w1, w2; write grad_x and the weights' gradients", n=3, w=4)),
    OpCase("apply_gates(c,s,res)", "apply_gates", _gates_full_inputs, (0, 1, 2, 3), eager_gates_full,
           fused_gates_full, Bytes("read y, channel, spatial, residual, write out", n=3, p=1, q=1),
           Bytes("read grad_out, y, channel, spatial; write grad_y, grad_channel, grad_spatial (grad_residual "
                 "is grad_out)", n=3, p=2, q=2)),
    OpCase("apply_gates(c)", "apply_gates", _gates_channel_inputs, (0, 1), eager_gates_channel,
           fused_gates_channel, Bytes("read y and channel, write out", n=2, q=1),
           Bytes("read grad_out, y, channel; write grad_y, grad_channel", n=3, q=2)),
    OpCase("channel_squeeze", "channel_squeeze", _x, (0,), eager_channel_squeeze, fused_channel_squeeze,
           Bytes("read x, write [B, C]", n=1, q=1),
           Bytes("read grad [B, C], write grad_x (x itself is not needed)", n=1, q=1)),
    OpCase("ema_strip_pool", "ema_strip_pool", _x, (0,), eager_ema_strip_pool, fused_ema_strip_pool,
           Bytes("read x, write [B, C, H + W]", n=1, s=1), Bytes("read grad [B, C, H + W], write grad_x", n=1, s=1)),
    OpCase("ema_core", "ema_core", _ema_inputs, (0, 1, 2, 3, 4), eager_ema_core, fused_ema_core,
           Bytes("read x, x2, hw, GroupNorm weight and bias; write out", n=3, s=1, g=2),
           Bytes("read grad_out, x, x2, hw, GroupNorm params; write grad_x, grad_x2, grad_hw, GroupNorm grads",
                 n=5, s=2, g=4)),
)


# -------------------------------------------------------------------------------------------- module cases
@dataclass(frozen=True)
class ModuleCase:
    name: str                   # class name in fused_attn and in the seed modules, or "vgg16_se"
    ops: tuple                  # the fused_attn ops the module uses (informational)
    seed_kwargs: Callable = lambda m: {}   # extra forward kwargs for the seed module
    model: bool = False         # a whole network: its fwd+bwd row is a training step (cross-entropy loss)

    def build(self, namespace, backend: Optional[str] = None, channels: int = 0):
        """Instantiate from `namespace` (the seed module file, or fused_attn / fused_attn.models)."""
        kwargs = {} if backend is None else {"backend": backend}
        if self.model:
            return getattr(namespace, self.name)(num_classes=VGG_CLASSES, **kwargs)
        return getattr(namespace, self.name)(channels, **kwargs)

    def bytes(self, dims: Dims, elem: int, mode: str, n_params: int) -> Optional[int]:
        """MODULE_BYTES; None for a whole network (not meaningful there)."""
        if self.model:
            return None
        n = math.prod(dims)
        fwd = elem * (2 * n + n_params)
        return fwd if mode == "fwd" else fwd + elem * (3 * n + 2 * n_params)


VGG_CLASSES = 10
MODULE_BYTES = ("lower bound e (2N + Np) fwd, + e (3N + 2Np) bwd: x read, out written, Np parameters read; "
                "backward: grad_out and x read, grad_x and the parameter gradients written")

MODULE_CASES = (
    ModuleCase("SEBlock", ("squeeze_excite",)),
    ModuleCase("MultiScaleAttention", ("channel_pool", "squeeze_excite", "apply_gates")),
    ModuleCase("DualAttention", ("dual_attention",)),
    ModuleCase("LiteDualAttention", ("dual_attention",)),
    ModuleCase("EMA", ("ema_strip_pool", "ema_core")),
    # the seed EMAX's own group sampling cannot run (see seed_modules.py): run it with its fixed groups
    ModuleCase("EMAX", ("ema_strip_pool", "ema_core", "squeeze_excite"), lambda m: {"groups": m.groups}),
    ModuleCase("CBAM", ("channel_pool", "squeeze_excite", "apply_gates")),
    ModuleCase("vgg16_se", ("squeeze_excite",), model=True),
)


def _keys(case) -> set:
    return {case.name.lower(), case.name.lower().split("(")[0], getattr(case, "op", case.name).lower()}


def select(cases: Sequence, names: Optional[Sequence[str]], what: str) -> list:
    """The cases matching one of `names` by name, name without its variant, or op (case-insensitive);
    all of them if `names` is None."""
    if names is None:
        return list(cases)
    missing = [n for n in names if not any(n.lower() in _keys(c) for c in cases)]
    if missing:
        known = sorted(set().union(*(_keys(c) for c in cases)))
        raise SystemExit(f"unknown {what} {', '.join(missing)}; choose from: {', '.join(known)}")
    return [c for c in cases if any(n.lower() in _keys(c) for n in names)]


# ------------------------------------------------------------------------------------------------- suites
STAGES = ((64, 56, 56), (128, 28, 28), (256, 14, 14))   # CNN stages (C, H, W): VGG/ResNet at 224 x 224
BEYOND_L2 = (64, 256, 56, 56)                             # 822 MB in float32: many times a GPU's 50 MB L2


def _stages(batches) -> list:
    return [(b, *s) for b in batches for s in STAGES]


@dataclass(frozen=True)
class Suite:
    ops: list               # op row sizes, the first run first
    modules: list           # attention module row sizes
    vgg: Dims               # vgg16_se input
    vgg_modes: tuple = MODES


# On the 2-core CPU a VGG16 forward row costs a torch.compile of a minute; its training step (fwd+bwd) is the row
# that matters, so the default CPU suite keeps only that one.
SUITES = {
    "quick": {"cpu": Suite([(8, 128, 28, 28)], [(8, 128, 28, 28)], (1, 3, 32, 32), ("fwd+bwd",)),
              "cuda": Suite([BEYOND_L2, (32, 128, 28, 28)], [BEYOND_L2], (8, 3, 224, 224))},
    "default": {"cpu": Suite([(8, *STAGES[0]), (8, *STAGES[2])], [(8, 128, 28, 28)], (1, 3, 32, 32), ("fwd+bwd",)),
                "cuda": Suite([BEYOND_L2] + _stages([32]), [BEYOND_L2, (32, 128, 28, 28)], (16, 3, 224, 224))},
    "full": {"cpu": Suite(_stages([8, 32]), _stages([8]), (2, 3, 64, 64)),
             "cuda": Suite([BEYOND_L2] + _stages([32, 128]), [BEYOND_L2] + _stages([32]), (32, 3, 224, 224))},
}


def suite_for(suite: str, device_type: str) -> Suite:
    """A suite's sizes on a device type (CPU sizes for any device but CUDA)."""
    return SUITES[suite]["cuda" if device_type == "cuda" else "cpu"]
