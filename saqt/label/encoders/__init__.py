"""Semantic image encoders behind one protocol; ``load_encoder("effnet-lite0")``, ``load_encoder("clip:ViT-B-32@...")``."""

from saqt.label.encoders.base import Encoder, EncoderError, load_encoder

__all__ = ["Encoder", "EncoderError", "load_encoder"]
