"""The authors' SAQT-IQA selection and matches, shipped as package data (MIT licence, notice in ``saqt/data/authors``).

One file holds both: the 50,000 KADIS-700k images of SAQT-IQA, in the release's order, each with its top-1
KADID-10k reference and cosine similarity.
"""

from __future__ import annotations

import hashlib
import lzma
from functools import cache
from importlib.resources import files

MATCHES_FILE = "similarity_img_in_kadid-10k.csv"
MATCHES_SHA256 = "83bd86a541df2f73b9f13603d9c1a5570017f3a477c2c93f1d85af2166aa8f4a"
SELECTION_SHA256 = "b38b542810b40f91908f8443090e3482a5e141c73e0a74965d1aa16f88e34361"  # selected_kadis_imgs50k.txt
LICENCE = "MIT, (c) 2025 Xiaoqi Wang (GitHub XiaoqiWang/GlintIQA)"


def _folder():
    return files("saqt").joinpath("data", "authors")


@cache
def matches_text() -> str:
    """The release's ``similarity_img_in_kadid-10k.csv``, checked against its SHA-256."""
    data = lzma.decompress(_folder().joinpath(MATCHES_FILE + ".xz").read_bytes())
    if hashlib.sha256(data).hexdigest() != MATCHES_SHA256:
        raise RuntimeError(f"the packaged {MATCHES_FILE} is corrupt (SHA-256 mismatch): reinstall saqt-iqa")
    return data.decode("utf-8")


def selection() -> list[str]:
    """The 50,000 KADIS-700k file names of SAQT-IQA, in the release's order."""
    return [line.split(",", 1)[0] for line in matches_text().splitlines()[1:]]


def licence_text() -> str:
    """The MIT licence notice that travels with these files."""
    return _folder().joinpath("LICENSE").read_text(encoding="utf-8")
