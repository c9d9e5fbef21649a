"""GlintIQA: the no-reference IQA model pretrained on SAQT-IQA (``glint.load_model`` reads this toolkit's and the
official release's checkpoints)."""

from glint.checkpoint import load_model

__all__ = ["load_model"]
