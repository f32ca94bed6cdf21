"""The installed package contains every source package, the CLI, the presets and the label files."""

from __future__ import annotations


from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the source tree")
def test_every_package_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = {v: k for k, v in cfg["package-dir"].items()}
    found = set()
    for init in ROOT.glob("**/__init__.py"):
        rel = init.parent.relative_to(ROOT)
        top = rel.parts[0]
        if top not in mapping:
            continue
        found.add(".".join([mapping[top], *rel.parts[1:]]))
    assert found - listed == set(), "packages missing from pyproject.toml [tool.setuptools] packages"


def test_installed_package_has_cli_configs_and_labels():
    import hiera_video.cli.app  # noqa: F401  (cli/ is mapped into the package)

    presets = {p.name for p in resources.files("hiera_video.configs").iterdir()}
    assert {"demo.yaml", "k400_base.yaml", "ssv2_large.yaml"} <= presets
    labels = {p.name for p in resources.files("hiera_video.data.labels").iterdir()}
    assert {"kinetics400.txt", "kinetics600.txt", "kinetics700.txt", "ssv2.txt", "ava_v2.2_60.txt"} <= labels
    assert resources.files("hiera_video").joinpath("templates", "report.html.j2").is_file()  # report.html's template


def _imports(tree):
    """(top-level module, line, guarded, in a function) for every absolute import of ``tree``;
    guarded = inside a try (or its except branch) that handles ImportError."""
    import ast

    def visit(node, guarded, in_function):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno, guarded, in_function
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno, guarded, in_function
        handles_import_error = isinstance(node, ast.Try) and any(
            h.type is not None and any(n in ast.unparse(h.type) for n in ("ImportError", "ModuleNotFoundError"))
            for h in node.handlers
        )
        for child in ast.iter_child_nodes(node):
            yield from visit(child, guarded or handles_import_error,
                             in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))

    yield from visit(tree, False, False)


@pytest.mark.skipif(not (ROOT / "pyproject.toml").is_file(), reason="needs the source tree")
def test_runtime_code_imports_only_declared_dependencies():
    """`pip install .` must be enough for every command: a package imported by hiera_video/ or
    cli/ is a runtime dependency, or an optional extra imported inside a function, or guarded by
    an ImportError fallback. (Typer >= 0.2x stopped installing click, which the CLI imported.)"""
    import ast
    import re
    import sys

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def name(req: str) -> str:
        return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()

    runtime = {name(r) for r in project["dependencies"]}
    optional = {name(r) for extra, reqs in project["optional-dependencies"].items() if extra != "test" for r in reqs}
    distribution = {"yaml": "pyyaml", "PIL": "pillow"}
    bad = []
    for path in sorted([*(ROOT / "hiera_video").rglob("*.py"), *(ROOT / "cli").rglob("*.py")]):
        for top, line, guarded, in_function in _imports(ast.parse(path.read_text())):
            if top in sys.stdlib_module_names or top == "hiera_video" or guarded:
                continue
            dist = distribution.get(top, top).lower()
            if dist in runtime or (dist in optional and in_function):
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not bad, "undeclared or eagerly imported optional packages:\n" + "\n".join(bad)


def test_import_loads_no_video_decoder():
    """Issue 20 item 8: ``import hiera_video`` (models, zoo, clip specs) loads neither decoder
    (PyAV, decord) nor torchvision; they load when something is decoded. A fresh interpreter,
    since this test process has imported them long ago."""
    import subprocess
    import sys

    code = ("import sys, hiera_video; from hiera_video.data.clip_spec import ClipSpec; ClipSpec(backend='decord'); "
            "print(sorted(m for m in ('av', 'decord', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
    # The backend names the light module checks are the ones the decoders accept.
    from hiera_video.data import clip_spec, decode

    assert clip_spec.BACKENDS == decode.BACKENDS


def test_no_install_path_pulls_both_decord_and_decord2():
    """decord2 ships the same ``decord`` module as decord 0.6.0: the default install and every
    extra (with the defaults) must name at most one of them (issue 23: decord 0.6.0 is kept,
    see docs/decoding.md)."""
    import re

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    base = names(project["dependencies"])
    for extra, reqs in {"(none)": [], **project["optional-dependencies"]}.items():
        pulled = base | names(reqs)
        assert not {"decord", "decord2"} <= pulled, f"install path [{extra}] pulls both decord and decord2"
