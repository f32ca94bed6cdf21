"""The code's shape (issue 24): a line budget, small modules, no import cycle, and layers that
only import downward (``cli`` -> ``jobs``/``ava`` -> ``engine`` -> ``models``/``data``/``metrics``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.joinpath("hiera_video").rglob("*.py"), *ROOT.joinpath("cli").rglob("*.py")])
LINE_BUDGET = 14_000
MODULE_LIMIT = 600

# What each layer may import from hiera_video (besides itself and the small top-level modules).
BELOW = {
    "models": {"models", "data"},  # weights carry their clip recipe (a ClipSpec) and class names
    "data": {"data"},
    "metrics": {"metrics", "data"},
    "engine": {"engine", "models", "data", "metrics"},
    "jobs": {"jobs", "engine", "models", "data", "metrics"},
    "ava": {"ava", "engine", "models", "data", "metrics"},
}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every hiera_video/cli module this file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in ("hiera_video", "cli")}


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in SOURCES}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def test_line_budget_and_module_size():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in SOURCES}
    big = {k: v for k, v in sizes.items() if v > MODULE_LIMIT}
    assert not big, f"modules over {MODULE_LIMIT} lines: {big}"
    assert sum(sizes.values()) <= LINE_BUDGET, f"hiera_video/ + cli/ is {sum(sizes.values())} lines (budget {LINE_BUDGET})"


def test_no_import_cycle():
    graph = _graph()
    # A package's __init__ importing its own submodules is not a cycle of ideas; drop those edges.
    edges = {m: {t for t in ts if not (t.startswith(m + ".") and ROOT.joinpath(*m.split("."), "__init__.py").exists())}
             for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_layers_import_only_downward():
    wrong = []
    for name, targets in _graph().items():
        parts = name.split(".")
        if parts[0] != "hiera_video" or len(parts) < 3 or parts[1] not in BELOW:
            continue
        for t in targets:
            tp = t.split(".")
            if len(tp) >= 2 and (tp[0] == "cli" or (tp[1] in BELOW and tp[1] not in BELOW[parts[1]])):
                wrong.append(f"{name} imports {t}")
    assert not wrong, "\n".join(sorted(wrong))
