"""`hiera-video finetune`: the loop learns, exact resume, signals, corrupt videos, NaN, DDP."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hiera_video.config import load_config
from hiera_video.jobs.finetune import finetune
from hiera_video.errors import HieraVideoError

from helpers import assert_same_weights, colour_videos, run_cli


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    """3 classes told apart by colour (the loop must learn this easily), 8 + 3 videos each,
    as a 'path label' list dataset, plus a corrupt training video."""
    root = tmp_path_factory.mktemp("colours")
    train = colour_videos(root, 11, num_train=8, num_frames=20, jitter=True, folders=True)
    (root / "broken.mp4").write_bytes(random.Random(2000).randbytes(2000))
    (root / "train.txt").write_text("\n".join(train + ["broken.mp4 0"]) + "\n")
    return root


def tiny_config(root: Path, out: Path, *sets: str):
    base = [
        "data.dataset=list", f"data.root={root}", "data.annotations=train.txt", "data.val_annotations=val.txt",
        "data.labels=labels.txt", "data.workers=0", "data.stride=2", "model.name=hiera_nano_8x64",
        "model.drop_path=0.1", "model.head_dropout=0.1", "optim.lr=2e-3", "optim.base_batch=8", "optim.epochs=3",
        "optim.warmup_epochs=0.5", "optim.layer_decay=0.9", "augment.randaug=true", "augment.erase_p=0.25",
        "augment.mixup=0.8", "augment.cutmix=1.0", "run.batch_size=8", "run.precision=fp32", "run.log_every=1",
        "run.val_every_epochs=1", "run.final_views=1x3", f"run.output={out}",
    ]
    return load_config(None, base + list(sets))


def test_loop_learns_and_records_everything(colour_data, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(colour_data, out, "optim.epochs=6", "augment.mixup=0.0", "augment.cutmix=0.0", "augment.randaug=false")
    final = finetune(cfg)
    assert final["top1"] >= 90.0  # chance is 33%
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["top1"] == final["top1"] and metrics["bad_training_videos"] >= 1
    bad_rows = (out / "bad_videos.csv").read_text().splitlines()[1:]
    assert len(bad_rows) == 1 and bad_rows[0].startswith(str(colour_data / "broken.mp4"))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"train", "epoch", "val"}
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "config.yaml").is_file() and json.loads((out / "config.json").read_text())["optim"]["epochs"] == 6
    assert (out / "eval" / "metrics.json").is_file() and (out / "eval" / "per_class.csv").is_file()
    page = (out / "report.html").read_text()  # the run's page: curves (loss, lr, val top-1), config, final table
    assert page.count("<svg") >= 3 and "validation top1" in page and "broken.mp4" in page and "eval/report.html" in page
    assert (out / "eval" / "report.html").is_file()
    # The checkpoint carries model name, labels and preprocessing: predict needs nothing else.
    video = colour_data / "green" / "9.mp4"
    assert run_cli(["predict", str(video), "--weights", str(out / "best.pt"), "--json", "--dtype", "fp32"])[0] == 0


def test_exact_resume(colour_data, tmp_path):
    """Halting after 3 steps and resuming gives bit-identical weights to an uninterrupted run."""
    sets = ("run.val_every_epochs=0", "run.final_views=1x1", "optim.epochs=2")
    finetune(tiny_config(colour_data, tmp_path / "a", *sets))
    halted = finetune(tiny_config(colour_data, tmp_path / "b", *sets, "run.halt_after_steps=3"))
    assert halted == {"halted_at_step": 3}
    finetune(tiny_config(colour_data, tmp_path / "b", *sets), resume="auto")
    a, b = assert_same_weights(tmp_path / "a", tmp_path / "b", steps=12)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    # A fresh run never mixes into an earlier one's folder.
    with pytest.raises(HieraVideoError, match=r"already holds an earlier training run \(last.pt, .*continue it with --resume auto"):
        finetune(tiny_config(colour_data, tmp_path / "a", *sets))


def test_nan_loss_stops_cleanly(colour_data, tmp_path):
    cfg = tiny_config(colour_data, tmp_path / "nan", "optim.lr=1e30", "optim.clip_grad=null", "run.val_every_epochs=0")
    with pytest.raises(HieraVideoError, match="diverged"):
        finetune(cfg)


def test_unknown_config_key_is_an_error(tmp_path):
    with pytest.raises(HieraVideoError, match="valid keys in 'optim'"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(HieraVideoError, match="must be a number"):
        load_config(None, ["optim.lr=fast"])
    cfg = load_config("k400_large")
    assert cfg.model.name == "hiera_large_16x224" and cfg.optim.layer_decay == 0.875 and cfg.optim.epochs == 100
    assert load_config("k400_huge").optim.lr == 4e-4 and load_config("ssv2_large").optim.name == "sgd"


def _cli(*args):
    return [sys.executable, "-m", "hiera_video.cli.app", *args]


def test_sigterm_saves_checkpoint_and_exits(colour_data, tmp_path):
    out = tmp_path / "sig"
    args = ["finetune", "--set", "optim.epochs=200", "--set", "run.val_every_epochs=0"]
    base = ["data.dataset=list", f"data.root={colour_data}", "data.annotations=train.txt", "data.val_annotations=val.txt",
            "data.labels=labels.txt", "data.workers=0", "model.name=hiera_nano_8x64", "run.batch_size=8",
            "run.precision=fp32", "run.log_every=1", f"run.output={out}", "optim.base_batch=8"]
    for s in base:
        args += ["--set", s]
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 300
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume auto" in err and "Traceback" not in err
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["run_state"]["step"] >= 1


@pytest.mark.skipif(not Path(sys.executable).with_name("torchrun").exists() and shutil.which("torchrun") is None, reason="needs torchrun")
def test_ddp_two_cpu_processes(colour_data, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "ddp"
    args = ["finetune"]
    for s in ["data.dataset=list", f"data.root={colour_data}", "data.annotations=train.txt", "data.val_annotations=val.txt",
              "data.labels=labels.txt", "data.workers=0", "model.name=hiera_nano_8x64", "run.batch_size=4",
              "run.global_batch=16", "run.precision=fp32", "run.log_every=1", f"run.output={out}", "optim.base_batch=16",
              "optim.epochs=2", "run.final_views=1x1"]:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "hiera_video.cli.app", *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["processes"] == 2 and m["accum_steps"] == 2 and m["global_batch"] == 16
    assert m["num_val_videos"] == 9 and m["top1"] is not None
    state = torch.load(out / "last.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["world_size"] == 2


def test_ema_checkpointing_and_tensorboard_in_the_loop(colour_data, tmp_path):
    """The optional parts inside a real run: EMA weights are what best.pt publishes,
    gradient checkpointing trains to the same weights, and TensorBoard gets the scalars."""
    sets = ("run.val_every_epochs=1", "run.final_views=1x1", "optim.epochs=1", "model.drop_path=0.0",
            "model.head_dropout=0.0", "augment.mixup=0.0", "augment.cutmix=0.0")
    finetune(tiny_config(colour_data, tmp_path / "ema", *sets, "run.ema=true", "run.ema_decay=0.5",
                         "model.grad_checkpointing=true", "run.tensorboard=true"))
    last = torch.load(tmp_path / "ema" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "ema" / "best.pt", weights_only=True)
    key = "head.projection.weight"
    assert torch.equal(best["model"][key], last["ema"]["module"][key]) and not torch.equal(best["model"][key], last["model"][key])
    assert list((tmp_path / "ema" / "tensorboard").glob("events.out.tfevents.*"))

    finetune(tiny_config(colour_data, tmp_path / "plain", *sets, "run.ema=true", "run.ema_decay=0.5"))
    plain = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)
    for k in plain["model"]:
        torch.testing.assert_close(plain["model"][k], last["model"][k], rtol=1e-4, atol=1e-5, msg=k)


def test_compiled_model_trains(colour_data, tmp_path):
    """model.compile wraps the training model in torch.compile (inductor, here on the CPU)."""
    cfg = tiny_config(colour_data, tmp_path / "compiled", "model.compile=true", "optim.epochs=1", "run.val_every_epochs=0",
                      "run.final_views=1x1", "augment.mixup=0.0", "augment.cutmix=0.0", "augment.randaug=false")
    final = finetune(cfg)
    rows = [json.loads(x) for x in (tmp_path / "compiled" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses) and final["top1"] is not None


def test_disk_full_while_checkpointing_is_one_line(colour_data, tmp_path, monkeypatch, capsys):
    """torch.save on a full disk raises a RuntimeError from its C++ writer, not an OSError: it
    must still be a one-line error, leave no temporary file, and keep no half checkpoint."""
    real_save = torch.save

    def save_to_full_disk(obj, f, *args, **kwargs):
        with open("/dev/full", "wb") as full:  # every write fails with ENOSPC
            return real_save(obj, full, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_to_full_disk)
    out = tmp_path / "full"
    args = ["finetune"]
    for s in ["data.dataset=list", f"data.root={colour_data}", "data.annotations=train.txt", "data.val_annotations=val.txt",
              "data.labels=labels.txt", "data.workers=0", "model.name=hiera_nano_8x64", "run.batch_size=8",
              "run.precision=fp32", f"run.output={out}", "optim.base_batch=8", "optim.epochs=1", "run.val_every_epochs=0"]:
        args += ["--set", s]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.strip()][-1]
    assert line.startswith("error: cannot write checkpoint") and "last.pt" in line, err[-2000:]
    assert not (out / "last.pt").exists() and not list(out.glob(".last.pt.*"))
