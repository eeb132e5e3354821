"""What a results file records about the run: device, versions, git revision, date, threads."""
from __future__ import annotations

import datetime
import hashlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_revision() -> dict:
    """HEAD's sha and whether tracked files differ from it; BENCH_GIT_SHA stands in where there is no .git
    (a copy of the tree on another machine)."""
    sha = _git("rev-parse", "HEAD") or os.environ.get("BENCH_GIT_SHA") or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": None if status is None else bool(status)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def triton_version() -> Optional[str]:
    try:
        import triton
        return triton.__version__
    except Exception:  # absent or broken: recorded as None
        return None


def file_digest(path: Optional[Path]) -> Optional[str]:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else None


def metadata(device: torch.device) -> dict:
    import fused_attn
    from fused_attn import _ext, dispatch
    props = {}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        props = {"sm": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                 "memory_gib": round(p.total_memory / 2**30, 1), "l2_bytes": getattr(p, "L2_cache_size", None)}
    return {
        "device": str(device),
        "device_name": device_name(device),
        "device_properties": props,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": triton_version(),
        "fused_attn": fused_attn.__version__,
        "extension": _ext.build_info() if _ext.available() else _ext.load_error(),
        "threads": torch.get_num_threads(),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "available_backends": dispatch.available_backends(device),
        "argv": sys.argv[1:],
    }
