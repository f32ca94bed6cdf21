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
from hiera_video.jobs.pretrain import PretrainConfig, load_pretrain_config
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
    assert "anchors and aliases" in msg and "bomb.yaml, line 3" in msg and len(msg) < 300 and "\n" not in msg


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
    from hiera_video.config import list_presets

    for name in list_presets():
        (load_pretrain_config if name.startswith("pretrain") else load_config)(name)
    free = {  # any value of the type is fine: paths, split and file names, constructor arguments
        "data.root", "data.annotations", "data.val_annotations", "data.train_split", "data.val_split", "data.labels",
        "data.exclusions", "data.val_exclusions", "data.proposals", "data.val_proposals", "model.weights", "model.arch",
        "run.output",
    }
    keys, rules = set(), set()
    for cls in (TrainConfig, PretrainConfig):
        for sec in dataclasses.fields(cls):
            hints = typing.get_type_hints(sec.default_factory)
            for f in dataclasses.fields(sec.default_factory):
                if hints[f.name] not in (bool, bool | None):
                    keys.add(f"{sec.name}.{f.name}")
                if f.metadata["check"] is not None:
                    rules.add(f"{sec.name}.{f.name}")
    assert keys - free - rules == set()
    assert rules - keys == set()  # no rule for a true/false key


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
    assert re.search(r"--window\s+NUMBER", out) and re.search(r"-k, --top-k\s+INTEGER", out)


# ---------------------------------------------------------------------------- issue 20 item 6: exit codes


def _raise(exc):
    def boom(*args, **kwargs):
        raise exc

    return boom


def test_an_internal_error_has_its_own_exit_code(capsys, monkeypatch):
    """An uncaught exception (a bug) exits 3, not 1 (1 means "results written, some inputs
    failed"): one line saying it is internal, the traceback with --debug, same code."""
    monkeypatch.setattr("hiera_video.metrics.classification.load_predictions", _raise(ZeroDivisionError("division by zero")))
    code, out, err = run_cli(["score", "preds.pt"], capsys)
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "internal error: ZeroDivisionError: division by zero" in err and "--debug" in err, err
    code, out, err = run_cli(["--debug", "score", "preds.pt"], capsys)
    assert code == 3 and "Traceback" in err and "ZeroDivisionError" in err, err


def test_debug_keeps_the_exit_code_of_a_user_error(capsys):
    """--debug adds the traceback of a user error and keeps its exit code 2 (re-raising it
    used to exit 1)."""
    code, out, err = run_cli(["score", "no/such/preds.pt"], capsys)
    assert code == 2 and "Traceback" not in err, err
    code, out, err = run_cli(["--debug", "score", "no/such/preds.pt"], capsys)
    assert code == 2 and "Traceback" in err and "error:" in err, err


@pytest.mark.parametrize("exc,code", [
    (PermissionError(13, "Permission denied", "/data/preds.pt"), 2),
    (OSError(28, "No space left on device"), 2),
    (ConnectionResetError(104, "Connection reset by peer"), 3),
])
def test_file_system_errors_are_one_line_user_errors(exc, code, capsys, monkeypatch):
    """An OSError of the file system (no permission, a full disk) that no command turned into
    a message is still one line (exit 2); other OSErrors are internal errors (exit 3)."""
    monkeypatch.setattr("hiera_video.metrics.classification.load_predictions", _raise(exc))
    got, out, err = run_cli(["score", "preds.pt"], capsys)
    assert got == code and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert exc.strerror in err and (exc.filename is None or exc.filename in err), err


# ---------------------------------------------------------------------------- issue 20 item 4: model.arch

