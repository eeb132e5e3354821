"""Timing: a wall clock on CPU, `triton.testing.do_bench` on CUDA; rotating input sets; the copy baseline.

CPU: `warmup` calls, then at least `repeat` timed calls (more, up to 50 x repeat, until `min_time_s` is spent),
each timed with time.perf_counter; median and 20th / 80th percentiles.
CUDA: do_bench (CUDA events; it clears the L2 cache before each call) with `warmup_ms` / `rep_ms` windows,
widened for slow calls to hold at least `repeat` calls; median and 20th / 80th percentiles from its quantiles.
Inputs rotate over several copies (see `rotation_count`) so that consecutive calls do not find their
inputs in the last-level cache.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    runs: Optional[int]  # None where do_bench chose the count


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of `values` (0 <= q <= 1)."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class Timer:
    """Times a no-argument callable on one device."""

    def __init__(self, device: torch.device, repeat: int = 7, warmup: int = 2, min_time_s: float = 0.2,
                 warmup_ms: int = 25, rep_ms: int = 100):
        self.device = torch.device(device)
        self.repeat, self.warmup, self.min_time_s = max(1, repeat), max(0, warmup), min_time_s
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms

    def describe(self) -> str:
        if self.device.type == "cuda":
            return (f"triton.testing.do_bench(warmup={self.warmup_ms} ms, rep={self.rep_ms} ms, widened to >= "
                    f"{self.repeat} calls), CUDA events, L2 cleared before each call; median, p20, p80")
        return (f"time.perf_counter wall clock: {self.warmup} warm-up call(s), then >= {self.repeat} timed calls "
                f"(and >= {self.min_time_s} s, at most {50 * self.repeat} calls); median, p20, p80")

    def __call__(self, fn: Callable[[], object]) -> Timing:
        if self.device.type == "cuda":
            return self._cuda(fn)
        return self._wall_clock(fn)

    def _wall_clock(self, fn) -> Timing:
        for _ in range(self.warmup):
            fn()
        times: list[float] = []
        while len(times) < self.repeat or (sum(times) < self.min_time_s and len(times) < 50 * self.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        ms = [t * 1e3 for t in times]
        return Timing(quantile(ms, 0.5), quantile(ms, 0.2), quantile(ms, 0.8), len(ms))

    def _cuda(self, fn) -> Timing:
        from triton.testing import do_bench
        torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(self.device)
        estimate_ms = (time.perf_counter() - start) * 1e3
        # do_bench picks its call count from the windows: widen them so that slow calls get >= repeat of each
        rep_ms = max(self.rep_ms, self.repeat * estimate_ms)
        warmup_ms = max(self.warmup_ms, 2 * estimate_ms)
        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(med, p20, p80, None)


def sync(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- rotation
def _cpu_llc_bytes() -> Optional[int]:
    """The largest CPU cache level's size from sysfs (Linux), or None."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes) if sizes else None


def cache_bytes(device: torch.device) -> int:
    """Last-level cache: the GPU's L2, or the CPU's largest cache (32 MiB where unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20))
    return _cpu_llc_bytes() or 32 * 2**20


# total bytes all rotating sets may take together, per device type
ROTATION_CAP = {"cpu": 2**30, "cuda": 4 * 2**30}
MAX_SETS = 8


def rotation_count(set_bytes: int, device: torch.device) -> int:
    """How many copies of an input set to rotate over: enough to exceed twice the last-level cache, at most
    MAX_SETS and at most ROTATION_CAP bytes together (at least 1)."""
    device = torch.device(device)
    want = math.ceil(2 * cache_bytes(device) / max(set_bytes, 1))
    cap = ROTATION_CAP.get(device.type, 2**30) // max(set_bytes, 1)
    return max(1, min(want, MAX_SETS, cap))


class Rotation:
    """Cycles through a list of input sets, one per call."""

    def __init__(self, sets: list):
        self.sets, self.i = sets, 0

    def next(self):
        item = self.sets[self.i]
        self.i = (self.i + 1) % len(self.sets)
        return item


# ---------------------------------------------------------------------------------------------- copy
def measure_copy(numel: int, dtype: torch.dtype, device: torch.device, timer: Timer) -> dict:
    """Device-to-device copy of a tensor of `numel` elements into a preallocated one (dst.copy_(src)): the
    memory-bandwidth ceiling, without allocation (on CPU a fresh allocation's page faults would dominate).
    GB/s counts bytes read + written."""
    elem = torch.empty((), dtype=dtype).element_size()
    first = torch.randn(numel, device=device, dtype=torch.float32).to(dtype)
    n = rotation_count(numel * elem, device)
    rot = Rotation([(first, torch.empty_like(first))]
                   + [(first.clone(), torch.empty_like(first)) for _ in range(n - 1)])

    def copy():
        src, dst = rot.next()
        dst.copy_(src)
    t = timer(copy)
    moved = 2 * numel * elem
    return {"ms": t.median_ms, "gbps": moved / (t.median_ms * 1e-3) / 1e9, "bytes": moved, "sets": n}
