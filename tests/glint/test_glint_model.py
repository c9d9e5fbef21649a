"""GlintIQA: the official release's architecture (glintiqa/models/ at commit 34c8936), CWSA, frozen parts,
determinism, learning, backbone weights; the metrics."""

from __future__ import annotations

import math
import re
import socket
import time
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, pearsonr, spearmanr

import glint.backbones
from glint.architecture import LOCAL_BACKBONES
from glint.backbones import (
    EfficientNetLite0Local,
    RandomWeightsWarning,
    ResNet50Local,
    ViTBackbone,
    WeightsError,
    load_weights,
    read_state_dict,
)
from glint.metrics import iqa_metrics, logistic4
from glint.model import CWSA, GlintConfig, GlintIQA, parameter_counts
from saqt.core.errors import ConfigError
from saqt.core.registry import resolve

LITE = GlintConfig(local_backbone="efficientnet_lite0")


def quiet_model(config: GlintConfig = LITE) -> GlintIQA:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return GlintIQA(config)


@pytest.mark.slow
def test_default_model_builds_offline_with_a_loud_warning_and_scores_a_batch():
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        model = GlintIQA()
    assert model.config.cwsa == "released" and model.config.random_backbones() == ["ViT-S/16", "resnet50"]
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2,) and torch.isfinite(out).all()
    total, trainable = parameter_counts(model)
    assert total == 41_201_877 and trainable == 30_589_333  # ViT-S blocks 0-9 + ResNet-50 conv1-layer3 + fusion


def test_the_torch_free_backbone_names_are_those_the_model_builds():
    assert [resolve(target) for target in LOCAL_BACKBONES.values()] == [ResNet50Local, EfficientNetLite0Local]
    assert tuple(LOCAL_BACKBONES) == ("resnet50", "efficientnet_lite0")
    with pytest.raises(ConfigError, match="--local-backbone must be one of resnet50, efficientnet_lite0"):
        GlintConfig(local_backbone="vgg16")


@pytest.mark.slow
def test_architecture_matches_the_design():
    model = quiet_model(GlintConfig())
    embeds = [model.clfe.patch_embed1.proj, model.clfe.patch_embed2.proj, model.clfe.patch_embed3.proj]
    assert [e.kernel_size for e in embeds] == [(4, 4), (2, 2), (1, 1)] == [e.stride for e in embeds]
    assert [e.in_channels for e in embeds] == [256, 512, 1024] and all(e.bias is not None for e in embeds)
    assert model.local_projection.in_features == 1152 and len(model.vgfe.backbone.blocks) == 10
    assert all(
        s.conv.in_channels == 768 and s.conv.out_channels == 384 and s.conv.bias is None for _, s in model.stages()
    )
    head = model.quality_head.layers
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (384, 384, 1)
    assert isinstance(head[1], torch.nn.GELU) and head[2].p == 0.5
    assert all(c.drop.p == 0.5 and c.norm.normalized_shape == (196,) for c, _ in model.stages())
    # every dropout of the release: CWSA(drop=0.5) for the local CWSA as for the stages, the head's nn.Dropout()
    # (p=0.5); inside the backbones timm's and torchvision's defaults: no dropout (p=0) and no drop path
    drops = {n: m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "backbone" not in n}
    cwsas = ("local_cwsa", "cwsa1", "cwsa2", "cwsa3", "cwsa4")
    assert drops == {**{f"{c}.drop": 0.5 for c in cwsas}, "quality_head.layers.2": 0.5}
    inner = [m for n, m in model.named_modules() if "backbone" in n]
    assert all(m.p == 0 for m in inner if isinstance(m, torch.nn.Dropout))
    assert not [m for m in inner if type(m).__name__ == "DropPath"]


