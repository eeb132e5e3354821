"""Drop-in attention modules built on fused_attn.functional (every backend serves them).

Each takes `backend=None` (None = the current fused_attn setting) and `record_attention=False`, holds only its
own parameters, and loads the matching seed module's state_dict strictly.

The seed modules are the four attention designs this package reproduces, numbered 000-003 (000
MultiScaleAttention, 001 SEBlock, 002 DualAttention / LiteDualAttention / AttnResBlock, 003 EMAX); their code,
as plain PyTorch, is bench/baselines/seed_modules.py (an oracle of tests/test_mod_oracles.py). EMA is the
official EMA block (Ouyang et al. 2023; tests/test_mod_oracles.py holds it verbatim); CBAM has no seed.
SqueezeExcitation, SEModule and SqueezeExcite are the twins of torchvision's and timm's squeeze-excite blocks
(conv_se.py); EffectiveSEModule, EcaModule, CecaModule and ChannelAttention those of timm's ESE / ECA and
ultralytics' channel attention (pooled_gate.py); GlobalContext that of timm's GCNet block (global_context.py).
"""
from .base import AttentionMaps, AttentionModule, record_attention
from .cbam import CBAM
from .conv_se import SEModule, SqueezeExcitation, SqueezeExcite
from .dual import AttnResBlock, DualAttention, LiteDualAttention
from .ema import EMA, EMAX, ema_attention_map
from .global_context import GlobalContext
from .multi_scale import MultiScaleAttention
from .pooled_gate import CecaModule, ChannelAttention, EcaModule, EffectiveSEModule
from .squeeze_excite import SEBlock

__all__ = ["AttentionModule", "AttentionMaps", "record_attention", "SEBlock", "CBAM", "MultiScaleAttention",
           "DualAttention", "LiteDualAttention", "AttnResBlock", "EMA", "EMAX", "ema_attention_map",
           "SqueezeExcitation", "SEModule", "SqueezeExcite", "EffectiveSEModule", "EcaModule", "CecaModule",
           "ChannelAttention", "GlobalContext"]
