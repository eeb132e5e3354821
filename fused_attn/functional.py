"""Public functions: validate, pick the request, call the op (or the reference while exporting to ONNX).

Every function takes `backend=None` ("auto", "reference", "cpu", "cuda", "triton"; None = the current
setting, see fused_attn.use_backend). Shapes: x, y, residual [B, C, H, W]; channel gate [B, C] (or
[B, C, 1, 1]); spatial gate [B, H, W] (or [B, 1, H, W]). Floating dtypes only; all tensors of one call on
one device (apply_gates promotes mixed dtypes like eager PyTorch). Outputs keep the input's memory format
(channels_last in, channels_last out).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _eca, _mlp, dispatch, ops
from ._layout import acc_dtype, memory_format
from .backends.reference import apply_gates as _ref_gates
from .backends.reference import channel_pool as _ref_pool
from .backends.reference import coord_gate as _ref_coord
from .backends.reference import dual_attention as _ref_dual
from .backends.reference import ema_core as _ref_ema_core
from .backends.reference import ema_strip_pool as _ref_strip
from .backends.reference import global_context as _ref_gc
from .backends.reference import simam as _ref_simam
from .backends.reference import squeeze_excite as _ref_se
from .ops import _eager
from .ops.channel_pool import STATS

__all__ = ["channel_pool", "channel_squeeze", "channel_gate", "squeeze_excite", "eca", "ese", "apply_gates",
           "dual_attention",
           "ema_strip_pool", "ema_core", "ema", "simam", "coord_gate",
           "global_context_pool"]

_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# torch.amp.is_autocast_available per device type, read once here: dynamo in torch 2.11 cannot trace it (a
# graph break under torch.compile(fullgraph=True)), while this dict lookup and is_autocast_enabled trace anywhere.
_AUTOCAST_AVAILABLE = {t: torch.amp.is_autocast_available(t) for t in ("cpu", "cuda", "xpu", "mps", "hpu", "meta")}


# ------------------------------------------------------------------------------------------------ validation
def _check_tensor(name: str, t, ndim: Optional[int] = None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOATING:
        raise TypeError(f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")


def _check_devices(**tensors) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listed}")


def _check_shape(name: str, t: Tensor, expected: tuple) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def _check_x(x) -> None:
    _check_tensor("x", x, 4)
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one channel, got shape {tuple(x.shape)}")


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def _traces_math(request: str) -> bool:
    """Run the op's pure-PyTorch reference instead of the fused op: ONNX export (a custom op does not export), or
    torch.compile with request auto under the "inline" policy (dispatch.set_compile_policy: Inductor then fuses
    the math with the neighbouring layers, as it fuses the block the twin replaced)."""
    return _exporting() or dispatch.inlines_under_compile(request)


# ---------------------------------------------------------------------------------------------- channel_pool
def channel_pool(x: Tensor, stats: Union[str, Sequence[str]] = STATS, *, backend: Optional[str] = None) -> Tensor:
    """Pool over channels: out[:, k] = stats[k](x[:, c]) for stats in max, mean, std (unbiased).

    x [B, C, H, W] -> [B, len(stats), H, W]. The gradient of max goes to the first maximal channel; the
    gradient of std is zero where std is zero (constant channels); C = 1 gives NaN std, like torch.std.
    """
    _check_x(x)
    names = (stats,) if isinstance(stats, str) else tuple(stats)
    if not names or any(s not in STATS for s in names) or len(set(names)) != len(names):
        raise ValueError(f"stats must be a non-empty ordered subset of {STATS} without repeats, got {stats!r}")
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_pool.channel_pool_reduce(x, names)[0]
    return _eager.call(ops.channel_pool.channel_pool, x, ",".join(names), request)[0]


# ------------------------------------------------------------------------------------------- squeeze-excite
def channel_squeeze(x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """Squeeze: mean over H and W. x [B, C, H, W] -> [B, C]."""
    _check_x(x)
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_se.channel_squeeze_reduce(x).to(x.dtype)
    return _eager.call(ops.squeeze_excite.channel_squeeze, x, request)


def _mlp_weights(x: Tensor, w1: Tensor, b1, w2: Tensor, b2, act: str, gate: str):
    """Validate the SE MLP's weights; Linear [out, in] or 1x1-conv [out, in, 1, 1] weights, returned 2-D."""
    if act not in _mlp.ACTIVATIONS:
        raise ValueError(f"act must be one of {_mlp.ACTIVATIONS}, got {act!r}")
    if gate not in _mlp.GATES:
        raise ValueError(f"gate must be one of {_mlp.GATES}, got {gate!r}")
    c = x.shape[1]
    for name, w in (("w1", w1), ("w2", w2)):
        _check_tensor(name, w)
        if w.dim() == 4 and w.shape[2:] != (1, 1) or w.dim() not in (2, 4):
            raise ValueError(f"{name} must be a Linear weight [out, in] or a 1x1 conv weight [out, in, 1, 1], "
                             f"got shape {tuple(w.shape)}")
    w1, w2 = w1.flatten(1), w2.flatten(1)
    if w1.shape[1] != c:
        raise ValueError(f"w1 must have shape [Cr, {c}] (x has {c} channels), got {tuple(w1.shape)}")
    _check_shape("w2", w2, (c, w1.shape[0]))
    if b1 is not None:
        _check_tensor("b1", b1, 1)
        _check_shape("b1", b1, (w1.shape[0],))
    if b2 is not None:
        _check_tensor("b2", b2, 1)
        _check_shape("b2", b2, (c,))
    _check_devices(x=x, w1=w1, b1=b1, w2=w2, b2=b2)
    return w1, w2