def test_a_configured_dropout_reaches_every_module_that_has_one(monkeypatch):
    """``GlintConfig.dropout`` is every CWSA's and the head's: 0.2 everywhere, none left at a fixed value (the
    backbones, which hold no such dropout, are replaced by empty stand-ins to build in milliseconds)."""
    import glint.model as model_module

    monkeypatch.setattr(model_module, "VGFE", lambda weights: torch.nn.Module())
    monkeypatch.setattr(model_module, "CLFE", lambda local, weights, dim: torch.nn.Module())
    model = GlintIQA(GlintConfig("efficientnet_lite0", "random", "random", dropout=0.2))
    drops = {n: m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert drops == {
        "local_cwsa.drop": 0.2,
        "cwsa1.drop": 0.2,
        "cwsa2.drop": 0.2,
        "cwsa3.drop": 0.2,
        "cwsa4.drop": 0.2,
        "quality_head.layers.2": 0.2,
    }


def test_cwsa_drops_the_attention_output_before_its_norm_in_training():
    """The release's CWSA in training: x + norm(dropout_0.5(attention output)); the dropout mask is the one
    torch draws for a p = 0.5 dropout from the same seed (a rescaled half of the entries kept)."""
    torch.manual_seed(0)
    cwsa = CWSA(tokens=6).train()
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        q = torch.nn.functional.normalize(cwsa.c_q(x), dim=-1)
        k = torch.nn.functional.normalize(cwsa.c_k(x), dim=-1)
        mixed = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(6), dim=-1) @ cwsa.c_v(x)
        mixed = mixed.transpose(1, 2).reshape(2, 5, 6)  # the release's reshape (see the test above)
        torch.manual_seed(5)
        expected = x + cwsa.norm(torch.nn.functional.dropout(mixed, 0.5, training=True))
        torch.manual_seed(5)
        got = cwsa(x)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, x + cwsa.norm(mixed))  # the dropout did act


@pytest.mark.parametrize("variant", ["released", "plain"])
def test_cwsa_computes_channel_attention_as_specified(variant):
    torch.manual_seed(0)
    cwsa = CWSA(tokens=6, variant=variant).eval()
    x = torch.randn(2, 5, 6)
    q = torch.nn.functional.normalize(x @ cwsa.c_q.weight.T + cwsa.c_q.bias, dim=-1)
    k = torch.nn.functional.normalize(x @ cwsa.c_k.weight.T + cwsa.c_k.bias, dim=-1)
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(6), dim=-1)
    mixed = attn @ (x @ cwsa.c_v.weight.T + cwsa.c_v.bias)  # (2, 5 channels, 6 tokens)
    if variant == "released":  # element [c, n] of the result is element (t, ch) of mixed^T read in memory order
        flat = mixed.transpose(1, 2).contiguous().view(2, -1)
        mixed = torch.stack([torch.stack([flat[b, c * 6 : (c + 1) * 6] for c in range(5)]) for b in range(2)])
    torch.testing.assert_close(cwsa(x), x + cwsa.norm(mixed))


@pytest.mark.slow
def test_frozen_parts_do_not_change_while_the_rest_learns():
    torch.manual_seed(0)
    model = quiet_model()
    vit = model.vgfe.backbone
    frozen = [vit.patch_embed, *vit.blocks[:5]]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert vit.pos_embed.requires_grad and vit.cls_token.requires_grad
    assert all(p.requires_grad for b in vit.blocks[5:] for p in b.parameters())
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
    for name, p in model.named_parameters():
        assert (not torch.equal(p, before[name])) == p.requires_grad, name
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_same_seed_same_model_and_output():
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = quiet_model().eval()
        torch.manual_seed(9)
        with torch.inference_mode():
            outputs.append(model(torch.randn(2, 3, 224, 224)))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.slow
