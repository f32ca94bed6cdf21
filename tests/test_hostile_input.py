"""Hostile and careless input (issue 14): configs and options are checked before any work,
every mistake is one line naming the key or option and what is allowed, no traceback, no
flood of text; --help reads cleanly."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import typing
from pathlib import Path

import pytest
import torch

import hiera_video
from hiera_video.config import TrainConfig, load_config
from hiera_video.engine.pretrain import PretrainConfig, load_pretrain_config
from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints import save_checkpoint

from helpers import run_cli
from videogen import write_video


def _bomb(levels: int = 9) -> str:
    """Billion laughs under optim.lr: 9 aliases per level, 9^levels values when expanded."""
    text = "optim:\n  lr:\n    - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, levels + 1):
        text += f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


# ---------------------------------------------------------------------------- item 7: YAML bomb


def _load_bounded(*args) -> str:
    """``load_config(*args)``'s error message, computed in a forked child with 1 GiB more
    address space than it starts with and 30 s: a regression (gigabytes of error text) fails
    this test instead of exhausting the machine."""
    import multiprocessing
    import resource

    def child(conn):
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.RLIM_INFINITY))
        try:
            load_config(*args)
            conn.send("no error")
        except HieraVideoError as e:
            conn.send(str(e)[:10_000])
        except BaseException as e:
            conn.send(f"{type(e).__name__}")

    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    proc = multiprocessing.get_context("fork").Process(target=child, args=(sender,), daemon=True)
    proc.start()
    try:
        return receiver.recv() if receiver.poll(30) else "timed out"
    except EOFError:
        return "child died"
    finally:
        proc.kill()
        proc.join()


linux_only = pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc and fork")


@linux_only
def test_yaml_bomb_in_a_config_file_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    start = time.monotonic()
    msg = _load_bounded(str(path))
    assert time.monotonic() - start < 10
    assert "more than 10000 values" in msg and len(msg) < 300 and "\n" not in msg


@linux_only
def test_yaml_bomb_in_set_and_huge_values_are_never_echoed(tmp_path):
    inline = "[" + ", ".join(["&a [1, 1, 1, 1, 1, 1, 1, 1]"] + ["*a"] * 20) + "]"
    for item in (f"optim.betas={inline}", "optim.lr=[" + ", ".join(["9"] * 50_000) + "]"):
        msg = _load_bounded(None, [item])
        assert "optim." in msg and len(msg) < 400, msg[:400]
    msg = _load_bounded(None, ["optim.lr=" + "x" * 1_000_000])  # a wrong value of 1 MB: named, cut short
    assert "optim.lr" in msg and len(msg) < 400, msg[:400]
    big = tmp_path / "big.yaml"
    big.write_text("run:\n  output: " + "y" * (2 << 20) + "\n")
    with pytest.raises(HieraVideoError, match="too large for a config"):
        load_config(str(big))


# ---------------------------------------------------------------------------- item 8: every key checked


BAD_VALUES = [
    ("run.final_views=0x0", "run.final_views"),
    ("run.val_views=3", "run.val_views"),
    ("optim.lr=inf", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.lr=-1e-3", "optim.lr"),
    ("optim.lr=1e999", "optim.lr"),
    ("augment.scale=[2,1]", "augment.scale"),
    ("augment.scale=[0.5]", "augment.scale"),
    ("data.stride=0", "data.stride"),
    ("data.stride=-4", "data.stride"),
    ("data.workers=-1", "data.workers"),
    ("data.target_fps=0", "data.target_fps"),
    ("data.backend=ffmpeg", "data.backend"),
    ("optim.betas=[0.9, 1.5]", "optim.betas"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
    ("augment.erase_p=1.5", "augment.erase_p"),
    ("augment.label_smoothing=1", "augment.label_smoothing"),
    ("model.drop_path=1", "model.drop_path"),
    ("model.input_size=[8, 0, 64]", "model.input_size"),
    ("run.device=gpu", "run.device"),
    ("run.ema_decay=1", "run.ema_decay"),
    ("run.log_every=0", "run.log_every"),
    ("run.seed=-1", "run.seed"),
]


@pytest.mark.parametrize("item,key", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_refused_at_load_time(item, key):
    with pytest.raises(HieraVideoError) as e:
        load_config(None, [item])
    msg = str(e.value)
    assert f"'{key}'" in msg and "must be" in msg and "\n" not in msg


def test_the_typed_text_is_quoted_not_yamls_reading_of_it():
    with pytest.raises(HieraVideoError, match=r"got '0x0'"):  # YAML alone reads 0x0 as the number 0
        load_config(None, ["run.final_views=0x0"])
    assert load_config(None, ["run.final_views=5x3"]).run.final_views == "5x3"


def test_every_presets_and_defaults_pass_and_every_key_has_a_rule():
    from hiera_video.config import RULES, list_presets

    for name in list_presets():
        (load_pretrain_config if name.startswith("pretrain") else load_config)(name)
    free = {  # any value of the type is fine: paths, split and file names, constructor arguments
        "data.root", "data.annotations", "data.val_annotations", "data.train_split", "data.val_split", "data.labels",
        "data.exclusions", "data.val_exclusions", "data.proposals", "data.val_proposals", "model.weights", "model.arch",
        "run.output",
    }
    keys = set()
    for cls in (TrainConfig, PretrainConfig):
        for sec in dataclasses.fields(cls):
            hints = typing.get_type_hints(sec.default_factory)
            for f in dataclasses.fields(sec.default_factory):
                if hints[f.name] not in (bool, bool | None):
                    keys.add(f"{sec.name}.{f.name}")
    assert keys - free - set(RULES) == set()
    assert set(RULES) - keys == set()  # no rule for a key that does not exist


# ---------------------------------------------------------------------------- items 8, 9: one line, no traceback


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    clip = write_video(d / "clip.mp4", num_frames=16, height=64, width=64)
    write_video(d / "clip2.mp4", num_frames=16, height=64, width=64, color=(200, 30, 30))
    (d / "train.txt").write_text("clip.mp4 0\nclip2.mp4 1\n")
    (d / "labels.txt").write_text("a\nb\n")
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 8)
    (d / "self.yaml").write_text(f"base: {d / 'self.yaml'}\noptim:\n  lr: 1.0e-3\n")
    (d / "a.yaml").write_text("base: b.yaml\n")
    (d / "b.yaml").write_text("base: a.yaml\n")
    hub = d / "hub"
    hub.mkdir()
    nano = hiera_video.create_model("hiera_nano_8x64")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in nano.state_dict().items()}, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(json.dumps({"embed_dim": 32, "stages": "abc", "input_size": [8, 64, 64]}))
    model = hiera_video.create_model("hiera_nano_8x64", num_classes=2)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(d / "run" / "last.pt", model, optimizer=opt, run_state={"epoch": 0, "step": 1}, world_size=1)
    return dict(dir=d, clip=str(clip), hub=str(hub), run=str(d / "run" / "last.pt"))


def _cases(f):
    d = f["dir"]
    show = ["finetune", "--show-config"]
    train = ["finetune", "--dataset", "list", "--root", str(d), "--annotations", "train.txt", "--val-annotations", "train.txt",
             "--set", "data.labels=labels.txt", "--set", "data.workers=0", "--set", "run.batch_size=2",
             "--set", "data.repeated_aug=1", "--set", "run.precision=fp32"]
    return {
        "predict --window nan": (["predict", f["clip"], "--window", "nan"], "--window"),
        "predict --window 0": (["predict", f["clip"], "--window", "0"], "--window"),
        "predict --stride inf": (["predict", f["clip"], "--window", "2", "--stride", "inf"], "--stride"),
        "extract --window nan": (["extract", f["clip"], "-o", str(d / "feat"), "--window", "nan"], "--window"),
        "extract --window -1": (["extract", f["clip"], "-o", str(d / "feat"), "--window", "-1"], "--window"),
        "eval --sampling bogus": (["eval", "--dataset", "list", "--root", str(d), "--sampling", "bogus"], "--sampling"),
        "eval --stride -2": (["eval", "--dataset", "list", "--root", str(d), "--stride", "-2"], "--stride"),
        "eval --decode-timeout nan": (["eval", "--dataset", "list", "--root", str(d), "--decode-timeout", "nan"], "--decode-timeout"),
        "--set data.workers=-1": ([*show, "--set", "data.workers=-1"], "data.workers"),
        "--set run.final_views=0x0": ([*show, "--set", "run.final_views=0x0"], "run.final_views"),
        "--set optim.lr=inf": ([*show, "--set", "optim.lr=inf"], "optim.lr"),
        "--set augment.scale=[2,1]": ([*show, "--set", "augment.scale=[2,1]"], "augment.scale"),
        "--set data.stride=0": ([*show, "--set", "data.stride=0"], "data.stride"),
        "binary config": ([*show, "--config", str(d / "binary.yaml")], "not a text file"),
        "config based on itself": ([*show, "--config", str(d / "self.yaml")], "loops"),
        "configs based on each other": ([*show, "--config", str(d / "a.yaml")], "a.yaml -> b.yaml -> a.yaml"),
        "config.json with wrong types": (["predict", f["clip"], "--weights", f["hub"]], "'stages' must be a list"),
        "resume another model": ([*train, "--model", "hiera_micro_16x128", "--output", str(d / "run"), "--resume", f["run"]],
                                 "it is a run of hiera_nano_8x64, but this run builds hiera_micro_16x128"),
    }


CASES = list(_cases(dict(dir=Path("."), clip="", hub="", run="")))


@pytest.mark.parametrize("case", CASES)
def test_mistakes_are_one_line_errors(files, case, capsys):
    argv, expected = _cases(files)[case]
    code, out, err = run_cli(argv, capsys)
    text = out + err
    assert code == 2, text[-2000:]
    assert "Traceback" not in text and expected in " ".join(err.split()), text[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert sum(ln.startswith(("error:", "Error:")) for ln in lines) == 1 and len(err) < 2000


# ---------------------------------------------------------------------------- item 13: --help


def _commands():
    import typer

    from hiera_video.cli.app import app

    return sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", ["", *_commands()])
def test_help_reads_cleanly(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    code, out, err = run_cli([command, "--help"] if command else ["--help"], capsys)
    assert code == 0, err
    assert not re.search(r"<(bool|int|str|float|path|list)", out), out  # no type tags
    assert not re.search(r"\s[.,;]\s*│", out) and not re.search(r"\s[.,;]$", out, re.M), out  # no "Model name ."
    assert "[default: no-" not in out and "[default: False]" not in out
    flags = r"--(json|help|strict|debug|allow-random-weights|no-allow-random-weights|overwrite|save-views|all-classes)"
    assert not re.search(flags + r"\s+(TEXT|INTEGER|NUMBER|PATH)\b", out), out  # flags take no value


def test_help_keeps_bracketed_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("TERMINAL_WIDTH", "250")
    code, out, _ = run_cli(["predict", "--help"], capsys)
    assert code == 0
    assert "Model name [default: hiera_base_16x224, or the one a checkpoint names]." in out
    assert re.search(r"--window\s+NUMBER", out) and re.search(r"--top-k\s+-k\s+INTEGER", out)
