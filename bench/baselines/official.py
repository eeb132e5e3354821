"""Attention blocks as their authors' official repositories write them, in plain PyTorch: the benchmark's eager
baselines where neither the seed documents (seed_modules.py) nor an installed torchvision / timm / ultralytics
has the block, and the tests' independent oracles (tests/test_mod_oracles.py). EMA is the official code
verbatim but for formatting; CBAM is written after the official code's structure, parameter names and forward
(so that state_dicts and results match it).

  EMA   Ouyang et al., "Efficient Multi-Scale Attention Module with Cross-Spatial Learning", ICASSP 2023;
        official code: github.com/YOLOonMe/EMA-attention-module (`EMA(channels, c2=None, factor=32)`)
  CBAM  Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018; official code:
        github.com/Jongchan/attention-module, MODELS/cbam.py (`CBAM(gate_channels, reduction_ratio=16,
        pool_types=['avg', 'max'], no_spatial=False)`); used where timm is not installed
  SimAM Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for CNNs", ICML 2021; official code:
        github.com/ZjjConan/SimAM, networks/attentions/simam_module.py (`simam_module(channels=None,
        e_lambda=1e-4)`), written after its structure, names, repr and forward; `SimAM` is
        External-Attention-pytorch's copy of it under another name
  ECA   Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", CVPR 2020;
        official code: github.com/BangguWu/ECANet, models/eca_module.py (`eca_layer(channel, k_size=3)`), its
        forward verbatim
  CoordAtt Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021; official code:
        github.com/houqb/CoordAttention, coordatt.py (`CoordAtt(inp, oup, reduction=32)` with its h_sigmoid /
        h_swish), written after its structure, names and forward
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------------------ EMA
class EMA(nn.Module):
    """EMA as published (github.com/YOLOonMe/EMA-attention-module), verbatim but for formatting: over `factor`
    groups of channels // factor channels, strip means -> shared 1x1 conv -> gates, GroupNorm; a 3x3 conv
    branch; cross-spatial softmax attention between the two; out = group_x * sigmoid(weights)."""

    def __init__(self, channels, c2=None, factor=32):
        super().__init__()
        self.groups = factor
        assert channels // self.groups > 0
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(channels // self.groups, channels // self.groups)
        self.conv1x1 = nn.Conv2d(channels // self.groups, channels // self.groups, kernel_size=1, stride=1, padding=0)
        self.conv3x3 = nn.Conv2d(channels // self.groups, channels // self.groups, kernel_size=3, stride=1, padding=1)

    def forward(self, x):
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)  # b*g,c//g,h,w
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)  # b*g, c//g, hw
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)  # b*g, c//g, hw
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------------------- CBAM
class BasicConv(nn.Module):
    """Conv (no bias) [+ BatchNorm (eps 1e-5, momentum 0.01)] [+ ReLU], as the official code's BasicConv."""

    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, relu=True, bn=True):
        super().__init__()
        self.out_channels = out_planes
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.conv(x)
        x = x if self.bn is None else self.bn(x)
        return x if self.relu is None else self.relu(x)


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


def _global_pool(x, pool_type):
    size = (x.size(2), x.size(3))
    if pool_type == "avg":
        return F.avg_pool2d(x, size, stride=size)
    if pool_type == "max":
        return F.max_pool2d(x, size, stride=size)
    if pool_type == "lp":
        return F.lp_pool2d(x, 2, size, stride=size)
    flat = x.view(x.size(0), x.size(1), -1)   # "lse"
    top = flat.max(dim=2, keepdim=True)[0]
    return top + (flat - top).exp().sum(dim=2, keepdim=True).log()


class ChannelGate(nn.Module):
    """x * sigmoid(sum over pool_types of mlp(pool x)); mlp = Flatten, Linear (bias), ReLU, Linear (bias);
    pool_types from 'avg', 'max', 'lp', 'lse'."""

    def __init__(self, gate_channels, reduction_ratio=16, pool_types=("avg", "max")):
        super().__init__()
        self.gate_channels = gate_channels
        self.mlp = nn.Sequential(Flatten(), nn.Linear(gate_channels, gate_channels // reduction_ratio), nn.ReLU(),
                                 nn.Linear(gate_channels // reduction_ratio, gate_channels))
        self.pool_types = list(pool_types)

    def forward(self, x):
        att = None
        for pool_type in self.pool_types:
            raw = self.mlp(_global_pool(x, pool_type))
            att = raw if att is None else att + raw
        return x * torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)


class ChannelPool(nn.Module):
    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class SpatialGate(nn.Module):
    """x * sigmoid(BN(conv7x7(cat(max_c x, mean_c x))))."""

    def __init__(self):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, 7, stride=1, padding=3, relu=False)

    def forward(self, x):
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16, pool_types=("avg", "max"), no_spatial=False):
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio, pool_types)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate()

    def forward(self, x):
        x = self.ChannelGate(x)
        return x if self.no_spatial else self.SpatialGate(x)


# ---------------------------------------------------------------------------------------------------- SimAM
class simam_module(nn.Module):  # noqa: N801  (the official class name)
    """SimAM (Yang et al., ICML 2021) as the official code defines it: no parameters, the child `activaton`
    (sic) and `e_lambda`; per (b, c): n = H W - 1, d = (x - mean_hw x)^2,
    y = d / (4 (sum_hw d / n + e_lambda)) + 0.5, out = x * sigmoid(y)."""

    def __init__(self, channels=None, e_lambda=1e-4):
        super().__init__()
        self.activaton = nn.Sigmoid()
        self.e_lambda = e_lambda

    def __repr__(self):
        return f"{type(self).__name__}(lambda={self.e_lambda:f})"

    @staticmethod
    def get_module_name():
        return "simam"

    def forward(self, x):
        n = x.size(2) * x.size(3) - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * self.activaton(y)


class SimAM(simam_module):
    """External-Attention-pytorch's SimAM: the official code under another class name (no other difference)."""


# ------------------------------------------------------------------------------------------------------ ECA
class eca_layer(nn.Module):  # noqa: N801  (the official class name)
    """ECA: s = sigmoid(conv1d_k(mean_hw x)) across the channels (zero padding (k - 1) // 2, no bias), x * s."""

    def __init__(self, channel, k_size=3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        y = self.sigmoid(y)
        return x * y.expand_as(x)


# ------------------------------------------------------------------------------------- coordinate attention
class h_sigmoid(nn.Module):  # noqa: N801  (the official class names)
    """relu6(x + 3) / 6."""

    def __init__(self, inplace=True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x):
        return self.relu(x + 3) / 6


class h_swish(nn.Module):  # noqa: N801
    """x * h_sigmoid(x)."""

    def __init__(self, inplace=True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x):
        return x * self.sigmoid(x)


class CoordAtt(nn.Module):
    """Coordinate attention as the official code defines it: strip means x_h [n, c, h, 1] (over W) and x_w
    (over H, transposed to [n, c, w, 1]) concatenated along dim 2; conv1 (1x1, bias) -> bn1 -> h_swish; split;
    a_h = sigmoid(conv_h(.)), a_w = sigmoid(conv_w(.)^T); out = x * a_w * a_h. mip = max(8, inp // reduction)."""

    def __init__(self, inp, oup, reduction=32):
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        h, w = x.shape[2], x.shape[3]
        y = torch.cat([self.pool_h(x), self.pool_w(x).permute(0, 1, 3, 2)], dim=2)
        y = self.act(self.bn1(self.conv1(y)))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()
        return x * a_w * a_h
