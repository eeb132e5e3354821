"""Squeeze-and-excitation (seed 001)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .base import AttentionModule

__all__ = ["SEBlock"]


class SEBlock(AttentionModule):
    """Squeeze-and-excitation: y = x * sigmoid(W2 relu(W1 mean_hw(x))), W1 [C/r, C], W2 [C, C/r], no biases.

    Parameters and state_dict keys as the seed SEBlock: `fc` = Sequential(Linear(C, C // r, bias=False), ReLU,
    Linear(C // r, C, bias=False), Sigmoid). Forward: one `functional.squeeze_excite` op.
    Records "channel" [B, C] when recording.
    """

    def __init__(self, channel: int, reduction: int = 16, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        out, channel = self._excite(x, self.fc)
        if self.record_attention:
            self._record(channel=channel)
        return out
