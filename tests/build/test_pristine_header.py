"""The header-first pristine screen: on a varied set of files generated here, ``prepare_pristine`` keeps or refuses
each exactly as an oracle that decodes fully (PIL, ImageOps.exif_transpose) and then applies the screen's checks in
their documented order (shorter side, upscaling, JPEG quality, other lossy encoding, colour), under several settings;
and a file refused from its header is never decoded."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

from saqt.build.pristine import prepare_pristine
from saqt.build.screen import Screen
from saqt.build.sources import SourceItem
from saqt.core.images import ImageDecodeError, canonicalise, content_id

SIZE = (160, 120)  # the working size: a 200 x 135 image covers it, its 135 x 200 rotation needs 1.19x
MAX_PIXELS = 40_000
SCREENS = {
    "default": Screen(),
    "allow_grey": Screen(allow_grey=True),
    "any_quality": Screen(min_jpeg_quality=0),
    "upscale_2": Screen(max_upscale=2.0),
}
ORIENTATION = 0x0112
BAD_EXIF = b"Exif\x00\x00garbage!garbage"  # Pillow raises reading it, unless a JFIF density spared it at open


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful picture with a little noise (photo-like for JPEG)."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 64], axis=2)
    noise = np.random.default_rng(seed).normal(0, 6, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[ORIENTATION] = orientation
    return tags.tobytes()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def before_iend(png: bytes, kind: bytes, data: bytes) -> bytes:
    """``png`` with one more chunk after its image data (Pillow reads it only when decoding)."""
    assert png.endswith(png_chunk(b"IEND", b""))
    return png[:-12] + png_chunk(kind, data) + png[-12:]


def raw_profile_exif(orientation: int) -> PngImagePlugin.PngInfo:
    data = exif(orientation)
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(data):8}\n{data.hex()}\n")
    return info


def cases() -> dict[str, tuple[bytes, int | None]]:
    """name -> (file bytes, the JPEG quality it was saved at; None for other formats)."""
    rgb = Image.fromarray(photo(200, 150))
    tall, wide = Image.fromarray(photo(135, 200, 1)), Image.fromarray(photo(200, 135, 2))
    grey = rgb.convert("L")
    rgba = np.dstack([photo(200, 150, 3), np.linspace(0, 255, 200, dtype=np.uint8)[None, :].repeat(150, 0)])
    q95 = encode(rgb, "JPEG", quality=95)
    png = encode(rgb, "PNG")
    made = {
        "jpeg_q95": (q95, 95),
        "jpeg_q90": (encode(rgb, "JPEG", quality=90), 90),
        "jpeg_q75": (encode(rgb, "JPEG", quality=75), 75),
        "jpeg_q40_small": (encode(rgb.resize((150, 100)), "JPEG", quality=40), 40),
        "jpeg_q92_small": (encode(rgb.resize((150, 100)), "JPEG", quality=92), 92),
        "jpeg_q95_tall": (encode(tall, "JPEG", quality=95), 95),  # 135 x 200: needs 1.19x
        "jpeg_rot6_of_wide": (encode(wide, "JPEG", quality=95, exif=exif(6)), 95),  # shows 135 x 200: upscaling
        "jpeg_rot8_of_tall": (encode(tall, "JPEG", quality=95, exif=exif(8)), 95),  # shows 200 x 135: passes
        "jpeg_rot6_of_tall_q80": (encode(tall, "JPEG", quality=80, exif=exif(6)), 80),  # passes size, low quality
        "jpeg_rot3_of_tall": (encode(tall, "JPEG", quality=95, exif=exif(3)), 95),  # turned 180: still tall
        "jpeg_xmp_rot6_of_wide": (encode(wide, "JPEG", quality=95, xmp=XMP_ROTATE_6), 95),
        "jpeg_grey_L": (encode(grey, "JPEG", quality=95), 95),
        "jpeg_grey_L_q70": (encode(grey, "JPEG", quality=70), 70),
        "jpeg_grey_rgb": (encode(grey.convert("RGB"), "JPEG", quality=95), 95),
        "jpeg_grey_rgb_q70": (encode(grey.convert("RGB"), "JPEG", quality=70), 70),  # grey and low quality
        "jpeg_cmyk": (encode(rgb.convert("CMYK"), "JPEG", quality=95), 95),
        "jpeg_truncated": (q95[: len(q95) // 2], 95),
        "jpeg_truncated_small": (encode(rgb.resize((150, 100)), "JPEG", quality=95)[:1500], 95),
        "jpeg_truncated_q75": (encode(rgb, "JPEG", quality=75)[:1500], 75),
        "jpeg_bad_exif": (encode(rgb, "JPEG", quality=95, exif=BAD_EXIF, dpi=(72, 72)), 95),
        "jpeg_bad_exif_small": (encode(rgb.resize((150, 100)), "JPEG", quality=95, exif=BAD_EXIF, dpi=(72, 72)), 95),
        "jpeg_bad_exif_no_dpi": (encode(rgb, "JPEG", quality=95, exif=BAD_EXIF), 95),  # Pillow ignores it: kept
        "jpeg_over_limit": (encode(Image.fromarray(photo(250, 200)), "JPEG", quality=95), 95),
        "png_rgb": (png, None),
        "png_rgb_small": (encode(rgb.resize((120, 90)), "PNG"), None),
        "png_palette_grey": (encode(grey.convert("P"), "PNG"), None),
        "png_palette_colour": (encode(rgb.quantize(64), "PNG"), None),
        "png_L": (encode(grey, "PNG"), None),
        "png_LA": (encode(Image.merge("LA", [grey, grey.point(lambda v: 255 - v // 2)]), "PNG"), None),
        "png_1bit": (encode(grey.convert("1"), "PNG"), None),
        "png_grey16": (encode(Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), "PNG"), None),
        "png_rgb16": (cv2.imencode(".png", photo(200, 150, 4)[..., ::-1].astype(np.uint16) * 257)[1].tobytes(), None),
        "png_rgba": (encode(Image.fromarray(rgba, "RGBA"), "PNG"), None),
        "png_text": (encode(rgb, "PNG", pnginfo=comment("a note")), None),
        "png_rot6_exif_first": (encode(wide, "PNG", exif=exif(6)), None),  # Pillow writes eXIf before IDAT
        "png_rot6_exif_late": (before_iend(encode(wide, "PNG"), b"eXIf", exif(6)[6:]), None),
        "png_rot8_exif_late_of_tall": (before_iend(encode(tall, "PNG"), b"eXIf", exif(8)[6:]), None),
        "png_rot6_raw_profile": (encode(wide, "PNG", pnginfo=raw_profile_exif(6)), None),
        "png_text_late_small": (before_iend(encode(rgb.resize((120, 90)), "PNG"), b"tEXt", b"Comment\0late"), None),
        "png_over_limit": (encode(Image.fromarray(photo(250, 200)), "PNG"), None),
        "webp": (encode(rgb, "WEBP", quality=90), None),
        "webp_rot6_of_wide": (encode(wide, "WEBP", quality=90, exif=exif(6)), None),
        "webp_small": (encode(rgb.resize((150, 100)), "WEBP", lossless=True), None),
        "not_an_image": (b"hello, I am text\n", None),
    }
    return made


XMP_ROTATE_6 = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)


def comment(text: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", text)
    return info


CASES = cases()
# The lossy encodings beside JPEG that the cases were made with: palettes of at most 256 colours, lossy WebP.
LOSSY = {
    "png_palette_grey": "PNG of at most 256 colours (mode P)",
    "png_palette_colour": "PNG of at most 256 colours (mode P)",
    "png_1bit": "PNG of at most 256 colours (mode 1)",
    "webp": "lossy WebP",
    "webp_rot6_of_wide": "lossy WebP",
}


def oracle_rgb(img: Image.Image) -> np.ndarray:
    """Fully decoded pixels as RGB: 16-bit scaled to 8, transparency composited onto white."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "I;16":
        return np.repeat(((np.asarray(img, np.int64) + 128) // 257).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA"):
        white = Image.new("RGBA", img.size, "white")
        return np.asarray(Image.alpha_composite(white, img.convert("RGBA")).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def tolerant_rgb(data: bytes) -> np.ndarray | None:
    """The pixels of a damaged file with its missing data filled in (for its size); None if even that fails."""
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        return oracle_rgb(Image.open(io.BytesIO(data)))
    except (OSError, SyntaxError):
        return None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def oracle(data: bytes, quality: int | None, screen: Screen, lossy: str | None = None) -> str | tuple:
    """The refusal reason, or (id, canonical pixels, orig width, orig height, quality) of the kept image.

    Decodes fully, then checks shorter side, upscaling, JPEG quality, the ``lossy`` encoding the file was made with
    (unless the compression checks are off) and colour in this order. A file whose data
    cannot be decoded is refused for the first of the three header checks that fails (its size taken from a
    decode that tolerates truncation), and otherwise (or if even that decode fails) as undecodable.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError:
            return "not a recognised image format"
    if img.size[0] * img.size[1] > MAX_PIXELS:
        return f"{img.size[0]}x{img.size[1]} exceeds the {MAX_PIXELS}-pixel limit"
    try:
        pixels, broken = oracle_rgb(img), None
    except (OSError, SyntaxError) as err:
        broken = f"cannot decode ({err})"
        pixels = tolerant_rgb(data)
        if pixels is None:
            return broken
    h, w = pixels.shape[:2]
    scale = max(SIZE[0] / w, SIZE[1] / h)
    if min(w, h) < screen.min_side:
        return f"too small ({w}x{h}; shorter side under {screen.min_side} px)"
    if scale > screen.max_upscale + 1e-9:
        return f"needs upscaling ({w}x{h} by {scale:.3g}x to cover 160x120; --max-upscale {screen.max_upscale:g})"
    if quality is not None and quality < screen.min_jpeg_quality:
        return f"low JPEG quality (estimated {quality}; --min-jpeg-quality {screen.min_jpeg_quality})"
    if lossy and screen.min_jpeg_quality:
        return f"not pristine: {lossy} (--min-jpeg-quality 0 turns the compression checks off)"
    if broken:
        return broken
    if not screen.allow_grey and np.ptp(pixels.astype(int), axis=2).max() <= 8:
        return "greyscale (no colour; pass --allow-grey to keep)"
    canon = canonicalise(pixels, SIZE)
    return content_id(canon), canon.tobytes(), w, h, quality


def outcome(path: Path, screen: Screen) -> str | tuple:
    try:
        p = prepare_pristine(SourceItem(path.name, str(path)), SIZE, screen, MAX_PIXELS)
    except ImageDecodeError as err:
        return str(err)
    return p.pristine_id, p.image.tobytes(), p.orig_width, p.orig_height, p.jpeg_quality


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("header")
    for name, (data, _) in CASES.items():
        (root / name).write_bytes(data)
    return root


@pytest.mark.parametrize("setting", SCREENS)
def test_every_file_is_kept_or_refused_as_a_full_decode_then_the_checks_in_order_would(folder, setting):
    screen = SCREENS[setting]
    for name, (data, quality) in CASES.items():
        assert outcome(folder / name, screen) == oracle(data, quality, screen, LOSSY.get(name)), name


def test_the_set_reaches_every_verdict_under_the_default_screen():
    reasons = {name: oracle(data, q, Screen(), LOSSY.get(name)) for name, (data, q) in CASES.items()}
    kinds = {r.split(" (")[0].split(" of ")[0] if isinstance(r, str) else "kept" for r in reasons.values()}
    assert kinds >= {"kept", "too small", "needs upscaling", "low JPEG quality", "greyscale", "cannot decode"}
    assert kinds >= {"not pristine: PNG", "not pristine: lossy WebP"}
    assert reasons["jpeg_rot6_of_wide"].startswith("needs upscaling (135x200")
    assert reasons["png_rot6_exif_late"].startswith("needs upscaling (135x200")
    assert reasons["jpeg_xmp_rot6_of_wide"].startswith("needs upscaling (135x200")
    assert reasons["png_rot6_raw_profile"].startswith("needs upscaling (135x200")
    assert reasons["jpeg_grey_rgb_q70"].startswith("low JPEG quality")  # grey too: the quality check comes first
    assert reasons["jpeg_truncated_small"].startswith("too small")  # corrupt data, refused from the header
    assert reasons["jpeg_rot8_of_tall"][2:4] == (200, 135)
    assert reasons["jpeg_bad_exif_small"].startswith("cannot decode (not a TIFF file")  # orientation unknowable
    assert reasons["jpeg_bad_exif_no_dpi"][2:4] == (200, 150)


@pytest.fixture
def spies(monkeypatch) -> dict[str, int]:
    """Counts of Pillow opens and decodes (ImageFile.load with data still to decode: JPEG, PNG and WebP decode
    through it; a second call on a loaded image is not counted)."""
    counts = {"open": 0, "load": 0}
    real_open, real_load = Image.open, ImageFile.ImageFile.load

    def counted_open(*args, **kwargs):
        counts["open"] += 1
        return real_open(*args, **kwargs)

    def counted_load(self):
        counts["load"] += bool(self.tile)
        return real_load(self)

    monkeypatch.setattr(Image, "open", counted_open)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counted_load)
    return counts


HEADER_REFUSED = [
    "jpeg_q75",
    "jpeg_q40_small",
    "jpeg_q92_small",
    "jpeg_q95_tall",
    "jpeg_rot6_of_wide",
    "jpeg_xmp_rot6_of_wide",
    "jpeg_grey_L",
    "jpeg_grey_rgb_q70",
    "jpeg_truncated_small",
    "png_rgb_small",
    "png_L",
    "png_LA",
    "png_1bit",
    "png_grey16",
    "png_rot6_exif_first",
    "png_rot6_raw_profile",
    "webp_rot6_of_wide",
    "webp_small",
    "png_palette_grey",
    "png_palette_colour",
    "webp",
]
DECODED = ["jpeg_q95", "jpeg_rot8_of_tall", "jpeg_grey_rgb", "png_rgba", "png_text"]
DECODED_FOR_LATE_METADATA = ["png_rot6_exif_late", "png_rot8_exif_late_of_tall", "png_text_late_small"]


@pytest.mark.parametrize("name", HEADER_REFUSED)
def test_a_header_refusal_opens_once_and_decodes_nothing(folder, spies, name):
    assert isinstance(outcome(folder / name, Screen()), str)
    assert spies == {"open": 1, "load": 0}


@pytest.mark.parametrize("name", DECODED + DECODED_FOR_LATE_METADATA)
def test_a_candidate_the_header_passes_or_cannot_decide_is_opened_once_and_decoded_once(folder, spies, name):
    outcome(folder / name, Screen())
    assert spies == {"open": 1, "load": 1}


def test_the_decompression_bomb_guard_comes_first_and_decodes_nothing(folder, spies, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # Pillow warns above it (an error here), refuses above 2x
    for name in ("png_rgb", "jpeg_q95", "jpeg_over_limit"):  # 30,000, 30,000 and 50,000 pixels
        assert outcome(folder / name, Screen()) == "exceeds Pillow's decompression-bomb limit (20000 pixels)"
    assert outcome(folder / "jpeg_q40_small", Screen()).startswith("too small")  # 15,000 pixels
    assert spies == {"open": 4, "load": 0}
