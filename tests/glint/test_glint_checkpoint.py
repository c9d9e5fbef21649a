"""Official GlintIQA checkpoints: state dicts in the release's format (random weights, made here from the release's
module definitions) load into ``glint.load_model`` tensor for tensor, and the loaded model's forward equals the
release's forward computed independently below with plain torch functions."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from typer.testing import CliRunner

import glint
from glint.checkpoint import CheckpointError, checkpoint_payload, load_model
from glint.model import GlintConfig, GlintIQA, parameter_counts
from pipelines.glint_cli import app

DIM, TOKENS = 384, 196
# the release's engine/checkpoint.py: older prefix -> current prefix (inverted here to write an older checkpoint)
OLDER = {
    "transformer.": "vgfe.backbone.",
    "cnn.": "clfe.backbone.",
    "patch_embed1.": "clfe.patch_embed1.",
    "patch_embed2.": "clfe.patch_embed2.",
    "patch_embed3.": "clfe.patch_embed3.",
    "att_cnn.": "local_cwsa.",
    "proj.": "local_projection.",
    "fusion1.": "cwsa1.",
    "fusion2.": "cwsa2.",
    "fusion3.": "cwsa3.",
    "fusion4.": "cwsa4.",
    "conv1.": "siem1.conv.",
    "conv2.": "siem2.conv.",
    "conv3.": "siem3.conv.",
    "conv4.": "siem4.conv.",
    "out.": "quality_head.layers.",
}
UNUSED = ("vgfe.backbone.blocks.10.", "vgfe.backbone.blocks.11.", "vgfe.backbone.norm.", "vgfe.backbone.head.")


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the release's GlintIQA under its current names, random: the whole timm ViT-S/16 (blocks 10-11,
    final norm and 1000-class head included), ResNet-50 conv1-layer3 under torchvision's names, and the fusion."""
    torch.manual_seed(seed)
    state = {f"vgfe.backbone.{k}": v for k, v in timm.create_model("vit_small_patch16_224").state_dict().items()}
    resnet = torchvision.models.resnet50().state_dict()
    state |= {
        f"clfe.backbone.{k}": v
        for k, v in resnet.items()
        if k.startswith(("conv1", "bn1", "layer1", "layer2", "layer3"))
    }
    for i, cin, k in ((1, 256, 4), (2, 512, 2), (3, 1024, 1)):
        state[f"clfe.patch_embed{i}.proj.weight"] = torch.randn(DIM, cin, k, k) / math.sqrt(cin * k * k)
        state[f"clfe.patch_embed{i}.proj.bias"] = torch.randn(DIM) * 0.1
    for name in ("local_cwsa", "cwsa1", "cwsa2", "cwsa3", "cwsa4"):
        for part in ("c_q", "c_k", "c_v"):
            state[f"{name}.{part}.weight"] = torch.randn(TOKENS, TOKENS) / math.sqrt(TOKENS)
            state[f"{name}.{part}.bias"] = torch.randn(TOKENS) * 0.1
        state[f"{name}.norm.weight"] = 1 + torch.randn(TOKENS) * 0.1
        state[f"{name}.norm.bias"] = torch.randn(TOKENS) * 0.1
    state["local_projection.weight"] = torch.randn(DIM, 3 * DIM) / math.sqrt(3 * DIM)
    state["local_projection.bias"] = torch.randn(DIM) * 0.1
    for i in range(1, 5):
        state[f"siem{i}.conv.weight"] = torch.randn(DIM, 2 * DIM, 3, 3) / math.sqrt(2 * DIM * 9)
    state["quality_head.layers.0.weight"] = torch.randn(DIM, DIM) / math.sqrt(DIM)
    state["quality_head.layers.0.bias"] = torch.randn(DIM) * 0.1
    state["quality_head.layers.3.weight"] = torch.randn(1, DIM) / math.sqrt(DIM)
    state["quality_head.layers.3.bias"] = torch.randn(1)
    for key in [k for k in state if "running_var" in k]:  # non-trivial batch-norm statistics
        state[key] = torch.rand_like(state[key]) + 0.5
        state[key.replace("running_var", "running_mean")] = torch.randn_like(state[key]) * 0.1
    for key in [k for k in state if k.startswith("clfe.backbone") and k.endswith("bn3.weight")]:
        state[key] = torch.rand_like(state[key]) * 0.5 + 0.25  # torchvision zero-initialises none; keep them varied
    return state


