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
