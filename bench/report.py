"""Output: the terminal table (streamed row by row), the summary, and the JSON, Markdown and PNG files."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

from . import cases

LABEL_WIDTH = 38
COLUMNS = (f"    {'provider':<{LABEL_WIDTH}}{'median ms':>11}  {'p20-p80 ms':<17}{'GB/s':>8}{'%copy':>8}"
           f"{'x eager':>9}{'x compile':>10}{'max err':>10}  notes")


def _num(v, fmt: str, missing: str = "-") -> str:
    return missing if v is None or isinstance(v, str) else format(v, fmt)


def _mb(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def shape_str(shape) -> str:
    return "x".join(str(d) for d in shape)


def row_title(row: dict) -> str:
    return f"{row['kind']:<7}{row['name']:<28}{shape_str(row['shape']):<15}{row['dtype']:<9}{row['mode']:<13}"


def row_header(row: dict, index: int, total: int, elapsed_s: float) -> str:
    copy = row.get("copy")
    extra = f"{_mb(row.get('bytes'))} moved"
    if copy:
        extra += f"; copy {copy['gbps']:.1f} GB/s"
    if row.get("rotation_sets"):
        extra += f"; {row['rotation_sets']} input sets"
    if row.get("baseline"):
        extra += f"; baseline {row['baseline']}"
    return f"[{index:>3}/{total} {int(elapsed_s) // 60:>3}:{int(elapsed_s) % 60:02d}] {row_title(row)} {extra}"


def provider_line(p: dict) -> str:
    if p["status"] != "ok":
        return f"    {p['label']:<{LABEL_WIDTH}}{p['status'].upper():>11}  {p.get('reason', '')}"
    spread = f"{p['p20_ms']:.3f}-{p['p80_ms']:.3f}"
    pct = None if p.get("frac_copy") is None else 100 * p["frac_copy"]
    notes = []
    if p.get("compile_s") is not None:
        notes.append(f"compile {p['compile_s']:.1f} s")
    if p.get("note"):
        notes.append(p["note"])
    err = p.get("max_err")
    err_s = "-" if err is None else ("INF/NAN" if isinstance(err, str) or not math.isfinite(err) else f"{err:.1e}")
    return (f"    {p['label']:<{LABEL_WIDTH}}{p['median_ms']:>11.3f}  {spread:<17}{_num(p.get('gbps'), '.2f'):>8}"
            f"{_num(pct, '.1f'):>8}{_num(p.get('speedup_vs_eager'), '.2f'):>9}"
            f"{_num(p.get('speedup_vs_compile'), '.2f'):>10}{err_s:>10}  {'; '.join(notes)}")


def baselines_line(found: dict) -> str:
    """The header's account of the eager providers (meta["baselines"]): where the op rows' expressions live, and
    each module row's baseline (with its package version, or why there is none)."""
    ops = [b for b in found.values() if b["kind"] == "op"]
    modules = [f"{name} = {b['name']}" + ("" if b["source"].startswith("bench/") else f" ({b['source']})")
               if b.get("name") else f"{name} = none ({b['missing']})"
               for name, b in found.items() if b["kind"] == "module"]
    lines = [f"eager baselines, op rows: the op in plain torch ops ({ops[0]['source']}), named per row"] if ops else []
    if modules:
        lines.append("eager baselines, module rows: " + ", ".join(modules))
    return "\n".join(lines) or "eager baselines: no rows planned"


class Progress:
    """Prints each row's header as it starts and each provider's line as it finishes (to sys.stdout by default)."""

    def __init__(self, stream=None):
        self.stream = stream

    def print(self, text: str = "") -> None:
        print(text, file=self.stream or sys.stdout, flush=True)


# ------------------------------------------------------------------------------------------------ summary
def provider_names(rows: list) -> list:
    seen: list = []
    for row in rows:
        for p in row["providers"]:
            if p["name"] not in seen:
                seen.append(p["name"])
    return seen


