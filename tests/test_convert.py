"""fused_attn.convert on seed models: what is replaced, parameters shared or copied, outputs unchanged."""
from __future__ import annotations

import torch
import torch.nn as nn
from test_mod_oracles import SEED, OfficialEMA, assert_close_rel, perturb_

import fused_attn
from fused_attn import nn as fnn

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_convert_seed_vgg16_se_copy():
    seed = SEED.vgg16_se(num_classes=10).eval()
    model, report = fused_attn.convert(seed)
    assert [(r.path, r.old, r.new) for r in report] == [(f"features.{i}", "SEBlock", "SEBlock")
                                                        for i in (4, 10, 18, 26, 34)]
    assert len(report) == 5 and not report.skipped and "features.4: SEBlock -> fused_attn SEBlock" in str(report)
    assert all(isinstance(model.features[i], fnn.SEBlock) for i in (4, 10, 18, 26, 34))
    assert isinstance(seed.features[4], SEED.SEBlock)                      # the original is untouched
    assert model.features[4].fc[0].weight is not seed.features[4].fc[0].weight
    assert not model.training
    with torch.no_grad():
        assert_close_rel(model(X), seed(X), "logits")


def test_convert_seed_vgg16_msa_inplace_shares_parameters():
    seed = SEED.vgg16_msa(num_classes=10).eval()
    with torch.no_grad():
        expected = seed(X)
    params = {n: p for n, p in seed.named_parameters()}
    model, report = fused_attn.convert(seed, backend="reference", inplace=True)
    assert model is seed and len(report) == 3 and {r.new for r in report} == {"MultiScaleAttention"}
    assert all(p is params[n] for n, p in model.named_parameters())        # the same Parameter objects
    assert all(m.backend == "reference" for m in model.modules() if isinstance(m, fnn.AttentionModule))
    with torch.no_grad():
        assert_close_rel(model(X), expected, "logits")
    assert len(fused_attn.convert(model)[1]) == 0                          # nothing left to convert


def test_convert_every_seed_module_kind():
    model = perturb_(nn.Sequential(SEED.DualAttention(16), SEED.LiteDualAttention(16), SEED.AttnResBlock(16),
                                   OfficialEMA(16, factor=4), SEED.SEBlock(16, 4), SEED.MultiScaleAttention(16, 4)))
    converted, report = fused_attn.convert(model)
    assert [r.old for r in report] == ["DualAttention", "LiteDualAttention", "AttnResBlock", "OfficialEMA",
                                       "SEBlock", "MultiScaleAttention"]
    assert isinstance(converted[2].attn, fnn.DualAttention) and isinstance(converted[3], fnn.EMA)
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    out, expected = converted(x), model(x)
    assert_close_rel(out, expected, "forward")
    g = torch.randn_like(out)
    assert_close_rel(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(expected, x, g)[0], "grad")


def test_convert_seed_emax_to_fixed_groups_and_the_root_module():
    seed = perturb_(SEED.EMAX(32, factor=8))
    twin, report = fused_attn.convert(seed, inplace=True)
    assert isinstance(twin, fnn.EMAX) and not twin.dynamic_groups and report.replaced[0].path == ""
    assert twin.gamma is seed.gamma
    x = torch.randn(2, 32, 5, 7)
    assert_close_rel(twin(x), seed(x, groups=8), "forward")


def test_convert_leaves_misfits_and_reports_them():
    class SEBlock(nn.Module):          # a seed name with another structure
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(8, 2), nn.ReLU(), nn.Linear(2, 8), nn.Sigmoid())   # biases

        def forward(self, x):
            return x

    model = nn.Sequential(SEBlock(), nn.Sequential(SEED.DualAttention(8)))
    converted, report = fused_attn.convert(model)
    assert [r.path for r in report] == ["1.0"] and type(converted[0]) is SEBlock
    assert report.skipped[0][:2] == ("0", "SEBlock") and "state_dict" in report.skipped[0][2]
    assert "0: SEBlock kept" in str(report)
