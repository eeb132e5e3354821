"""`python -m fused_attn.info`: versions, devices, the extension build, and which backend serves each op."""
from __future__ import annotations

import os
import platform
import sys

import torch

from . import __version__, _ext, dispatch

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _triton_version() -> str:
    try:
        import triton
        return triton.__version__
    except Exception as exc:  # report, never fail: this is a diagnostic
        return f"not available ({type(exc).__name__}: {exc})"


def devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") and "cpu" not in found:
        found.append("cpu")
    return found


def report() -> str:
    lines = [f"fused_attn {__version__}",
             f"python {sys.version.split()[0]} ({platform.platform()})",
             f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), {torch.get_num_threads()} CPU threads",
             f"triton {_triton_version()}" + (" [TRITON_INTERPRET=1]" if dispatch._interpreting_triton() else "")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}")
    else:
        lines.append("cuda: no device")
    err = _ext.load_error()
    if err is None:
        info = _ext.build_info()
        lines.append("extension fused_attn._C: loaded (" + ", ".join(f"{k}={v}" for k, v in info.items()) + ")")
    else:
        lines.append(f"extension fused_attn._C: {err}")
    lines.append(f"backend request in force: {dispatch.current_backend()}")
    for device in devices():
        lines.append("")
        lines.append(f"{device}: available backends: {', '.join(dispatch.available_backends(device)) or 'none'}")
        width = max(len(op) for op in dispatch.OPS)
        lines.append(f"  {'op':<{width}}  " + "  ".join(f"{str(d).replace('torch.', ''):<9}" for d in _DTYPES)
                     + "  (auto picks; all that serve float32)")
        for op in dispatch.OPS:
            picks = []
            for dt in _DTYPES:
                try:
                    picks.append(dispatch.resolve(op, "auto", device, dt))
                except dispatch.BackendUnavailable:
                    picks.append("-")
            serving = ", ".join(dispatch.serving(op, device, torch.float32))
            lines.append(f"  {op:<{width}}  " + "  ".join(f"{p:<9}" for p in picks) + f"  [{serving}]")
        for b in dispatch.BACKENDS:
            reason = dispatch.unavailable_reason(b, "apply_gates", device, torch.float32)
            if reason is not None:
                lines.append(f"  {b}: unavailable ({reason})")
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
