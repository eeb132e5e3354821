"""What the benchmark measures: op rows and module rows.

An op row runs one fused_attn op (or op variant) at one of the bench's sizes. Its inputs and its fused call come
from the sample registry (fused_attn/testing/registry.py: OPS[op].inputs drawn by a Maker for a Case of the
row's shape, dtype and variant, every 4-D tensor dense NCHW; OPS[op].call(inputs, variant, backend)). Its
providers are the op written out in plain torch ops (`eager`, bench/baselines/torch_ops.py, named per row),
`torch.compile` of that (`compile`), and the fused_attn function through its custom op on each backend that
serves it (`reference` is the pure-PyTorch oracle behind the op, also the float64 reference).

A module row times a whole attention module against the module it replaces (bench/baselines/__init__.py).

Minimal bytes (the figure behind GB/s). x is [B, C, H, W], e = bytes per element of the row's dtype,
N = B*C*H*W, P = B*H*W, Q = B*C, S = B*C*(H+W), k = number of pooled stats, Cr = the SE hidden width (the
registry's, C // 4), cg = C / groups:
  forward   every input read once + every output written once
  backward  grad_out read once + the forward inputs the backward needs read once + every gradient written
            once (a gradient that is grad_out itself, like a residual's, aliases it and moves nothing)
  fwd+bwd   forward + backward
The per-op formulas are the `Bytes` of each OpCase below (`Bytes.formula()` writes them out, as the JSON and
Markdown do); docs/bench.md lists them.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from fused_attn.testing import registry
from fused_attn.testing.cases import Case, Maker

from . import baselines
from .baselines import torch_ops

Dims = tuple  # (B, C, H, W)
MODES = ("fwd", "fwd+bwd")
# on request only (--mode): forward, then `out.sum().backward()`, whose gradient is a stride-0 broadcast scalar
SUM_MODE = "fwd+bwd(sum)"
ALL_MODES = MODES + (SUM_MODE,)
VGG_CLASSES = baselines.VGG_CLASSES
SE_VARIANT = "relu,sigmoid,nobias"   # SEBlock's gate: ReLU, sigmoid, no biases


def ema_groups(c: int) -> int:
    """EMA's groups (factor 32 by default), reduced for small C so that every group has >= 2 channels."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if c % g == 0 and (c // g >= 2 or g == 1))


@functools.lru_cache(maxsize=None)
def se_hidden(c: int) -> int:
    """The squeeze-excite hidden width of the registry's inputs (w1 is [Cr, C])."""
    meta = registry.OPS["squeeze_excite"].inputs(Maker(Case((1, c, 1, 1)), "meta"), SE_VARIANT)
    return meta[1].shape[0]


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
        symbols = ("N", "P", "Q", "S", "cg", "CrC")
        terms = [f"{'' if k == 1 else k}{sym}" for k, sym in zip(self._coefficients(), symbols) if k]
        return f"e ({' + '.join(terms)}): {self.what}"


@dataclass(frozen=True)
class OpCase:
    name: str           # row label
    op: str             # the registry's op (OPS[op]) and the fused_attn op whose backends serve the row
    variant: str        # the registry variant; "{groups}" stands for ema_groups(C)
    baseline: str       # the eager provider (bench/baselines/torch_ops.py OPS[op]) as the row names it
    fwd_bytes: Bytes    # minimal bytes of the forward
    bwd_bytes: Bytes    # minimal bytes of the backward

    def variant_for(self, dims: Dims) -> str:
        return self.variant.format(groups=ema_groups(dims[1]))

    def sample(self, dims: Dims, dtype: torch.dtype, device) -> registry.Sample:
        return registry.sample(self.op, Case(tuple(dims), dtype, "nchw", self.variant_for(dims)), device)

    def make(self, dims: Dims, dtype: torch.dtype, device) -> list:
        """The registry's inputs for this size, the absent optional ones (None) left out, 4-D ones dense NCHW."""
        inputs = self.sample(dims, dtype, device).inputs
        return [t.contiguous() if t.dim() == 4 else t for t in inputs if t is not None]

    @property
    def grads(self) -> tuple:
        """Indices of the `make` inputs that receive gradients: all of them (every one is a floating tensor)."""
        return tuple(range(len(_present(self.op, self.variant_for(_PROBE)))))

    def bind(self, dims: Dims) -> tuple:
        """(eager(*args), fused(*args, backend)) for `make` inputs of this size."""
        variant, probe = self.variant_for(dims), self.variant_for(_PROBE)
        present, arity = _present(self.op, probe), len(_arity(self.op, probe))
        eager_fn, info = torch_ops.OPS[self.op], registry.OPS[self.op]

        def expand(args) -> list:
            full = [None] * arity
            for i, a in zip(present, args):
                full[i] = a
            return full

        def eager(*args):
            return eager_fn(expand(args), variant)

        def fused(*args, backend):
            return info.call(expand(args), variant, backend)
        return eager, fused

    def eager(self, *args) -> Tensor:
        return self.bind(tuple(args[0].shape))[0](*args)

    def fused(self, *args, backend: str) -> Tensor:
        return self.bind(tuple(args[0].shape))[1](*args, backend=backend)

    def bytes(self, dims: Dims, elem: int, mode: str) -> int:
        fwd = self.fwd_bytes(dims, elem)
        return fwd if mode == "fwd" else fwd + self.bwd_bytes(dims, elem)


_PROBE = (1, 64, 2, 3)   # which inputs a variant has does not depend on the size


@functools.lru_cache(maxsize=None)
def _arity(op: str, variant: str) -> tuple:
    """The registry's public inputs of (op, variant): True where present, False where None."""
    inputs = registry.OPS[op].inputs(Maker(Case(_PROBE, variant=variant), "meta"), variant)
    return tuple(t is not None for t in inputs)