def _autocast_enabled(device_type: str) -> bool:
    available = _AUTOCAST_AVAILABLE.get(device_type)
    if available is None:  # another backend's device type: asked at run time
        available = torch.amp.is_autocast_available(device_type)
    return available and torch.is_autocast_enabled(device_type)


def channel_gate(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                 act: str = "relu", gate: str = "sigmoid", *, backend: Optional[str] = None,
                 pooled: Optional[Tensor] = None) -> Tensor:
    """Channel attention weights s = gate(w2 act(w1 mean_hw(x) + b1) + b2) -> [B, C] in x's dtype.

    Under autocast the MLP's matmuls autocast like eager's Linear / 1x1 conv and s has the autocast dtype
    (fp16 / bf16), as the seeds' `channel_attention(x)` has; float64 x stays float64 (autocast leaves it).
    pooled: mean_hw(x) [B, C] where the caller already has it (EMAX takes it from the EMA strip means); x is
    then not read, only its shape, dtype and device are used.
    """
    _check_x(x)
    w1, w2 = _mlp_weights(x, w1, b1, w2, b2, act, gate)
    if pooled is None:
        pooled = channel_squeeze(x, backend=backend)
    else:
        _check_tensor("pooled", pooled, 2)
        _check_shape("pooled", pooled, tuple(x.shape[:2]))
        _check_devices(x=x, pooled=pooled)
    pooled = pooled.to(acc_dtype(x.dtype))
    out_dtype = x.dtype
    if x.dtype != torch.float64 and _autocast_enabled(x.device.type):
        out_dtype = torch.get_autocast_dtype(x.device.type)
    return _mlp.forward(pooled, w1, b1, w2, b2, act, gate)[2].to(out_dtype)


def squeeze_excite(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                   act: str = "relu", gate: str = "sigmoid", *, backend: Optional[str] = None) -> Tensor:
    """Squeeze-and-excitation: y = x * gate(w2 act(w1 mean_hw(x) + b1) + b2)[:, :, None, None].

    w1 [Cr, C], w2 [C, Cr] (Linear weights, or 1x1 conv weights [Cr, C, 1, 1]); b1, b2 optional.
    act: relu | hardswish | silu; gate: sigmoid | hardsigmoid. The MLP runs in the accumulation dtype.
    """
    _check_x(x)
    w1, w2 = _mlp_weights(x, w1, b1, w2, b2, act, gate)
    request = dispatch.requested(backend)
    if _traces_math(request):
        s = _mlp.forward(_ref_se.channel_squeeze_reduce(x), w1, b1, w2, b2, act, gate)[2]
        return _ref_se.channel_scale(x, s)
    return _eager.call(ops.squeeze_excite.squeeze_excite, x, w1, b1, w2, b2, act, gate, request)[0]


