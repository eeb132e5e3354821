"""The sample registry: for every op, its kernel passes and its public function, what to call them with, and
how to check them (as PyTorch's OpInfo). Everything that runs the ops over many inputs reads it: the backend
contract tests (cpu, triton, the emulated and the real cuda), opcheck, gradcheck, `python -m fused_attn.selfcheck`,
tools/sanitize_cuda.py, tools/check_triton_kernels.py and bench/cases.py. Adding an op is one OpInfo here (plus
its PassInfos) and its kernels.

  PASSES[name]   PassInfo: the family module holding the pass, its arguments for a Case (drawn by a Maker; the
                 auxiliary ones, e.g. a saved argmax, computed by the reference), how each output is checked,
                 its kernel variants and per-consumer grid overrides
  OPS[name]      OpInfo: its passes (read from fused_attn.dispatch.OP_PASSES), variants (first: the main one), the
                 public function's inputs and call, which inputs take gradients, the custom ops' argument lists
  GRIDS[name]    the cases each consumer runs: "cpu", "cuda" (GPU and emulator), "interpreter" (Triton on CPU),
                 "sanitizer", "public", "opcheck", "gradcheck", "selfcheck", "aot" / "aot-quick" / "aot-huge"
                 (Triton compile check)

  pass_cases(name, grid) / op_cases(op, grid)   the Cases of a pass / an op on a grid
  pass_args(name, case, device)                 a pass's arguments; None where the variant does not use it
  sample(op, case, device)                      a public-function Sample: inputs, grads, call(backend)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .. import dispatch
from .. import functional as FA
from ..backends.reference import channel_pool as ref_pool
from ..backends.reference import ema_core as ref_core
from ..backends.reference import global_context as ref_gc
from ..backends.reference import simam as ref_simam
from .cases import DTYPES, LAYOUTS, Case, Grid, GridSpec, Maker, Out, expand

F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
OPS_NS = torch.ops.fused_attn
EPS = 1e-5


@dataclass(frozen=True)
class PassInfo:
    name: str
    family: str
    args: Callable[[Maker, str], Optional[tuple]]   # (maker, variant) -> arguments, or None: not for this variant
    outs: tuple                                     # Out per output, in order
    variants: tuple = ("",)                         # the variants that reach different kernel code
    grids: dict = field(default_factory=dict)       # grid name -> GridSpec replacing GRIDS[name] for this pass


@dataclass(frozen=True)
class OpInfo:
    name: str
    variants: tuple                                 # public-function variants, the main one first
    inputs: Callable[[Maker, str], list]            # public inputs (None: an absent optional input)
    call: Callable[[list, str, str], torch.Tensor]  # (inputs, variant, backend) -> output
    custom_op: Callable                             # (inputs, variant, backend) -> (overload, args): forward op
    backward_op: Callable                           # (inputs, variant, backend) -> (overload, args): backward op
    grids: dict = field(default_factory=dict)

    @property
    def passes(self) -> tuple:
        """The kernel passes the op runs (fused_attn.dispatch.OP_PASSES)."""
        return dispatch.OP_PASSES[self.name]


@dataclass
class Sample:
    op: OpInfo
    case: Case
    inputs: list

    @property
    def grads(self) -> tuple:
        """Indices of the inputs that receive gradients: every floating tensor."""
        return tuple(i for i, t in enumerate(self.inputs) if isinstance(t, torch.Tensor) and t.is_floating_point())

    def call(self, backend: str, inputs: Optional[list] = None) -> torch.Tensor:
        return self.op.call(self.inputs if inputs is None else inputs, self.case.variant, backend)

    def run(self, backend: str, grad_out: Optional[torch.Tensor] = None, inputs: Optional[list] = None) -> tuple:
        """(output, gradients of the `grads` inputs, grad_out) on `backend`, through fresh leaves that keep the
        inputs' strides ("sliced", "expanded" stay so; detached views, not copies); grad_out is drawn from a
        normal distribution when not given."""
        inputs = [t.detach().requires_grad_() if i in self.grads else t
                  for i, t in enumerate(inputs or self.inputs)]
        out = self.call(backend, inputs)
        if grad_out is None:
            grad_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, [inputs[i] for i in self.grads], grad_out)
        return out, grads, grad_out

    def float64_inputs(self) -> list:
        """The inputs as float64 copies (the reference's inputs)."""
        return [t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in self.inputs]


# ------------------------------------------------------------------------------------------------- helpers
def _stats(variant: str) -> tuple:
    return tuple(variant.split(","))


def _other_layout(m: Maker) -> str:
    return "nchw" if m.case.layout == "channels_last" else "channels_last"


def ema_groups(c: int) -> int:
    """The registry's default EMA groups for C channels (cg = 1 included): 4 | C, else C (C > 3), else 1."""
    return 4 if c % 4 == 0 else (c if c > 3 else 1)


def _groups(c: int, variant: str) -> int:
    """EMA groups for C channels: the variant's "groups=N", else ema_groups(C)."""
    for part in variant.split(";"):
        if part.startswith("groups="):
            return int(part[7:])
    return ema_groups(c)


def _side_dtype(m: Maker, variant: str) -> torch.dtype:
    """ema_core's hw, x2 dtype: the case's, or "side=bfloat16" (autocast convolutions beside an fp32 x)."""
    for part in variant.split(";"):
        if part.startswith("side="):
            return getattr(torch, part[5:])
    return m.dtype


def _gate_parts(variant: str):
    parts, _, spatial = variant.partition(":")
    return parts, (F32 if spatial == "s32" else None)


def _mlp_inputs(m: Maker, variant: str) -> list:
    """The SE MLP's weights, Linear layout, hidden width max(1, C // 4), scaled by fan-in."""
    c, cr = m.c, max(1, m.c // 4)
    bias = not variant.endswith(",nobias")
    return [m.t(cr, c, scale=c ** -0.5), m.t(cr) if bias else None, m.t(c, cr, scale=cr ** -0.5),
            m.t(c) if bias else None]


def _eca_mode(variant: str) -> tuple:
    """(taps k, circular, gate) of an ECA variant."""
    k, padding, gate = variant.split(",")
    return int(k[1:]), padding == "circular", gate


def _eca_taps(m: Maker, v: str, *lead: int) -> torch.Tensor:
    """The conv's k taps (shape lead + (k,)), scaled by fan-in."""
    k = _eca_mode(v)[0]
    return m.t(*lead, k, scale=k ** -0.5)


def _ese_inputs(m: Maker, v: str, conv: bool) -> list:
    """x, the C -> C layer's weight ([C, C, 1, 1] as a 1x1 conv's when `conv`, else [C, C]) and bias (None:
    "nobias"), scaled by fan-in."""
    c = m.c
    w = m.t(c, c, 1, 1, scale=c ** -0.5) if conv else m.t(c, c, scale=c ** -0.5)
    return [m.x4(), w, None if v.endswith(",nobias") else m.t(c)]


def _act_gate(variant: str) -> tuple:
    act, gate = variant.split(",")[:2]
    return act, gate


# --------------------------------------------------------------------------------------------------- grids
CPU_SHAPES = ((2, 17, 7, 9), (1, 3, 5, 5), (1, 1, 1, 5), (3, 16, 1, 1), (2, 16, 5, 7))
# (2, 130, 9, 15): several column tiles and row chunks of the CUDA two-stage reductions in both layouts (fp32);
# (1, 8, 40, 40): several strip-pool row blocks
CUDA_SHAPES = ((3, 5, 7, 9), (1, 1, 1, 5), (3, 16, 1, 1), (2, 17, 7, 9), (2, 130, 9, 15), (1, 8, 40, 40))
# Triton's interpreter costs ~5 ms a program: tiny shapes (the tests shrink the tiles to cross them)
INTERPRETER_SHAPES = ((2, 6, 5, 3), (1, 1, 1, 1), (2, 3, 1, 5), (1, 4, 4, 7))
SANITIZER_SHAPES = ((2, 5, 7, 9), (1, 1, 1, 5), (2, 130, 9, 15), (1, 8, 40, 40), (1, 300, 3, 5))
# Triton ahead-of-time compile matrix (tools/check_triton_kernels.py). GRIDS["aot"] (full) / "aot-quick": the public
# functions' cases: each op's main variant on AOT_SHAPES in every dtype, NCHW and channels_last; its other variants
# on AOT_VARIANT_SHAPES (+ ema_core's hw, x2 in bf16 / fp16 beside an fp32 x); the main variant "sliced" and
# "mixed" in fp32 / bf16 on AOT_STRIDE_SHAPES. Odd small maps, C = 1 / 3, H = W = 1, and large ones, so the
# block-size heuristics pick different BLOCK sizes, splits and chunks (and integers equal to 1 specialise)
AOT_SHAPES = {"quick": ((2, 5, 7, 3), (4, 64, 56, 56), (1, 3, 1, 1)),
              "full": ((2, 5, 7, 3), (4, 64, 56, 56), (2, 256, 14, 14), (1, 3, 1, 1), (1, 1, 9, 17))}
AOT_VARIANT_SHAPES = {"quick": ((2, 5, 7, 3),), "full": ((2, 5, 7, 3), (2, 256, 14, 14))}
AOT_STRIDE_SHAPES = {"quick": (), "full": ((2, 5, 7, 3), (4, 64, 56, 56))}
AOT_DTYPES = (F32, F16, BF16, F64)
# GRIDS["aot-huge"]: over 2^31 elements (the int64 paths), every pass's main variant on the meta device: a batch
# stride of 2^31; P = H * W = 2^31 (W = 512: the EMA kernels tile whole rows, and a W of 32768 gives [2, 1, 32768]
# tiles that take minutes to compile). The EMA core in groups of 8 / 2 channels (a tile holds a whole group)
AOT_HUGE_SHAPES = ((2, 65536, 256, 128), (1, 2, 4194304, 512))
AOT_HUGE_EMA_GROUPS = (8192, 1)


def _main_variant(variants: tuple) -> tuple:
    return variants[:1]


def _other_variants(variants: tuple) -> tuple:
    return variants[1:]


def _aot_grid(mode: str) -> GridSpec:
    return (Grid(AOT_SHAPES[mode], AOT_DTYPES, variants=_main_variant),
            Grid(AOT_VARIANT_SHAPES[mode], AOT_DTYPES, variants=_other_variants),
            Grid(AOT_STRIDE_SHAPES[mode], (F32, BF16), ("sliced", "mixed"), _main_variant))


def _aot_ema_core_grid(mode: str) -> GridSpec:
    sides = tuple((s, f"side={d}") for s in AOT_VARIANT_SHAPES[mode] for d in ("bfloat16", "float16"))
    return _aot_grid(mode) + (Grid(sides, (F32,)),)


_AOT_EMA_CORE_GRIDS = {"aot": _aot_ema_core_grid("full"), "aot-quick": _aot_ema_core_grid("quick")}
_AOT_HUGE_EMA_CORE = Grid(tuple((s, f"groups={g}") for s, g in zip(AOT_HUGE_SHAPES, AOT_HUGE_EMA_GROUPS)),
                          (F32, BF16))

GRIDS: dict[str, GridSpec] = {
    # "mixed": a pass's 4-D arguments in different layouts (x channels_last, a gradient NCHW, a third sliced)
    "cpu": Grid(CPU_SHAPES, DTYPES, LAYOUTS + ("mixed",)),
    # every shape in float32 and bfloat16, four in float64 and float16, the sliced copy path in float32
    "cuda": (Grid(CUDA_SHAPES, (F32, BF16)), Grid(CUDA_SHAPES[:3] + CUDA_SHAPES[4:5], (F64, F16)),
             Grid(CUDA_SHAPES[:4:3], (F32,), ("sliced",))),
    "interpreter": (Grid(INTERPRETER_SHAPES, (F32, F64)),
                    Grid(INTERPRETER_SHAPES[:1], (F16, BF16), ("channels_last",))),
    "sanitizer": (Grid(SANITIZER_SHAPES, (F32,)), Grid(SANITIZER_SHAPES[:3:2], (BF16,))),
    "public": (Grid(((2, 8, 6, 5),), DTYPES, LAYOUTS),),
    "opcheck": Grid(((2, 8, 5, 6),), (F32,)),
    "gradcheck": Grid(((1, 4, 2, 3),), (F64,), ("nchw", "channels_last")),
    "selfcheck": Grid(((2, 32, 9, 7),), (F32,), ("nchw",)),
    "aot": _aot_grid("full"),
    "aot-quick": _aot_grid("quick"),
    "aot-huge": Grid(AOT_HUGE_SHAPES, (F32, BF16), variants=_main_variant),
}
PARTS = ("csr", "c", "s", "r", "cs", "sr", "cr", "")
STAT_VARIANTS = ("max,mean,std", "mean,max", "std,mean", "max", "mean")   # every channel_pool kernel variant
ACT_VARIANTS = ("silu,sigmoid", "relu,sigmoid,nobias", "hardswish,hardsigmoid")
# ECA: "k<taps>,<zero | circular>,<gate>"; k7 on 1 or 3 channels wraps (circular) or pads past both ends
ECA_VARIANTS = ("k5,zero,sigmoid", "k3,circular,sigmoid", "k1,zero,hardsigmoid", "k7,circular,hardsigmoid")
# ESE: "<gate>[,nobias]" (the main variant, which gradgradcheck runs, smooth: no kinks for finite differences)
ESE_VARIANTS = ("sigmoid", "hardsigmoid,nobias")
# (shape, groups): cg = 1, 4, 5, 8 (several tiles per image); (1, 8, 40, 40) in one group does not fit the CUDA
# tile cache in fp32 / fp64 (the L2 re-read path); cg = 300 > 256 takes the channels_last fallback reduction
EMA_CUDA_CASES = tuple((s, f"groups={g}") for s, g in (
    ((3, 5, 7, 9), 1), ((1, 1, 1, 5), 1), ((3, 16, 1, 1), 4), ((2, 16, 5, 7), 2), ((2, 24, 9, 6), 3),
    ((1, 8, 40, 40), 1), ((1, 300, 3, 5), 1)))


# apply_gates: one odd shape on CPU (the parts are the variants); on CUDA two (one multi-tile), the spatial gate in
# float32 beside any y ("<parts>:s32"), every part subset in float32 / bfloat16, a third of them in float64 / float16
_GATE_SHAPES = ((2, 17, 7, 9), (2, 130, 9, 15))
_GATE_GRIDS = {"cpu": Grid(CPU_SHAPES[:1], DTYPES, LAYOUTS + ("mixed",)),
               "cuda": (Grid(_GATE_SHAPES, (F32, BF16), LAYOUTS, lambda vs: tuple(v + ":s32" for v in vs)),
                        Grid(_GATE_SHAPES, (F64, F16), ("nchw", "channels_last"),
                             lambda vs: tuple(v + ":s32" for v in vs[::3])))}


# hw and x2 in bfloat16 beside a float32 x (autocast's convolutions): grad_hw, grad_x2 in their own dtypes
_EMA_SIDE = Grid((((2, 16, 5, 7), "side=bfloat16"), ((1, 8, 40, 40), "groups=1;side=bfloat16")), (F32,),
                 ("nchw", "channels_last", "mixed"))
_EMA_GRIDS = {"cpu": (GRIDS["cpu"], _EMA_SIDE),
              "cuda": (Grid(EMA_CUDA_CASES, DTYPES), Grid(EMA_CUDA_CASES, (F32,), ("sliced", "mixed")), _EMA_SIDE),
              "interpreter": (GRIDS["interpreter"], Grid((((2, 8, 3, 5), "side=bfloat16"),), (F32,), ("mixed",)))}


# global_context: the CPU grid plus maps spanning several work units / online-softmax tiles (CPU units of 512
# pixels, tiles of 64 / 16; CUDA tiles of 32 / 64 pixels, channel loops over 256 threads)
_GC_SHAPES = ((2, 3, 33, 40), (1, 300, 9, 15))
_GC_GRIDS = {"cpu": (GRIDS["cpu"], Grid(_GC_SHAPES, (F32, F64))),
             "cuda": (GRIDS["cuda"], Grid(_GC_SHAPES, (F32, BF16)))}


# ---------------------------------------------------------------------------------------------- the passes
def _grad_and_x(m: Maker) -> tuple:
    """(grad, x), x drawn first (in the "mixed" layout: x channels_last, grad NCHW)."""
    x = m.x4()
    return m.x4(), x


def _pool_grad_args(m: Maker, v: str) -> tuple:
    x = m.x4()
    out, argmax, moments = ref_pool.channel_pool_reduce(x, _stats(v))
    return m.x4(out.shape, layout="nchw"), x, argmax, moments, _stats(v)


def _gates_args(m: Maker, v: str, grads: bool) -> tuple:
    parts, spatial_dtype = _gate_parts(v)
    y = m.x4()
    ch = m.t(m.b, m.c, kind="positive") if "c" in parts else None
    sp = m.t(m.b, m.h, m.w, kind="positive", dtype=spatial_dtype) if "s" in parts else None
    if grads:
        return m.x4(layout="nchw"), y, ch, sp
    return y, ch, sp, m.x4(layout=_other_layout(m)) if "r" in parts else None


def _core_inputs(m: Maker, v: str) -> tuple:
    """x, hw, x2, gn_weight, gn_bias (x2 drawn second: the "mixed" layout gives x channels_last, x2 NCHW)."""
    side = _side_dtype(m, v)
    cg = m.c // _groups(m.c, v)
    x, x2 = m.x4(), m.x4(dtype=side)
    return x, m.t(m.b, m.c, m.h + m.w, dtype=side), x2, m.t(cg, kind="positive"), m.t(cg, scale=0.5)


def _core_grads_args(m: Maker, v: str) -> tuple:
    x, hw, x2, gw, gb = _core_inputs(m, v)
    g = m.x4()
    groups = _groups(m.c, v)
    _, mean, rstd = ref_core.ema_core_combine(x, hw, x2, gw, gb, groups, EPS)
    return g, x, hw, x2, gw, gb, mean, rstd, groups, EPS


# coord_gate: variants "<gate>[,skip][;side=<dtype>]" (gate none / sigmoid / hardsigmoid; the gates in another
# dtype than x, as autocast's convolutions give them beside an fp32 x)
COORD_VARIANTS = ("none", "sigmoid,skip", "none,skip", "hardsigmoid")
_COORD_SIDE = Grid((((2, 16, 5, 7), "none;side=bfloat16"), ((1, 8, 40, 40), "sigmoid,skip;side=bfloat16"),
                    ((2, 3, 1, 9), "none,skip;side=float16")), (F32,), ("nchw", "channels_last", "mixed"))
_COORD_GRIDS = {"cpu": (GRIDS["cpu"], _COORD_SIDE), "cuda": (GRIDS["cuda"], _COORD_SIDE),
                "interpreter": (GRIDS["interpreter"], Grid((((2, 8, 3, 5), "none;side=bfloat16"),), (F32,),
                                                           ("mixed",)))}


def _coord_mode(v: str) -> tuple:
    """(gate, skip) of a coord_gate variant."""
    head = v.split(";")[0].split(",")
    return head[0], "skip" in head[1:]


def _coord_gates(m: Maker, v: str) -> tuple:
    """a_h [B, C, H], a_w [B, C, W]: gates in (0, 1) for gate "none", logits (scale 2) for the additive gates."""
    gate, _ = _coord_mode(v)
    side = _side_dtype(m, v)
    if gate == "none":
        return m.t(m.b, m.c, m.h, dtype=side, kind="gate"), m.t(m.b, m.c, m.w, dtype=side, kind="gate")
    return m.t(m.b, m.c, m.h, dtype=side, scale=2.0), m.t(m.b, m.c, m.w, dtype=side, scale=2.0)


def _coord_args(m: Maker, v: str, grads: bool) -> tuple:
    x = m.x4()
    g = m.x4() if grads else None
    a_h, a_w = _coord_gates(m, v)
    return ((g,) if grads else ()) + (x, a_h, a_w, *_coord_mode(v))
def _gc_weight(m: Maker) -> torch.Tensor:
    """The 1x1 conv's weight [C], scaled so the logits spread over a few units (a peaked, not a flat softmax)."""
    return m.t(m.c, scale=2.0 * m.c ** -0.5)


def _gc_grads_args(m: Maker, v: str) -> tuple:
    x = m.x4()
    w = _gc_weight(m)
    ctx, lse = ref_gc.global_context_pool_reduce(x, w)
    return m.t(m.b, m.c, dtype="acc"), x, w, ctx, lse


_PASSES = (
    PassInfo("channel_pool_reduce", "channel_pool", lambda m, v: (m.x4(), _stats(v)),
             (Out("out", like=0), Out("argmax", torch.int32, compare="equal"), Out("moments", "acc")), STAT_VARIANTS),
    PassInfo("channel_pool_grad_input", "channel_pool", _pool_grad_args, (Out("grad_x", like=1),), STAT_VARIANTS),
    PassInfo("channel_squeeze_reduce", "squeeze_excite", lambda m, v: (m.x4(),), (Out("mean", "acc"),)),
    PassInfo("channel_squeeze_grad_input", "squeeze_excite", lambda m, v: (m.t(m.b, m.c, dtype="acc"), m.x4()),
             (Out("grad_x", like=1),)),
    PassInfo("channel_scale", "squeeze_excite",
             lambda m, v: (m.x4(), m.t(m.b, m.c, dtype="acc", kind="positive")), (Out("y", like=0),)),
    PassInfo("squeeze_excite_combine", "squeeze_excite", lambda m, v: (m.x4(), *_mlp_inputs(m, v), *_act_gate(v)),
             (Out("y", like=0), Out("pooled", "acc"), Out("z1", "acc"), Out("z2", "acc")), ACT_VARIANTS),
    PassInfo("squeeze_excite_grad_gate", "squeeze_excite", lambda m, v: _grad_and_x(m), (Out("grad_gate", "acc"),)),
    PassInfo("squeeze_excite_grad_input", "squeeze_excite",
             lambda m, v: _grad_and_x(m) + (m.t(m.b, m.c, dtype="acc", kind="positive"), m.t(m.b, m.c, dtype="acc")),
             (Out("grad_x", like=1),)),
    PassInfo("eca_combine", "squeeze_excite", lambda m, v: (m.x4(), _eca_taps(m, v), *_eca_mode(v)[1:]),
             (Out("y", like=0), Out("pooled", "acc"), Out("z", "acc")), ECA_VARIANTS),
    PassInfo("ese_combine", "squeeze_excite", lambda m, v: (*_ese_inputs(m, v, conv=False), v.split(",")[0]),
             (Out("y", like=0), Out("pooled", "acc"), Out("z", "acc")), ESE_VARIANTS),
    PassInfo("apply_gates_combine", "apply_gates", lambda m, v: _gates_args(m, v, grads=False), (Out("out", like=0),),
             PARTS, _GATE_GRIDS),
    PassInfo("apply_gates_grads", "apply_gates", lambda m, v: _gates_args(m, v, grads=True),
             (Out("grad_y", like=1), Out("grad_channel", 2, tol_of=2, contiguous=True),
              Out("grad_spatial", 3, tol_of=3, contiguous=True)), PARTS, _GATE_GRIDS),
    PassInfo("apply_gates_grad_gates", "apply_gates", lambda m, v: _gates_args(m, v, grads=True),
             (Out("grad_channel", 2, tol_of=2, contiguous=True), Out("grad_spatial", 3, tol_of=3, contiguous=True)),
             tuple(p for p in PARTS if {"c", "s"} <= set(p)), _GATE_GRIDS),
    PassInfo("dual_attention_reduce", "dual_attention", lambda m, v: (m.x4(), m.t(m.c, scale=m.c ** -0.5)),
             (Out("pooled", "acc"), Out("logit", "acc"))),
    PassInfo("dual_attention_grad_input", "dual_attention",
             lambda m, v: _grad_and_x(m) + (m.t(m.b, m.c, dtype="acc", kind="positive"),
                                            m.t(m.b, m.h, m.w, dtype="acc", kind="positive"), m.t(m.c),
                                            m.t(m.b, m.h, m.w, dtype="acc"), m.t(m.b, m.c, dtype="acc")),
             (Out("grad_x", like=1), Out("grad_ws", "acc"))),
    PassInfo("ema_strip_pool_reduce", "ema_strip_pool", lambda m, v: (m.x4(),), (Out("pooled", contiguous=True),)),
    PassInfo("ema_strip_pool_grad_input", "ema_strip_pool",
             lambda m, v: (lambda x: (m.t(m.b, m.c, m.h + m.w), x))(m.x4()), (Out("grad_x", like=1),)),
    PassInfo("ema_core_combine", "ema_core", lambda m, v: _core_inputs(m, v) + (_groups(m.c, v), EPS),
             (Out("out", like=0), Out("mean", "acc"), Out("rstd", "acc", compare="ratio")),
             grids={**_EMA_GRIDS, "aot-huge": _AOT_HUGE_EMA_CORE}),
    PassInfo("ema_core_grads", "ema_core", _core_grads_args,
             (Out("grad_x", 1, like=1), Out("grad_hw", 2, tol_of=2),
              Out("grad_x2", 3, like=3, tol_of=3), Out("grad_gn_weight", 4),
              Out("grad_gn_bias", 5)),
             grids={**_EMA_GRIDS, "aot-huge": _AOT_HUGE_EMA_CORE}),
    PassInfo("coord_gate_combine", "coord_gate", lambda m, v: _coord_args(m, v, grads=False),
             (Out("out", like=0),), COORD_VARIANTS, _COORD_GRIDS),
    PassInfo("coord_gate_grads", "coord_gate", lambda m, v: _coord_args(m, v, grads=True),
             (Out("grad_x", like=1), Out("grad_a_h", 2, tol_of=2, contiguous=True),
              Out("grad_a_w", 3, tol_of=3, contiguous=True)), COORD_VARIANTS, _COORD_GRIDS),
)


# SimAM: the official default e_lambda and a larger one (variant "e_lambda=<float>")
SIMAM_VARIANTS = ("e_lambda=0.0001", "e_lambda=0.5")


def _e_lambda(variant: str) -> float:
    return float(variant.partition("=")[2]) if variant.startswith("e_lambda=") else 1e-4


def _simam_grad_args(m: Maker, v: str) -> tuple:
    x = m.x4()
    _, mean, k = ref_simam.simam_gate(x, _e_lambda(v))
    return m.x4(), x, mean, k


# CUDA: + planes over the kernels' 40 KB shared-memory cache (NCHW fp32 forward and backward: the L2 re-read path)
_SIMAM_GRIDS = {"cuda": (GRIDS["cuda"], Grid(((1, 2, 110, 100),), (F32,), variants=_main_variant))}

_PASSES += (
    PassInfo("simam_gate", "simam", lambda m, v: (m.x4(), _e_lambda(v)),
             (Out("out", like=0), Out("mean", "acc"), Out("k", "acc")), SIMAM_VARIANTS, _SIMAM_GRIDS),
    PassInfo("simam_grad_input", "simam", _simam_grad_args, (Out("grad_x", like=1),), SIMAM_VARIANTS,
             _SIMAM_GRIDS),
    PassInfo("global_context_pool_reduce", "global_context", lambda m, v: (m.x4(), _gc_weight(m)),
             (Out("ctx", "acc"), Out("lse", "acc")), grids=_GC_GRIDS),
    PassInfo("global_context_pool_grads", "global_context", _gc_grads_args,
             (Out("grad_x", like=1), Out("grad_weight", "acc")), grids=_GC_GRIDS),
)
PASSES: dict[str, PassInfo] = {p.name: p for p in _PASSES}


# ------------------------------------------------------------------------------------------------ the ops
def _se_inputs(m: Maker, v: str) -> list:
    return [m.x4(), *_mlp_inputs(m, v)]


def _dual_inputs(m: Maker, v: str) -> list:
    bias = not v.endswith(",nobias")
    return [m.x4(), *_mlp_inputs(m, v), m.t(1, m.c, 1, 1, scale=m.c ** -0.5), m.t(1) if bias else None]


def _core_op_inputs(m: Maker, v: str) -> list:
    return list(_core_inputs(m, v))


def _grad_like(t: torch.Tensor) -> torch.Tensor:
    return torch.randn_like(t, memory_format=torch.contiguous_format)


def _pool_backward(ins, v, be):
    out, argmax, moments = OPS_NS.channel_pool(ins[0], v, be)
    return OPS_NS.channel_pool_backward, (_grad_like(out), ins[0].detach(), argmax, moments, v, be)


def _se_backward(ins, v, be):
    x, w1, b1, w2, b2 = ins
    y, pooled, z1, z2 = OPS_NS.squeeze_excite(x, w1, b1, w2, b2, *_act_gate(v), be)
    return OPS_NS.squeeze_excite_backward, (_grad_like(y), x.detach(), w1, b1, w2, b2, pooled, z1, z2,
                                            *_act_gate(v), be)


def _eca_backward(ins, v, be):
    x, w = ins[0], ins[1].reshape(-1)
    y, pooled, z = OPS_NS.eca(x, w, *_eca_mode(v)[1:], be)
    return OPS_NS.eca_backward, (_grad_like(y), x.detach(), w.detach(), pooled, z, *_eca_mode(v)[1:], be)


def _ese_backward(ins, v, be):
    x, w, b = ins[0], ins[1].reshape(ins[1].shape[:2]), ins[2]
    y, pooled, z = OPS_NS.ese(x, w, b, v.split(",")[0], be)
    return OPS_NS.ese_backward, (_grad_like(y), x.detach(), w.detach(), b, pooled, z, v.split(",")[0], be)


def _dual_op_args(ins, v, be) -> tuple:
    x, w1, b1, w2, b2, ws, bs = ins
    return x, w1, b1, w2, b2, ws.reshape(-1), bs, *_act_gate(v), be


def _dual_backward(ins, v, be):
    args = _dual_op_args(ins, v, be)
    out, pooled, z1, z2, zs = OPS_NS.dual_attention(*args)
    return OPS_NS.dual_attention_backward, (_grad_like(out), ins[0].detach(), *args[1:7], pooled, z1, z2, zs,
                                            *args[7:])


def _core_backward(ins, v, be):
    x, hw, x2, gw, gb = ins
    groups = _core_groups(ins, v)
    out, mean, rstd = OPS_NS.ema_core(x, hw, x2, gw, gb, groups, EPS, be)
    return OPS_NS.ema_core_backward, (_grad_like(out), x.detach(), hw.detach(), x2.detach(), gw, gb, mean, rstd,
                                      groups, EPS, be)


def _gc_inputs(m: Maker, v: str) -> list:
    """x, the conv_attn weight [1, C, 1, 1] and bias [1] (None: "nobias")."""
    return [m.x4(), _gc_weight(m).reshape(1, m.c, 1, 1), None if v == "nobias" else m.t(1)]


def _gc_op_args(ins, be) -> tuple:
    x, w, b = ins
    return x, w.reshape(-1), b, be


def _gc_backward(ins, v, be):
    args = _gc_op_args(ins, be)
    ctx, lse = OPS_NS.global_context_pool(*args)
    return OPS_NS.global_context_pool_backward, (_grad_like(ctx), ins[0].detach(), *args[1:3], ctx, lse, be)


def _core_groups(ins, v) -> int:
    return _groups(ins[0].shape[1], v)


_OPS = (
    OpInfo("channel_pool", STAT_VARIANTS + ("std", "std,max", "mean,std"), lambda m, v: [m.x4()],
           lambda ins, v, be: FA.channel_pool(ins[0], _stats(v), backend=be),
           lambda ins, v, be: (OPS_NS.channel_pool, (ins[0], v, be)), _pool_backward),
    OpInfo("channel_squeeze", ("",),
           lambda m, v: [m.x4()], lambda ins, v, be: FA.channel_squeeze(ins[0], backend=be),
           lambda ins, v, be: (OPS_NS.channel_squeeze, (ins[0], be)),
           lambda ins, v, be: (OPS_NS.channel_squeeze_backward,
                               (torch.randn(ins[0].shape[:2], dtype=ins[0].dtype, device=ins[0].device),
                                ins[0].detach(), be))),
    OpInfo("squeeze_excite", ACT_VARIANTS, _se_inputs,
           lambda ins, v, be: FA.squeeze_excite(*ins, *_act_gate(v), backend=be),
           lambda ins, v, be: (OPS_NS.squeeze_excite, (*ins, *_act_gate(v), be)), _se_backward),
    OpInfo("eca", ECA_VARIANTS, lambda m, v: [m.x4(), _eca_taps(m, v, 1, 1)],
           lambda ins, v, be: FA.eca(*ins, *_eca_mode(v)[1:], backend=be),
           lambda ins, v, be: (OPS_NS.eca, (ins[0], ins[1].reshape(-1), *_eca_mode(v)[1:], be)), _eca_backward),
    OpInfo("ese", ESE_VARIANTS, lambda m, v: _ese_inputs(m, v, conv=True),
           lambda ins, v, be: FA.ese(*ins, v.split(",")[0], backend=be),
           lambda ins, v, be: (OPS_NS.ese, (ins[0], ins[1].reshape(ins[1].shape[:2]), ins[2], v.split(",")[0], be)),
           _ese_backward),
    OpInfo("apply_gates", PARTS,
           lambda m, v: list(_gates_args(m, v, grads=False)),
           lambda ins, v, be: FA.apply_gates(*ins, backend=be),
           lambda ins, v, be: (OPS_NS.apply_gates, (*ins, be)),
           lambda ins, v, be: (OPS_NS.apply_gates_backward, (_grad_like(ins[0]), ins[0].detach(), ins[1], ins[2], be))),
    OpInfo("dual_attention", ACT_VARIANTS, _dual_inputs,
           lambda ins, v, be: FA.dual_attention(*ins, *_act_gate(v), backend=be),
           lambda ins, v, be: (OPS_NS.dual_attention, _dual_op_args(ins, v, be)), _dual_backward),
    OpInfo("ema_strip_pool", ("",),
           lambda m, v: [m.x4()], lambda ins, v, be: FA.ema_strip_pool(ins[0], backend=be),
           lambda ins, v, be: (OPS_NS.ema_strip_pool, (ins[0], be)),
           lambda ins, v, be: (OPS_NS.ema_strip_pool_backward,
                               (torch.randn(*ins[0].shape[:2], sum(ins[0].shape[2:]), dtype=ins[0].dtype,
                                            device=ins[0].device), ins[0].detach(), be))),
    OpInfo("ema_core", ("",), _core_op_inputs,
           lambda ins, v, be: FA.ema_core(*ins, _core_groups(ins, v), EPS, backend=be),
           lambda ins, v, be: (OPS_NS.ema_core, (*ins, _core_groups(ins, v), EPS, be)), _core_backward,
           grids=_AOT_EMA_CORE_GRIDS),
    OpInfo("coord_gate", COORD_VARIANTS, lambda m, v: list(_coord_args(m, v, grads=False)[:3]),
           lambda ins, v, be: FA.coord_gate(*ins, *_coord_mode(v), backend=be),
           lambda ins, v, be: (OPS_NS.coord_gate, (*ins, *_coord_mode(v), be)),
           lambda ins, v, be: (OPS_NS.coord_gate_backward, (_grad_like(ins[0]), ins[0].detach(), ins[1].detach(),
                                                            ins[2].detach(), *_coord_mode(v), be))),
)


def _simam_backward(ins, v, be):
    out, mean, k = OPS_NS.simam(ins[0], _e_lambda(v), be)
    return OPS_NS.simam_backward, (_grad_like(out), ins[0].detach(), mean, k, _e_lambda(v), be)


_OPS += (
    OpInfo("simam", SIMAM_VARIANTS, lambda m, v: [m.x4()],
           lambda ins, v, be: FA.simam(ins[0], _e_lambda(v), backend=be),
           lambda ins, v, be: (OPS_NS.simam, (ins[0], _e_lambda(v), be)), _simam_backward),
    OpInfo("global_context_pool", ("", "nobias"), _gc_inputs,
           lambda ins, v, be: FA.global_context_pool(*ins, backend=be),
           lambda ins, v, be: (OPS_NS.global_context_pool, _gc_op_args(ins, be)), _gc_backward),
)
OPS: dict[str, OpInfo] = {o.name: o for o in _OPS}


# --------------------------------------------------------------------------------------------- the queries
def pass_cases(name: str, grid: str) -> list[Case]:
    info = PASSES[name]
    return expand(info.grids.get(grid, GRIDS[grid]), info.variants)


def op_cases(op: str, grid: str, variants: Optional[tuple] = None) -> list[Case]:
    info = OPS[op]
    return expand(info.grids.get(grid, GRIDS[grid]), variants or info.variants)


def pass_args(name: str, case: Case, device="cpu") -> Optional[tuple]:
    return PASSES[name].args(Maker(case, device), case.variant)


def sample(op: str, case: Case, device="cpu") -> Sample:
    info = OPS[op]
    return Sample(info, case, info.inputs(Maker(case, device), case.variant))


def unique_passes() -> list[str]:
    """Every pass once, in registry order."""
    return list(PASSES)
