"""The docs/ pages stay true where that is cheap to check: every ``saqt``/``glint`` command (shell blocks and inline
code) uses options that exist, every ``make`` target, ``python -m`` module and ``python SCRIPT`` exists with the
options given, every Python block of a reference page runs (``# not run: <why>`` blocks are only compiled), and every
relative link of the README, the CHANGELOG and docs/ reaches a file (and a heading, for ``#anchor`` links)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from helpers import APPS, check_options_exist, code_blocks, commands

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS]
TUTORIAL = ROOT / "docs" / "tutorial.md"  # its Python blocks need the shared data: tests/cli/test_tutorial.py runs them
FENCED = re.compile(r"^```.*?^```", re.S | re.M)


def prose(path: Path) -> str:
    """A page's text without its fenced code blocks."""
    return FENCED.sub("", path.read_text())


def inline_commands(path: Path) -> list[list[str]]:
    """The words of each inline code span of a page's prose that is a saqt/glint command (a span may wrap lines)."""
    spans = (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose(path)))
    return [words for span in spans if (words := span.split()) and words[0] in APPS and len(words) > 1]


def shell_lines(path: Path) -> list[list[str]]:
    """Each command line of a page's shell blocks and inline code, as words (continuations joined, comments dropped)."""
    lines = []
    for lang, code in code_blocks(path):
        if lang == "bash":
            lines += [shlex.split(line, comments=True) for line in code.replace("\\\n", " ").splitlines()]
    spans = (" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose(path)))
    lines += [span.split() for span in spans if span.startswith(("make ", "python "))]
    return [words for words in lines if words]


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_docs_commands_use_options_that_exist(page):
    lines = commands(code_blocks(page)) + inline_commands(page)
    check_options_exist(lines, f"docs/{page.name}")


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def check_tool_line(words: list[str], where: str) -> None:
    """A ``make`` line names targets of the Makefile; ``python -m MODULE`` or ``python SCRIPT`` names a module or
    file of the checkout whose source spells every option given."""
    if words[0] == "make":
        missing = [w for w in words[1:] if not w.startswith("-") and "=" not in w and w not in make_targets()]
        assert not missing, f"{where}: make {missing}: no such target"
        return
    if words[0] not in ("python", "python3") or len(words) < 2:
        return
    if words[1] == "-m":
        spec = importlib.util.find_spec(words[2])
        assert spec and spec.origin, f"{where}: python -m {words[2]}: no such module"
        source, options = Path(spec.origin).read_text(), words[3:]
    else:
        script = ROOT / words[1]
        assert script.is_file(), f"{where}: python {words[1]}: no such file"
        source, options = script.read_text(), words[2:]
    unknown = [o.split("=")[0] for o in options if o.startswith("--") and f'"{o.split("=")[0]}"' not in source]
    assert not unknown, f"{where}: {' '.join(words[:3])} has no option {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_make_and_python_commands_exist(page):
    for words in shell_lines(page):
        check_tool_line(words, page.name)


def test_the_tool_check_can_fail():
    """The check above refuses what does not exist (so that it can fail)."""
    for words in (["make", "no-such-target"], ["python", "-m", "tests.no_such"], ["python", "benchmarks/nope.py"]):
        with pytest.raises(AssertionError):
            check_tool_line(words, "here")
    with pytest.raises(AssertionError, match="no option"):
        check_tool_line(["python", "benchmarks/e2e.py", "--no-such-option"], "here")
    check_tool_line(["python", "-m", "tests.pin", "--update"], "here")


PYTHON = [(page, code) for page in DOCS if page != TUTORIAL for lang, code in code_blocks(page) if lang == "python"]


@pytest.mark.parametrize("page, code", PYTHON, ids=[f"{p.name}-{i}" for i, (p, _) in enumerate(PYTHON)])
def test_docs_python_snippet_runs(page, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    compiled = compile(code, str(page), "exec")
    if not code.startswith("# not run:"):
        exec(compiled, {"__name__": "docs_snippet"})


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.*)$", prose(path), re.M)}


def broken_links(page: Path) -> list[str]:
    """The relative links of a page whose file, or heading, does not exist."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_reach_a_file(page):
    assert not broken_links(page), f"{page.name}: broken links {broken_links(page)}"


def test_the_link_check_can_fail(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## Scaling out: `--executor ray`, GPU\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md) [ok](a.md#scaling-out---executor-ray-gpu) [web](https://x.org) [no](c.md) [no](a.md#b)")
    assert broken_links(page) == ["c.md", "a.md#b"]


def test_the_readme_links_every_docs_page():
    linked = set(re.findall(r"\]\(docs/([^)#]+)\)", (ROOT / "README.md").read_text()))
    assert {p.name for p in DOCS} <= linked


REPO_PATH = re.compile(r"(saqt|glint|pipelines|benchmarks|tests|experiments|manifests|docs)/[\w./*-]*")


def missing_paths(page: Path) -> list[str]:
    """The checkout paths a page names in inline code (``saqt/core/stage_contract.py``, ``manifests/banks/*.yaml``) that match
    nothing in the checkout."""
    spans = re.findall(r"`([^`\s]+)`", prose(page))
    return [s for s in spans if REPO_PATH.fullmatch(s) and not any(ROOT.glob(s.rstrip("/")))]


@pytest.mark.parametrize("page", PAGES[:1] + DOCS, ids=[p.name for p in PAGES[:1] + DOCS])
def test_paths_named_exist(page):
    assert not missing_paths(page), f"{page.name} names paths that do not exist: {missing_paths(page)}"


def test_the_path_check_can_fail(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "`saqt/core/stage_contract.py` `manifests/banks/*.yaml` `saqt/no_such.py` `glint/nothing/*.py` `pip install x`"
    )
    assert missing_paths(page) == ["saqt/no_such.py", "glint/nothing/*.py"]
