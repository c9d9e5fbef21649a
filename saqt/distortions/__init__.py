"""The 25 KADID-10k distortion types x 5 levels, faithful to the reference MATLAB generator."""

from saqt.distortions import blur, brightness, color, compression, noise, sharpness, spatial  # noqa: F401  (registers)
from saqt.distortions.catalogue import DistortionSpec, catalogue, catalogue_identity, spec
from saqt.distortions.engine import distort, random_params
from saqt.distortions.prepared import PreparedImage

__all__ = ["DistortionSpec", "PreparedImage", "catalogue", "catalogue_identity", "distort", "random_params", "spec"]
