"""Misleading messages (issue 21, item 12): each mistake says what is really wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from helpers import NANO, colour_videos, nano_classifier, run_cli
from videogen import write_video


def last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Three tiny colour videos in class folders, and a nano classifier for them."""
    root = tmp_path_factory.mktemp("media")
    colour_videos(root, 1, num_train=1, num_frames=16, folders=True)
    _, ckpt = nano_classifier(root / "cls.pt", ["red", "green", "blue"])
    return dict(root=root, video=str(root / "red" / "0.mp4"), ckpt=ckpt)


# ------------------------------------------------------------- the AVA detector as other weights


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A file as hiera-video finetune --dataset ava saves it: backbone.* and head.* tensors,
    meta task "ava"."""
    path = tmp_path_factory.mktemp("ava") / "best.pt"
    sd = {"backbone.patch_embed.proj.weight": torch.zeros(8, 3, 1, 2, 2), "backbone.blocks.0.norm1.weight": torch.ones(8),
          "head.projection.weight": torch.zeros(60, 8)}
    torch.save({"format": "hiera-video", "version": 1, "model": sd,
                "meta": {"task": "ava", "model": NANO, "label_map": {"1": "bend/bow (at the waist)"}}}, path)
    return str(path)


@pytest.mark.parametrize("command", ["predict", "extract", "export", "eval"])
def test_an_ava_detector_is_named_as_such(command, detector, media, tmp_path, capsys):
    argv = {
        "predict": ["predict", media["video"], "--weights", detector],
        "extract": ["extract", media["video"], "-o", str(tmp_path / "f"), "--weights", detector],
        "export": ["export", "--weights", detector, "--format", "torch-export", "-o", str(tmp_path / "m.pt2")],
        "eval": ["eval", "--dataset", "folder", "--root", str(media["root"]), "--weights", detector],
    }[command]
    code, _, err = run_cli(argv, capsys)
    line = last_line(err)
    assert code == 2, err[-2000:]
    assert "not a Hiera checkpoint" not in line
    assert "is an AVA action detector" in line and "eval --dataset ava" in line, line


# ------------------------------------------------------------------------------ animated WebP


def test_animated_webp_is_named(tmp_path, capsys):
    from PIL import Image

    frames = [Image.new("RGB", (64, 64), (20 * i, 0, 0)) for i in range(8)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    code, _, err = run_cli(["predict", str(path), "--model", NANO, "--weights", "none", "--allow-random-weights"], capsys)
    assert code == 1
    assert "animated WebP" in err and "ffmpeg -i x.webp x.mp4" in err and "corrupt header" not in err, err[-2000:]


def test_a_still_webp_is_not_called_animated(tmp_path):
    from PIL import Image

    from hiera_video.data.probe import animated_webp

    Image.new("RGB", (64, 64), (200, 0, 0)).save(tmp_path / "still.webp")
    assert not animated_webp(tmp_path / "still.webp")


# ----------------------------------------------------------------- --resume, one process


def test_truncated_resume_in_one_process_has_no_shared_storage_hint(media, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.txt").write_text("\n".join(colour_videos(root, 2, num_train=2, num_frames=16)) + "\n")
    bad = tmp_path / "last.pt"
    bad.write_bytes(Path(media["ckpt"]).read_bytes()[:5000])
    args = ["finetune", "--resume", str(bad)]
    for s in ["data.dataset=list", f"data.root={root}", "data.annotations=train.txt", "data.labels=labels.txt",
              "data.workers=0", f"model.name={NANO}", "run.batch_size=2", "optim.epochs=1", "run.precision=fp32",
              f"run.output={tmp_path / 'run'}"]:
        args += ["--set", s]
    code, _, err = run_cli(args, capsys)
    line = last_line(err)
    assert code == 2, err[-2000:]
    assert "truncated" in line and "every process must see" not in line, line


# ------------------------------------------------------------------ --labels <(...): a pipe


def test_labels_from_process_substitution_are_read(media, capsys):
    """``--labels <(printf ...)`` passes /dev/fd/N, a pipe: it is read (once, though the
    command reads its labels more than once), not "not found"."""
    read, write = os.pipe()
    try:
        os.write(write, b"red\ngreen\nblue\n")
        os.close(write)
        code, out, err = run_cli(["predict", media["video"], "--weights", media["ckpt"], "--labels", f"/dev/fd/{read}",
                                  "--json"], capsys)
    finally:
        os.close(read)
    assert code == 0, err[-2000:]
    assert json.loads(out)[0]["top"][0]["label"] in {"red", "green", "blue"}


def test_labels_that_are_a_folder_say_so(media, tmp_path, capsys):
    code, _, err = run_cli(["predict", media["video"], "--weights", media["ckpt"], "--labels", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in last_line(err) and "not found" not in last_line(err), err[-2000:]


# ---------------------------------------------------------------------------- eval --limit 0


def test_eval_limit_0_is_refused_as_such(media, capsys):
    code, _, err = run_cli(["eval", "--dataset", "folder", "--root", str(media["root"]), "--weights", media["ckpt"],
                            "--limit", "0"], capsys)
    line = last_line(err)
    assert code == 2 and "--limit 0 leaves nothing to evaluate" in line and "were found" not in line, err[-2000:]


# ------------------------------------------------------------------- benchmark, models, doctor


def test_benchmark_frames_for_an_image_model_is_refused(capsys):
    code, _, err = run_cli(["benchmark", "--model", "hiera_tiny_224", "--frames", "4", "--iters", "1", "--warmup", "0",
                            "--json"], capsys)
    assert code == 2 and "--frames is for video models" in last_line(err) and "image model" in last_line(err), err[-2000:]


def test_models_with_an_unknown_kind_is_refused(capsys):
    code, out, err = run_cli(["models", "--kind", "foo"], capsys)
    assert code == 2 and "unknown --kind 'foo'" in last_line(err) and "image, video" in last_line(err), err
    assert "Hiera models" not in out


def test_doctor_finds_torch_home_that_is_a_file(tmp_path, monkeypatch, capsys):
    torch_home = tmp_path / "torch_home"
    torch_home.write_text("not a folder")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    code, out, err = run_cli(["doctor", "--json"], capsys)
    row = {c["name"]: c for c in json.loads(out)["checks"]}["weights cache disk"]
    assert row["status"] == "fail" and "is a file, not a folder" in row["value"] and "TORCH_HOME" in row["fix"], row
    assert code == 0  # not essential: the other commands work with --weights PATH


# ------------------------------------------------------------------------------- score-ava


def _ava_files(tmp_path, box=(0.1, 0.1, 0.5, 0.9)):
    gt = tmp_path / "gt.csv"
    gt.write_text("vid1,0902,{:.3f},{:.3f},{:.3f},{:.3f},12,0\n".format(*box))
    dets = tmp_path / "dets.csv"
    dets.write_text("vid1,0902,0.100,0.100,0.500,0.900,12,0.9\n")
    return gt, dets


def test_score_ava_refuses_ground_truth_in_pixels_as_training_does(tmp_path, capsys):
    gt, dets = _ava_files(tmp_path, box=(32.0, 18.0, 160.0, 300.0))
    code, _, err = run_cli(["score-ava", "-g", str(gt), "-d", str(dets)], capsys)
    line = last_line(err)
    assert code == 2 and "line 1" in line and "not normalised to [0, 1]" in line and "pixel" in line, err[-2000:]


def test_score_ava_names_only_label_map_is_numbered_from_1(tmp_path, capsys):
    """AVA ids are 1-based: a names-only .txt names ids 1, 2, ...; with the 80 names in AVA's
    order, 'stand' (line 12) is id 12 and the detection of action 12 is scored."""
    from hiera_video.ava.files import resolve_label_map
    from hiera_video.data.labels import load_label_map

    names = [f"action {i}" for i in range(1, 81)]
    names[11] = "stand"
    lm = tmp_path / "names.txt"
    lm.write_text("\n".join(names) + "\n")
    assert resolve_label_map(str(lm))[12] == "stand" and min(resolve_label_map(str(lm))) == 1
    gt, dets = _ava_files(tmp_path)
    code, out, err = run_cli(["score-ava", "-g", str(gt), "-d", str(dets), "--label-map", str(lm), "--json"], capsys)
    assert code == 0, err[-2000:]
    assert json.loads(out)["mAP"] == pytest.approx(1.0)

    sixty = tmp_path / "sixty.txt"  # the 60 evaluated classes without their ids: off from the 2nd name on
    sixty.write_text("\n".join(load_label_map("ava").values()) + "\n")
    code, _, err = run_cli(["score-ava", "-g", str(gt), "-d", str(dets), "--label-map", str(sixty)], capsys)
    line = last_line(err)
    assert code == 2 and "numbered from 1" in line and "'crouch/kneel'" in line and "AVA id 3" in line, err[-2000:]


def test_pbtxt_block_with_two_ids_is_refused(tmp_path, capsys):
    lm = tmp_path / "lm.pbtxt"
    lm.write_text('item {\n  name: "stand"\n  id: 12\n}\nitem {\n  name: "sit"\n  id: 11\n  id: 13\n}\n')
    gt, dets = _ava_files(tmp_path)
    code, _, err = run_cli(["score-ava", "-g", str(gt), "-d", str(dets), "--label-map", str(lm)], capsys)
    line = last_line(err)
    assert code == 2 and "line 8" in line and "field 'id' appears twice" in line and "line 5" in line, err[-2000:]


# ------------------------------------------------------------------ score: a sparse tensor


@pytest.mark.parametrize("field", ["probs", "labels"])
def test_sparse_tensor_in_predictions_is_one_line(field, tmp_path, capsys):
    from hiera_video.metrics.classification import save_predictions

    path = save_predictions(tmp_path / "p.pt", ["a.mp4", "b.mp4"], torch.tensor([0, 1]),
                            torch.tensor([[0.9, 0.1], [0.2, 0.8]]), ["x", "y"])
    data = torch.load(path, weights_only=True)
    data[field] = data[field].to_sparse()
    torch.save(data, path)
    code, _, err = run_cli(["score", str(path)], capsys)
    line = last_line(err)
    assert code == 2 and f"'{field}' is a sparse_coo tensor" in line and "Traceback" not in err, err[-2000:]
