"""Import boundaries, read from the source with ``ast`` (nothing is imported): glint reads saqt only through the
reading API (``saqt.read.api``) and saqt's core, and no module uses another module's private (``_name``) names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("saqt", "glint", "pipelines", "tests", "benchmarks")
# What glint may import from saqt: the core modules and the reading API (plus the package's version).


def glint_may_import(module: str) -> bool:
    """glint reads saqt through the reading API (``saqt.read``) and stands on the core (``saqt.core``)."""
    return module in ("saqt.read", "saqt.read.api") or module.startswith("saqt.core.")


# Private names a test may still reach, each with why; an entry no longer used fails the test, to be removed.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}


def _modules(*packages: str) -> Iterator[tuple[str, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def _ours(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PACKAGES


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _absolute(node: ast.ImportFrom, where: str) -> str:
    """The module an import names, a relative one resolved against ``where``'s package."""
    if not node.level:
        return node.module or ""
    package = where.removesuffix(".py").split("/")[: -node.level]
    return ".".join([*package, *([node.module] if node.module else [])])


def saqt_imports(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) of each saqt import of ``tree``, in functions too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "saqt")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "saqt":
            yield node.lineno, node.module, [a.name for a in node.names]


def glint_violations(tree: ast.Module, where: str) -> list[str]:
    """The saqt imports of a glint module that ``glint_may_import`` refuses."""
    found = []
    for line, module, names in saqt_imports(tree):
        if module == "saqt" and names == ["__version__"]:
            continue
        if not glint_may_import(module):
            found.append(f"{where}:{line} imports {module}")
    return found


def _bound_modules(tree: ast.Module, where: str) -> dict[str, str]:
    """Names ``tree`` binds to something of our packages (a module or a name in one) -> its dotted path."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _ours(a.name):
                    bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and _ours(_absolute(node, where)):
            for a in node.names:
                bound[a.asname or a.name] = f"{_absolute(node, where)}.{a.name}"
    return bound


def _dotted(node: ast.expr, bound: dict[str, str]) -> str | None:
    """``node`` as a dotted path through our packages (``saqt.core.images.decode_image``), or None."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, bound)
        return f"{base}.{node.attr}" if base else None
    return None


def private_uses(tree: ast.Module, where: str) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of each private name of another module that ``tree`` reaches: imported by name, read
    as an attribute of an imported module, or monkeypatched by ``setattr(module, "_name", ...)``/``"mod._name"``."""
    bound = _bound_modules(tree, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _ours(_absolute(node, where)):
            for a in node.names:
                if _private(a.name):
                    yield node.lineno, f"{_absolute(node, where)}.{a.name}"
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            base = _dotted(node.value, bound)
            if base:
                yield node.lineno, f"{base}.{node.attr}"
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "setattr":
            args = node.args
            if len(args) >= 2 and isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
                base = _dotted(args[0], bound)
                if base and _private(args[1].value):
                    yield node.lineno, f"{base}.{args[1].value}"
            if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                dotted = args[0].value
                if _ours(dotted) and _private(dotted.rsplit(".", 1)[-1]):
                    yield node.lineno, dotted


def test_glint_reads_saqt_only_through_the_reading_api_and_the_core():
    found = [v for where, tree in _modules("glint") for v in glint_violations(tree, where)]
    assert not found, "glint imports saqt beyond saqt.read.api and the core:\n" + "\n".join(found)


def test_no_module_reaches_another_modules_private_names():
    used, found = set(), []
    for where, tree in _modules(*PACKAGES):
        for line, name in private_uses(tree, where):
            if (where, name) in ALLOWED_PRIVATE:
                used.add((where, name))
            else:
                found.append(f"{where}:{line} uses {name}")
    assert not found, "private names used outside their module:\n" + "\n".join(found)
    assert not set(ALLOWED_PRIVATE) - used, f"allowed but no longer used: {sorted(set(ALLOWED_PRIVATE) - used)}"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from saqt.label.sets import open_saqt", ["glint/x.py:1 imports saqt.label.sets"]),
        ("def f():\n    import saqt.build.byte_ranges", ["glint/x.py:2 imports saqt.build.byte_ranges"]),
        ("from saqt import bank", ["glint/x.py:1 imports saqt"]),
        (
            "from saqt import __version__\nfrom saqt.read.api import open_saqt\nfrom saqt.core.errors import ConfigError",
            [],
        ),
    ],
)
def test_the_glint_check_names_each_import_outside_the_list(source, expected):
    assert glint_violations(ast.parse(source), "glint/x.py") == expected


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from saqt.core.images import _to_rgb", ["saqt.core.images._to_rgb"]),
        ("from .images import _to_rgb", ["saqt.core.images._to_rgb"]),
        ("import saqt.core.images as im\nim._to_rgb(x)", ["saqt.core.images._to_rgb"]),
        ("import glint.train\nglint.train._save(x)", ["glint.train._save"]),
        ("from glint import scoring\nmonkeypatch.setattr(scoring, '_mean', f)", ["glint.scoring._mean"]),
        ("monkeypatch.setattr('saqt.core.network._answers', {})", ["saqt.core.network._answers"]),
        ("import numpy as np\nnp._x; self._y; obj.__dict__\nfrom saqt import __version__", []),
    ],
)
def test_the_private_check_finds_each_form_of_use(source, expected):
    assert [name for _, name in private_uses(ast.parse(source), "saqt/core/x.py")] == expected
