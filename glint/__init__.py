"""GlintIQA: the no-reference IQA model pretrained on SAQT-IQA (``glint.load_model`` reads this toolkit's and the
official release's checkpoints)."""

__all__ = ["load_model"]


def __getattr__(name: str):
    """``glint.load_model``, imported on first use: importing a glint module (the CLI's configs) loads no torch."""
    if name == "load_model":
        from glint.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'glint' has no attribute {name!r}")