def eca(x: Tensor, weight: Tensor, circular: bool = False, gate: str = "sigmoid", *,
        backend: Optional[str] = None) -> Tensor:
    """Efficient channel attention: y = x * gate(z)[:, :, None, None], z[b, c] = sum_j w[j] p[b, c + j - pad].

    p = mean_hw(x) [B, C]; w: the k taps of the conv across the channels, a Conv1d(1, 1, k, bias=False) weight
    [1, 1, k] or [k], k odd, pad = (k - 1) // 2; a tap outside [0, C) reads 0, or wraps around modulo C when
    `circular` (timm's CecaModule). gate: sigmoid | hardsigmoid. The conv runs in the accumulation dtype.
    """
    _check_x(x)
    _check_tensor("weight", weight)
    if weight.dim() not in (1, 3) or weight.dim() == 3 and weight.shape[:2] != (1, 1):
        raise ValueError(f"weight must be a Conv1d(1, 1, k) weight [1, 1, k] or the taps [k], got shape "
                         f"{tuple(weight.shape)}")
    if weight.numel() % 2 != 1:
        raise ValueError(f"weight must have an odd number of taps (the conv keeps C channels), got {weight.numel()}")
    if not isinstance(circular, bool):
        raise TypeError(f"circular must be a bool, got {type(circular).__name__}")
    if gate not in _mlp.GATES:
        raise ValueError(f"gate must be one of {_mlp.GATES}, got {gate!r}")
    _check_devices(x=x, weight=weight)
    taps = weight.reshape(-1)
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_se.channel_scale(x, _eca.forward_gate(_ref_se.channel_squeeze_reduce(x), taps, circular, gate)[1])
    return _eager.call(ops.squeeze_excite.eca, x, taps, circular, gate, request)[0]


def ese(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, gate: str = "hardsigmoid", *,
        backend: Optional[str] = None) -> Tensor:
    """Effective squeeze-excite (ESE: timm EffectiveSEModule, hgnet EseModule, ultralytics ChannelAttention):
    y = x * gate(weight mean_hw(x) + bias)[:, :, None, None], one C -> C layer.

    weight: a 1x1 conv weight [C, C, 1, 1] or a Linear weight [C, C]; bias [C] or None; gate: sigmoid |
    hardsigmoid (timm's default for ESE). The layer runs in the accumulation dtype.
    """
    _check_x(x)
    _check_tensor("weight", weight)
    c = x.shape[1]
    if weight.dim() == 4 and weight.shape[2:] != (1, 1) or weight.dim() not in (2, 4):
        raise ValueError(f"weight must be a 1x1 conv weight [C, C, 1, 1] or a Linear weight [C, C], got shape "
                         f"{tuple(weight.shape)}")
    weight = weight.flatten(1)
    _check_shape("weight", weight, (c, c))
    if bias is not None:
        _check_tensor("bias", bias, 1)
        _check_shape("bias", bias, (c,))
    if gate not in _mlp.GATES:
        raise ValueError(f"gate must be one of {_mlp.GATES}, got {gate!r}")
    _check_devices(x=x, weight=weight, bias=bias)
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_se.channel_scale(x, _mlp.single_forward(_ref_se.channel_squeeze_reduce(x), weight, bias, gate)[1])
    return _eager.call(ops.squeeze_excite.ese, x, weight, bias, gate, request)[0]


# ---------------------------------------------------------------------------------------------- apply_gates
def apply_gates(y: Tensor, channel: Optional[Tensor] = None, spatial: Optional[Tensor] = None,
                residual: Optional[Tensor] = None, *, backend: Optional[str] = None) -> Tensor:
    """out = residual + y * channel[:, :, None, None] * spatial[:, None]; every part optional.

    y [B, C, H, W]; channel [B, C] or [B, C, 1, 1]; spatial [B, H, W] or [B, 1, H, W]; residual like y.
    All on one device; mixed floating dtypes are promoted as eager PyTorch promotes them (the result has the
    widest dtype), so a bf16 branch with an fp32 residual gives fp32 as `residual + y * c * s` would.
    """
    _check_tensor("y", y, 4)
    b, c, h, w = y.shape
    if channel is not None:
        _check_tensor("channel", channel)
        if channel.dim() == 4 and channel.shape[2:] == (1, 1):
            channel = channel.flatten(1)
        _check_shape("channel", channel, (b, c))
    if spatial is not None:
        _check_tensor("spatial", spatial)
        if spatial.dim() == 4 and spatial.shape[1] == 1:
            spatial = spatial.squeeze(1)
        _check_shape("spatial", spatial, (b, h, w))
    if residual is not None:
        _check_tensor("residual", residual)
        _check_shape("residual", residual, (b, c, h, w))
    _check_devices(y=y, channel=channel, spatial=spatial, residual=residual)
    # Mixed dtypes (e.g. a bf16 branch added to an fp32 residual under autocast) promote like eager PyTorch.
    common = y.dtype
    for t in (channel, spatial, residual):
        if t is not None:
            common = torch.promote_types(common, t.dtype)
    y, channel, spatial, residual = (t.to(common) if t is not None else None for t in (y, channel, spatial, residual))
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_gates.apply_gates_combine(y, channel, spatial, residual)
    return _eager.call(ops.apply_gates.apply_gates, y, channel, spatial, residual, request)


