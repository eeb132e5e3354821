"""DDP: a 2-process training step (gloo, 127.0.0.1, CPU) gives the gradients of one process on the full batch.

With the loss L = mean over the batch of l(x_b), DDP's averaged gradient (1/2)(dL_0 + dL_1) over two equal
shards equals dL of the full batch, provided every module treats the samples of a batch independently. The
modules tested here do: none has BatchNorm (whose batch statistics differ per shard, so train-mode BN would
make the two sides differ for a reason that has nothing to do with fused_attn); EMA's GroupNorm(cg, cg)
normalises each (sample, group, channel) over H, W, and EMAX's group controller is a per-sample softmax.

Two optimizer steps (SGD) are taken: DDP raises at the second forward if the first backward left a
parameter without gradient under find_unused_parameters=False, so a passing second step proves every
parameter is used (EMAX dynamic mode included). Fixed-group EMAX keeps the seed's unused `group_controller`
and is run with find_unused_parameters=True. All workers run in one spawn, under a deadline.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import assert_close

import fused_attn
from fused_attn import nn as fnn

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available() or sys.platform == "win32",
                                reason="needs torch.distributed with gloo")

WORLD = 2
DEADLINE_S = 120        # the whole spawn (startup of two Python processes included); hangs fail, never block
STEPS = 2
LR = 0.1

# name -> (constructor(backend), input shape [B, C, H, W], find_unused_parameters). B splits over WORLD ranks.
CASES = {
    "SEBlock": (lambda b: fnn.SEBlock(16, 4, backend=b), (4, 16, 5, 6), False),
    "MultiScaleAttention": (lambda b: fnn.MultiScaleAttention(16, 4, backend=b), (4, 16, 5, 6), False),
    "DualAttention": (lambda b: fnn.DualAttention(16, backend=b), (4, 16, 5, 6), False),
    "CBAM": (lambda b: fnn.CBAM(16, reduction=4, backend=b), (4, 16, 5, 6), False),
    "EMA": (lambda b: fnn.EMA(16, factor=4, backend=b), (4, 16, 5, 6), False),
    "EMAX-dynamic": (lambda b: fnn.EMAX(16, factor=4, reduction=4, dynamic_groups=True, backend=b),
                     (4, 16, 5, 6), False),
    "EMAX-fixed": (lambda b: fnn.EMAX(16, factor=4, reduction=4, backend=b), (4, 16, 5, 6), True),
}
BACKENDS = [b for b in ("reference", "cpu") if b in fused_attn.available_backends("cpu")]


def _build(name: str, backend: str) -> torch.nn.Module:
    module = CASES[name][0](backend)
    if hasattr(module, "gamma"):          # EMAX's gamma starts at 0, which would zero its SE path's gradient
        with torch.no_grad():
            module.gamma.fill_(0.5)
    return module


def _train(model: torch.nn.Module, params: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> list[dict]:
    """STEPS SGD steps of L = mean(model(x) * target); the gradients of `params` after each backward."""
    opt = torch.optim.SGD(params.parameters(), lr=LR)
    grads = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        (model(x) * target).mean().backward()
        grads.append({n: None if p.grad is None else p.grad.detach().clone() for n, p in params.named_parameters()})
        opt.step()
    return grads


def _worker(rank: int, port: int, jobs: dict, out_dir: str) -> None:
    """One DDP rank: every (case, backend) job on its shard of the batch; saves {job: grads per step}."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        results = {}
        for (name, backend), (state, x, target) in jobs.items():
            module = _build(name, backend)
            module.load_state_dict(state)
            ddp = torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=CASES[name][2])
            results[name, backend] = _train(ddp, module, x.chunk(WORLD)[rank], target.chunk(WORLD)[rank])
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{(case, backend): (single-process grads per step, [rank 0 grads, rank 1 grads])}: one spawn for all."""
    out_dir = str(tmp_path_factory.mktemp("ddp"))
    torch.manual_seed(0)
    jobs = {}
    for name, (_, shape, _) in CASES.items():
        state = _build(name, "reference").state_dict()
        x, target = torch.randn(shape), torch.randn(shape)
        for backend in BACKENDS:
            jobs[name, backend] = (state, x, target)
    ctx = mp.start_processes(_worker, args=(_free_port(), jobs, out_dir), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=1):   # raises ProcessRaisedException with the worker's traceback
            if time.monotonic() > deadline:
                pytest.fail(f"DDP workers did not finish within {DEADLINE_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
    ranks = [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(WORLD)]
    results = {}
    for (name, backend), (state, x, target) in jobs.items():
        module = _build(name, backend)
        module.load_state_dict(state)
        results[name, backend] = (_train(module, module, x, target), [r[name, backend] for r in ranks])
    return results


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_ddp_gradients_match_full_batch(runs, name, backend):
    """Each step's DDP gradient on every rank == the single-process full-batch gradient (fp32 tolerance)."""
    single, ranks = runs[name, backend]
    for step, expected in enumerate(single):
        for rank, got in enumerate(ranks):
            assert got[step].keys() == expected.keys()
            for pname, g in expected.items():
                what = f"{name}/{backend} step {step} rank {rank} {pname}"
                if g is None:
                    assert got[step][pname] is None, what
                    continue
                assert got[step][pname] is not None, f"{what}: no gradient under DDP"
                assert_close(got[step][pname], g, what=what)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ddp_every_parameter_gets_gradient(runs, backend):
    """find_unused_parameters=False is legal: every parameter of these modules receives a gradient, the EMAX
    dynamic-mode controller and every group-count branch included; fixed EMAX leaves only group_controller."""
    for name, (_, _, find_unused) in CASES.items():
        single, _ = runs[name, backend]
        missing = sorted(n for n, g in single[0].items() if g is None)
        assert missing == (["group_controller.bias", "group_controller.weight"] if find_unused else []), name
    dynamic = runs["EMAX-dynamic", backend][1][0][0]
    assert dynamic["group_controller.weight"].abs().sum() > 0
    assert any(n.startswith("branches.") for n in dynamic)
