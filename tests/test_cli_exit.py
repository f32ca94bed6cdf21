"""How a process ends (docs/distributed.md, "How a process ends"): a torchrun process that left
its process group ends with os._exit(code) after flushing, skipping the interpreter's teardown
(where PyTorch's leftover gloo threads can abort it); every other run exits normally."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch.distributed as dist

from hiera_video.cli.app import main
from hiera_video.engine import distributed


class _Exited(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


@pytest.fixture
def fake_exit(monkeypatch):
    """os._exit recorded (and stopped) instead of ending pytest."""
    calls: list = []

    def exit_now(code):
        calls.append(code)
        raise _Exited(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    return calls


@pytest.mark.parametrize("argv,code", [(["--version"], 0), (["eval"], 2), (["predict", "--views", "9"], 2)])
def test_a_process_that_left_its_group_ends_with_os_exit_and_its_code(fake_exit, monkeypatch, capsys, argv, code):
    monkeypatch.setattr(distributed.World, "left_group", True, raising=False)
    with pytest.raises(_Exited):
        main(argv)
    assert fake_exit == [code]
    capsys.readouterr()


@pytest.mark.parametrize("argv,code,stream,text", [("['--version']", 0, "stdout", "hiera-video "),
                                                   ("['eval']", 2, "stderr", "Missing option")])
def test_os_exit_loses_no_output(argv, code, stream, text):
    """The real os._exit, with stdout and stderr pipes (buffered): what was written arrives, even
    text still in the buffers when the command ends."""
    script = f"""
import sys
import hiera_video.cli.app as app
from hiera_video.engine import distributed
distributed.World.left_group = True
real = app._run
def run(command, args):  # text written after the command, still in the buffers when main ends
    try:
        real(command, args)
    finally:
        sys.stdout.write("pending-out ")
        sys.stderr.write("pending-err ")
app._run = run
app.main({argv})
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as for most users
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == code and text in getattr(p, stream), (p.stdout, p.stderr)
    assert "pending-out" in p.stdout and "pending-err" in p.stderr


def test_a_plain_run_exits_normally(fake_exit, capsys):
    assert not getattr(distributed.World, "left_group", False)
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and fake_exit == [] and "hiera-video" in capsys.readouterr().out


def test_leaving_a_real_process_group_sets_the_flag(monkeypatch):
    """A real gloo group (one process, claimed as rank 0 of 2 so that cleanup acts): cleanup leaves it and marks the process."""
    monkeypatch.setattr(distributed.World, "left_group", False, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        distributed.cleanup(distributed.World(rank=0, world_size=2))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert not dist.is_initialized() and distributed.World.left_group is True
    distributed.cleanup(distributed.World())  # a plain run: nothing to leave