# ------------------------------------------------------------------------------------------- dual attention
def dual_attention(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], ws: Tensor,
                   bs: Optional[Tensor], act: str = "relu", gate: str = "sigmoid", *, backend: Optional[str] = None,
                   return_gates: bool = False):
    """Channel and spatial attention of one x, applied together (DualAttention, LiteDualAttention):

        c   = gate(w2 act(w1 mean_hw(x) + b1) + b2)      [B, C]     (as `channel_gate`)
        s   = gate(ws . x[:, :, h, w] + bs)              [B, H, W]  (a 1x1 conv C -> 1, then the gate)
        out = x * c[:, :, None, None] * s[:, None]

    ws: the 1x1 conv's weight [1, C, 1, 1] (or [C]); bs: its bias [1] or None. One fused op: the forward reads x
    twice and writes out once, the backward reads (grad_out, x) twice and writes grad_x once. The gates are
    computed in the accumulation dtype. With return_gates=True returns (out, c, s), the gates detached, in x's
    dtype (for attention recording).
    """
    _check_x(x)
    w1, w2 = _mlp_weights(x, w1, b1, w2, b2, act, gate)
    c = x.shape[1]
    _check_tensor("ws", ws)
    if ws.numel() != c or ws.dim() not in (1, 4) or (ws.dim() == 4 and ws.shape[0] != 1):
        raise ValueError(f"ws must be a 1x1 conv weight [1, {c}, 1, 1] or a vector [{c}], got {tuple(ws.shape)}")
    ws = ws.reshape(c)
    if bs is not None:
        _check_tensor("bs", bs)
        if bs.numel() != 1 or bs.dim() > 1:
            raise ValueError(f"bs must be a conv bias of shape [1], got {tuple(bs.shape)}")
        bs = bs.reshape(1)
    _check_devices(x=x, w1=w1, ws=ws, bs=bs)
    request = dispatch.requested(backend)
    if _traces_math(request):
        pooled, logit = _ref_dual.dual_attention_reduce(x, ws)
        ch = _mlp.forward(pooled, w1, b1, w2, b2, act, gate)[2]
        sp = _mlp.gate(gate, logit + bs.to(logit.dtype) if bs is not None else logit)
        out = _ref_dual.apply_gates_combine(x, ch, sp, None)
    else:
        out, _, _, z2, zs = _eager.call(ops.dual_attention.dual_attention, x, w1, b1, w2, b2, ws, bs, act, gate,
                                        request)
        if return_gates:
            ch, sp = _mlp.gate(gate, z2), _mlp.gate(gate, zs)
    if return_gates:
        return out, ch.detach().to(x.dtype), sp.detach().to(x.dtype)
    return out


# ------------------------------------------------------------------------------------------------------ EMA
def _check_groups(x: Tensor, groups: int) -> int:
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if x.shape[1] % groups:
        raise ValueError(f"x's {x.shape[1]} channels are not divisible by groups={groups}")
    return x.shape[1] // groups


