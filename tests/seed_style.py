"""Independent formulations of every op in plain PyTorch, written as the seed modules / official EMA write them.

Autograd of these is the independent oracle for the ops' explicit forward and backward formulas.
"""
import torch
import torch.nn.functional as F


def channel_pool(x, stats=("max", "mean", "std")):
    planes = {"max": lambda: torch.max(x, dim=1, keepdim=True)[0],
              "mean": lambda: torch.mean(x, dim=1, keepdim=True),
              "std": lambda: torch.std(x, dim=1, keepdim=True)}
    return torch.cat([planes[s]() for s in stats], dim=1)


_ACT = {"relu": F.relu, "hardswish": F.hardswish, "silu": F.silu}
_GATE = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}


def channel_gate(x, w1, b1, w2, b2, act="relu", gate="sigmoid"):
    """As MultiScaleAttention's channel_attention: AdaptiveAvgPool2d(1) -> 1x1 conv -> act -> 1x1 conv -> gate."""
    cr, c = w1.shape[0], x.shape[1]
    y = F.adaptive_avg_pool2d(x, 1)
    y = _ACT[act](F.conv2d(y, w1.reshape(cr, c, 1, 1), b1))
    return _GATE[gate](F.conv2d(y, w2.reshape(c, cr, 1, 1), b2))


def squeeze_excite(x, w1, b1, w2, b2, act="relu", gate="sigmoid"):
    return x * channel_gate(x, w1, b1, w2, b2, act, gate).expand_as(x)


def dual_attention(x, w1, b1, w2, b2, ws, bs, act="relu", gate="sigmoid"):
    """As the seed's DualAttention: x * channel_att(x) * sigmoid(conv1x1 C -> 1 (x))."""
    c = x.shape[1]
    return x * channel_gate(x, w1, b1, w2, b2, act, gate) * _GATE[gate](F.conv2d(x, ws.reshape(1, c, 1, 1), bs))


def apply_gates(y, channel=None, spatial=None, residual=None):
    out = y
    if channel is not None:
        out = out * channel.view(*channel.shape, 1, 1)
    if spatial is not None:
        out = out * spatial.unsqueeze(1)
    return out if residual is None else residual + out


def ema_strip_pool(x):
    x_h = F.adaptive_avg_pool2d(x, (None, 1))                       # [B, C, H, 1]
    x_w = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)   # [B, C, W, 1]
    return torch.cat([x_h, x_w], dim=2).squeeze(-1)


def ema_core(x, hw, x2, gn_weight, gn_bias, groups, eps=1e-5):
    """The official EMA forward from the split of conv1x1's output on (x1 via GroupNorm, agp, softmax, matmul)."""
    b, c, h, w = x.shape
    group_x = x.reshape(b * groups, -1, h, w)
    cg = c // groups
    hw = hw.reshape(b * groups, cg, h + w, 1)
    x_h, x_w = torch.split(hw, [h, w], dim=2)
    x1 = F.group_norm(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid(), cg, gn_weight, gn_bias, eps)
    x2 = x2.reshape(b * groups, cg, h, w)
    x11 = torch.softmax(F.adaptive_avg_pool2d(x1, 1).reshape(b * groups, -1, 1).permute(0, 2, 1), dim=-1)
    x12 = x2.reshape(b * groups, cg, -1)
    x21 = torch.softmax(F.adaptive_avg_pool2d(x2, 1).reshape(b * groups, -1, 1).permute(0, 2, 1), dim=-1)
    x22 = x1.reshape(b * groups, cg, -1)
    weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * groups, 1, h, w)
    return (group_x * weights.sigmoid()).reshape(b, c, h, w)


def ema(x, conv1x1_weight, conv1x1_bias, conv3x3_weight, conv3x3_bias, gn_weight, gn_bias, groups, eps=1e-5):
    """The official EMA module's forward, whole."""
    b, c, h, w = x.shape
    group_x = x.reshape(b * groups, -1, h, w)
    x_h = F.adaptive_avg_pool2d(group_x, (None, 1))
    x_w = F.adaptive_avg_pool2d(group_x, (1, None)).permute(0, 1, 3, 2)
    hw = F.conv2d(torch.cat([x_h, x_w], dim=2), conv1x1_weight, conv1x1_bias)
    x2 = F.conv2d(group_x, conv3x3_weight, conv3x3_bias, padding=1)
    return ema_core(x, hw.reshape(b, c, h + w), x2.reshape(b, c, h, w), gn_weight, gn_bias, groups, eps)
