"""GlintIQA checkpoints: this toolkit's and the official release's, read into a model.

Accepted: ``{"state_dict": ...}`` (the release's and this toolkit's), ``{"model": ...}`` (toolkit 0.1) or a bare
state dict; the release's current module names, its older ones (``transformer.``, ``cnn.``, ``fusion1.``, ...:
its ``engine/checkpoint.py`` maps them) and toolkit 0.1's (``vit.``, ``cnn.net.``, ``stage_cwsa.0.``, ...), each
with or without DDP's ``module.`` prefix. Tensors the model does not use (ViT blocks 10-11, final norm and
classifier) are dropped; a tensor the model needs that is missing or of another shape is refused by name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from glint.backbones import RANDOM, RandomWeightsWarning, rename_prefixes
from glint.model import GlintConfig, GlintIQA
from saqt.core.context import pick_device
from saqt.core.errors import SaqtError
from saqt.core.shards import sha256_file

RELEASE_OLDER_NAMES = (
    ("transformer.", "vgfe.backbone."),
    ("cnn.", "clfe.backbone."),
    ("patch_embed1.", "clfe.patch_embed1."),
    ("patch_embed2.", "clfe.patch_embed2."),
    ("patch_embed3.", "clfe.patch_embed3."),
    ("att_cnn.", "local_cwsa."),
    ("proj.", "local_projection."),
    ("fusion1.", "cwsa1."),
    ("fusion2.", "cwsa2."),
    ("fusion3.", "cwsa3."),
    ("fusion4.", "cwsa4."),
    ("conv1.", "siem1.conv."),
    ("conv2.", "siem2.conv."),
    ("conv3.", "siem3.conv."),
    ("conv4.", "siem4.conv."),
    ("out.", "quality_head.layers."),
)
_CWSA_PARTS = (("q.", "c_q."), ("k.", "c_k."), ("v.", "c_v."), ("norm.", "norm."))
TOOLKIT_0_1_NAMES = (
    ("vit.", "vgfe.backbone."),
    ("cnn.net.", "clfe.backbone."),
    ("cnn.", "clfe.backbone."),
    *((f"align.{i}.", f"clfe.patch_embed{i + 1}.proj.") for i in range(3)),
    *((f"local_cwsa.{a}", f"local_cwsa.{b}") for a, b in _CWSA_PARTS),
    *((f"stage_cwsa.{i}.{a}", f"cwsa{i + 1}.{b}") for i in range(4) for a, b in _CWSA_PARTS),
    *((f"stage_sem.{i}.", f"siem{i + 1}.") for i in range(4)),
    ("local_proj.", "local_projection."),
    ("head.", "quality_head.layers."),
)


class CheckpointError(SaqtError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; one line naming the file and the problem."""


# The entries of a checkpoint glint reads besides its tensors, and what each must be when present.
ABSENT = object()
META = {"model_config": dict, "train_config": dict, "provenance": dict}
PROVENANCE = {"split": dict, "pretrain": dict, "init": dict, "score_scale": str}
SPLIT = {"dataset": str, "label_file": str, "protocol": str, "round": int, "seed": int, "digests": dict}


@dataclass
class Checkpoint:
    """A checkpoint's tensors under the model's names, the model they build, and its other entries."""

    path: Path
    state: dict[str, torch.Tensor]
    config: GlintConfig
    naming: str  # "release" (current names: the release's and this toolkit's), "release-older", "toolkit-0.1"
    meta: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """What provenance records about it."""
        return {
            "path": str(self.path),
            "sha256": sha256_file(self.path),
            "naming": self.naming,
            "model_config": self.config.as_dict(),
            "provenance": self.meta.get("provenance", {}),
        }


def torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``; every way a file can fail to be a checkpoint is one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is an empty file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # EOFError, zip/pickle errors, disallowed globals: the file is not a usable checkpoint
        raise CheckpointError(
            f"checkpoint {path} cannot be read: truncated, damaged or not a PyTorch checkpoint ({type(err).__name__})"
        ) from None


def _check_entries(where: str, entries: dict, kinds: dict[str, type], passing: tuple = ()) -> None:
    """CheckpointError unless each entry of ``kinds`` is of its type; a value in ``passing`` (None, or ``ABSENT``
    for a missing entry) passes too."""
    for key, kind in kinds.items():
        value = entries.get(key, ABSENT)
        if any(value is p for p in passing) or (isinstance(value, kind) and not isinstance(value, bool)):
            continue
        shown = "missing" if value is ABSENT else type(value).__name__
        raise CheckpointError(f"{where}{key} should be {kind.__name__}, is {shown}")


