"""Helpers shared by the tests: the CLI run in-process, and the exact-resume comparison."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hiera_video.cli.app import main


def run_cli(argv: list[str], capsys=None) -> tuple[int, str, str]:
    """``hiera-video ARGV`` in this process, as the installed entry point runs it: the exit
    code, and (with ``capsys``) what it printed to stdout and stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return e.value.code, out, err


def assert_same_weights(run_a: Path, run_b: Path, steps: int) -> tuple[dict, dict]:
    """Both runs' ``last.pt`` are at ``steps`` optimizer steps with bit-identical weights;
    returns the two checkpoints for further checks."""
    a = torch.load(Path(run_a) / "last.pt", weights_only=True)
    b = torch.load(Path(run_b) / "last.pt", weights_only=True)
    assert a["run_state"]["step"] == b["run_state"]["step"] == steps
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a, b


def damaged_video(path: Path, pick) -> tuple[str, int, int]:
    """A stamped 48-frame 30 fps video in which the frames ``pick(sampled)`` of those that the
    centre clip of hiera_nano_8x64 samples (8 frames, stride 4; worked out here with the
    sampler, not by the code under test) cannot be decoded. Returns the path, the number of
    damaged sampled frames and the number of sampled frames."""
    from hiera_video.data.transforms import temporal_view_indices
    from videogen import write_damaged_video

    sampled = sorted(set(temporal_view_indices(48, 30.0, 1, "dense", 8, 4, 30.0)[0].tolist()))
    damaged = set(pick(sampled))
    return str(write_damaged_video(path, 48, damaged)), len(damaged), len(sampled)
