"""EMA (Efficient Multi-scale Attention, Ouyang et al. 2023) and EMAX (seed 003)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .. import functional as FA
from .._layout import acc_dtype
from .base import AttentionModule

__all__ = ["EMA", "EMAX", "ema_attention_map"]


def _check_groups(channels: int, groups: int, what: str) -> None:
    if not isinstance(groups, int) or groups < 1 or channels % groups:
        raise ValueError(f"{what}={groups!r} must be a positive divisor of channels={channels}")


def _ema_layers(module: nn.Module, cg: int) -> None:
    """The official EMA's parameterised layers, sized for cg channels per group."""
    module.gn = nn.GroupNorm(cg, cg)
    module.conv1x1 = nn.Conv2d(cg, cg, kernel_size=1, stride=1, padding=0)
    module.conv3x3 = nn.Conv2d(cg, cg, kernel_size=3, stride=1, padding=1)


def _ema(module: nn.Module, x: Tensor, groups: int, backend: Optional[str], strips: Optional[Tensor] = None) -> Tensor:
    """The EMA block with `module`'s gn / conv1x1 / conv3x3 (`functional.ema`; strips: x's strip means if known)."""
    return FA.ema(x, module.conv1x1.weight, module.conv1x1.bias, module.conv3x3.weight, module.conv3x3.bias,
                  module.gn.weight, module.gn.bias, groups, module.gn.eps, backend=backend, strips=strips)


def _strip_channel_mean(strips: Tensor, height: int) -> Tensor:
    """mean_hw(x) [B, C] from x's strip means [B, C, H + W]: the mean of its H row means (each over W pixels),
    in the accumulation dtype. O(B C H) work instead of another pass over x."""
    return strips[:, :, :height].to(acc_dtype(strips.dtype)).mean(dim=-1)


@torch.no_grad()
def ema_attention_map(module: nn.Module, x: Tensor, groups: int) -> Tensor:
    """EMA's spatial attention sigmoid(w) [B, G, H, W] (EMA's output is group_x * sigmoid(w)); for recording.

    Recomputed from `module`'s gn / conv1x1 / conv3x3 (the op does not return it): per group,
    x1 = gn(x sig(conv1x1 strip_h) sig(conv1x1 strip_w)), x2 = conv3x3(x),
    w = sum_c softmax_c(mean_hw x1)[c] x2[c] + softmax_c(mean_hw x2)[c] x1[c].
    """
    b, c, h, w = x.shape
    cg = c // groups
    gx = x.reshape(b * groups, cg, h, w)
    hw = module.conv1x1(FA.ema_strip_pool(x).reshape(b * groups, cg, h + w, 1)).sigmoid()
    x1 = module.gn(gx * hw[:, :, :h] * hw[:, :, h:].transpose(2, 3))
    x2 = module.conv3x3(gx)
    a1 = x1.mean(dim=(2, 3)).softmax(dim=1)[..., None, None]
    a2 = x2.mean(dim=(2, 3)).softmax(dim=1)[..., None, None]
    return torch.sigmoid((a1 * x2 + a2 * x1).sum(dim=1)).reshape(b, groups, h, w)