def test_backbone_weights_load_from_files_in_timm_and_torchvision_layouts(tmp_path):
    """A full timm ViT-S/16 file and a full torchvision ResNet-50 file (heads included) load; unfit files are refused."""
    import timm
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(1)
    vit = timm.create_model("vit_small_patch16_224")
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, tmp_path / "vit.safetensors")
    resnet = torchvision.models.resnet50()
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")
    loaded = ViTBackbone(str(tmp_path / "vit.safetensors"))
    assert torch.equal(loaded.blocks[7].attn.qkv.weight, vit.blocks[7].attn.qkv.weight)
    assert torch.equal(loaded.pos_embed, vit.pos_embed)
    cnn = ResNet50Local(str(tmp_path / "resnet50.pth"))
    assert torch.equal(cnn.layer3[5].conv2.weight, resnet.layer3[5].conv2.weight)
    assert torch.equal(cnn.bn1.running_var, resnet.bn1.running_var)
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="lack"):
        load_weights(loaded, read_state_dict(tmp_path / "bad.pt", "vit"), "vit", "bad.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="cannot read cnn weights"):
        ResNet50Local(str(tmp_path / "empty.pt"))


@pytest.fixture()
def hub_at(tmp_path, monkeypatch):
    """Points both download paths (torch.hub's URL, the Hugging Face Hub for timm) at ``http://127.0.0.1:PORT``,
    with empty caches; returns the URL of the ResNet-50 file."""
    import huggingface_hub.constants

    def point(port: int) -> str:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setattr(glint.backbones, "RESNET50_URL", f"http://127.0.0.1:{port}/resnet50-19c8e357.pth")
        for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        return glint.backbones.RESNET50_URL

    return point


def test_weight_downloads_fail_at_once_in_one_line_where_no_server_answers(hub_at):
    """The real download paths (torch.hub; timm through huggingface_hub, which retried for about a minute), with a
    real refused connection: one line, within seconds, naming the option that takes a local file."""

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = hub_at(s.getsockname()[1])
    started = time.monotonic()
    with pytest.raises(WeightsError) as err:
        ResNet50Local("torchvision")
    assert time.monotonic() - started < 3
    assert str(err.value) == (
        f"cannot download {url} (127.0.0.1 is unreachable: connection refused); give --cnn-weights FILE (that "
        "file, or another torchvision ResNet-50 state dict) instead"
    )
    started = time.monotonic()
    with pytest.raises(WeightsError) as err:
        ViTBackbone("timm")
    assert time.monotonic() - started < 3 and "\n" not in str(err.value)  # refused before the network is built
    assert str(err.value).startswith(
        "cannot download timm's vit_small_patch16_224.augreg_in21k_ft_in1k (127.0.0.1 is unreachable: connection "
        "refused, and it is not cached); give --vit-weights FILE"
    )


@pytest.mark.slow
def test_timm_weights_come_from_the_hub_cache_where_the_hub_is_unreachable(hub_at, tmp_path):
    """A ViT-S/16 file in huggingface_hub's cache layout is what ``--vit-weights timm`` loads with no server."""
    import timm
    from safetensors.torch import save_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        hub_at(s.getsockname()[1])
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--timm--vit_small_patch16_224.augreg_in21k_ft_in1k"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model("vit_small_patch16_224").state_dict().items()}
    save_file(state, snapshot / "model.safetensors")
    vit = ViTBackbone("timm")
    assert torch.equal(vit.pos_embed, state["pos_embed"]) and torch.equal(
        vit.blocks[9].mlp.fc2.weight, state["blocks.9.mlp.fc2.weight"]
    )


def test_a_failed_download_from_a_server_that_answers_is_one_line(hub_at, monkeypatch):
    """Past the probe (a port that accepts), a download that fails anyway names its error type."""
    import timm

    def cut(*args, **kwargs):
        raise ConnectionError("connection reset")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", cut)
    monkeypatch.setattr(timm, "create_model", cut)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = hub_at(listener.getsockname()[1])
        with pytest.raises(WeightsError, match=rf"^cannot download {re.escape(url)} \(ConnectionError\); give --cnn"):
            ResNet50Local("torchvision")
        with pytest.raises(WeightsError, match=r"augreg_in21k_ft_in1k \(ConnectionError\); give --vit-weights FILE"):
            ViTBackbone("timm")


def test_metrics_agree_with_scipy_raw_and_fitted():
    rng = np.random.default_rng(0)
    pred = rng.uniform(-3, 3, 200)
    target = logistic4(pred, 90, 10, 0.5, 0.4) + rng.normal(0, 1, 200)
    m = iqa_metrics(pred, target)
    assert m["srocc"] == pytest.approx(spearmanr(pred, target)[0])
    assert m["krcc"] == pytest.approx(kendalltau(pred, target)[0])
    assert m["plcc"] == pytest.approx(pearsonr(pred, target)[0])
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)))  # raw, as the release computes it
    assert m["plcc_logistic"] > m["plcc"] + 0.03 and m["rmse_logistic"] < 3.0 < m["rmse"]
    assert math.isnan(iqa_metrics([1, 1, 1], [1, 2, 3])["srocc"])
