"""GlintIQA: the architecture of DESIGN.md, frozen parts, determinism, learning, weights loading; the metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, pearsonr, spearmanr

from glint.backbones import RandomWeightsWarning, ViTGlobal, load_weights
from glint.metrics import iqa_metrics, logistic4
from glint.model import CWSA, GlintConfig, GlintIQA, parameter_counts

LITE = GlintConfig(local_backbone="efficientnet_lite0")


def quiet_model(config: GlintConfig = LITE) -> GlintIQA:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return GlintIQA(config)


def test_default_model_builds_offline_with_a_loud_warning_and_scores_a_batch():
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        model = GlintIQA()
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2,) and torch.isfinite(out).all()
    total, trainable = parameter_counts(model)
    assert total == 41_201_877 and trainable == 31_958_229  # ViT-S blocks 0-9 + ResNet-50 layers 1-3 + fusion


def test_architecture_matches_the_design():
    model = quiet_model(GlintConfig())
    assert [a.kernel_size for a in model.align] == [(4, 4), (2, 2), (1, 1)] == [a.stride for a in model.align]
    assert [a.in_channels for a in model.align] == [256, 512, 1024] and model.local_proj.in_features == 1152
    assert len(model.vit.blocks) == 10 and len(model.stage_cwsa) == 4
    assert all(
        s.conv.in_channels == 768 and s.conv.out_channels == 384 and s.conv.bias is None for s in model.stage_sem
    )
    head = model.head
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (384, 384, 1)
    assert isinstance(head[1], torch.nn.GELU) and head[2].p == 0.5


def test_cwsa_computes_channel_attention_as_specified():
    torch.manual_seed(0)
    cwsa = CWSA(tokens=6).eval()
    x = torch.randn(2, 5, 6)
    q = torch.nn.functional.normalize(cwsa.q(x), dim=-1)
    k = torch.nn.functional.normalize(cwsa.k(x), dim=-1)
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(6), dim=-1)
    assert attn.shape == (2, 5, 5)
    torch.testing.assert_close(cwsa(x), x + cwsa.norm(attn @ cwsa.v(x)))


def test_frozen_parts_do_not_change_while_the_rest_learns():
    torch.manual_seed(0)
    model = quiet_model()
    frozen = [model.vit.patch_embed, *model.vit.blocks[:5]]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert not model.vit.pos_embed.requires_grad and not model.vit.cls_token.requires_grad
    assert all(p.requires_grad for b in model.vit.blocks[5:] for p in b.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = torch.randn(2, 3, 224, 224), torch.tensor([2.0, 7.0])
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.l1_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = dict(model.named_parameters())
    for name, p in after.items():
        changed = not torch.equal(p, before[name])
        assert changed == p.requires_grad, name
    assert losses[-1] < losses[0]


def test_same_seed_same_model_and_output():
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = quiet_model().eval()
        torch.manual_seed(9)
        with torch.inference_mode():
            outputs.append(model(torch.randn(2, 3, 224, 224)))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_backbone_weights_load_from_safetensors_and_state_dicts(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        source = ViTGlobal()
        target = ViTGlobal()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "vit.safetensors")
    torch.save({"state_dict": state}, tmp_path / "vit.pt")
    for path in (tmp_path / "vit.safetensors", tmp_path / "vit.pt"):
        load_weights(target, path, "vit")
        torch.testing.assert_close(target.blocks[7].attn.qkv.weight, source.blocks[7].attn.qkv.weight)
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lack"):
        load_weights(target, tmp_path / "bad.pt", "vit")


def test_metrics_agree_with_scipy_and_the_logistic_fit_helps():
    rng = np.random.default_rng(0)
    pred = rng.uniform(-3, 3, 200)
    target = logistic4(pred, 90, 10, 0.5, 0.4) + rng.normal(0, 1, 200)
    m = iqa_metrics(pred, target)
    assert m["srocc"] == pytest.approx(spearmanr(pred, target)[0])
    assert m["krcc"] == pytest.approx(kendalltau(pred, target)[0])
    assert m["plcc"] == pytest.approx(pearsonr(pred, target)[0])
    assert m["plcc_logistic"] > m["plcc"] + 0.03 and m["rmse"] < 3.0
    assert math.isnan(iqa_metrics([1, 1, 1], [1, 2, 3])["srocc"])