BAD_ARCH = [  # (--set item, the key the error must name, a word of the reason)
    ("model.arch={q_pool: -5}", "model.arch.q_pool", ">= 0"),
    ("model.arch={q_pool: 4}", "model.arch.q_pool", "smaller than the number of stages"),
    ("model.arch={q_pool: 2.0}", "model.arch.q_pool", "integer"),
    ("model.arch={qpool: 2}", "model.arch.qpool", "not an architecture argument"),
    ("model.arch={stages: [1, 1, 1]}", "model.arch.stages", "one flag per stage"),
    ("model.arch={stages: [1, 0, 2, 1]}", "model.arch.stages", "block counts >= 1"),
    ("model.arch={num_heads: 3}", "model.arch.num_heads", "divisible by its heads"),
    ("model.arch={embed_dim: 0}", "model.arch.embed_dim", ">= 1"),
    ("model.arch={mask_unit_attn: [1, 0, 0, 0]}", "model.arch.mask_unit_attn", "true/false"),
    ("model.arch={q_stride: [1, 3, 3]}", "model.arch.q_stride", "power of (stages - 1)"),
    ("model.arch={patch_padding: [0, 0, 0]}", "model.arch.patch_padding", "one token per stride"),
    ("model.arch={patch_stride: [2, 4]}", "model.arch.patch_stride", "3 entries"),
    ("model.arch={norm_layer: BatchNorm1d}", "model.arch.norm_layer", "LayerNorm"),
    ("model.arch={sep_pos_embed: 1}", "model.arch.sep_pos_embed", "true or false"),
    ("model.arch={mlp_ratio: -1}", "model.arch.mlp_ratio", "> 0"),
    ("model.arch={in_chans: 1}", "model.arch.in_chans", "RGB"),
    ("model.arch={drop_path_rate: 0.1}", "model.arch.drop_path_rate", "model.drop_path"),
    ("model.arch={input_size: [8, 64, 64]}", "model.arch.input_size", "model.input_size"),
    ("model.arch={num_classes: 7}", "model.arch.num_classes", "dataset"),
    ("model.input_size=[8, 64, 63]", "model.input_size", "multiple of 32"),
    ("model.input_size=[8, 64]", "model.input_size", "3 entries"),
    ("model.input_size=[7, 64, 64]", "model.input_size", "multiple of 2"),
    ("model.name=hiera_nan_8x64", "model.name", "hiera_nano_8x64"),
]


@pytest.mark.parametrize("item,key,reason", BAD_ARCH, ids=[b[0] for b in BAD_ARCH])
def test_bad_architectures_are_refused_at_load_time(item, key, reason):
    """Every model.arch key (and model.input_size) is checked against the model's constructor
    when the config loads: `model.arch={q_pool: -5}` used to train to the end with exit 0."""
    with pytest.raises(HieraVideoError) as e:
        load_config(None, ["model.name=hiera_nano_8x64", item])
    msg = str(e.value)
    assert f"'{key}'" in msg and reason in msg and "\n" not in msg, msg


def test_good_architectures_load():
    cfg = load_config(None, ["model.name=hiera_nano_8x64", "model.arch={q_pool: 2, mlp_ratio: 2.0}", "model.input_size=[4, 96, 64]"])
    assert cfg.model.arch == {"q_pool": 2, "mlp_ratio": 2.0}
    three = "model.arch={stages: [1, 2, 1], q_pool: 2, mask_unit_size: [1, 4, 4], mask_unit_attn: [true, false, false]}"
    load_config(None, ["model.name=hiera_nano_8x64", three, "model.input_size=[8, 32, 32]"])
    load_pretrain_config(None, ["model.name=mae_hiera_nano_8x64", "model.arch={decoder_num_heads: 4}"])
    with pytest.raises(HieraVideoError, match="'model.arch.decoder_num_heads'.*divisible"):
        load_pretrain_config(None, ["model.name=mae_hiera_nano_8x64", "model.arch={decoder_num_heads: 3}"])
    with pytest.raises(HieraVideoError, match="'model.arch.mask_ratio': set it with model.mask_ratio"):
        load_pretrain_config(None, ["model.name=mae_hiera_nano_8x64", "model.arch={mask_ratio: 0.5}"])


def test_create_model_checks_its_arguments_too():
    with pytest.raises(HieraVideoError, match="model option 'q_pool' must be an integer >= 0"):
        hiera_video.create_model("hiera_nano_8x64", q_pool=-5)
    with pytest.raises(HieraVideoError, match="model option 'input_size': input height 60 must be a multiple of 32"):
        hiera_video.create_model("hiera_nano_8x64", input_size=(8, 60, 64))


def test_finetune_with_a_bad_arch_stops_before_any_work(tmp_path, capsys, monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr("hiera_video.jobs.finetune.build_data", started)
    code, out, err = run_cli(["finetune", "--config", "demo", "--root", str(tmp_path), "-o", str(tmp_path / "run"),
                              "--set", "model.arch={q_pool: -5}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'model.arch.q_pool'" in err, err
