"""SAQT: build quality-labelled image datasets by semantic-aligned quality transfer.

The package is layered, each layer importing only from those before it: ``saqt.core`` <- ``saqt.build`` <-
``saqt.label`` <- ``saqt.read`` <- ``saqt.publish`` <- ``saqt.inspect``, with ``saqt.fetch`` beside ``saqt.core``
(docs/architecture.md). The names users call are exported here and imported on first use, so ``import saqt`` stays
cheap.
"""

from importlib import import_module

__version__ = "0.4.0"

_EXPORTS = {
    "run_build": "saqt.build.build_stage",
    "run_synth_bank": "saqt.label.synth_stage",
    "run_label": "saqt.label.label_stage",
    "run_fidelity": "saqt.label.fidelity",
    "run_publish": "saqt.publish.publish_stage",
    "BuildConfig": "saqt.label.stage_configs",
    "SynthConfig": "saqt.label.stage_configs",
    "LabelConfig": "saqt.label.stage_configs",
    "FidelityConfig": "saqt.label.stage_configs",
    "PublishConfig": "saqt.label.stage_configs",
    "RunContext": "saqt.core.context",
    "DEFAULT_CONTEXT": "saqt.core.context",
    "SaqtError": "saqt.core.errors",
    "BuildReader": "saqt.build.build_reader",
    "load_encoder": "saqt.label.encoders",
    "open_set": "saqt.read.api",
    "verify_published": "saqt.read.verify",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """The exported ``name``, imported from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'saqt' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
