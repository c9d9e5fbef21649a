"""CITATION.cff and LICENSE: parsed, checked for the Citation File Format 1.2.0's required keys (cffconvert is not a
dependency), and kept consistent with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOI = re.compile(r"^10\.\d{4,9}/[-._;()/:A-Za-z0-9]+$")
# The subset of CFF 1.2.0's reference types that a toolkit cites.
REFERENCE_TYPES = {"article", "book", "conference", "conference-paper", "dataset", "generic", "report", "software"}


def valid_person_or_entity(author: dict) -> bool:
    return bool(author.get("name") or author.get("family-names"))


def test_citation_cff_has_the_required_keys_and_matches_pyproject():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["message"].strip() and cff["title"].strip()
    assert cff["authors"] and all(valid_person_or_entity(a) for a in cff["authors"])
    assert str(cff["version"]) == project["version"] and cff["license"] == project["license"]
    for ref in cff["references"]:
        assert ref["type"] in REFERENCE_TYPES and ref["title"].strip() and isinstance(ref["year"], int)
        assert ref["authors"] and all(valid_person_or_entity(a) for a in ref["authors"])
        assert "doi" not in ref or DOI.match(str(ref["doi"]))
    by_doi = {str(r["doi"]): r for r in cff["references"] if "doi" in r}
    glint, kadid = by_doi["10.1145/3815779"], by_doi["10.1109/QoMEX.2019.8743252"]
    assert [a["family-names"] for a in glint["authors"]] == ["Wang", "Zhang"] and glint["year"] == 2026
    assert [a["family-names"] for a in kadid["authors"]] == ["Lin", "Hosu", "Saupe"] and kadid["year"] == 2019
    arxiv = [i["value"] for r in cff["references"] for i in r.get("identifiers", [])]
    assert "arXiv:2408.03885" in arxiv


def test_license_is_the_mit_licence_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the SAQT-IQA toolkit authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
