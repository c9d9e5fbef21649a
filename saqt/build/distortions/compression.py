"""Compression types: 9 JPEG 2000, 10 JPEG, both round-tripped through a real codec."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from saqt.build.distortions.color import BYTE_LUT
from saqt.build.distortions.prepared import Indexed, PreparedImage
from saqt.build.distortions.registry import renderer


def _round_trip(src: PreparedImage, **save_args) -> Indexed:
    buf = io.BytesIO()
    Image.fromarray(src.rgb8).save(buf, **save_args)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return Indexed(np.asarray(decoded.convert("RGB")), BYTE_LUT)


@renderer(9)
def jpeg2000(src: PreparedImage, ratio: float) -> Indexed:
    """Lossy JPEG 2000 (9/7 wavelet, RGB->YCbCr) at compression ratio ``ratio``."""
    return _round_trip(src, format="JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True, mct=1)


@renderer(10)
def jpeg(src: PreparedImage, quality: float) -> Indexed:
    """Baseline JPEG at IJG quality ``quality`` with 4:2:0 chroma subsampling."""
    return _round_trip(src, format="JPEG", quality=int(quality), subsampling="4:2:0")
