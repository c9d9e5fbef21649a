"""The layers of saqt, read from the source with ``ast`` (nothing is imported): every module lives in a layer package,
no module imports from a later layer (inside functions too), fetch stands on the core alone, glint reads saqt only
through its core and the reading layer, and docs/architecture.md names only modules that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAQT = ROOT / "saqt"
# Each layer and the layers it may import from, earliest first: core <- build <- label <- read <- publish <- inspect,
# and fetch beside the core.
ORDER = ("core", "build", "label", "read", "publish", "inspect")
MAY_IMPORT = {layer: set(ORDER[: i + 1]) for i, layer in enumerate(ORDER)} | {"fetch": {"core", "fetch"}}
GLINT_MAY_IMPORT = {"core", "read"}
# Imports against the order, left to the reading API (issue 25 item 1) and the nested configs (item 4): remove an
# entry when its import goes; never add one.
KNOWN_VIOLATIONS = {
    ("saqt.build.build_stage", "saqt.label.stage_configs"),  # BuildConfig lives with the label configs
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """The saqt modules (or packages) a module imports anywhere in its source, as far as the names tell."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "saqt")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "saqt":  # `from saqt import build`: the layer package; `from saqt import __version__`: the face
                found.update(f"saqt.{alias.name}" for alias in node.names)
            elif base.split(".")[0] == "saqt":
                found.add(base)
    return found


def layer(name: str) -> str | None:
    """The layer of saqt module ``name`` (None for the package face, ``saqt`` itself or one of its names)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "saqt" and parts[1] in MAY_IMPORT else None


def violations_of(module: str, source: str, is_package: bool = False) -> set[tuple[str, str]]:
    """The imports of ``module`` (saqt's or glint's) that its place may not make."""
    home = layer(module)
    allowed = MAY_IMPORT[home] if home else GLINT_MAY_IMPORT if module.split(".")[0] == "glint" else None
    if allowed is None:  # the package face and anything outside saqt and glint
        return set()
    targets = imported(ast.parse(source), module, is_package)
    return {(module, target) for target in targets if layer(target) and layer(target) not in allowed}


def all_violations() -> set[tuple[str, str]]:
    found = set()
    for package in ("saqt", "glint"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found |= violations_of(module_name(path), path.read_text(), path.name == "__init__.py")
    return found


def test_every_saqt_module_lives_in_a_layer_package():
    stray = [p.name for p in SAQT.glob("*.py") if p.name != "__init__.py"]
    folders = {p.name for p in SAQT.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    assert not stray, f"modules outside the layers: {stray}"
    assert folders == set(MAY_IMPORT), f"saqt's packages are not its layers: {sorted(folders ^ set(MAY_IMPORT))}"


def test_each_layer_says_in_one_paragraph_what_it_holds_and_what_it_may_import():
    for name in MAY_IMPORT:
        tree = ast.parse((SAQT / name / "__init__.py").read_text())
        doc = ast.get_docstring(tree)
        assert doc and "\n\n" not in doc and "import" in doc, name
        assert len(tree.body) == 1, f"saqt/{name}/__init__.py holds more than its docstring"


def test_the_checker_sees_imports_against_the_order():
    assert violations_of("saqt.core.x", "def f():\n    from saqt.publish.publish_stage import run_publish\n") == {
        ("saqt.core.x", "saqt.publish.publish_stage")
    }
    assert violations_of("saqt.fetch.archives", "import saqt.build.sources") == {
        ("saqt.fetch.archives", "saqt.build.sources")
    }
    assert violations_of("saqt.build.pool", "from saqt import label") == {("saqt.build.pool", "saqt.label")}
    assert violations_of("glint.data", "from saqt.label.row_index import open_columns") == {
        ("glint.data", "saqt.label.row_index")
    }
    fine = "from saqt import __version__\nfrom saqt.core.errors import SaqtError\nfrom saqt.read.sets import open_saqt"
    assert violations_of("glint.data", fine) == set()
    assert violations_of("saqt.inspect.report", "from saqt.label.bank_fit import bank_fit") == set()
    assert violations_of("saqt.read.x", "from ..publish import publish_stage") == {("saqt.read.x", "saqt.publish")}


def test_no_module_imports_from_a_later_layer():
    new = all_violations() - KNOWN_VIOLATIONS
    assert not new, "imports against the layer order (docs/architecture.md): " + ", ".join(
        f"{a} -> {b}" for a, b in sorted(new)
    )


def test_the_known_violations_are_still_there():
    gone = KNOWN_VIOLATIONS - all_violations()
    assert not gone, "fixed: remove from KNOWN_VIOLATIONS " + ", ".join(f"{a} -> {b}" for a, b in sorted(gone))


def test_the_architecture_page_names_only_modules_that_exist_and_every_layer():
    text = (ROOT / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"\b((?:saqt|glint|pipelines)/[\w/]*\w(?:\.py)?)", text))
    dotted = set(re.findall(r"`((?:saqt|glint|pipelines)\.[\w.]*\w)`", text))
    assert paths and dotted
    missing = [p for p in sorted(paths) if not (ROOT / p).exists()]
    missing += [d for d in sorted(dotted) if not _exists(d)]
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"
    assert all(f"saqt/{name}/" in text for name in MAY_IMPORT)


def _exists(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or a name its parent module's source binds or exports."""
    parts = dotted.split(".")
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
        return True
    parent = ROOT.joinpath(*parts[:-1])
    source = next((p for p in (parent.with_suffix(".py"), parent / "__init__.py") if p.exists()), None)
    return source is not None and re.search(rf"\b{parts[-1]}\b", source.read_text()) is not None
