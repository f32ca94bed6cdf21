"""Start-up cost (issue 24, item 8): ``--help`` of the CLI and of every command, a usage error
and ``--version`` import neither torch nor a decoder; command modules import their job when
it runs. One subprocess, so the modules an earlier test imported do not hide an import."""

from __future__ import annotations

import json
import subprocess
import sys

import typer

from hiera_video.cli.app import app

# pydantic: typer coerces values with it; a --help or --version has none to coerce (cli/app.py's _help)
HEAVY = ("torch", "torchvision", "numpy", "decord", "av", "torchcodec", "cv2", "matplotlib", "pydantic")

SCRIPT = """
import json, sys
from hiera_video.cli.app import main
found = {}
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    found[" ".join(argv)] = [code, sorted(m for m in %r if m in sys.modules)]
print(json.dumps(found))
""" % (HEAVY,)


def test_help_version_and_usage_errors_import_no_torch():
    commands = sorted(typer.main.get_command(app).commands)
    runs = [["--help"], ["--version"], ["--no-such-option"], ["predict", "--no-such-option", "v.mp4"],
            *[[c, "--help"] for c in commands]]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(runs)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(found) == len(runs) == 4 + len(commands) >= 20, found
    for argv, (code, heavy) in found.items():
        assert code == (2 if "no-such-option" in argv else 0), (argv, code)
        assert heavy == [], f"`hiera-video {argv}` imported {heavy}"


def test_importing_the_package_imports_no_torch():
    code = "import sys, hiera_video, hiera_video.errors, hiera_video.report; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "False"


def test_export_help_names_the_default_opset():
    """The help text is written out (the module defining the default imports torch)."""
    from hiera_video.jobs.export import DEFAULT_OPSET

    [opset] = [p for p in typer.main.get_command(app).commands["export"].params if p.name == "opset"]
    assert f"[default: {DEFAULT_OPSET}]" in opset.help
