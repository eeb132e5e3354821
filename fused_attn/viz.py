"""Plots of recorded attention maps: spatial heat maps and channel-weight bars, to a PNG (needs matplotlib).

    with fused_attn.record_attention(model) as maps:
        model(x)
    fused_attn.viz.plot_attention(maps, "attention.png")
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Union

from torch import Tensor, nn

from .nn.base import AttentionMaps, AttentionModule, attention_modules

__all__ = ["plot_attention"]

_BAR_COLORS = {"channel": "tab:blue", "global": "tab:green", "groups": "tab:orange"}
_BAR_LABELS = {"channel": "channel", "global": "channel", "groups": "group-count choice"}


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("fused_attn.viz.plot_attention needs matplotlib: pip install matplotlib "
                          "(or pip install 'fused_attn[viz]')") from exc
    return Figure, FigureCanvasAgg


def _rows(source) -> list[tuple[str, dict, object]]:
    """[(title, maps, module or None)] for a module, a model, {path: maps} or one maps dict; only those with maps."""
    if isinstance(source, AttentionModule):
        rows = [(type(source).__name__, source.attention_maps, source)]
    elif isinstance(source, (nn.Module, AttentionMaps)):
        modules = attention_modules(source) if isinstance(source, nn.Module) else source.modules
        rows = [(f"{path} ({type(m).__name__})", m.attention_maps, m) for path, m in modules.items()]
    elif isinstance(source, Mapping):
        if all(isinstance(v, Tensor) for v in source.values()):
            rows = [("attention", dict(source), None)]
        else:
            rows = [(str(k), dict(v), None) for k, v in source.items()]
    else:
        raise TypeError(f"expected an attention module, a model or a mapping of maps, got {type(source).__name__}")
    rows = [row for row in rows if row[1]]
    if not rows:
        raise ValueError("no attention maps recorded: run a forward pass with recording on "
                         "(record_attention=True, or inside `with fused_attn.record_attention(model):`)")
    return rows


def _panels(maps: dict, sample: int) -> list[tuple[str, str, Tensor]]:
    """[(kind "map" | "bars", key, values)] for batch item `sample`; per-group spatial maps are averaged."""
    out = []
    for key, t in maps.items():
        v = t[sample].detach().float().cpu()
        if v.dim() == 3:
            out.append(("map", f"{key} (mean of {v.shape[0]} group maps)", v.mean(0)))
        elif v.dim() == 2:
            out.append(("map", key, v))
        else:
            out.append(("bars", key, v.flatten()))
    return sorted(out, key=lambda p: p[0] != "map")   # heat maps first


def plot_attention(source: Union[AttentionModule, nn.Module, Mapping], path: Union[str, os.PathLike], *,
                   sample: int = 0, max_rows: int = 8, dpi: int = 110) -> Path:
    """Draw recorded attention maps of batch item `sample` to the PNG `path`; returns the path.

    source: an attention module (its `attention_maps`), a model (each of its attention modules holding maps),
    the mapping yielded by `fused_attn.record_attention`, or one maps dict {"channel": [B, C], "spatial": ...}.
    One row per module (at most `max_rows`): spatial maps as heat maps, channel / global / group weights as bars.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    rows = _rows(source)
    shown = rows[:max_rows]
    panels = [_panels(maps, sample) for _, maps, _ in shown]
    ncols = max(len(p) for p in panels)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * len(shown)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(shown), ncols, squeeze=False)
    for r, ((name, _, module), row) in enumerate(zip(shown, panels)):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(row):
                ax.set_axis_off()
                continue
            kind, key, v = row[c]
            ax.set_title(f"{name}: {key}", fontsize=10)
            if kind == "map":
                im = ax.imshow(v.numpy(), cmap="viridis", interpolation="nearest")
                fig.colorbar(im, ax=ax, shrink=0.85)
                ax.set_xlabel("w")
                ax.set_ylabel("h")
            else:
                base = key.split(" ")[0]
                ax.bar(range(v.numel()), v.numpy(), width=1.0 if v.numel() > 32 else 0.8,
                       color=_BAR_COLORS.get(base, "tab:purple"))
                ax.set_xlim(-0.5, v.numel() - 0.5)
                choices = getattr(module, "group_choices", None)
                if base == "groups" and choices is not None and len(choices) == v.numel():
                    ax.set_xticks(range(v.numel()), [str(g) for g in choices])
                    ax.set_xlabel("group count")
                else:
                    ax.set_xlabel(f"{_BAR_LABELS.get(base, 'index')} index")
                ax.set_ylim(0, max(1.0, float(v.max())))
                ax.set_ylabel("weight")
    note = f" (first {max_rows} of {len(rows)} modules)" if len(rows) > max_rows else ""
    fig.suptitle(f"attention maps, batch item {sample}{note}")
    path = Path(path)
    fig.savefig(path, dpi=dpi, format="png")
    return path
