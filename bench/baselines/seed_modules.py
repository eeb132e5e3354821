"""The seed documents' modules, transcribed to runnable form (the seeds lost their line breaks).

Copied into the repository from the project's shared/reference/seed_modules.py: the project's four seed design
notes (shared/seeds/000-003), transcribed as plain PyTorch. The benchmark's module rows use these classes as
their eager baselines where no torchvision / timm / ultralytics module is what the fused module replaces
(bench/baselines/__init__.py).

This file is a specification oracle, not part of the product: it is what the seed documents
(shared/seeds/*.txt) define, written out so that behaviour and state_dict layouts can be compared.
fused_attn must reproduce these modules' forward math and parameter names (strict state_dict
loading) wherever the seed code is well defined. Where it is not (EMAX, see below), fused_attn
documents its own well-defined version.

Sources:
  000_*.txt  MultiScaleAttention, VGG16WithMSA, vgg16_msa
  001_*.txt  SEBlock, VGG16_SE, vgg16_se
  002_*.txt  DualAttention (SCA-CNN), LiteDualAttention, AttnResBlock
  003_*.txt  EMAX (as printed; its dynamic grouping cannot run, see the class docstring)
"""
import torch
import torch.nn as nn


# ---------------------------------------------------------------- 001: Squeeze-and-Excitation
class SEBlock(nn.Module):
    """Squeeze-and-Excitation Block"""

    def __init__(self, channel, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


def _vgg_block(cin, cout, n):
    layers = []
    for i in range(n):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
    return layers


class VGG16_SE(nn.Module):
    def __init__(self, num_classes=1000, reduction=16):
        super().__init__()
        layers = []
        for cin, cout, n in [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]:
            layers += _vgg_block(cin, cout, n)
            layers.append(SEBlock(cout, reduction))
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = _vgg_classifier(num_classes)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg16_se(num_classes=1000, reduction=16):
    return VGG16_SE(num_classes=num_classes, reduction=reduction)


def _vgg_classifier(num_classes):
    return nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(),
        nn.Linear(4096, num_classes),
    )


