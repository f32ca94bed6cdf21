"""No function in hiera_video/ takes more than 12 parameters: long flag lists travel as one options
object. Exempt: the Hiera constructor, which mirrors the official signature (Typer commands
live in cli/, outside the scan)."""

from __future__ import annotations

import ast
from pathlib import Path

MAX_PARAMS = 12
EXEMPT = {("models/hiera.py", "Hiera.__init__")}


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def count_params(fn: ast.FunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if names[:1] in (["self"], ["cls"]):
        names = names[1:]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


def test_count_params():
    fn = ast.parse("def f(self, a, b=1, *args, c, **kw): pass").body[0]
    assert count_params(fn) == 5


def test_no_function_over_12_parameters():
    package = Path(__file__).resolve().parents[1] / "hiera_video"  # the source tree: an installed copy holds cli/ too
    too_many = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        for name, fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            n = count_params(fn)
            if n > MAX_PARAMS and (rel, name) not in EXEMPT:
                too_many.append(f"{rel}:{fn.lineno} {name} ({n})")
    assert not too_many, "functions over 12 parameters (pass one options object): " + ", ".join(too_many)
