"""The 25 KADID-10k distortion types x 5 levels, faithful to the reference MATLAB generator."""

from saqt.build.distortions import blur, brightness, color, compression, noise, sharpness, spatial  # noqa: F401  (registers)
from saqt.build.distortions.catalogue import DistortionSpec, catalogue, catalogue_identity, spec
from saqt.build.distortions.engine import distort, random_params
from saqt.build.distortions.prepared import PreparedImage

__all__ = ["DistortionSpec", "PreparedImage", "catalogue", "catalogue_identity", "distort", "random_params", "spec"]
