"""Every command takes the same dataset kinds and aliases (hiera_video.data.datasets)."""

from __future__ import annotations

import re

import pytest

from hiera_video.data.clip_spec import DATASET_PRESETS
from hiera_video.data.datasets import ALL_KINDS, DATASET_KINDS
from hiera_video.jobs.evaluate import EvalOptions

from helpers import run_cli

COMMANDS = {"eval": ALL_KINDS, "finetune": ALL_KINDS, "pretrain": DATASET_KINDS, "extract": DATASET_KINDS,
            "check-videos": DATASET_KINDS}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_the_same_kinds_and_aliases(command, tmp_path, capsys):
    args = ["--root", str(tmp_path)] + {"finetune": ["--show-config"], "pretrain": ["--show-config"],
                                        "eval": ["-m", "hiera_nano_8x64", "-w", "none", "--allow-random-weights"],
                                        "extract": ["-o", str(tmp_path / "out")]}.get(command, [])
    code, out, err = run_cli([command, "--dataset", "k300", *args], capsys)
    assert code == 2 and re.search(f"one of {', '.join(COMMANDS[command])}(, got|$)", err, re.M), err
    code, out, err = run_cli([command, "--dataset", "Kinetics-400", *args], capsys)
    if command in ("finetune", "pretrain"):
        assert code == 0 and "'k400'" in out, out + err
    else:  # accepted: the command goes on to look for the annotations
        assert code == 2 and "unknown dataset" not in err and "no Kinetics annotations" in err, err
    assert EvalOptions("kinetics400", tmp_path).dataset == "k400"
    assert set(DATASET_PRESETS) == set(DATASET_KINDS)  # a test protocol for every kind