def official_forward(s: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The release's GlintIQA forward in eval mode, from its module definitions, with torch functions only."""

    def vit_block(h, p):
        b, n, c = h.shape
        y = F.layer_norm(h, (c,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps=1e-6)
        qkv = (
            F.linear(y, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"]).reshape(b, n, 3, 6, 64).permute(2, 0, 3, 1, 4)
        )
        attn = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) * 64**-0.5, dim=-1)
        y = (attn @ qkv[2]).transpose(1, 2).reshape(b, n, c)
        h = h + F.linear(y, s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        y = F.layer_norm(h, (c,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps=1e-6)
        y = F.linear(
            F.gelu(F.linear(y, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"])),
            s[p + "mlp.fc2.weight"],
            s[p + "mlp.fc2.bias"],
        )
        return h + y

    def bn(h, p):
        return F.batch_norm(h, s[p + "running_mean"], s[p + "running_var"], s[p + "weight"], s[p + "bias"], eps=1e-5)

    def bottleneck(h, p, stride):
        y = F.relu(bn(F.conv2d(h, s[p + "conv1.weight"]), p + "bn1."))
        y = F.relu(bn(F.conv2d(y, s[p + "conv2.weight"], stride=stride, padding=1), p + "bn2."))
        y = bn(F.conv2d(y, s[p + "conv3.weight"]), p + "bn3.")
        if p + "downsample.0.weight" in s:
            h = bn(F.conv2d(h, s[p + "downsample.0.weight"], stride=stride), p + "downsample.1.")
        return F.relu(y + h)

    def cwsa(h, p):  # h: (B, C, N)
        b, c, n = h.shape
        q = F.normalize(F.linear(h, s[p + "c_q.weight"], s[p + "c_q.bias"]), dim=-1)
        k = F.normalize(F.linear(h, s[p + "c_k.weight"], s[p + "c_k.bias"]), dim=-1)
        v = F.linear(h, s[p + "c_v.weight"], s[p + "c_v.bias"])
        y = (torch.softmax(q @ k.transpose(-2, -1) * n**-0.5, dim=-1) @ v).transpose(1, 2).reshape(b, c, n)
        return F.layer_norm(y, (n,), s[p + "norm.weight"], s[p + "norm.bias"]) + h

    v = "vgfe.backbone."
    h = (
        F.conv2d(x, s[v + "patch_embed.proj.weight"], s[v + "patch_embed.proj.bias"], stride=16)
        .flatten(2)
        .transpose(1, 2)
    )
    h = torch.cat([s[v + "cls_token"].expand(x.shape[0], -1, -1), h], dim=1) + s[v + "pos_embed"]
    outputs = []
    for i in range(12):  # the release runs the whole ViT and hooks every block
        h = vit_block(h, f"{v}blocks.{i}.")
        outputs.append(h)
    global_tokens = [outputs[i][:, 1:] for i in (6, 7, 8, 9)]
    r = "clfe.backbone."
    y = F.max_pool2d(F.relu(bn(F.conv2d(x, s[r + "conv1.weight"], stride=2, padding=3), r + "bn1.")), 3, 2, 1)
    stages = []
    for layer, blocks, stride in ((1, 3, 1), (2, 4, 2), (3, 6, 2)):
        for j in range(blocks):
            y = bottleneck(y, f"{r}layer{layer}.{j}.", stride if j == 0 else 1)
        stages.append(y)
    local = [
        F.conv2d(f, s[f"clfe.patch_embed{i}.proj.weight"], s[f"clfe.patch_embed{i}.proj.bias"], stride=k)
        .flatten(2)
        .transpose(1, 2)
        for i, f, k in zip((1, 2, 3), stages, (4, 2, 1), strict=True)
    ]
    feature = torch.cat(local, dim=-1)
    feature = F.linear(
        cwsa(feature.transpose(1, 2), "local_cwsa.").transpose(1, 2),
        s["local_projection.weight"],
        s["local_projection.bias"],
    )
    for i in range(4):
        y = cwsa(torch.cat((global_tokens[i], feature), dim=-1).transpose(1, 2), f"cwsa{i + 1}.")
        y = F.conv2d(y.reshape(y.shape[0], y.shape[1], 14, 14), s[f"siem{i + 1}.conv.weight"], padding=1)
        feature = y.flatten(2).transpose(1, 2)  # rearrange "b c h w -> b (h w) c"
    y = F.linear(feature.mean(dim=1), s["quality_head.layers.0.weight"], s["quality_head.layers.0.bias"])
    return F.linear(F.gelu(y), s["quality_head.layers.3.weight"], s["quality_head.layers.3.bias"]).flatten()


@pytest.fixture(scope="module")
def official():
    state = official_state_dict()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = official_forward(state, x)
    return state, x, expected


def older_names(state: dict) -> dict:
    """The release's older naming with DDP's ``module.`` prefix."""
    out = {}
    for key, value in state.items():
        older, current = next((o, c) for o, c in OLDER.items() if key.startswith(c))
        out["module." + older + key[len(current) :]] = value
    return out


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["current", "older-module-bare"])
def test_official_checkpoints_load_tensor_for_tensor_and_compute_the_release_forward(official, tmp_path, layout):
    state, x, expected = official
    path = tmp_path / "official.pth"
    if layout == "current":
        torch.save(
            {"epoch": 7, "state_dict": state, "best_srocc": 0.91, "optimizer": {"state": {}, "param_groups": []}}, path
        )
    else:
        torch.save(older_names(state), path)
    model = glint.load_model(path)
    assert not model.training and model.config.cwsa == "released" and model.config.local_backbone == "resnet50"
    own = model.state_dict()
    used = {k for k in state if not k.startswith(UNUSED)}
    assert set(own) == used  # the unused ViT tensors are dropped, nothing else
    for key in used:
        assert torch.equal(own[key], state[key]), key
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert model.checkpoint.naming == ("release" if layout == "current" else "release-older")


@pytest.mark.slow
def test_plain_cwsa_is_a_different_model_on_the_same_weights(official, tmp_path):
    state, x, expected = official
    torch.save({"state_dict": state, "model_config": {"cwsa": "plain"}}, tmp_path / "plain.pt")
    model = load_model(tmp_path / "plain.pt")
    assert model.config.cwsa == "plain"
    with torch.no_grad():
        got = model(x)
    assert (got - expected).norm() / expected.norm() > 1e-3


@pytest.mark.slow
def test_parameter_counts_against_the_official_model(official):
    state, _, _ = official
    model = load_model_from_state(state)
    total, trainable = parameter_counts(model)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    official_total = sum(v.numel() for k, v in state.items() if not k.endswith(buffers))
    unused = sum(v.numel() for k, v in state.items() if k.startswith(UNUSED))
    assert (total, trainable) == (41_201_877, 30_589_333)
    assert official_total == total + unused and unused == 3_934_696  # ViT blocks 10-11, final norm, 1000-class head


def load_model_from_state(state: dict) -> GlintIQA:
    from glint.checkpoint import Checkpoint, build_model

    return build_model(Checkpoint(None, state, GlintConfig(vit_weights="random", cnn_weights="random"), "release"))


@pytest.mark.slow
def test_freezing_is_the_releases(official):
    """The release freezes the ViT patch embedding and blocks 0-4, and ResNet conv1, bn1, layer1, layer2."""
    model = load_model_from_state(official[0])
    frozen = (
        "vgfe.backbone.patch_embed.",
        *(f"vgfe.backbone.blocks.{i}." for i in range(5)),
        "clfe.backbone.conv1.",
        "clfe.backbone.bn1.",
        "clfe.backbone.layer1.",
        "clfe.backbone.layer2.",
    )
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    assert model.vgfe.backbone.cls_token.requires_grad and model.vgfe.backbone.pos_embed.requires_grad


@pytest.mark.slow
def test_missing_and_misshapen_tensors_are_refused_by_name(official, tmp_path):
    state, _, _ = official
    torch.save({"state_dict": {k: v for k, v in state.items() if k != "cwsa3.c_v.weight"}}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"lacks 1 tensors the model needs, first cwsa3\.c_v\.weight"):
        load_model(tmp_path / "a.pt")
    torch.save({"state_dict": {**state, "siem2.conv.weight": torch.zeros(384, 384, 3, 3)}}, tmp_path / "b.pt")
    with pytest.raises(
        CheckpointError,
        match=r"siem2\.conv\.weight has shape \(384, 384, 3, 3\), the model needs "
        r"\(384, 768, 3, 3\)",
    ):
        load_model(tmp_path / "b.pt")
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="holds no GlintIQA weights"):
        load_model(tmp_path / "c.pt")


def toolkit_0_1_names(state: dict, cnn: str) -> dict:
    """``state`` under toolkit 0.1's module names (its glint/model.py: vit, cnn, align, local_cwsa with q/k/v,
    local_proj, stage_cwsa, stage_sem, head); ``cnn``: the local branch's prefix, ``cnn.`` for EfficientNet-Lite0,
    ``cnn.net.`` for ResNet-50 (timm's features-only net, held as ``cnn.net``)."""
    old = {
        "vgfe.backbone.": "vit.",
        "clfe.backbone.": cnn,
        "local_projection.": "local_proj.",
        "quality_head.layers.": "head.",
    }
    renamed = {}
    for key, value in state.items():
        for current, previous in old.items():
            key = previous + key[len(current) :] if key.startswith(current) else key
        for i in range(1, 4):
            key = key.replace(f"clfe.patch_embed{i}.proj.", f"align.{i - 1}.")
        for i in range(1, 5):
            key = key.replace(f"cwsa{i}.", f"stage_cwsa.{i - 1}.").replace(f"siem{i}.", f"stage_sem.{i - 1}.")
        key = key.replace(".c_q.", ".q.").replace(".c_k.", ".k.").replace(".c_v.", ".v.")
        renamed[key] = value
    return renamed


@pytest.mark.slow
def test_toolkit_checkpoints_round_trip_and_toolkit_0_1_names_load_as_plain_cwsa(tmp_path):
    config = GlintConfig(local_backbone="efficientnet_lite0", vit_weights="random", cnn_weights="random", cwsa="plain")
    with pytest.warns(UserWarning):
        model = GlintIQA(config).eval()
    torch.save(checkpoint_payload(model, epoch=1), tmp_path / "ours.pt")
    loaded = load_model(tmp_path / "ours.pt")
    assert loaded.config == config
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    renamed = toolkit_0_1_names(model.state_dict(), "cnn.")
    torch.save({"model": renamed, "model_config": {"local_backbone": "efficientnet_lite0"}}, tmp_path / "v01.pt")
    old_model = load_model(tmp_path / "v01.pt")
    assert old_model.config.cwsa == "plain" and old_model.checkpoint.naming == "toolkit-0.1"
    with torch.no_grad():
        torch.testing.assert_close(old_model(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
def test_toolkit_0_1_resnet50_checkpoints_under_ddp_names_load_bit_for_bit(tmp_path):
    """Toolkit 0.1's ResNet-50 form (``cnn.net.``), saved bare from a DDP-wrapped model (``module.``): no entry
    records the model, so it loads as the default ResNet-50 model with the plain CWSA 0.1 computed; its output is
    the saved model's, bit for bit."""
    torch.manual_seed(2)
    with pytest.warns(UserWarning):
        model = GlintIQA(GlintConfig(vit_weights="random", cnn_weights="random", cwsa="plain")).eval()
    state = {f"module.{k}": v for k, v in toolkit_0_1_names(model.state_dict(), "cnn.net.").items()}
    assert "module.cnn.net.layer3.5.conv2.weight" in state and "module.stage_cwsa.3.q.weight" in state
    torch.save(state, tmp_path / "v01_resnet50.pt")
    loaded = load_model(tmp_path / "v01_resnet50.pt")
    assert loaded.checkpoint.naming == "toolkit-0.1" and loaded.config == model.config
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_unreadable_checkpoints_give_one_line(tmp_path):
    import io

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, buffer)
    files = {"empty.pt": b"", "truncated.pt": buffer.getvalue()[:500], "text.pt": b"not a checkpoint at all\n" * 3}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="empty file|cannot be read"):
            load_model(tmp_path / name)
        result = CliRunner().invoke(app, ["predict", "--checkpoint", str(tmp_path / name), str(tmp_path)])
        assert result.exit_code == 2 and "Traceback" not in result.output and "Aborted" not in result.output
        assert result.output.strip().count("\n") == 0 and result.output.startswith(
            f"glint predict: checkpoint {tmp_path}"
        )
