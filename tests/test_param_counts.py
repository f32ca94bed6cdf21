"""No function in hiera_video/ takes more than 12 parameters: long flag lists travel as one options
object. Exempt: the Hiera constructor, which mirrors the official signature (Typer commands
live in cli/, outside the scan)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("command,options", [
    ("hiera_video.cli.eval:eval_command", "hiera_video.jobs.evaluate:EvalOptions"),
    ("hiera_video.cli.eval:eval_command", "hiera_video.ava.evaluate:AvaEvalOptions"),
    ("hiera_video.cli.predict:predict", "hiera_video.jobs.predict:PredictOptions"),
    ("hiera_video.cli.reconstruct:reconstruct", "hiera_video.jobs.reconstruct:ReconstructOptions"),
])
def test_each_options_field_is_a_parameter_of_its_command(command, options):
    """Commands build their options by name (``Options.of(locals())``): every field must be one of the
    command's parameters, so adding a field without its flag fails here, not at a user's run."""
    fn, cls = (getattr(importlib.import_module(m), n) for m, n in (s.split(":") for s in (command, options)))
    assert {f.name for f in dataclasses.fields(cls)} - set(inspect.signature(fn).parameters) == set()


def test_options_are_built_by_name():
    from hiera_video.jobs.reconstruct import ReconstructOptions

    values = {f.name: f.default for f in dataclasses.fields(ReconstructOptions)}
    o = ReconstructOptions.of({**values, "video": Path("a.mp4"), "output": Path("b.gif"), "seed": 7, "unrelated": 1})
    assert (o.video, o.output, o.seed, o.frame_ms) == (Path("a.mp4"), Path("b.gif"), 7, 250)
    with pytest.raises(KeyError, match="frame_ms"):
        ReconstructOptions.of({k: v for k, v in values.items() if k != "frame_ms"})
