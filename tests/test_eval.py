"""`hiera-video eval`: metrics against an independent computation, bad videos, torchrun, score."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hiera_video
from hiera_video.data import ClipSpec, make_views, transforms
from hiera_video.data.labels import load_labels
from hiera_video.models.checkpoints import save_checkpoint

from helpers import damaged_video, nano_classifier, patch_everywhere, run_cli as run
from videogen import write_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-class folder dataset (two good videos per class, one corrupt), a K400-format copy, and
    a classifier checkpoint whose predictions are not uniform."""
    d = tmp_path_factory.mktemp("eval")
    model, ckpt = nano_classifier(d / "nano3.pt", ["left", "right", "up"], head_std=2.0)
    root = d / "folder"
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]
    for c, cls in enumerate(["left", "right", "up"]):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            write_video(root / cls / f"{cls}{k}.mp4", num_frames=24 + 8 * k, height=48, width=64, color=colours[2 * c + k])
    (root / "up" / "broken.mp4").write_bytes(random.Random(3000).randbytes(3000))
    return dict(dir=d, root=root, ckpt=ckpt, model=model)


def expected_metrics(setup, views=(2, 3)):
    """Probabilities and metrics computed here with plain loops."""
    classes = ["left", "right", "up"]
    rows = []
    for c, cls in enumerate(classes):
        for path in sorted((setup["root"] / cls).glob("*.mp4")):
            if path.name == "broken.mp4":
                continue
            v, _ = make_views(str(path), ClipSpec(temporal_views=views[0], spatial_views=views[1], crop_size=64, num_frames=8))
            with torch.no_grad():
                probs = setup["model"](v).softmax(-1).mean(0)
            rows.append((str(path), c, probs))
    correct1 = sum(int(p.argmax()) == y for _, y, p in rows)
    per_class = []
    for c in range(3):
        mine = [(y, p) for _, y, p in rows if y == c]
        per_class.append(100.0 * sum(int(p.argmax()) == y for y, p in mine) / len(mine))
    return rows, 100.0 * correct1 / len(rows), sum(per_class) / 3


