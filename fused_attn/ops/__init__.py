"""torch.library custom ops, one module per op family.

Each op takes a `backend` string (a request: "auto" or a backend name) and resolves it on real tensors
through fused_attn.dispatch, so fake kernels, autograd and torch.compile see one op whatever backend
serves it. Importing this package registers every op, fake kernel and autograd formula.
"""
from . import (  # noqa: F401  (registration side effects)
    apply_gates,
    channel_pool,
    coord_gate,
    dual_attention,
    ema_core,
    ema_strip_pool,
    global_context,
    simam,
    squeeze_excite,
)