def summary(rows: list) -> str:
    """One line per row: eager median and every other provider's speedup over eager (compile's in brackets)."""
    names = [n for n in provider_names(rows) if n != "eager"]
    head = f"{'':<7}{'row':<28}{'shape':<15}{'dtype':<9}{'mode':<13}{'eager ms':>10}" + \
        "".join(f"{n:>18}" for n in names) + "  baseline (eager)"
    lines = ["speedup vs eager [vs torch.compile] (n/a: not available here; err: failed; !: max err > 1e-2)",
             head, "-" * len(head)]
    for row in rows:
        by = {p["name"]: p for p in row["providers"]}
        eager = by.get("eager", {}).get("median_ms")
        cells = []
        for n in names:
            p = by.get(n)
            if p is None:
                cells.append("")
            elif p["status"] != "ok":
                cells.append(p["status"] if p["status"] != "error" else "err")
            else:
                bad = isinstance(p.get("max_err"), str) or (p.get("max_err") or 0) > 1e-2
                cells.append(f"{_num(p.get('speedup_vs_eager'), '.2f')}"
                             f"[{_num(p.get('speedup_vs_compile'), '.2f')}]{'!' if bad else ''}")
        status = f"  {row.get('baseline') or '-'}"
        if row["status"] != "ok":
            status += f"  {row['status']}: {row.get('reason', '')}"
        lines.append(row_title(row) + f"{_num(eager, '.3f'):>10}" + "".join(f"{c:>18}" for c in cells) + status)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- files
