"""Sizes bounded by what the machine holds, and config numbers read as YAML 1.2 (issue 21,
items 8 and 11): an option whose memory cannot be had is refused in one line naming the
option and the limit (HIERA_VIDEO_MEMORY_LIMIT makes the limit the same on every machine);
large confusion matrices stay sparse; config numbers cannot overflow or be read as base 60."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from hiera_video import limits
from hiera_video.config import load_config
from hiera_video.errors import HieraVideoError
from hiera_video.metrics.classification import classification_metrics, save_predictions

from helpers import nano_classifier, run_cli
from videogen import write_video


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    _, ckpt = nano_classifier(d / "nano.pt", ["a", "b", "c"])
    video = write_video(d / "clip.mp4", num_frames=30, height=64, width=64)
    return dict(ckpt=ckpt, video=str(video), dir=d)


@pytest.fixture
def one_gig(monkeypatch):
    monkeypatch.setenv(limits.ENV, "1G")


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if "error" in line]  # export says what it starts first
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---------------------------------------------------------------------------- item 8: options


def test_memory_limit_comes_from_the_environment_or_the_machine(monkeypatch):
    monkeypatch.setenv(limits.ENV, "512M")
    assert limits.memory_limit()[0] == 512 * 2**20
    monkeypatch.setenv(limits.ENV, "lots")
    with pytest.raises(HieraVideoError, match=limits.ENV):
        limits.memory_limit()
    monkeypatch.delenv(limits.ENV)
    total, source = limits.memory_limit()
    assert total is not None and total > 0 and ("available" in source or "free" in source)


def test_predict_views_beyond_memory_are_refused_before_decoding(nano, one_gig, capsys):
    # 20000 x 3 views of 8x64x64 float32 clips: 23.6 GB.
    code, _, err = run_cli(["predict", nano["video"], "--weights", nano["ckpt"], "--views", "20000x3", "--device", "cpu",
                            "--workers", "0"], capsys)
    _one_line_error(code, err, "--views 20000x3", "23.6 GB", "1.1 GB", limits.ENV)


def test_extract_and_eval_views_beyond_memory_are_refused(nano, one_gig, capsys):
    code, _, err = run_cli(["extract", nano["video"], "--weights", nano["ckpt"], "-o", str(nano["dir"] / "feats"),
                            "--views", "20000x3", "--device", "cpu", "--workers", "0"], capsys)
    _one_line_error(code, err, "--views 20000x3", "23.6 GB")
    root = nano["dir"] / "ds"
    root.mkdir(exist_ok=True)
    write_video(root / "v.mp4", num_frames=30, height=64, width=64)
    (root / "val.txt").write_text("v.mp4 0\n")
    (root / "labels.txt").write_text("a\nb\nc\n")
    code, _, err = run_cli(["eval", "--dataset", "list", "--root", str(root), "--annotations", str(root / "val.txt"),
                            "--labels", str(root / "labels.txt"),
                            "--weights", nano["ckpt"], "--views", "20000x3", "--device", "cpu", "--workers", "0"], capsys)
    _one_line_error(code, err, "--views 20000x3", "23.6 GB")


@pytest.mark.parametrize("cmd", ["predict", "extract"])
@pytest.mark.parametrize("window", [["--window", "0.5", "--stride", "1e-12"], ["--window", "1e-300"]])
def test_windows_beyond_memory_fail_the_video_not_the_machine(nano, one_gig, capsys, cmd, window, tmp_path):
    """1e13 windows of a 1 s video (a list of them was a MemoryError, or a worker grown to 22 GB):
    the video fails with the option and the limit named, the run ends with exit code 1."""
    extra = ["-o", str(tmp_path / "f")] if cmd == "extract" else []
    code, _, err = run_cli([cmd, nano["video"], "--weights", nano["ckpt"], *window, "--device", "cpu", "--workers", "0",
                            *extra], capsys)
    assert code == 1, err
    assert "--window/--stride" in err and "windows over the 1.0 s" in err and "1.1 GB" in err and "Traceback" not in err


def test_a_huge_batch_size_is_refused_with_its_limit(nano, capsys):
    code, _, err = run_cli(["predict", nano["video"], "--weights", nano["ckpt"], "-b", "9223372036854775808"], capsys)
    assert code == 2 and "--batch-size" in err and str(limits.MAX_BATCH) in err and "Traceback" not in err, err


def test_batch_larger_than_the_views_is_harmless(nano, capsys):
    code, out, err = run_cli(["predict", nano["video"], "--weights", nano["ckpt"], "-b", str(limits.MAX_BATCH),
                              "--device", "cpu", "--workers", "0", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["ok"]


def test_reconstruct_scale_is_bounded(nano, one_gig, capsys, tmp_path):
    base = ["reconstruct", nano["video"], "--model", "mae_hiera_nano_8x64", "--weights", "none", "--allow-random-weights",
            "--device", "cpu", "--scale", "100000"]
    code, _, err = run_cli([*base, "-o", str(tmp_path / "r.gif")], capsys)
    _one_line_error(code, err, "--scale 100000", "65535")
    code, _, err = run_cli([*base, "-o", str(tmp_path / "r.png")], capsys)
    _one_line_error(code, err, "--scale 100000", "1.1 GB")
    assert not list(tmp_path.iterdir())


def test_export_size_is_bounded(nano, one_gig, capsys, tmp_path):
    code, _, err = run_cli(["export", "--weights", nano["ckpt"], "--format", "onnx", "-o", str(tmp_path / "m.onnx"),
                            "--size", "65536"], capsys)
    _one_line_error(code, err, "--size 65536", "1.1 GB")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- item 8: score


def test_many_classes_give_a_sparse_confusion_matrix(tmp_path, capsys):
    """60,000 classes: the dense matrix would be 28.8 GB; scoring keeps the non-zero cells only."""
    n, c = 12, 60_000
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, c, (n,), generator=g)
    probs = torch.rand(n, c, generator=g)
    probs[torch.arange(6), labels[:6]] = 2.0  # the first 6 are right
    classes = [f"class{i}" for i in range(c)]
    m = classification_metrics(probs, labels, classes)
    assert m["confusion"].is_sparse and m["confusion"].shape == (c, c) and int(m["confusion"].values().sum()) == n
    assert m["top1"] == 50.0
    preds = tmp_path / "predictions.pt"
    save_predictions(preds, [f"v{i}.mp4" for i in range(n)], labels, probs, classes)
    code, _, err = run_cli(["score", str(preds), "--output", str(tmp_path / "out")], capsys)
    assert code == 0, err
    rows = list(csv.reader((tmp_path / "out" / "confusion.csv").open()))
    assert rows[0] == ["true_index", "true", "predicted_index", "predicted", "count"]
    assert sum(int(r[4]) for r in rows[1:]) == n and len(rows) <= n + 1
    assert all(r[1] == f"class{r[0]}" and r[3] == f"class{r[2]}" for r in rows[1:])
    right = [r for r in rows[1:] if r[0] == r[2]]
    assert sum(int(r[4]) for r in right) == 6
    assert not (tmp_path / "out" / "confusion.png").exists()


def test_few_classes_keep_the_dense_matrix():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    m = classification_metrics(probs, torch.tensor([0, 1, 1]), ["a", "b", "c"])
    assert not m["confusion"].is_sparse
    assert m["confusion"].tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]


# ---------------------------------------------------------------------------- item 11: config


def _config_error(*sets) -> str:
    with pytest.raises(HieraVideoError) as e:
        load_config(None, list(sets))
    return str(e.value)


def test_huge_warmup_and_epochs_are_refused():
    assert "optim.warmup_epochs" in _config_error("optim.warmup_epochs=1e308")
    assert "optim.epochs" in _config_error("optim.epochs=10000000000")
    assert load_config(None, ["optim.warmup_epochs=200", "optim.epochs=100"]).optim.warmup_epochs == 200.0  # may outlast the run


def test_config_numbers_are_yaml_1_2(tmp_path):
    msg = _config_error("optim.epochs=1:30")  # YAML 1.1: 90 (base 60)
    assert "optim.epochs" in msg and "1:30" in msg
    assert "1:30" in _config_error("optim.warmup_epochs=1:30")
    assert load_config(None, ["optim.epochs=010"]).optim.epochs == 10  # YAML 1.1: 8 (octal)
    assert load_config(None, ["optim.lr=1.5e3"]).optim.lr == 1500.0
    assert load_config(None, ["optim.epochs=0x1F"]).optim.epochs == 31
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  epochs: 1:30\n")
    with pytest.raises(HieraVideoError, match="optim.epochs"):
        load_config(str(f))
    f.write_text("optim:\n  epochs: 012\n  lr: 2e-3\n")
    cfg = load_config(str(f))
    assert cfg.optim.epochs == 12 and cfg.optim.lr == 2e-3


@pytest.mark.parametrize("size", ["[8,64,63]", "[8,64]"])
def test_input_size_the_model_cannot_take_is_refused(size):
    msg = _config_error("model.name=hiera_nano_8x64", f"model.input_size={size}")
    assert "model.input_size" in msg


def test_a_global_batch_larger_than_the_training_set_is_refused(tmp_path):
    from hiera_video.engine.trainer import Trainer

    cfg = load_config(None, [f"run.output={tmp_path / 'run'}", "run.batch_size=8", "run.global_batch=1000000000",
                             "optim.lr=1.6e-3", "optim.base_batch=256", "run.device=cpu", "data.repeated_aug=1"])
    with pytest.raises(HieraVideoError, match=r"run.global_batch \(1000000000\) is larger than the training set \(24 videos") as e:
        Trainer(cfg).plan(24, 1)
    assert "6250" in str(e.value) and "<= 24" in str(e.value)
    cfg.run.global_batch = 24
    t = Trainer(cfg)
    t.plan(24, 1)
    assert t.global_batch == 24
