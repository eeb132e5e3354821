"""fused_attn.viz.plot_attention: PNGs from recorded maps, clear errors."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn

import fused_attn
from fused_attn import nn as fnn
from fused_attn.viz import plot_attention

PNG = b"\x89PNG\r\n\x1a\n"
pytest.importorskip("matplotlib")


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG


def test_plot_one_module(tmp_path):
    m = fnn.EMAX(32, factor=8, record_attention=True)
    m(torch.randn(2, 32, 12, 16))
    out = plot_attention(m, tmp_path / "emax.png", sample=1)
    assert _is_png(out) and out.stat().st_size > 10_000


def test_plot_a_model_and_a_maps_dict(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), fnn.MultiScaleAttention(16, 4), fnn.CBAM(16, 4),
                          fnn.EMAX(16, factor=4, reduction=4, dynamic_groups=True))
    with fused_attn.record_attention(model) as maps:
        model(torch.randn(1, 3, 14, 14))
    assert _is_png(plot_attention(maps, tmp_path / "maps.png"))
    assert _is_png(plot_attention(model, tmp_path / "model.png", max_rows=2))
    assert _is_png(plot_attention(maps["1"], tmp_path / "one.png"))


def test_plot_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no attention maps recorded"):
        plot_attention(fnn.SEBlock(16), tmp_path / "none.png")
    with pytest.raises(TypeError):
        plot_attention(42, tmp_path / "bad.png")
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)          # as if matplotlib were not installed
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_attention({"channel": torch.rand(1, 4)}, tmp_path / "x.png")
