"""Drop-in attention modules built on fused_attn.functional (every backend serves them).

Each takes `backend=None` (None = the current fused_attn setting) and `record_attention=False`, holds only its
own parameters, and loads the matching seed module's state_dict strictly.

The seed modules are the four attention designs this package reproduces, numbered 000-003 (000
MultiScaleAttention, 001 SEBlock, 002 DualAttention / LiteDualAttention / AttnResBlock, 003 EMAX); their code,
as plain PyTorch, is bench/baselines/seed_modules.py (an oracle of tests/test_mod_oracles.py). EMA is the
official EMA block (Ouyang et al. 2023; bench/baselines/official.py holds it); CBAM has no seed.
SqueezeExcitation, SEModule and SqueezeExcite are the twins of torchvision's and timm's squeeze-excite blocks
(conv_se.py); EffectiveSEModule, EcaModule, CecaModule, EseModule, ChannelAttention and EcaLayer those of
timm's ESE / ECA, hgnet's ESE, ultralytics' channel attention and the official ECA (pooled_gate.py); the
cbam_blocks.py twins those of timm's, ultralytics' and the official CBAM and their halves. SimAM is the official
parameter-free SimAM (simam.py). CoordAtt (the official
coordinate attention), CoordAttn and SimpleCoordAttn (timm's) are in coord.py. GlobalContext is that of
timm's GCNet block (global_context.py).
"""
from .base import AttentionMaps, AttentionModule, record_attention
from .cbam import CBAM
from .cbam_blocks import (
    CbamModule,
    ChannelAttn,
    ChannelGate,
    LightCbamModule,
    LightChannelAttn,
    LightSpatialAttn,
    OfficialCBAM,
    SpatialAttention,
    SpatialAttn,
    SpatialGate,
    UltralyticsCBAM,
)
from .conv_se import SEModule, SqueezeExcitation, SqueezeExcite
from .coord import CoordAtt, CoordAttn, SimpleCoordAttn
from .dual import AttnResBlock, DualAttention, LiteDualAttention
from .ema import EMA, EMAX, ema_attention_map
from .global_context import GlobalContext
from .multi_scale import MultiScaleAttention
from .pooled_gate import CecaModule, ChannelAttention, EcaLayer, EcaModule, EffectiveSEModule, EseModule
from .simam import SimAM, simam_attention_map
from .squeeze_excite import SEBlock

__all__ = ["AttentionModule", "AttentionMaps", "record_attention", "SEBlock", "CBAM", "MultiScaleAttention",
           "DualAttention", "LiteDualAttention", "AttnResBlock", "EMA", "EMAX", "ema_attention_map",
           "SqueezeExcitation", "SEModule", "SqueezeExcite", "EffectiveSEModule", "EcaModule", "CecaModule",
           "ChannelAttention", "EseModule", "EcaLayer", "ChannelAttn", "LightChannelAttn", "SpatialAttn",
           "LightSpatialAttn", "CbamModule", "LightCbamModule", "SpatialAttention", "UltralyticsCBAM", "ChannelGate",
           "SpatialGate", "OfficialCBAM", "SimAM",
           "simam_attention_map", "CoordAtt", "CoordAttn", "SimpleCoordAttn",
           "GlobalContext"]