def test_eval_metrics_match_independent_computation(setup, capsys, tmp_path):
    out_dir = tmp_path / "out"
    code, out, err = run(["eval", "--dataset", "folder", "--root", str(setup["root"]), "--weights", setup["ckpt"],
                          "--views", "2x3", "--workers", "1", "--dtype", "fp32", "-o", str(out_dir), "--save-views"], capsys)
    assert code == 1, err  # metrics written, one video (broken.mp4) failed
    rows, top1, mca = expected_metrics(setup)
    m = json.loads((out_dir / "metrics.json").read_text())
    assert m["num_videos"] == 6 and m["num_failed"] == 1
    assert m["substituted_frames"]["num_videos"] == 0 and m["substituted_frames"]["videos"] == []
    assert m["top1"] == pytest.approx(top1) and m["mean_class_accuracy"] == pytest.approx(mca)
    assert m["top5"] == pytest.approx(100.0)  # 3 classes: top-3 always hits
    assert m["protocol"]["temporal_views"] == 2 and m["protocol"]["spatial_views"] == 3
    o = m["options"]  # the command's options, as given
    assert o["views"] == [2, 3] and o["workers"] == 1 and o["save_views"] is True and o["root"] == str(setup["root"])
    assert m["protocol"]["model"] == "hiera_nano_8x64" and "pyav" in m["protocol"]["decoder"]
    # what decoded the scored videos (in the worker process), with versions, not "auto"
    assert sum(m["decoders"].values()) == 6 and all("FFmpeg" in k or k.startswith("decord ") for k in m["decoders"]), m["decoders"]
    from hiera_video.data.decode import torchcodec_status

    if torchcodec_status()[1] is None:  # auto may decode with torchcodec: its FFmpeg is recorded
        assert m["protocol"]["decoder"]["torchcodec_ffmpeg"] == torchcodec_status()[0]
    preds = torch.load(out_dir / "predictions.pt", weights_only=True)
    by_path = dict(zip(preds["paths"], preds["probs"]))
    for path, _, probs in rows:
        torch.testing.assert_close(by_path[path], probs, atol=1e-5, rtol=1e-4)
    assert preds["view_logits"].shape == (6, 6, 3)
    failed = list(csv.reader((out_dir / "failed.csv").open()))
    assert failed[0] == ["path", "reason"] and failed[1][0].endswith("broken.mp4")
    per_class = list(csv.DictReader((out_dir / "per_class.csv").open()))
    assert [r["name"] for r in per_class] == ["left", "right", "up"]
    assert (out_dir / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    conf = list(csv.reader((out_dir / "confusion.csv").open()))
    assert sum(int(x) for row in conf[1:] for x in row[1:]) == 6
    assert "unreadable" in out and "broken.mp4" in out
    # score recomputes the same metrics offline, and a logit aggregation from the saved views.
    code, out, err = run(["score", str(out_dir / "predictions.pt"), "--json"], capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["top1"] == pytest.approx(m["top1"]) and s["mean_class_accuracy"] == pytest.approx(m["mean_class_accuracy"])
    code, out, err = run(["score", str(out_dir / "predictions.pt"), "--agg", "logit", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["num_videos"] == 6


def test_strict_and_random_weights(setup, capsys):
    code, _, err = run(["eval", "--dataset", "folder", "--root", str(setup["root"]), "--weights", setup["ckpt"],
                        "--views", "1x1", "--workers", "0", "--strict"], capsys)
    assert code == 2 and "broken.mp4" in err and "--strict" in err
    code, _, err = run(["eval", "--dataset", "folder", "--root", str(setup["root"]), "--model", "hiera_nano_8x64",
                        "--weights", "none"], capsys)
    assert code == 2 and "allow-random-weights" in err


@pytest.mark.parametrize("bom", [False, True])
def test_kinetics_csv_with_missing_videos(setup, capsys, tmp_path, bom):
    """Official K400 CSV layout; one annotated clip is not on disk. Saved with a UTF-8
    byte-order mark (as spreadsheet tools do), the file gives the same labels and metrics."""
    k400 = load_labels("kinetics400")
    root = tmp_path / "k400"
    (root / "val").mkdir(parents=True)
    rows = [("abseiling", "vid00000001", 0, 10), ("zumba", "vid00000002", 5, 15), ("abseiling", "vid00000003", 1, 11), ("zumba", "gone0000004", 2, 12)]
    with open(root / "val.csv", "w", encoding="utf-8-sig" if bom else "utf-8") as f:
        f.write("label,youtube_id,time_start,time_end,split,is_cc\n")
        for label, yid, a, b in rows:
            f.write(f"{label},{yid},{a},{b},val,0\n")
    for label, yid, a, b in rows[:3]:
        shutil.copy(setup["root"] / "left" / "left0.mp4", root / "val" / f"{yid}_{a:06d}_{b:06d}.mp4")
    model = hiera_video.create_model("hiera_nano_8x64", num_classes=400)
    ckpt = save_checkpoint(tmp_path / "k.pt", model, meta=dict(labels=k400))
    code, out, err = run(["eval", "--dataset", "k400", "--root", str(root), "--annotations", str(root / "val.csv"),
                          "--weights", str(ckpt), "--views", "1x1", "--workers", "0", "--json"], capsys)
    assert code == 1, err  # metrics written, one annotated video missing
    m = json.loads(out)
    assert m["num_videos"] == 3 and m["num_missing"] == 1
    assert m["top1"] is not None and "no labelled videos" not in err + out


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(), reason="torchrun not installed")
def test_distributed_eval_equals_single_process(setup, tmp_path):
    """torchrun with 2 CPU processes (gloo): the same per-video results and metrics."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    args = ["eval", "--dataset", "folder", "--root", str(setup["root"]), "--weights", setup["ckpt"], "--views", "1x3",
            "--workers", "0", "--dtype", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "hiera_video.cli.app", *args, "-o", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert single.returncode == 1, single.stderr  # 1: metrics written, broken.mp4 failed
    multi = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "hiera_video.cli.app", *args,
                            "-o", str(tmp_path / "two")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert multi.returncode == 1, multi.stderr
    a = torch.load(tmp_path / "one" / "predictions.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "predictions.pt", weights_only=True)
    assert a["paths"] == b["paths"] and len(a["paths"]) == 6 and len(set(b["paths"])) == 6
    torch.testing.assert_close(a["probs"], b["probs"])
    ma = json.loads((tmp_path / "one" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_failed", "decoders"):
        assert ma[key] == mb[key]
    assert mb["world_size"] == 2


def test_a_hanging_decode_is_stopped_and_reported(setup, monkeypatch):
    """A decoder stuck in one video (simulated: the views of 'right0' never come back) costs
    that video only: it is listed as failed after the timeout, and the others are scored."""
    import time as _time

    from hiera_video.data.datasets import build_dataset
    from hiera_video.jobs.evaluate import evaluate
    from hiera_video.engine.inference import load_classifier

    clf = load_classifier(weights=setup["ckpt"], dtype="fp32")
    protocol = clf.protocol((1, 1))
    real_views = transforms.make_views

    def views(path, spec):
        if str(path).endswith("right0.mp4"):
            _time.sleep(600)  # inside the forked worker, which the timeout terminates
        return real_views(path, spec)

    patch_everywhere(monkeypatch, "make_views", views)
    ds = build_dataset("folder", setup["root"], None, "val", None, None)
    t0 = _time.perf_counter()
    result = evaluate(clf, protocol, ds, batch_size=4, workers=1, decode_timeout=5)
    assert _time.perf_counter() - t0 < 120
    reasons = dict(result.failed)
    hung = str(setup["root"] / "right" / "right0.mp4")
    assert "took longer than 5 s" in reasons[hung] and len(result.failed) == 2  # + broken.mp4
    assert len(result.indices) == 5 and result.metrics["num_videos"] == 5


def _eval(setup, capsys, *args, root=None, weights=None):
    argv = ["eval", "--dataset", "folder", "--root", str(root or setup["root"]), "--weights", weights or setup["ckpt"],
            "--views", "1x1", "--workers", "0", "--dtype", "fp32", *args]
    return run(argv, capsys)


def _top1_by_name(setup, model_labels):
    """Top-1 (%) of the folder set when the model's outputs are named ``model_labels``: a
    video is right when the NAME of the predicted class is the name of its folder."""
    right = total = 0
    for cls in ("left", "right", "up"):
        for path in sorted((setup["root"] / cls).glob("*.mp4")):
            if path.name == "broken.mp4":
                continue
            v, _ = make_views(str(path), ClipSpec(temporal_views=1, spatial_views=1, crop_size=64, num_frames=8))
            with torch.no_grad():
                right += model_labels[int(setup["model"](v).mean(0).argmax())] == cls
            total += 1
    return 100.0 * right / total


def test_class_names_are_matched_not_only_counted(setup, capsys, tmp_path):
    """The weights name the same 3 classes in another order: labels are mapped by name (and
    that is said); other names stop with the differences; no names: a count check, said."""
    order = ["up", "left", "right"]
    perm = save_checkpoint(tmp_path / "perm.pt", setup["model"], meta=dict(labels=order))
    code, out, err = _eval(setup, capsys, "--json", weights=str(perm))
    assert code == 1, err
    assert json.loads(out)["top1"] == pytest.approx(_top1_by_name(setup, order))
    assert "another order" in err and "mapped" in err
    other = save_checkpoint(tmp_path / "other.pt", setup["model"], meta=dict(labels=["left", "right", "down"]))
    code, _, err = _eval(setup, capsys, weights=str(other))
    line = " ".join(err.split())
    assert code == 2 and "'up'" in line and "'down'" in line and line.count("error:") == 1
    nameless = save_checkpoint(tmp_path / "nameless.pt", setup["model"])
    code, out, err = _eval(setup, capsys, "--json", weights=str(nameless))
    assert code == 1 and "carry no class names" in " ".join(err.split())
    assert json.loads(out)["top1"] == pytest.approx(_top1_by_name(setup, ["left", "right", "up"]))  # index order


def test_list_without_labels_file_says_where_names_come_from_and_duplicates_count_once(setup, capsys, tmp_path):
    (setup["root"] / "val.txt").write_text("left/left0.mp4 0\nright/right0.mp4 1\nleft/left0.mp4 0\nup/up1.mp4 2\n")
    out_dir = tmp_path / "out"
    try:
        code, _, err = run(["eval", "--dataset", "list", "--root", str(setup["root"]), "--weights", setup["ckpt"],
                            "--views", "1x1", "--workers", "0", "--dtype", "fp32", "-o", str(out_dir)], capsys)
    finally:
        (setup["root"] / "val.txt").unlink()
    line = " ".join(err.split())
    assert code == 0, err
    assert "no class names" in line and "named from the weights" in line  # the checkpoint's names, said
    assert "counted once" in line and "line 3" in line
    m = json.loads((out_dir / "metrics.json").read_text())
    assert m["num_videos"] == 3 and [r["name"] for r in m["per_class"]] == ["left", "right", "up"]


def test_an_evaluation_that_scores_nothing_is_an_error(setup, capsys, tmp_path):
    root = tmp_path / "all_bad"
    for cls in ("left", "right", "up"):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.mp4").write_bytes(random.Random(2000).randbytes(2000))
    code, out, err = _eval(setup, capsys, "-o", str(tmp_path / "out"), root=root)
    line = " ".join(err.split())
    assert code == 2 and "no video of folder could be evaluated: all 3 failed" in line and "x.mp4" in line
    assert "no labelled videos" not in out and (tmp_path / "out" / "failed.csv").is_file()
    code, _, err = _eval(setup, capsys, "--backend", "ffmpeg")  # a bad option: one usage error, not N failed videos
    assert code == 2 and "unknown --backend 'ffmpeg'" in err


def test_substituted_frames_are_counted_and_listed(setup, capsys, tmp_path):
    root = tmp_path / "damaged"
    for cls in ("left", "right", "up"):
        (root / cls).mkdir(parents=True)
    shutil.copy(setup["root"] / "left" / "left0.mp4", root / "left" / "ok.mp4")
    few, n_few, n_sampled = damaged_video(root / "right" / "few.mkv", lambda s: s[2:3])
    many, n_many, _ = damaged_video(root / "up" / "many.mkv", lambda s: s[:-1])
    out_dir = tmp_path / "out"
    code, out, err = _eval(setup, capsys, "-o", str(out_dir), root=root)
    assert code == 1, err
    m = json.loads((out_dir / "metrics.json").read_text())
    assert m["num_videos"] == 2 and m["num_failed"] == 1
    assert m["substituted_frames"] == dict(num_videos=1, num_frames=n_few, fail_above_fraction=0.25,
                                           videos=[dict(path=few, substituted=n_few, sampled=n_sampled)])
    failed = list(csv.DictReader((out_dir / "failed.csv").open()))
    assert [r["path"] for r in failed] == [many] and f"{n_many} of the {n_sampled} frames" in failed[0]["reason"]
    assert "few.mkv" in out and "could not be decoded" in out


def test_clip_spec_layers_a_saved_spec_wins_over_the_dataset(tmp_path):
    """The clips of a test: the model's defaults < the zoo weights' spec < a dataset's test
    protocol < the spec the checkpoint saved < the command's options."""
    from hiera_video.engine.inference import load_classifier
    from hiera_video.models import get_spec

    # Official weights carry their clips, as torchvision's weights carry their transforms.
    k400 = get_spec("hiera_base_16x224").weights["mae_k400_ft_k400"].clip
    assert (k400.sampling, k400.num_frames, k400.stride, k400.crop_size, k400.mean) == ("dense", 16, 4, 224, (0.45,) * 3)
    assert get_spec("hiera_base_224").weights["mae_in1k_ft_in1k"].clip.mean == (0.485, 0.456, 0.406)

    torch.manual_seed(0)
    net = hiera_video.create_model("hiera_nano_8x64", num_classes=2)
    recipe = dict(sampling="segment", stride=2)
    saved = save_checkpoint(tmp_path / "saved.pt", net, dict(labels=["a", "b"], preprocessing=recipe))
    bare = save_checkpoint(tmp_path / "bare.pt", net, dict(labels=["a", "b"]))
    clf = load_classifier(weights=saved, dtype="fp32")
    k = clf.protocol(None, "k400")  # Kinetics' views, but the checkpoint's sampling and stride
    assert (k.sampling, k.stride, k.temporal_views, k.spatial_views) == ("segment", 2, 5, 3)
    assert (k.num_frames, k.crop_size) == (8, 64)  # the model's input
    opt = clf.protocol((1, 1), "k400", sampling="dense", stride=3)  # options win over everything
    assert (opt.sampling, opt.stride, opt.num_views) == ("dense", 3, 1)
    plain = load_classifier(weights=bare, dtype="fp32")
    s = plain.protocol(None, "ssv2")  # nothing saved: the dataset's protocol
    assert (s.sampling, s.stride, s.temporal_views, s.spatial_views) == ("segment", 4, 1, 3)
    d = plain.protocol()  # no dataset: the model's defaults, one view
    assert (d.sampling, d.stride, d.num_views, d.num_frames, d.mean) == ("dense", 4, 1, 8, (0.45,) * 3)
