"""Encoders (real EfficientNet-Lite0 weights, a real tiny open_clip model, torchvision ResNets with local
random-weight state dicts: no ImageNet weights can be downloaded here) and the embedding stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
import torchvision
from PIL import Image

from saqt.build.sources import sample_paths
from saqt.core.images import decode_image
from saqt.label.embed import cached_embeddings, embed_images
from saqt.label.encoders import EncoderError, load_encoder

TINY = "saqt-tiny-vit"


@pytest.fixture(scope="module")
def effnet():
    return load_encoder("effnet-lite0", "cpu")


@pytest.fixture(scope="module")
def tiny_clip_checkpoint(tmp_path_factory):
    """A real open_clip model from a registered tiny config, saved as a local checkpoint file."""
    folder = tmp_path_factory.mktemp("clip")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1},
    }
    (folder / f"{TINY}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    torch.save(model.state_dict(), folder / "tiny.pt")
    return folder / "tiny.pt"


@pytest.mark.slow
def test_effnet_lite0_carries_real_imagenet_weights(effnet):
    """The cat photo is classified as a cat (ImageNet classes 281-285): the weights are the trained ones."""
    cat = decode_image(sample_paths()[1])
    with torch.inference_mode():
        logits = effnet.model(effnet.preprocess(cat)[None])
    assert int(logits.argmax()) in range(281, 286)
    assert effnet.weights.startswith("efficientnet-lite0-57934424.pth sha256:")


@pytest.mark.slow
def test_embeddings_are_normalised_and_semantic(effnet, tmp_path):
    photos = [decode_image(p) for p in sample_paths()]
    crops = [photos[1][:250, :300], photos[1][50:, 150:], photos[3][:250, :300]]  # cat, cat, rocket
    paths = []
    for i, c in enumerate(crops):
        paths.append(str(tmp_path / f"{i}.png"))
        from PIL import Image

        Image.fromarray(c).save(paths[-1])
    v = embed_images(effnet, paths, batch_size=2, loader_workers=0)
    assert v.shape == (3, 1280) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1  # two views of the cat are closer than cat and rocket


@pytest.mark.slow
def test_embeddings_do_not_depend_on_loader_workers(effnet):
    paths = [str(p) for p in sample_paths()]
    np.testing.assert_array_equal(
        embed_images(effnet, paths, batch_size=2, loader_workers=0),
        embed_images(effnet, paths, batch_size=2, loader_workers=2),
    )


@pytest.mark.slow
def test_tiny_open_clip_from_a_local_checkpoint(tiny_clip_checkpoint):
    encoder = load_encoder(f"clip:{TINY}@{tiny_clip_checkpoint}", "cpu")
    assert encoder.dim == 32 and encoder.id == f"clip:{TINY}@{tiny_clip_checkpoint}" and "sha256:" in encoder.weights
    v = embed_images(encoder, [str(p) for p in sample_paths()[:3]], batch_size=2, loader_workers=0)
    assert v.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    state = torch.load(tiny_clip_checkpoint, weights_only=True)
    assert torch.equal(encoder.model.visual.conv1.weight, state["visual.conv1.weight"])  # the file was loaded


@pytest.mark.slow
def test_hub_weights_without_network_fail_with_the_offline_alternatives():
    """Run where the hub cannot be reached (HF_HUB_OFFLINE is read at import, so in a fresh process)."""
    code = (
        "from saqt.label.encoders import EncoderError, load_encoder\n"
        "try:\n    load_encoder('clip:ViT-B-32@laion2b_s34b_b79k', 'cpu')\n"
        "except EncoderError as err:\n    print('EncoderError:', err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("EncoderError:")]
    assert len(lines) == 1 and "offline alternatives: --encoder effnet-lite0" in lines[0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("resnet18", "unknown encoder"),
        ("clip:ViT-B-32", "clip:<model>@"),
        ("clip:NoSuchNet@x", "no model"),
        ("clip:ViT-B-32@/no/such/file.pt", "neither a file nor a pretrained tag"),
        ("effnet-lite0:big", "no argument"),
    ],
)
def test_bad_encoder_specs_are_refused(spec, message):
    with pytest.raises(EncoderError, match=message):
        load_encoder(spec, "cpu")


@pytest.mark.slow
def test_embedding_cache_is_reused(effnet, tmp_path):
    paths = {f"id{i}": str(p) for i, p in enumerate(sample_paths()[:3])}
    cache = tmp_path / "cache.parquet"
    first = cached_embeddings(effnet, paths, cache, loader_workers=0)
    gone = {**paths, "id0": str(tmp_path / "deleted.png")}  # would fail to decode if it were embedded again
    again = cached_embeddings(effnet, gone, cache, loader_workers=0)
    for key in paths:
        np.testing.assert_array_equal(first[key], again[key])


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    """A torchvision ResNet-50 state dict with random weights, saved as torchvision's checkpoints are."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("resnet") / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def _pooled_features(state: dict, image: np.ndarray) -> np.ndarray:
    """Independent computation: ToTensor + ImageNet Normalize at full resolution, the ResNet stages by hand, mean
    over the final feature map, L2 norm."""
    import torchvision.transforms.functional as F

    net = torchvision.models.resnet50(weights=None)
    net.load_state_dict(state)
    net.eval()
    x = F.normalize(F.to_tensor(Image.fromarray(image)), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[None]
    with torch.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        v = x.mean(dim=(2, 3))[0].numpy()
    return v / np.linalg.norm(v)


@pytest.mark.slow
def test_resnet50_from_a_local_weights_file_pools_the_full_image(resnet50_file, tmp_path):
    encoder = load_encoder(f"resnet50@{resnet50_file}", "cpu")
    digest = __import__("hashlib").sha256(resnet50_file.read_bytes()).hexdigest()
    assert (
        encoder.id == "resnet50"
        and encoder.dim == 2048
        and encoder.weights == f"resnet50-random.pth sha256:{digest[:16]}"
    )
    state = torch.load(resnet50_file, weights_only=True)
    assert torch.equal(encoder.model.conv1.weight, state["conv1.weight"])
    photo = decode_image(sample_paths()[1])  # 451 x 300: not resized, not cropped
    assert tuple(encoder.preprocess(photo).shape) == (3, 300, 451)
    wide, small = photo[:120, :200], photo[100:196, 200:328]
    paths = []
    for i, image in enumerate((wide, small, wide)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    v = embed_images(encoder, paths, batch_size=3, loader_workers=0)  # mixed sizes in one batch
    assert v.shape == (3, 2048)
    np.testing.assert_allclose(v[0], _pooled_features(state, wide), atol=2e-5)
    np.testing.assert_allclose(v[1], _pooled_features(state, small), atol=2e-5)
    np.testing.assert_array_equal(v[0], v[2])


def test_resnet_weights_of_another_architecture_or_format_are_refused(resnet50_file, tmp_path):
    with pytest.raises(EncoderError, match="is not a torchvision resnet101 state dict"):
        load_encoder(f"resnet101@{resnet50_file}", "cpu")
    with pytest.raises(EncoderError, match="does not exist"):
        load_encoder(f"resnet101@{tmp_path / 'none.pth'}", "cpu")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="weights_only=True"):
        load_encoder(f"resnet50@{bad}", "cpu")


def test_resnet_download_without_network_fails_in_one_line(tmp_path, monkeypatch):
    """The real download path (the release's checkpoint URL through torch.hub), where no network is reachable."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: a copy cached elsewhere is not used
    with pytest.raises(EncoderError) as err:
        load_encoder("resnet101", "cpu")
    message = str(err.value)
    assert "\n" not in message and "resnet101-5d3b4d8f.pth" in message and "--encoder resnet101@" in message


@pytest.mark.slow
def test_label_preset_authors_resnet101_is_resnet101_top1_minmax(tmp_path):
    """``saqt label --preset authors-resnet101`` with a local ResNet-101 state dict (random weights: none can be
    downloaded)."""
    from typer.testing import CliRunner

    from pipelines.saqt_cli import app

    weights = tmp_path / "resnet101-random.pth"
    torch.save(torchvision.models.resnet101(weights=None).state_dict(), weights)
    bank = tmp_path / "bank"
    (bank / "refs").mkdir(parents=True)
    rows = ["ref,type,level,score"]
    for i, path in enumerate(sample_paths()[:3]):
        Image.fromarray(decode_image(path)[:64, :96]).save(bank / "refs" / f"r{i}.png")
        rows += [f"refs/r{i}.png,{t},1,{i + t}" for t in (1, 2)]
    (bank / "scores.csv").write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    build = tmp_path / "build"
    result = runner.invoke(
        app, ["build", "--size", "96x64", "--types", "1,2", "--levels", "1", "--limit", "2", "--out", str(build)]
    )
    assert result.exit_code == 0, result.output
    args = ["label", "--build", str(build), "--bank", str(bank), "--preset", "authors-resnet101"]
    args += ["--out", str(tmp_path / "l")]
    result = runner.invoke(
        app, [*args, "--encoder", f"resnet101@{weights}", "--loader-workers", "0", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "l" / "label.json").read_text())
    assert manifest["config"]["preset"] == "authors-resnet101"
    assert manifest["config"]["encoder"] == f"resnet101@{weights}"
    assert manifest["encoder"]["encoder"] == "resnet101" and manifest["encoder"]["weights"].startswith(
        "resnet101-random.pth sha256:"
    )
    assert manifest["rule"]["rule"] == "top1" and manifest["score_scale"] == "minmax:0:9"
    refused = runner.invoke(app, [*args, "--encoder", "effnet-lite0"])
    assert refused.exit_code == 2 and "--preset authors-resnet101 uses --encoder resnet101" in refused.output
