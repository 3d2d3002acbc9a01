"""The layout the README draws, kept by a test: no import circles among gateway's modules
(type-only imports included), imports one way (cache and backend never reach up into the API,
the tools or the dev tools; the backend never into the cache), no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2] / "gateway"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            graph[mod] |= {n for n in names if n in mods and n != mod
                           and not mod.startswith(n + ".")}  # a package's own __init__
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_imports_go_one_way() -> None:
    up = ("gateway.api", "gateway.app", "gateway.cli", "gateway.tools", "gateway.devtools")
    wrong = [(m, n) for m, targets in _graph().items() for n in targets
             if (m.startswith(("gateway.cache", "gateway.backend")) and n.startswith(up))
             or (m.startswith("gateway.backend") and n.startswith("gateway.cache"))]
    assert wrong == []


def test_no_module_over_400_lines_and_a_small_top_level() -> None:
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
    assert len([p for p in ROOT.glob("*.py") if p.name != "__init__.py"]) <= 14


def _unclosed_openai_clients(path: Path) -> list[int]:
    """Lines of ``path`` making an OpenAI client outside a ``with`` (or an exit stack): such a
    client is closed by the garbage collector, at random too late (``tests/clients.py``)."""
    tree = ast.parse(path.read_text())
    managed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With | ast.AsyncWith):
            managed |= {id(item.context_expr) for item in node.items}
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("enter_context", "enter_async_context")):
            managed |= {id(arg) for arg in node.args}
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("OpenAI", "AsyncOpenAI") and id(node) not in managed]


def test_tests_close_their_openai_clients() -> None:
    tests = Path(__file__).parents[1]
    loose = {str(path.relative_to(tests)): lines for path in sorted(tests.rglob("*.py"))
             if path.name != "clients.py" and (lines := _unclosed_openai_clients(path))}
    assert loose == {}, "make them with tests.clients.openai_client or in a with block"
