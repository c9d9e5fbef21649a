"""Encoders (real EfficientNet-Lite0 weights, a real tiny open_clip model) and the embedding stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch

from saqt.embed import cached_embeddings, embed_images
from saqt.encoders import EncoderError, load_encoder
from saqt.images import decode_image
from saqt.sources import sample_paths

TINY = "saqt-tiny-vit"


@pytest.fixture(scope="module")
def effnet():
    return load_encoder("effnet-lite0", "cpu")


@pytest.fixture(scope="module")
def tiny_clip_checkpoint(tmp_path_factory):
    """A real open_clip model from a registered tiny config, saved as a local checkpoint file."""
    folder = tmp_path_factory.mktemp("clip")
    config = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1}}  # fmt: skip
    (folder / f"{TINY}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    torch.save(model.state_dict(), folder / "tiny.pt")
    return folder / "tiny.pt"


def test_effnet_lite0_carries_real_imagenet_weights(effnet):
    """The cat photo is classified as a cat (ImageNet classes 281-285): the weights are the trained ones."""
    cat = decode_image(sample_paths()[1])
    with torch.inference_mode():
        logits = effnet.model(effnet.preprocess(cat)[None])
    assert int(logits.argmax()) in range(281, 286)
    assert effnet.weights.startswith("efficientnet-lite0-57934424.pth sha256:")


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


def test_embeddings_do_not_depend_on_loader_workers(effnet):
    paths = [str(p) for p in sample_paths()]
    np.testing.assert_array_equal(embed_images(effnet, paths, batch_size=2, loader_workers=0),
                                  embed_images(effnet, paths, batch_size=2, loader_workers=2))  # fmt: skip


def test_tiny_open_clip_from_a_local_checkpoint(tiny_clip_checkpoint):
    encoder = load_encoder(f"clip:{TINY}@{tiny_clip_checkpoint}", "cpu")
    assert encoder.dim == 32 and encoder.id == f"clip:{TINY}@{tiny_clip_checkpoint}" and "sha256:" in encoder.weights
    v = embed_images(encoder, [str(p) for p in sample_paths()[:3]], batch_size=2, loader_workers=0)
    assert v.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    state = torch.load(tiny_clip_checkpoint, weights_only=True)
    assert torch.equal(encoder.model.visual.conv1.weight, state["visual.conv1.weight"])  # the file was loaded


def test_hub_weights_without_network_fail_with_the_offline_alternatives():
    """Run where the hub cannot be reached (HF_HUB_OFFLINE is read at import, so in a fresh process)."""
    code = ("from saqt.encoders import EncoderError, load_encoder\n"
            "try:\n    load_encoder('clip:ViT-B-32@laion2b_s34b_b79k', 'cpu')\n"
            "except EncoderError as err:\n    print('EncoderError:', err)\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("EncoderError:")]
    assert len(lines) == 1 and "offline alternatives: --encoder effnet-lite0" in lines[0]


@pytest.mark.parametrize(
    "spec, message",
    [("resnet50", "unknown encoder"), ("clip:ViT-B-32", "clip:<model>@"), ("clip:NoSuchNet@x", "no model"),
     ("clip:ViT-B-32@/no/such/file.pt", "neither a file nor a pretrained tag"), ("effnet-lite0:big", "no argument")],
)  # fmt: skip
def test_bad_encoder_specs_are_refused(spec, message):
    with pytest.raises(EncoderError, match=message):
        load_encoder(spec, "cpu")


def test_embedding_cache_is_reused(effnet, tmp_path):
    paths = {f"id{i}": str(p) for i, p in enumerate(sample_paths()[:3])}
    cache = tmp_path / "cache.parquet"
    first = cached_embeddings(effnet, paths, cache, loader_workers=0)
    gone = {**paths, "id0": str(tmp_path / "deleted.png")}  # would fail to decode if it were embedded again
    again = cached_embeddings(effnet, gone, cache, loader_workers=0)
    for key in paths:
        np.testing.assert_array_equal(first[key], again[key])
