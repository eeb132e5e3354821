"""fused_attn: fused Triton and C++/CUDA kernels for CNN attention modules.

    import fused_attn
    from fused_attn import functional as FA
    out = FA.apply_gates(y, channel=c, spatial=s, residual=x)        # residual + y * c * s
    with fused_attn.use_backend("reference"): ...                   # or backend= per call

Backends: auto (default), reference, cpu, cuda, triton; see fused_attn.dispatch.
"""
from . import functional, models, nn, ops, viz  # noqa: F401  (ops registers the torch.library custom ops)
from .convert import ConversionReport, convert
from .dispatch import (
                       BACKENDS,
                       CHOICES,
                       BackendUnavailable,
                       available_backends,
                       compile_policy,
                       current_backend,
                       set_backend,
                       set_compile_policy,
                       use_backend,
)
from .models import insert_attention, vgg16_msa, vgg16_sca, vgg16_se
from .nn import (
                       CBAM,
                       EMA,
                       EMAX,
                       AttnResBlock,
                       DualAttention,
                       LiteDualAttention,
                       MultiScaleAttention,
                       SEBlock,
                       record_attention,
)

__version__ = "0.1.0"

__all__ = ["functional", "use_backend", "set_backend", "current_backend", "available_backends",
           "BackendUnavailable", "BACKENDS", "CHOICES",
           "set_compile_policy", "compile_policy", "__version__",
           "nn", "models", "viz", "SEBlock", "CBAM", "MultiScaleAttention", "DualAttention", "LiteDualAttention",
           "AttnResBlock", "EMA", "EMAX", "record_attention", "convert", "ConversionReport", "insert_attention",
           "vgg16_se", "vgg16_msa", "vgg16_sca"]
