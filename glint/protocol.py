"""The two training protocols: the toolkit's honest one (the default) and the official release's recipe.

``honest``: the toolkit's seeded split with 10% of the training part held out, the epoch chosen on that validation
split; one cosine decay of the learning rate over the run; AMP on CUDA; 10 epochs.

``released``: as SYSU-Video/GlintIQA (34c8936) trains on one dataset (configs/defaults.py, scripts/train.py,
engine/train.py, data/): Adam (lr 1e-5, weight decay 1e-5) on the L1 loss; CosineAnnealingLR(T_max=30, eta_min=0)
stepped after every batch, so the rate cycles every 30 steps; 300 epochs; batch 32; seed 12345, round r (1-10)
seeding the split and torch with r * 12345; the release's split (``glint.data.released_split``); the best epoch
picked on the TEST split (optimistic); fp32; 25 test crops; CLIVE's training scores rescaled to [-50, 150].
For pretraining on SAQT-IQA its run.sh uses 50 epochs, batch 128 and AMP, with the same optimiser and schedule.
It reports the median over 10 rounds of each round's best test metrics (``ROUNDS``).
Options given on top of a protocol are used and recorded as deviations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from saqt.core.errors import ConfigError

PROTOCOLS = ("honest", "released")
ROUNDS = {"honest": 1, "released": 10}  # rounds run by default; the release's --train-test-round is 10
SCHEDULES = ("cosine", "cycle")

COMMON = {"batch_size": 32, "lr": 1e-5, "weight_decay": 1e-5, "test_crops": 25}
HONEST = {**COMMON, "epochs": 10, "seed": 0, "select_on": "val", "schedule": "cosine", "amp": True}
RELEASED = {**COMMON, "epochs": 300, "seed": 12345, "select_on": "test", "schedule": "cycle", "amp": False}
PRETRAIN = {
    "honest": {**HONEST, "epochs": 50, "batch_size": 128},
    "released": {**RELEASED, "epochs": 50, "batch_size": 128, "amp": True, "select_on": "val"},
}
RELEASE_T_MAX, RELEASE_ETA_MIN = 30, 0.0


@dataclass(frozen=True)
class Protocol:
    """A protocol's settings after the options given on top of it, and which options differ from it."""

    name: str
    settings: dict
    round: int
    deviations: dict = field(default_factory=dict)

    @property
    def torch_seed(self) -> int:
        """The seed of initialisation, data order and augmentation: round x seed under the release's protocol."""
        return self.round * self.settings["seed"] if self.name == "released" else self.settings["seed"]

    def record(self) -> dict:
        return {
            "name": self.name,
            "round": self.round,
            "settings": self.settings,
            "torch_seed": self.torch_seed,
            "deviations": self.deviations,
        }


def resolve(
    name: str, given: dict, round_: int | None = None, dataset_spec: dict | None = None, pretrain: bool = False
) -> Protocol:
    """Protocol ``name`` with the options in ``given`` (None: not given) applied on top."""
    if name not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    base = dict(PRETRAIN[name] if pretrain else HONEST if name == "honest" else RELEASED)
    if name == "released" and dataset_spec and "epochs" in dataset_spec.get("released", {}):
        base["epochs"] = dataset_spec["released"]["epochs"]
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(base) - {"max_steps"})
    if unknown:
        raise ConfigError(f"unknown protocol settings: {', '.join(unknown)}")
    if given.get("schedule", base["schedule"]) not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}")
    if given.get("select_on", base["select_on"]) not in ("val", "test"):
        raise ConfigError("--select-on must be val or test")
    deviations = {k: {"protocol": base.get(k), "used": v} for k, v in given.items() if base.get(k) != v}
    if round_ is None:
        round_ = 1 if name == "released" else 0
    if name == "released" and round_ < 1:
        raise ConfigError("--protocol released numbers its rounds from 1 (round r splits with seed r x --seed)")
    return Protocol(
        name, base | {k: v for k, v in given.items() if k in base}, round_, deviations if name == "released" else {}
    )


def default_rounds(name: str, round_: int | None) -> int:
    """How many rounds a finetune runs when ``--rounds`` is not given: one from a ``--round`` given, else the
    protocol's (the release's 10 under ``released``)."""
    return 1 if round_ is not None else ROUNDS.get(name, 1)
