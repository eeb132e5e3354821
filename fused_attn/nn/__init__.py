"""Drop-in attention modules built on fused_attn.functional (every backend serves them).

Each takes `backend=None` (None = the current fused_attn setting) and `record_attention=False`, holds only its
own parameters, and loads the matching seed module's state_dict strictly.
"""
from .base import AttentionMaps, AttentionModule, record_attention
from .cbam import CBAM
from .dual import AttnResBlock, DualAttention, LiteDualAttention
from .ema import EMA, EMAX, ema_attention_map
from .multi_scale import MultiScaleAttention
from .squeeze_excite import SEBlock

__all__ = ["AttentionModule", "AttentionMaps", "record_attention", "SEBlock", "CBAM", "MultiScaleAttention",
           "DualAttention", "LiteDualAttention", "AttnResBlock", "EMA", "EMAX", "ema_attention_map"]
