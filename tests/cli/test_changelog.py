"""CHANGELOG.md keeps the Keep a Changelog shape: an ``## [Unreleased]`` section, then one ``## [version] - date``
per release, newest first, whose changes are one ``- `` line each under Added/Changed/Deprecated/Removed/Fixed/Security;
the newest release is the version in pyproject.toml and names the distortion catalogue version the manifest has."""

from __future__ import annotations

import datetime
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
RELEASE = re.compile(r"## \[(\d+)\.(\d+)\.(\d+)\] - (\d{4}-\d{2}-\d{2})")


def releases(text: str) -> list[tuple[tuple[int, int, int], datetime.date, list[str]]]:
    """(version, date, lines) of each release, newest first; AssertionError where the shape is broken."""
    sections = re.split(r"^(?=## )", text, flags=re.M)
    assert sections[1].startswith("## [Unreleased]\n"), "the first section is not ## [Unreleased]"
    found = []
    for section in sections[1:]:
        heading, *lines = section.rstrip("\n").split("\n")
        if heading != "## [Unreleased]":
            match = RELEASE.fullmatch(heading)
            assert match, f"not a release heading: {heading!r}"
            version = tuple(int(n) for n in match.groups()[:3])
            found.append((version, datetime.date.fromisoformat(match[4]), lines))
        check_changes(heading, lines)
    return found


def check_changes(heading: str, lines: list[str]) -> None:
    """Under a heading: at most one paragraph line, then ``### Kind`` subsections of one-line ``- `` entries."""
    body = [line for line in lines if line]
    if body and not body[0].startswith(("### ", "- ")):
        body = body[1:]  # a release's one-line note
    assert not body or body[0].startswith("### "), f"{heading}: changes before a ### subsection"
    for line in body:
        if line.startswith("### "):
            assert line[4:] in KINDS, f"{heading}: unknown subsection {line!r}"
        else:
            assert line.startswith("- "), f"{heading}: not one line per change: {line[:60]!r}"


def test_the_changelog_has_the_keep_a_changelog_shape():
    found = releases((ROOT / "CHANGELOG.md").read_text())
    versions, dates = [v for v, _, _ in found], [d for _, d, _ in found]
    assert len(found) >= 4
    assert versions == sorted(set(versions), reverse=True), "versions not strictly descending"
    assert dates == sorted(dates, reverse=True), "release dates not newest first"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert ".".join(map(str, versions[0])) == pyproject, "pyproject.toml's version is not the newest release"
    catalogue = yaml.safe_load((ROOT / "manifests" / "distortions" / "kadid10k.yaml").read_text())["version"]
    note = "\n".join(found[0][2][:3])
    assert f"Distortion catalogue kadid10k {catalogue}" in note, "the newest release names another catalogue"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("# C\n\n## [0.2.0] - 2026-01-01\n", "Unreleased"),
        ("# C\n\n## [Unreleased]\n\n## 0.2.0 (catalogue 3)\n", "not a release heading"),
        ("# C\n\n## [Unreleased]\n\n## [0.2.0] - 2026-01-01\n\n### Added\n\n- one\n  continued\n", "one line per"),
        ("# C\n\n## [Unreleased]\n\n- loose\n", "before a ### subsection"),
        ("# C\n\n## [Unreleased]\n\n### Improved\n\n- one\n", "unknown subsection"),
    ],
)
def test_the_shape_check_can_fail(text, problem):
    with pytest.raises(AssertionError, match=problem):
        releases(text)