def check_meta(meta: dict, path: Path) -> dict:
    """``meta``, a checkpoint's entries besides its tensors, if those glint reads have their shapes (a
    ``provenance`` split record complete); CheckpointError naming the first that does not."""
    _check_entries(f"checkpoint {path}: ", meta, META, (ABSENT,))
    provenance = meta.get("provenance", {})
    _check_entries(f"checkpoint {path}: provenance ", provenance, PROVENANCE, (ABSENT, None))
    if provenance.get("split"):
        _check_entries(f"checkpoint {path}: provenance split ", provenance["split"], SPLIT)
    return meta


def _naming(keys: list[str], path: Path) -> tuple[str, tuple[tuple[str, str], ...]]:
    if any(k.startswith(("vgfe.", "clfe.")) for k in keys):
        return "release", ()
    if any(k.startswith("transformer.") for k in keys):
        return "release-older", RELEASE_OLDER_NAMES
    if any(k.startswith("vit.") for k in keys):
        return "toolkit-0.1", TOOLKIT_0_1_NAMES
    raise CheckpointError(f"checkpoint {path} holds no GlintIQA weights (no vgfe./clfe., transformer. or vit. tensors)")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint file's tensors renamed to this model's names, and the model configuration they need."""
    path = Path(path)
    raw = torch_load(path)
    meta = {}
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        state, meta = raw["state_dict"], {k: v for k, v in raw.items() if k != "state_dict"}
    elif isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        state, meta = raw["model"], {k: v for k, v in raw.items() if k != "model"}
    else:
        state = raw
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    naming, renames = _naming(list(state), path)
    state = rename_prefixes(state, renames)
    recorded = check_meta(meta, path).get("model_config", {})
    default_cwsa = "plain" if naming == "toolkit-0.1" else "released"  # toolkit 0.1 computed the plain attention
    try:
        config = GlintConfig(**{"cwsa": default_cwsa, **recorded, "vit_weights": RANDOM, "cnn_weights": RANDOM})
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} records a model configuration this toolkit cannot build ({err})"
        ) from None
    return Checkpoint(path, state, config, naming, meta)


def build_model(ckpt: Checkpoint) -> GlintIQA:
    """A fresh model (no download) holding the checkpoint's tensors; unused ones are dropped, missing or misshapen
    ones, and ones holding NaN or infinite values, refused by name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the random initialisation is replaced below
        model = GlintIQA(ckpt.config)
    own = model.state_dict()
    missing = [k for k in own if k not in ckpt.state]
    if missing:
        raise CheckpointError(
            f"checkpoint {ckpt.path} lacks {len(missing)} tensors the model needs, first {missing[0]}"
        )
    wrong = next((k for k in own if ckpt.state[k].shape != own[k].shape), None)
    if wrong:
        raise CheckpointError(
            f"checkpoint {ckpt.path}: tensor {wrong} has shape {tuple(ckpt.state[wrong].shape)}, "
            f"the model needs {tuple(own[wrong].shape)}"
        )
    diverged = next((k for k in own if ckpt.state[k].is_floating_point() and not ckpt.state[k].isfinite().all()), None)
    if diverged:
        raise CheckpointError(
            f"checkpoint {ckpt.path}: tensor {diverged} holds NaN or infinite values (the run that saved it "
            "diverged): it cannot score"
        )
    model.load_state_dict({k: ckpt.state[k] for k in own})
    return model


def load_model(path: str | Path | None, device: str | torch.device = "cpu") -> GlintIQA:
    """The GlintIQA model a checkpoint holds (this toolkit's or the official release's), in eval mode on ``device``
    ("auto" picks CUDA when present). ``model.checkpoint`` keeps what was read (naming, configuration, other entries
    such as provenance). ``path=None`` gives the smoke-test model of ``glint predict --random-init`` (random weights,
    seed 0, with a RandomWeightsWarning): the release publishes no weights to download."""
    if path is None:
        return random_model().to(_device(device)).eval()
    ckpt = read_checkpoint(path)
    model = build_model(ckpt)
    ckpt.state = {}  # the tensors now live in the model
    model.checkpoint = ckpt
    return model.to(_device(device)).eval()


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else pick_device(device)


def random_model(seed: int = 0) -> GlintIQA:
    """A randomly initialised model with the EfficientNet-Lite0 local branch: scores that mean nothing, for smoke
    runs of the scoring path."""
    torch.manual_seed(seed)
    return GlintIQA(GlintConfig("efficientnet_lite0", RANDOM, RANDOM))


def checkpoint_payload(model: GlintIQA, **entries) -> dict:
    """What this toolkit saves: the release's ``{"state_dict": ...}`` layout plus the model configuration."""
    return {"state_dict": model.state_dict(), "model_config": model.config.as_dict(), **entries}
