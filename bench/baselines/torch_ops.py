"""The op rows' eager baselines: each op written out in plain torch ops, as the attention modules that use it
write it (MultiScaleAttention and CBAM's channel pools, torchvision's SqueezeExcitation and timm's EcaModule
forwards, the SCA-CNN dual attention, the official EMA's strip pools and cross-spatial core).

Every function takes the op's public inputs as the sample registry draws them (fused_attn/testing/registry.py
OPS[op].inputs: None for an absent optional input) and the row's variant, like OPS[op].call without the backend.
OPS[op] is the op's function; bench/cases.py names each row's baseline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_ACT = {"relu": F.relu, "hardswish": F.hardswish, "silu": F.silu}
_GATE = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}


def _act_gate(variant: str) -> tuple:
    act, gate = variant.split(",")[:2]
    return _ACT[act], _GATE[gate]


def _groups(variant: str) -> int:
    return next(int(p[7:]) for p in variant.split(";") if p.startswith("groups="))


def channel_pool(ins, variant):
    """MultiScaleAttention's (max, mean, std) / CBAM's (max, mean) descriptor: per-pixel stats over channels."""
    x = ins[0]
    planes = {"max": lambda: torch.max(x, dim=1, keepdim=True)[0],
              "mean": lambda: torch.mean(x, dim=1, keepdim=True),
              "std": lambda: torch.std(x, dim=1, keepdim=True)}
    return torch.cat([planes[s]() for s in variant.split(",")], dim=1)


def channel_squeeze(ins, variant):
    return F.adaptive_avg_pool2d(ins[0], 1).flatten(1)


def _channel_gate(x, w1, b1, w2, b2, variant):
    """avgpool -> fc1 (1x1 conv) -> act -> fc2 (1x1 conv) -> gate, as torchvision.ops.SqueezeExcitation."""
    act, gate = _act_gate(variant)
    cr, c = w1.shape[0], x.shape[1]
    s = act(F.conv2d(F.adaptive_avg_pool2d(x, 1), w1.reshape(cr, c, 1, 1), b1))
    return gate(F.conv2d(s, w2.reshape(c, cr, 1, 1), b2))


def squeeze_excite(ins, variant):
    x, w1, b1, w2, b2 = ins
    return x * _channel_gate(x, w1, b1, w2, b2, variant)


def eca(ins, variant):
    """timm's EcaModule / CecaModule forward: mean -> k-tap Conv1d across the channels (zero padding, or circular
    by F.pad) -> gate -> x * gate."""
    x, w = ins
    b, k = x.shape[0], w.shape[-1]
    pad = (k - 1) // 2
    padding, gate = variant.split(",")[1:]
    y = x.mean((2, 3)).view(b, 1, -1)
    if padding == "circular":
        y = F.conv1d(F.pad(y, (pad, pad), mode="circular"), w)
    else:
        y = F.conv1d(y, w, padding=pad)
    return x * _GATE[gate](y).view(b, -1, 1, 1).expand_as(x)


def ese(ins, variant):
    """timm's EffectiveSEModule forward: x * gate(fc(mean)), fc a C -> C 1x1 conv."""
    x, w, b = ins
    return x * _GATE[variant.split(",")[0]](F.conv2d(x.mean((2, 3), keepdim=True), w, b))


def dual_attention(ins, variant):
    """The seed's DualAttention: x * channel_att(x) * gate(conv1x1 C -> 1 (x))."""
    x, w1, b1, w2, b2, ws, bs = ins
    gate = _act_gate(variant)[1]
    return x * _channel_gate(x, w1, b1, w2, b2, variant) * gate(F.conv2d(x, ws.reshape(1, -1, 1, 1), bs))


def apply_gates(ins, variant):
    y, channel, spatial, residual = ins
    out = y
    if channel is not None:
        out = out * channel[:, :, None, None]
    if spatial is not None:
        out = out * spatial[:, None]
    return out if residual is None else residual + out


def ema_strip_pool(ins, variant):
    x = ins[0]
    x_h = F.adaptive_avg_pool2d(x, (None, 1))                       # [B, C, H, 1]
    x_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)   # [B, C, W, 1]
    return torch.cat([x_h, x_w], dim=2).squeeze(-1)


def ema_core(ins, variant, eps=1e-5):
    """The official EMA forward from conv1x1's output hw and conv3x3's output x2 on (bench/baselines/official.py)."""
    x, hw, x2, gn_weight, gn_bias = ins
    groups = _groups(variant)
    b, c, h, w = x.shape
    cg = c // groups
    group_x = x.reshape(b * groups, cg, h, w)
    x_h, x_w = torch.split(hw.reshape(b * groups, cg, h + w, 1), [h, w], dim=2)
    x1 = F.group_norm(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid(), cg, gn_weight, gn_bias, eps)
    x2 = x2.reshape(b * groups, cg, h, w)
    x11 = torch.softmax(F.adaptive_avg_pool2d(x1, 1).reshape(b * groups, -1, 1).permute(0, 2, 1), dim=-1)
    x12 = x2.reshape(b * groups, cg, -1)
    x21 = torch.softmax(F.adaptive_avg_pool2d(x2, 1).reshape(b * groups, -1, 1).permute(0, 2, 1), dim=-1)
    x22 = x1.reshape(b * groups, cg, -1)
    weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * groups, 1, h, w)
    return (group_x * weights.sigmoid()).reshape(b, c, h, w)


OPS = {"channel_pool": channel_pool, "channel_squeeze": channel_squeeze, "squeeze_excite": squeeze_excite, "eca": eca,
       "ese": ese, "dual_attention": dual_attention, "apply_gates": apply_gates, "ema_strip_pool": ema_strip_pool,
       "ema_core": ema_core}