class EMA(AttentionModule):
    """The official EMA block, G = factor groups of cg = C / G channels (group_x = x.view(B G, cg, H, W)):

        x_h, x_w = mean_w group_x, mean_h group_x;   hw = conv1x1(cat(x_h, x_w))
        x1 = GroupNorm_cg(group_x * sigmoid(hw_h) * sigmoid(hw_w));   x2 = conv3x3(group_x)
        w  = softmax_c(mean_hw x1) . x2 + softmax_c(mean_hw x2) . x1                  [B G, 1, H, W]
        out = group_x * sigmoid(w)

    Parameters `gn`, `conv1x1`, `conv3x3` as the official code (its state_dict loads strictly); `c2` is ignored,
    as there (YOLO-config compatibility). Forward: `functional.ema` (aten convs around fused ops).
    Records "spatial" [B, G, H, W] when recording.
    """

    def __init__(self, channels: int, c2=None, factor: int = 32, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        _check_groups(channels, factor, "factor")
        self.groups = factor
        _ema_layers(self, channels // factor)

    def forward(self, x: Tensor) -> Tensor:
        if self.record_attention:
            self._record(spatial=ema_attention_map(self, x, self.groups))
        return _ema(self, x, self.groups, self.backend)


class EMAX(AttentionModule):
    """EMAX (seed 003): EMA spatial path + gated SE channel path, then a global SE gate.

        spatial = EMA_G(x)                                    (gn, conv1x1, conv3x3; G = factor groups)
        fused   = spatial + gamma * x * channel_gate(x)       (gamma: learnable, initialised to 0)
        out     = fused * global_attn(fused)                  (channel_gate, global_attn: SE gates with biases)

    Fixed groups (default): the seed's structure run with groups = factor (the seed's
    `forward(x, groups=self.groups)`); parameters and state_dict keys as the seed, `group_controller` included
    (unused in this mode, as in the seed with fixed groups), so seed state_dicts load strictly. `c2` is ignored.

    Dynamic grouping (`dynamic_groups=True`, opt-in). The printed seed samples a group count from
    softmax(group_controller(mean_hw x)), takes the batch mode with `.item()` and reuses convs sized for
    C / factor channels per group: it cannot run (see EMAX in bench/baselines/seed_modules.py), syncs the host,
    is random in eval and gives the controller no gradient. Here instead, for candidate group counts `group_choices`
    (each a divisor of `channels` in 1..factor; default: factor, factor / 2, factor / 4 where they divide):

        p        = softmax_k(logits[:, g_k - 1])               logits = group_controller(mean_hw x) [B, factor]
        spatial  = sum_k p[:, k] * EMA_{g_k}(x)                (controller column g - 1 scores "g groups")

    the expectation of the seed's choice, restricted to valid group counts: no sampling, no host sync,
    deterministic, and the controller receives gradient. EMA_factor uses the top-level gn / conv1x1 / conv3x3;
    every other g has its own EMA in `branches[str(g)]` (its convs sized C / g), so dynamic-mode state_dicts
    add those keys (a fixed-mode / seed state_dict loads into one with strict=False). Cost: one EMA per choice.

    Records "spatial" (fixed: [B, G, H, W]; dynamic: the p-weighted mean of each choice's group-mean map,
    [B, H, W]), "channel" [B, C], "global" [B, C] and, dynamic, "groups" p [B, K] when recording.
    """

    def __init__(self, channels: int, c2=None, factor: int = 32, reduction: int = 16, *,
                 dynamic_groups: bool = False, group_choices: Optional[Sequence[int]] = None,
                 backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        _check_groups(channels, factor, "factor")
        self.groups = factor
        self.channels = channels
        _ema_layers(self, channels // factor)
        mid = channels // reduction
        self.channel_gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, mid, kernel_size=1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, kernel_size=1, padding=0),
            nn.Sigmoid(),
        )
        self.group_controller = nn.Linear(channels, factor)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.global_attn = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, mid, kernel_size=1),
            nn.ReLU(True),
            nn.Conv2d(mid, channels, kernel_size=1),
            nn.Sigmoid(),
        )
        self.dynamic_groups = dynamic_groups
        if dynamic_groups:
            if group_choices is None:
                group_choices = [g for g in (factor, factor // 2, factor // 4) if g >= 1 and channels % g == 0]
            choices = tuple(sorted(set(group_choices)))
            for g in choices:
                _check_groups(channels, g, "group_choices entry")
                if g > factor:
                    raise ValueError(f"group_choices entry {g} exceeds factor={factor} (the controller's width)")
            self.group_choices = choices
            self.branches = nn.ModuleDict({str(g): EMA(channels, factor=g) for g in choices if g != factor})
            self.register_buffer("choice_columns", torch.tensor([g - 1 for g in choices]), persistent=False)

    def extra_repr(self) -> str:
        dyn = [f"dynamic_groups=True, group_choices={self.group_choices}"] if self.dynamic_groups else []
        return ", ".join([p for p in [super().extra_repr()] if p] + dyn)

    def _dynamic_spatial(self, x: Tensor, strips: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """(sum_k p_k EMA_{g_k}(x), p [B, K], recorded spatial map or None); strips, pooled: x's strip means and
        mean_hw(x), shared by every branch."""
        logits = self.group_controller(pooled.to(self.group_controller.weight.dtype))        # [B, factor]
        p = logits.index_select(1, self.choice_columns).softmax(dim=-1)
        spatial, smap = None, None
        for k, g in enumerate(self.group_choices):
            module = self if g == self.groups else self.branches[str(g)]
            pk = p[:, k].to(x.dtype)[:, None, None, None]
            term = pk * _ema(module, x, g, self.backend, strips)
            spatial = term if spatial is None else spatial + term
            if self.record_attention:
                m = pk[:, 0] * ema_attention_map(module, x, g).mean(dim=1)
                smap = m if smap is None else smap + m
        return spatial, p, smap

    def forward(self, x: Tensor) -> Tensor:
        # one strip pool of x serves every EMA branch (it does not depend on the groups) and, through
        # mean_hw x = mean_h(row means), the channel gate and the controller: x is not read a second time
        strips = FA.ema_strip_pool(x, backend=self.backend)
        pooled = _strip_channel_mean(strips, x.shape[2])
        if self.dynamic_groups:
            spatial, p, smap = self._dynamic_spatial(x, strips, pooled)
        else:
            spatial, p = _ema(self, x, self.groups, self.backend, strips), None
            smap = ema_attention_map(self, x, self.groups) if self.record_attention else None
        channel = self._gate(x, self.channel_gate, pooled)
        # gamma * channel promotes as the seed's gamma * x * channel does (an fp32 gamma under autocast)
        fused = FA.apply_gates(x, channel=self.gamma * channel, residual=spatial, backend=self.backend)
        out, global_weights = self._excite(fused, self.global_attn)
        if self.record_attention:
            self._record(**{"spatial": smap, "channel": channel, "global": global_weights, "groups": p})
        return out
