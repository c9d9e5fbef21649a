"""SAQT: build quality-labelled image datasets by semantic-aligned quality transfer."""

__version__ = "0.4.0"