# ---------------------------------------------------------------- 000: Multi-Scale Attention
class MultiScaleAttention(nn.Module):
    def __init__(self, in_channels, reduction_ratio=16):
        super().__init__()
        r = reduction_ratio
        self.conv1x1 = nn.Conv2d(in_channels, in_channels // r, kernel_size=1)
        self.conv3x3 = nn.Conv2d(in_channels, in_channels // r, kernel_size=3, padding=1)
        self.conv5x5 = nn.Conv2d(in_channels, in_channels // r, kernel_size=5, padding=2)
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, in_channels // r, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // r, in_channels, kernel_size=1),
            nn.Sigmoid(),
        )
        self.spatial_attention = nn.Sequential(nn.Conv2d(3, 1, kernel_size=7, padding=3), nn.Sigmoid())
        self.fusion_conv = nn.Conv2d(in_channels * 3 // r, in_channels, kernel_size=1)

    def forward(self, x):
        feat1x1 = self.conv1x1(x)
        feat3x3 = self.conv3x3(x)
        feat5x5 = self.conv5x5(x)
        fused_feat = self.fusion_conv(torch.cat([feat1x1, feat3x3, feat5x5], dim=1))
        channel_att = self.channel_attention(x)
        max_pool = torch.max(x, dim=1, keepdim=True)[0]
        avg_pool = torch.mean(x, dim=1, keepdim=True)
        std_pool = torch.std(x, dim=1, keepdim=True)  # unbiased (correction=1)
        spatial_att = self.spatial_attention(torch.cat([max_pool, avg_pool, std_pool], dim=1))
        attended_feat = fused_feat * channel_att * spatial_att
        return x + attended_feat


class VGG16WithMSA(nn.Module):
    def __init__(self, num_classes=1000, attention_positions=None):
        super().__init__()
        if attention_positions is None:
            attention_positions = [4, 9, 16, 23, 30]
        self.attention_positions = attention_positions
        layers = []
        channel_sequence = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']
        position_count = 0
        current_channels = 3
        for layer_config in channel_sequence:
            if layer_config == 'M':
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(current_channels, layer_config, kernel_size=3, padding=1))
                layers.append(nn.ReLU(inplace=True))
                current_channels = layer_config
            position_count += 1
            if position_count in attention_positions:
                layers.append(MultiScaleAttention(current_channels))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = _vgg_classifier(num_classes)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg16_msa(num_classes=1000, attention_positions=None):
    return VGG16WithMSA(num_classes=num_classes, attention_positions=attention_positions)


# ---------------------------------------------------------------- 002: SCA-CNN dual attention
class DualAttention(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.channel_att = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, in_channels // 8, 1),
            nn.ReLU(),
            nn.Conv2d(in_channels // 8, in_channels, 1),
            nn.Sigmoid(),
        )
        self.spatial_att = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Sigmoid())

    def forward(self, x):
        channel_weights = self.channel_att(x)
        spatial_weights = self.spatial_att(x)
        return x * channel_weights * spatial_weights


class LiteDualAttention(nn.Module):
    """The seed gives only __init__; forward is DualAttention's."""

    def __init__(self, in_channels):
        super().__init__()
        self.channel_att = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, in_channels // 16, 1),
            nn.Hardswish(),
            nn.Conv2d(in_channels // 16, in_channels, 1),
            nn.Hardsigmoid(),
        )
        self.spatial_att = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Hardsigmoid())

    def forward(self, x):
        return x * self.channel_att(x) * self.spatial_att(x)


class AttnResBlock(nn.Module):
    def __init__(self, in_channels, reduction=8):
        super().__init__()
        self.attn = DualAttention(in_channels)
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv(self.attn(x))


# ---------------------------------------------------------------- 003: EMAX, as printed
class EMAX(nn.Module):
    """As printed in the seed. Its forward cannot run: the sampled group count lies in [1, factor-1]
    (multinomial index clamped to >= 1), while conv1x1, conv3x3 and gn are sized for
    channels // factor channels per group, so every call fails with a shape error
    (and .squeeze() on a batch of one gives a 0-d tensor). Kept to show the intended structure:
    an EMA spatial branch over groups, an SE-like channel gate mixed in through gamma (init 0),
    and an SE-like global gate on the sum."""

    def __init__(self, channels, c2=None, factor=32, reduction=16):
        super().__init__()
        self.groups = factor
        self.channels = channels
        assert channels // self.groups > 0
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(channels // self.groups, channels // self.groups)
        self.conv1x1 = nn.Conv2d(channels // self.groups, channels // self.groups, kernel_size=1, stride=1, padding=0)
        self.conv3x3 = nn.Conv2d(channels // self.groups, channels // self.groups, kernel_size=3, stride=1, padding=1)
        self.channel_gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0),
            nn.Sigmoid(),
        )
        self.group_controller = nn.Linear(channels, self.groups)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.global_attn = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, kernel_size=1),
            nn.ReLU(True),
            nn.Conv2d(channels // reduction, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x, groups=None):
        """`groups` is not in the seed: passing groups=self.groups skips the broken sampling and
        runs the structure the seed intends with a fixed group count (the EMA layout)."""
        b, c, h, w = x.size()
        if groups is None:
            group_logits = self.agp(x).view(b, c)
            group_weights = self.group_controller(group_logits).softmax(dim=-1)
            group_indices = torch.multinomial(group_weights, 1).squeeze()
            groups = torch.clamp(group_indices, min=1, max=self.groups).mode().values.item()
        group_x = x.reshape(b * groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * groups, c // groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * groups, c // groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * groups, 1, h, w)
        spatial_out = (group_x * weights.sigmoid()).reshape(b, c, h, w)
        channel_weights = self.channel_gate(x)
        channel_out = x * channel_weights
        fused = spatial_out + self.gamma * channel_out
        global_weights = self.global_attn(fused)
        return fused * global_weights
