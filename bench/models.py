"""Real-model rows: `python -m bench --model NAME` (docs/bench.md).

A model (torchvision or timm, random weights; nothing is downloaded) is timed as users run it, for four
providers: eager, torch.compile, fused_attn.convert, and torch.compile of the converted model:
  inference   eval, no_grad, at each --batch (default 1 and 16), NCHW and channels_last
  training    one step (forward, loss = mean(out^2), backward) at --train-batch, NCHW
  attention   the attention blocks alone on the inputs they receive in the model (captured by forward hooks
              at the largest inference batch, NCHW): the sum over blocks of each block's time, per provider
              (the blocks convert replaces; torch.compile of each block), and their share of the model's
              eager time; ratios vs eager and torch.compile
  memory      a training step's peak: CUDA max_memory_allocated; on CPU the bytes saved for backward
              (saved-tensor hooks, distinct storages; eager and convert: a compiled graph saves its own)
Each figure is the median of --repeat rounds; within a round every provider runs once, in turn (interleaved).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Optional

import torch
from torch import nn

PROVIDERS = ("eager", "compile", "fused", "compile(fused)")

# the models of the goals first; NAME or tv:NAME / timm:NAME
MODELS = ("tv:efficientnet_b0", "tv:mobilenet_v3_large", "timm:seresnet50", "timm:ecaresnet50d")


def build(name: str) -> nn.Module:
    """A model with random weights from torchvision ("tv:NAME") or timm ("timm:NAME"; a bare NAME: torchvision
    if it has it, else timm)."""
    source, _, model = name.rpartition(":")
    import torchvision
    if source in ("tv", "") and model in torchvision.models.list_models():
        return torchvision.models.get_model(model, weights=None)
    if source in ("timm", ""):
        import timm
        return timm.create_model(model, pretrained=False)
    raise ValueError(f"unknown model {name!r}: torchvision's list_models() or timm's names (tv:NAME, timm:NAME)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(fns: dict, repeat: int, device: torch.device) -> dict:
    """{name: median ms}: one warm-up call each, then `repeat` rounds calling each fn once in turn."""
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[k].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _attention_paths(model: nn.Module) -> list:
    import fused_attn
    _, report = fused_attn.convert(model)
    return [r.path for r in report]


def _capture_inputs(model: nn.Module, paths: list, x: torch.Tensor) -> dict:
    inputs = {}
    hooks = [model.get_submodule(p).register_forward_pre_hook(
        lambda m, args, p=p: inputs.setdefault(p, args[0].detach())) for p in paths]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return inputs


def _saved_bytes(step: Callable) -> int:
    """Bytes of the distinct storages autograd saves for backward during `step()`."""
    seen: dict = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def _peak_bytes(step: Callable, device: torch.device) -> Optional[int]:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _fresh_dynamo(graphs: int = 8) -> None:
    """Empty Dynamo's caches and allow `graphs` graphs per code object. Dynamo keys its cache on code objects
    for the whole process, and one model's forward (or one block class's, for the attention rows) is a single
    code object for the original, its converted copy, every layout, batch, grad mode and block: past
    recompile_limit (8) Dynamo silently runs the frame eagerly, and "compile" rows would time eager code."""
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = max(8, graphs)
    torch._dynamo.config.accumulated_recompile_limit = max(256, 4 * graphs)


def model_rows(name: str, device: torch.device, batches=(1, 16), train_batch: int = 8, size: int = 224,
               repeat: int = 5, log: Callable[[str], None] = print) -> list:
    """The rows of one model (dicts; see the module docstring)."""
    import fused_attn
    torch.manual_seed(0)
    model = build(name).to(device).eval()
    paths = _attention_paths(model)
    fused, report = fused_attn.convert(model)
    rows = []
    base = {"model": name, "size": size, "attention_blocks": len(paths),
            "attention_classes": sorted({r.old for r in report})}
    log(f"{name}: {len(paths)} attention blocks ({', '.join(base['attention_classes'])})")

    for layout in ("nchw", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        m, f = model.to(memory_format=fmt), fused.to(memory_format=fmt)
        _fresh_dynamo()
        nets = {"eager": m, "compile": torch.compile(m), "fused": f, "compile(fused)": torch.compile(f)}
        for b in batches:
            x = torch.randn(b, 3, size, size, device=device).contiguous(memory_format=fmt)

            def infer(net, x=x):
                with torch.no_grad():
                    return net(x)
            ms = _interleaved({k: (lambda net=net: infer(net)) for k, net in nets.items()}, repeat, device)
            rows.append({**base, "kind": "inference", "batch": b, "layout": layout, "ms": ms})
            log(_line(rows[-1]))

    m, f = model.to(memory_format=torch.contiguous_format), fused.to(memory_format=torch.contiguous_format)
    m.train(), f.train()
    x = torch.randn(train_batch, 3, size, size, device=device)
    _fresh_dynamo()
    nets = {"eager": m, "compile": torch.compile(m), "fused": f, "compile(fused)": torch.compile(f)}

    def step(net):
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()
    ms = _interleaved({k: (lambda net=net: step(net)) for k, net in nets.items()}, repeat, device)
    memory = {}
    for k, net in nets.items():
        peak = _peak_bytes(lambda net=net: step(net), device)
        memory[k] = peak if peak is not None else (_saved_bytes(lambda net=net: step(net))
                                                   if "compile" not in k else None)
    rows.append({**base, "kind": "training", "batch": train_batch, "layout": "nchw", "ms": ms,
                 "memory_bytes": memory, "memory_kind": "peak" if device.type == "cuda" else "saved"})
    log(_line(rows[-1]))

    m.eval(), f.eval()
    b = max(batches)
    x = torch.randn(b, 3, size, size, device=device)
    inputs = _capture_inputs(m, paths, x)
    blocks = {p: (m.get_submodule(p), f.get_submodule(p)) for p in paths}
    _fresh_dynamo(graphs=2 * len(blocks))
    per_provider = {
        "eager": [(blk, inputs[p]) for p, (blk, _) in blocks.items()],
        "compile": [(torch.compile(blk), inputs[p]) for p, (blk, _) in blocks.items()],
        "fused": [(twin, inputs[p]) for p, (_, twin) in blocks.items()],
        "compile(fused)": [(torch.compile(twin), inputs[p]) for p, (_, twin) in blocks.items()],
    }

    def run_all(pairs):
        with torch.no_grad():
            for blk, inp in pairs:
                blk(inp)
    ms = _interleaved({k: (lambda pairs=pairs: run_all(pairs)) for k, pairs in per_provider.items()}, repeat,
                      device)
    whole = next(r for r in rows if r["kind"] == "inference" and r["batch"] == b and r["layout"] == "nchw")
    rows.append({**base, "kind": "attention", "batch": b, "layout": "nchw", "ms": ms,
                 "share_of_eager_model": ms["eager"] / whole["ms"]["eager"],
                 "share_of_fused_model": ms["fused"] / whole["ms"]["fused"]})
    log(_line(rows[-1]))
    return rows


def _line(row: dict) -> str:
    ms = row["ms"]
    parts = [f"{k} {v:.1f} ms" for k, v in ms.items()]
    ratio = f"fused x{ms['eager'] / ms['fused']:.2f} eager, x{ms['compile'] / ms['fused']:.2f} compile; " \
            f"compile(fused) x{ms['compile'] / ms['compile(fused)']:.2f} compile"
    extra = ""
    if "share_of_eager_model" in row:
        extra = (f"; share of the model: eager {row['share_of_eager_model']:.1%}, "
                 f"fused {row['share_of_fused_model']:.1%}")
    if "memory_bytes" in row:
        mem = {k: (f"{v / 2**20:.0f} MB" if v else "-") for k, v in row["memory_bytes"].items()}
        extra += f"; {row['memory_kind']} memory {mem}"
    return f"  {row['kind']:<9} b={row['batch']:<3} {row['layout']:<13} " + ", ".join(parts) + f" | {ratio}{extra}"


def write_json(path, meta: dict, rows: list) -> None:
    import json
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "providers": PROVIDERS, "rows": rows}, indent=1))
    tmp.replace(path)


def markdown(meta: dict, rows: list) -> str:
    out = [f"# Real models: {meta['device_name']}", "",
           f"torch {meta['torch']}, triton {meta['triton']}, git {meta['git'].get('sha', '?')}, {meta['date']}, "
           f"{meta['threads']} threads, fp32, input {rows[0]['size'] if rows else '?'}px; medians of interleaved "
           "rounds (bench/models.py); compile(fused) under fused_attn's compile policy "
           f"`{meta.get('compile_policy', 'kernels')}` (fused_attn.set_compile_policy).", "",
           "| model | row | batch | layout | eager ms | compile ms | fused ms | compile(fused) ms | fused / eager "
           "| fused / compile | compile(fused) / compile | notes |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms"]
        notes = ""
        if r["kind"] == "attention":
            notes = (f"{r['attention_blocks']} blocks; {r['share_of_eager_model']:.1%} of the eager model, "
                     f"{r['share_of_fused_model']:.1%} of the fused one")
        if r["kind"] == "training":
            mem = ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in r["memory_bytes"].items() if v)
            notes = f"{r['memory_kind']} memory: {mem}"
        out.append(f"| {r['model']} | {r['kind']} | {r['batch']} | {r['layout']} | {ms['eager']:.1f} | "
                   f"{ms['compile']:.1f} | {ms['fused']:.1f} | {ms['compile(fused)']:.1f} | "
                   f"{ms['eager'] / ms['fused']:.2f}x | {ms['compile'] / ms['fused']:.2f}x | "
                   f"{ms['compile'] / ms['compile(fused)']:.2f}x | {notes} |")
    out += ["", "x-figures are speedups (> 1: the fused side is faster)."]
    return "\n".join(out) + "\n"
