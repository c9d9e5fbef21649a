"""The shape of the code: no import cycle between the modules of saqt/, glint/ and pipelines/, and no function over
60 lines without a reason in its docstring. Both are read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("saqt", "glint", "pipelines")
MAX_LINES = 60
REASON = "Long because"  # a docstring that says why a function is longer than MAX_LINES
# Functions over MAX_LINES without a reason, left to other work: none. Never raise it.
LONG_FUNCTIONS_LEFT = 0


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (a package is its ``__init__``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The package's modules an import statement in ``module`` loads by name (not the parent packages it
    initialises on the way)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # a relative import
            anchor = module.split(".")
            if MODULES[module].name != "__init__.py":
                anchor = anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    found = set()
    for name in names:
        while name and name not in MODULES:  # `import saqt.x.y` where y is a name: the module is saqt.x
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


@cache
def import_graph(function_level: bool) -> dict[str, set[str]]:
    """module -> the modules it imports at module level (outside functions and ``if TYPE_CHECKING``), and also
    inside functions when ``function_level``."""
    graph = {}
    for module, path in MODULES.items():
        edges: set[str] = set()

        def visit(node: ast.AST, in_function: bool, module: str = module, edges: set[str] = edges) -> None:
            if isinstance(node, ast.Import | ast.ImportFrom) and (function_level or not in_function):
                edges.update(_imported(node, module))
            if isinstance(node, ast.If) and _is_type_checking(node):
                return
            inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            for child in ast.iter_child_nodes(node):
                visit(child, inside)

        visit(_tree(path), False)
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every import cycle lies
    within one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's length: its body's lines, without the signature (the formatter puts each CLI option on lines
    of its own) and without the docstring."""
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    return node.end_lineno - body[0].lineno + 1 if body else 0


def long_functions() -> list[tuple[str, int]]:
    """``path:function`` and its length (``body_lines``), for every function over MAX_LINES whose docstring gives no
    reason."""
    found = []
    for path in MODULES.values():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = body_lines(node)
                if lines > MAX_LINES and REASON not in " ".join((ast.get_docstring(node) or "").split()):
                    found.append((f"{path.relative_to(ROOT).as_posix()}:{node.name}", lines))
    return sorted(found)


def test_a_functions_length_leaves_out_its_signature_and_docstring():
    source = 'def f(\n    a,\n    b,\n):\n    """Doc.\n\n    More."""\n    x = a\n    return x + b\n'
    assert body_lines(ast.parse(source).body[0]) == 2
    assert body_lines(ast.parse("def g():\n    return 1\n").body[0]) == 1


def test_the_cycle_finder_finds_a_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.slow
def test_the_graph_sees_module_and_function_level_imports():
    module_level, every = import_graph(False), import_graph(True)
    assert (
        "saqt.core.stage_contract" in module_level["saqt.label.label_stage"]
    )  # from saqt.core.stage_contract import ...
    assert (
        "saqt.build.build_stage" in every["pipelines.saqt_cli"]
        and "saqt.build.build_stage" not in module_level["pipelines.saqt_cli"]
    )
    assert "saqt.build.distortions.registry" in module_level["saqt.build.distortions.blur"]
    assert all(module_level[m] <= every[m] for m in MODULES)


@pytest.mark.slow
def test_no_import_cycle_at_module_level():
    assert cycles(import_graph(False)) == []


def test_no_import_cycle_counting_imports_inside_functions():
    assert cycles(import_graph(True)) == []


def test_no_new_function_over_60_lines_without_a_reason():
    found = long_functions()
    assert len(found) <= LONG_FUNCTIONS_LEFT, "\n".join(f"{name}: {lines} lines" for name, lines in found)