@functools.lru_cache(maxsize=None)
def _present(op: str, variant: str) -> tuple:
    return tuple(i for i, p in enumerate(_arity(op, variant)) if p)


def _pool_bytes(k: int) -> tuple:
    return (Bytes(f"read x, write {k} planes", n=1, p=k),
            Bytes("read grad_out and x, write grad_x", n=2, p=k))


OP_CASES = (
    OpCase("channel_pool(max,mean,std)", "channel_pool", "max,mean,std",
           "torch.cat([x.max(1)[0], x.mean(1), x.std(1)], 1)", *_pool_bytes(3)),
    OpCase("channel_pool(max,mean)", "channel_pool", "max,mean", "torch.cat([x.max(1)[0], x.mean(1)], 1)",
           *_pool_bytes(2)),
    OpCase("squeeze_excite", "squeeze_excite", SE_VARIANT, "x * sigmoid(conv1x1(relu(conv1x1(avgpool x))))",
           Bytes("read x, w1, w2, write y", n=2, w=2),
           Bytes("read grad_y, x, w1, w2; write grad_x and the weights' gradients", n=3, w=4)),
    OpCase("eca", "eca", "k5,zero,sigmoid", "x * sigmoid(conv1d_k(avgpool x)) (timm EcaModule)",
           Bytes("read x, write y", n=2), Bytes("read grad_y, x; write grad_x", n=3)),
    OpCase("ese", "ese", "hardsigmoid", "x * hardsigmoid(conv1x1 C->C (avgpool x)) (timm EffectiveSEModule)",
           Bytes("read x, write y", n=2), Bytes("read grad_y, x; write grad_x", n=3)),
    OpCase("dual_attention", "dual_attention", SE_VARIANT, "x * se_gate(x) * sigmoid(conv1x1 C->1 (x))",
           Bytes("read x, w1, w2, write out", n=2, w=2),
           Bytes("read grad_out, x, w1, w2; write grad_x and the weights' gradients", n=3, w=4)),
    OpCase("apply_gates(c,s,res)", "apply_gates", "csr", "r + y * c[:, :, None, None] * s[:, None]",
           Bytes("read y, channel, spatial, residual, write out", n=3, p=1, q=1),
           Bytes("read grad_out, y, channel, spatial; write grad_y, grad_channel, grad_spatial (grad_residual "
                 "is grad_out)", n=3, p=2, q=2)),
    OpCase("apply_gates(c)", "apply_gates", "c", "y * c[:, :, None, None]",
           Bytes("read y and channel, write out", n=2, q=1),
           Bytes("read grad_out, y, channel; write grad_y, grad_channel", n=3, q=2)),
    OpCase("channel_squeeze", "channel_squeeze", "", "F.adaptive_avg_pool2d(x, 1).flatten(1)",
           Bytes("read x, write [B, C]", n=1, q=1),
           Bytes("read grad [B, C], write grad_x (x itself is not needed)", n=1, q=1)),
    OpCase("ema_strip_pool", "ema_strip_pool", "", "torch.cat([pool_h(x), pool_w(x).permute(0,1,3,2)], 2)",
           Bytes("read x, write [B, C, H + W]", n=1, s=1), Bytes("read grad [B, C, H + W], write grad_x", n=1, s=1)),
    OpCase("ema_core", "ema_core", "groups={groups}", "official EMA forward between its convs and the output",
           Bytes("read x, x2, hw, GroupNorm weight and bias; write out", n=3, s=1, g=2),
           Bytes("read grad_out, x, x2, hw, GroupNorm params; write grad_x, grad_x2, grad_hw, GroupNorm grads",
                 n=5, s=2, g=4)),
)


# -------------------------------------------------------------------------------------------- module cases
@dataclass(frozen=True)
class ModuleCase:
    name: str                   # class name in fused_attn (fused_attn.models for a network), or "vgg16_se"
    ops: tuple                  # the fused_attn ops the module uses (informational)
    model: bool = False         # a whole network: its fwd+bwd row is a training step (cross-entropy loss)

    def baseline(self) -> baselines.Baseline:
        """The eager module it is timed against (bench/baselines); baselines.Missing if none is available."""
        return baselines.for_module(self.name)

    def build(self, namespace, backend: str, channels: int = 0, **kwargs):
        """fused_attn's module from `namespace` (fused_attn or fused_attn.models) on `backend`."""
        if self.model:
            return getattr(namespace, self.name)(num_classes=VGG_CLASSES, backend=backend)
        return getattr(namespace, self.name)(channels, backend=backend, **kwargs)

    def bytes(self, dims: Dims, elem: int, mode: str, n_params: int) -> Optional[int]:
        """MODULE_BYTES; None for a whole network (not meaningful there)."""
        if self.model:
            return None
        n = math.prod(dims)
        fwd = elem * (2 * n + n_params)
        return fwd if mode == "fwd" else fwd + elem * (3 * n + 2 * n_params)


MODULE_BYTES = ("lower bound e (2N + Np) fwd, + e (3N + 2Np) bwd: x read, out written, Np parameters read; "
                "backward: grad_out and x read, grad_x and the parameter gradients written")

MODULE_CASES = (
    ModuleCase("SEBlock", ("squeeze_excite",)),
    ModuleCase("MultiScaleAttention", ("channel_pool", "squeeze_excite", "apply_gates")),
    ModuleCase("DualAttention", ("dual_attention",)),
    ModuleCase("LiteDualAttention", ("dual_attention",)),
    ModuleCase("EMA", ("ema_strip_pool", "ema_core")),
    ModuleCase("EMAX", ("ema_strip_pool", "ema_core", "squeeze_excite")),
    ModuleCase("CBAM", ("channel_squeeze", "channel_pool", "apply_gates")),
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