def ema_strip_pool(x: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """Strip means: x [B, C, H, W] -> [B, C, H + W] = cat(mean over W (per row), mean over H (per column))."""
    _check_x(x)
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_strip.ema_strip_pool_reduce(x)
    return _eager.call(ops.ema_strip_pool.ema_strip_pool, x, request)


def ema_core(x: Tensor, hw: Tensor, x2: Tensor, gn_weight: Tensor, gn_bias: Tensor, groups: int,
             eps: float = 1e-5, *, backend: Optional[str] = None) -> Tensor:
    """EMA cross-spatial attention after its two convolutions (math in fused_attn/backends/reference/ema_core.py).

    x [B, C, H, W]; hw [B, C, H + W] = conv1x1 of the strip means (pre-sigmoid); x2 [B, C, H, W] = conv3x3
    of the grouped x; gn_weight, gn_bias [C / groups] (GroupNorm(cg, cg)). -> [B, C, H, W].
    """
    _check_x(x)
    cg = _check_groups(x, groups)
    b, c, h, w = x.shape
    _check_tensor("hw", hw, 3)
    _check_shape("hw", hw, (b, c, h + w))
    _check_tensor("x2", x2, 4)
    _check_shape("x2", x2, tuple(x.shape))
    for name, t in (("gn_weight", gn_weight), ("gn_bias", gn_bias)):
        _check_tensor(name, t, 1)
        _check_shape(name, t, (cg,))
    _check_devices(x=x, hw=hw, x2=x2, gn_weight=gn_weight, gn_bias=gn_bias)
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_ema_core.ema_core_combine(x, hw, x2, gn_weight, gn_bias, groups, float(eps))[0]
    return _eager.call(ops.ema_core.ema_core, x, hw, x2, gn_weight, gn_bias, groups, float(eps), request)[0]


def ema(x: Tensor, conv1x1_weight: Tensor, conv1x1_bias: Optional[Tensor], conv3x3_weight: Tensor,
        conv3x3_bias: Optional[Tensor], gn_weight: Tensor, gn_bias: Tensor, groups: int, eps: float = 1e-5, *,
        backend: Optional[str] = None, strips: Optional[Tensor] = None) -> Tensor:
    """The whole EMA block: strip pooling, conv1x1 of the strips, conv3x3 of the groups (both aten), core.

    Weights as in the official EMA: conv1x1 [cg, cg, 1, 1], conv3x3 [cg, cg, 3, 3], gn [cg], cg = C / groups.
    strips: `ema_strip_pool(x)` [B, C, H + W] where the caller already has it (it does not depend on groups:
    EMAX shares one between its EMA branches and its channel gates).
    """
    _check_x(x)
    cg = _check_groups(x, groups)
    b, c, h, w = x.shape
    if strips is None:
        pooled = ema_strip_pool(x, backend=backend)
    else:
        _check_tensor("strips", strips, 3)
        _check_shape("strips", strips, (b, c, h + w))
        _check_devices(x=x, strips=strips)
        pooled = strips
    hw = F.conv2d(pooled.reshape(b * groups, cg, h + w, 1), conv1x1_weight, conv1x1_bias).reshape(b, c, h + w)
    if memory_format(x) == torch.channels_last:
        # the shared conv3x3 as a grouped conv of x itself: x.reshape(B G, cg, H, W) would copy a channels_last x
        # and give an NCHW x2, which the kernels would then copy to x's layout (and grad_x2 back)
        x2 = F.conv2d(x, conv3x3_weight.repeat(groups, 1, 1, 1),
                      None if conv3x3_bias is None else conv3x3_bias.repeat(groups), padding=1, groups=groups)
    else:
        x2 = F.conv2d(x.reshape(b * groups, cg, h, w), conv3x3_weight, conv3x3_bias, padding=1).reshape(b, c, h, w)
    return ema_core(x, hw, x2, gn_weight, gn_bias, groups, eps, backend=backend)


# ---------------------------------------------------------------------------------------------------- SimAM
def _check_e_lambda(e_lambda) -> float:
    if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)) or not math.isfinite(e_lambda) \
            or e_lambda < 0:
        raise ValueError(f"e_lambda must be a finite float >= 0, got {e_lambda!r}")
    return float(e_lambda)


def simam(x: Tensor, e_lambda: float = 1e-4, *, backend: Optional[str] = None) -> Tensor:
    """SimAM (parameter-free 3-D attention), per (b, c) plane of N = H W pixels, as the official code:

        n = N - 1,  d = (x - mean_hw x)^2,  y = d / (4 (sum_hw d / n + e_lambda)) + 0.5,  out = x * sigmoid(y)

    x [B, C, H, W] -> like x. One fused op: the forward reads x once and writes out once where a plane fits in
    cache; the backward reads (grad_out, x) and writes grad_x. H W = 1 gives n = 0 and NaN (0 / 0), as the
    official code does.
    """
    _check_x(x)
    e_lambda = _check_e_lambda(e_lambda)
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_simam.simam_gate(x, e_lambda)[0]
    return _eager.call(ops.simam.simam, x, e_lambda, request)[0]


# ------------------------------------------------------------------------------------- coordinate attention
COORD_GATES = _ref_coord.GATES