def _finite(value):
    """JSON has no inf / NaN: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def formulas() -> dict:
    out = {c.name: {"fwd": c.fwd_bytes.formula(), "bwd": c.bwd_bytes.formula()} for c in cases.OP_CASES}
    out["modules"] = {"fwd+bwd": cases.MODULE_BYTES}
    return out


def write_json(path: Path, meta: dict, rows: list) -> None:
    doc = {"meta": meta, "providers": provider_names(rows), "byte_formulas": formulas(), "rows": rows}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(doc), indent=1, allow_nan=False))
    tmp.replace(path)


def _md(text) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "/").replace("\n", " ")


def _md_cell(p: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    v = p.get(key)
    if isinstance(v, str):
        return v
    return "" if v is None else format(v * scale, fmt)


def markdown(meta: dict, rows: list) -> str:
    git = meta.get("git", {})
    lines = [f"# fused_attn benchmark: {meta['device_name']}", "",
             f"- device `{meta['device']}` {meta['device_name']}, {meta['threads']} CPU threads",
             f"- torch {meta['torch']} (CUDA {meta['cuda'] or 'none'}), triton {meta['triton'] or 'none'}, "
             f"python {meta['python']}, fused_attn {meta['fused_attn']}",
             f"- git {git.get('sha', 'unknown')}{' (dirty)' if git.get('dirty') else ''}, {meta['date']}",
             f"- suite `{meta['suite']}`, dtypes {', '.join(meta['dtypes'])}, command `python -m bench "
             f"{' '.join(meta['argv'])}`",
             f"- timer: {meta['timer']}",
             f"- providers: {meta['providers_legend']}",
             f"- wall time {meta.get('wall_s', 0):.0f} s; compile times are excluded from the medians", "",
             "GB/s = minimal bytes (see byte formulas below) / median time; % copy = that over the GB/s of a "
             "device-to-device copy (dst.copy_(x), preallocated) of a tensor of x's size in the same run. x eager, "
             "x compile: speedup over the eager baseline's and torch.compile's medians. max err: max |out - ref| / "
             "max |ref| over the output and every gradient, ref = the float64 reference.", "",
             "| kind | row | shape | dtype | mode | provider | median ms | p20-p80 ms | GB/s | % copy | x eager "
             "| x compile | max err | compile s |",
             "| --- | --- | --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        head = f"| {row['kind']} | {row['name']} | {shape_str(row['shape'])} | {row['dtype']} | {row['mode']} "
        if row["status"] != "ok":
            lines.append(head + f"| {row['status']}: {_md(row.get('reason', ''))} |" + " |" * 8)
            continue
        for p in row["providers"]:
            label = _md(f"eager: {row['baseline']}" if p["name"] == "eager" and row.get("baseline") else p["label"])
            if p["status"] != "ok":
                lines.append(head + f"| {label} | {p['status']}: {_md(p.get('reason', ''))} |" + " |" * 7)
                continue
            lines.append(head + f"| {label} | {p['median_ms']:.3f} | {p['p20_ms']:.3f}-{p['p80_ms']:.3f} "
                         f"| {_md_cell(p, 'gbps', '.2f')} | {_md_cell(p, 'frac_copy', '.1f', 100)} "
                         f"| {_md_cell(p, 'speedup_vs_eager', '.2f')} | {_md_cell(p, 'speedup_vs_compile', '.2f')} "
                         f"| {_md_cell(p, 'max_err', '.1e')} | {_md_cell(p, 'compile_s', '.1f')} |")
    lines += ["", "## Eager baselines (bench/baselines)", "", "| row | eager runs | from | weights |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {_md(b.get('name') or 'none: ' + b.get('missing', ''))} | {_md(b.get('source', ''))} "
              f"| {_md(b.get('mapping', 'its state_dict, loaded strictly' if b['kind'] == 'module' else ''))} |"
              for name, b in meta.get("baselines", {}).items()]
    copies = {(shape_str(r["shape"]), r["dtype"]): r["copy"] for r in rows if r.get("copy")}
    lines += ["", "## Copy baselines (dst.copy_(x) of a tensor of x's size; GB/s counts read + write)", "",
              "| shape | dtype | ms | GB/s |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {shape} | {dtype} | {c['ms']:.3f} | {c['gbps']:.2f} |" for (shape, dtype), c in copies.items()]
    lines += ["", "## Byte formulas", "",
              "e = bytes per element, x [B, C, H, W], N = BCHW, P = BHW, Q = BC, S = BC(H+W), k stats, "
              "Cr = the SE hidden width (C/4, the sample registry's), cg = C/groups; fwd+bwd rows count fwd + bwd.", "",
              "| row | forward | backward |", "| --- | --- | --- |"]
    lines += [f"| {n} | {f['fwd']} | {f['bwd']} |" for n, f in formulas().items() if n != "modules"]
    lines += [f"| modules | {cases.MODULE_BYTES} | |", ""]
    return "\n".join(lines)


def write_png(path: Path, meta: dict, rows: list) -> Optional[str]:
    """Horizontal bars of each provider's speedup over eager, one panel per mode, rows shared across panels;
    returns why not where matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no PNG: matplotlib is not available ({exc})"
    names = [n for n in provider_names(rows) if n != "eager"]
    modes = [m for m in cases.ALL_MODES if any(r["mode"] == m for r in rows)]
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return "no PNG: no row was timed"
    keys = list(dict.fromkeys((r["kind"], r["name"], shape_str(r["shape"]), r["dtype"]) for r in ok))
    by_key = {((r["kind"], r["name"], shape_str(r["shape"]), r["dtype"]), r["mode"]): r for r in ok}
    fig, axes = plt.subplots(1, max(1, len(modes)), sharex=True, sharey=True, squeeze=False,
                             figsize=(6 * max(1, len(modes)) + 2.5, 1.5 + 0.09 * len(keys) * max(3, len(names))))
    bar = 0.8 / max(1, len(names))
    for ax, mode in zip(axes[0], modes):
        for j, n in enumerate(names):
            ys, xs = [], []
            for i, key in enumerate(keys):
                row = by_key.get((key, mode))
                p = next((p for p in row["providers"] if p["name"] == n), None) if row else None
                if p and p.get("speedup_vs_eager"):
                    ys.append(i + (j - (len(names) - 1) / 2) * bar)
                    xs.append(p["speedup_vs_eager"])
            ax.barh(ys, xs, height=bar, color=plt.get_cmap("tab10")(j % 10),
                    label="torch.compile" if n == "compile" else f"fused_attn[{n}]")
        ax.axvline(1.0, color="black", linewidth=0.8)
        first_module = next((i for i, k in enumerate(keys) if k[0] == "module"), None)
        if first_module:
            ax.axhline(first_module - 0.5, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("speedup over eager PyTorch (log scale; > 1 is faster)")
        ax.set_title(mode)
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0][0].set_yticks(range(len(keys)), [f"{k[1]} {k[2]}" + ("" if len(meta["dtypes"]) == 1 else f" {k[3]}")
                                             for k in keys], fontsize=8)
    axes[0][0].set_ylim(len(keys) - 0.5, -0.5)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(names)), fontsize=9, frameon=False)
    fig.suptitle(f"fused_attn: {meta['device_name']}, {', '.join(meta['dtypes'])}, torch {meta['torch']}, "
                 f"git {meta['git']['sha'][:10]}", fontsize=10)
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
