"""VGG16 builders and insert_attention against the seed models (layouts, strict state_dict loading, logits)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from test_mod_oracles import SEED, assert_close_rel

from fused_attn import nn as fnn
from fused_attn.models import (
    VGG16_POOL_POSITIONS,
    insert_attention,
    vgg16,
    vgg16_features,
    vgg16_msa,
    vgg16_sca,
    vgg16_se,
)

NUM_CLASSES = 10


def _positions(features: nn.Sequential, cls) -> list[int]:
    return [i for i, m in enumerate(features) if isinstance(m, cls)]


def test_vgg16_features_is_torchvisions_layout():
    f = vgg16_features()
    assert len(f) == 31 and _positions(f, nn.MaxPool2d) == list(VGG16_POOL_POSITIONS)
    assert _positions(f, nn.Conv2d) == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert f[28].in_channels == f[28].out_channels == 512


def test_insert_attention_on_any_sequential():
    base = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 12, 1), nn.ReLU())
    out = insert_attention(base, lambda c: fnn.SEBlock(c, 4), positions=[3, 2, 5])
    kinds = [type(m).__name__ for m in out]
    assert kinds == ["Conv2d", "BatchNorm2d", "SEBlock", "ReLU", "SEBlock", "Conv2d", "ReLU", "SEBlock"]
    assert [m.fc[0].in_features for m in out if isinstance(m, fnn.SEBlock)] == [8, 8, 12]
    assert out[0] is base[0] and len(base) == 5                   # layers shared, the input left alone
    assert out(torch.randn(1, 3, 6, 6)).shape == (1, 12, 4, 4)
    assert isinstance(insert_attention(base, lambda c: fnn.SEBlock(c, 1), [0])[0], fnn.SEBlock)
    with pytest.raises(ValueError, match="positions"):
        insert_attention(base, lambda c: fnn.SEBlock(c), [6])


def test_vgg16_se_loads_the_seed_and_matches_its_logits():
    seed = SEED.vgg16_se(num_classes=NUM_CLASSES).eval()
    ours = vgg16_se(num_classes=NUM_CLASSES).eval()
    ours.load_state_dict(seed.state_dict(), strict=True)
    assert _positions(ours.features, fnn.SEBlock) == _positions(seed.features, SEED.SEBlock) == [4, 10, 18, 26, 34]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close_rel(ours(x), seed(x), "logits")


def test_vgg16_msa_inserts_before_the_given_features_indices():
    model = vgg16_msa(num_classes=NUM_CLASSES)
    at = _positions(model.features, fnn.MultiScaleAttention)
    assert at == [4, 10, 18, 26, 34]                     # before each max-pool, like VGG16_SE
    assert all(isinstance(model.features[i + 1], nn.MaxPool2d) for i in at)
    assert [model.features[i].conv1x1.in_channels for i in at] == [64, 128, 256, 512, 512]
    before_relu = vgg16_msa(NUM_CLASSES, attention_positions=[3, 8, 15, 22, 29])
    assert all(isinstance(before_relu.features[i - 1], nn.Conv2d) and isinstance(before_relu.features[i + 1], nn.ReLU)
               for i in _positions(before_relu.features, fnn.MultiScaleAttention))
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, NUM_CLASSES)
    # the documented seed quirk: VGG16WithMSA counts config entries, so it places three modules elsewhere
    seed = SEED.VGG16WithMSA(NUM_CLASSES).features
    convs_before = [sum(isinstance(m, nn.Conv2d) for m in list(seed)[:i])
                    for i in _positions(seed, SEED.MultiScaleAttention)]
    assert convs_before == [3, 7, 12]                    # after conv2_1, conv3_3, conv5_2


def test_vgg16_sca_is_the_seed_construction():
    plain = vgg16(NUM_CLASSES)  # seed 002: features[:28] + [DualAttention(512)] + features[28:]
    layers = list(plain.features.children())
    plain.features = nn.Sequential(*layers[:28], SEED.DualAttention(512), *layers[28:])
    ours = vgg16_sca(NUM_CLASSES).eval()
    ours.load_state_dict(plain.state_dict(), strict=True)
    assert _positions(ours.features, fnn.DualAttention) == [28] and isinstance(ours.features[29], nn.Conv2d)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert_close_rel(ours(x), plain.eval()(x), "logits")