def coord_gate(x: Tensor, a_h: Tensor, a_w: Tensor, gate: str = "none", skip: bool = False, *,
               backend: Optional[str] = None) -> Tensor:
    """The end of coordinate attention, one pass over x (forward) and one over (grad_out, x) (backward):

        gate="none":                      out = (x * a_w[:, :, None, :]) * a_h[:, :, :, None]   (CoordAtt)
        gate="sigmoid" / "hardsigmoid":   out = x * gate(a_h[:, :, :, None] + a_w[:, :, None, :])
                                                                                (timm's SimpleCoordAttn)
        skip=True adds x (timm's has_skip).

    x [B, C, H, W]; a_h [B, C, H] (or [B, C, H, 1]); a_w [B, C, W] (or [B, C, 1, W]). The strip means that feed
    the gates are `ema_strip_pool(x)` = cat(mean over W, mean over H) [B, C, H + W]. The gates may have another
    floating dtype than x (autocast's bf16 / fp16 convolutions beside an fp32 x): they are read as they are and
    the result has x's dtype, as eager's `x * a_w * a_h` promotes; a gate wider than x (an fp32 gate beside a
    bf16 x) promotes x first, as eager would.
    """
    _check_x(x)
    b, c, h, w = x.shape
    if gate not in COORD_GATES:
        raise ValueError(f"gate must be one of {COORD_GATES}, got {gate!r}")
    if not isinstance(skip, bool):
        raise TypeError(f"skip must be a bool, got {type(skip).__name__}")
    _check_tensor("a_h", a_h)
    if a_h.dim() == 4 and a_h.shape[3] == 1:
        a_h = a_h.squeeze(3)
    _check_shape("a_h", a_h, (b, c, h))
    _check_tensor("a_w", a_w)
    if a_w.dim() == 4 and a_w.shape[2] == 1:
        a_w = a_w.squeeze(2)
    _check_shape("a_w", a_w, (b, c, w))
    _check_devices(x=x, a_h=a_h, a_w=a_w)
    common = torch.promote_types(torch.promote_types(x.dtype, a_h.dtype), a_w.dtype)
    if common != x.dtype:
        x = x.to(common)
    request = dispatch.requested(backend)
    if _traces_math(request):
        return _ref_coord.coord_gate_combine(x, a_h, a_w, gate, skip)
    return _eager.call(ops.coord_gate.coord_gate, x, a_h, a_w, gate, skip, request)


# ------------------------------------------------------------------------------------------- global context
def global_context_pool(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *,
                        backend: Optional[str] = None) -> Tensor:
    """GCNet's attention pooling (timm's GlobalContext, use_attn=True) -> ctx [B, C]:

        a[b, p]   = softmax over the H * W pixels of (weight . x[b, :, p] + bias)     (a 1x1 conv C -> 1)
        ctx[b, c] = sum_p a[b, p] x[b, c, p]

    weight: the conv's weight [1, C, 1, 1] (or [C]); bias: its bias [1] or None. One fused op that reads x once
    (an online softmax over pixel tiles, merged in a fixed order; accumulated in float32, float64 for float64);
    the backward reads x once more and writes grad_x. The bias cancels in the softmax: it does not change ctx and
    its gradient is exactly zero. ctx has x's dtype, or the autocast dtype under autocast (as eager's matmul).
    """
    _check_x(x)
    c = x.shape[1]
    _check_tensor("weight", weight)
    if weight.numel() != c or weight.dim() not in (1, 4) or (weight.dim() == 4 and weight.shape[0] != 1):
        raise ValueError(f"weight must be a 1x1 conv weight [1, {c}, 1, 1] or a vector [{c}] (x has {c} channels), "
                         f"got shape {tuple(weight.shape)}")
    weight = weight.reshape(c)
    if bias is not None:
        _check_tensor("bias", bias)
        if bias.numel() != 1 or bias.dim() > 1:
            raise ValueError(f"bias must be a conv bias of shape [1], got shape {tuple(bias.shape)}")
        bias = bias.reshape(1)
    _check_devices(x=x, weight=weight, bias=bias)
    request = dispatch.requested(backend)
    out_dtype = x.dtype
    if x.dtype != torch.float64 and _autocast_enabled(x.device.type):
        out_dtype = torch.get_autocast_dtype(x.device.type)
    if _traces_math(request):
        return _ref_gc.global_context_pool_reduce(x, weight, bias)[0].to(out_dtype)
    return _eager.call(ops.global_context.global_context_pool, x, weight, bias, request)[0].to(out_dtype)
