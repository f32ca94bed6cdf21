"""eval, extract and AVA eval never throw away finished work (issue 19): each process appends
its results to its own file in OUT/.partial, rank 0 merges the files waiting without a
collective timeout (processes may finish far apart), a killed run continues with --resume
(another number of processes allowed) to the results of an uninterrupted run, and a resume
with another protocol, or a rerun without --resume, is refused.

Multi-process runs: 2 gloo processes started as torchrun starts them (test_distributed's
start_ranks / launch); HIERA_VIDEO_FAULTS=slow@R:S makes process R sleep S s before each video."""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from hiera_video.engine.shard_files import read_records

from fault_driver import DRIVER
from helpers import COLOURS, colour_videos, nano_classifier, run_cli
from test_distributed import SCENARIO_TIMEOUT, last_line, launch, start_ranks

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 videos of 3 colour classes + one unreadable video, a classifier with far from
    uniform scores, and a single-process reference evaluation."""
    root = tmp_path_factory.mktemp("resume")
    colour_videos(root, 4, num_train=0, num_frames=16)
    (root / "broken.mp4").write_bytes(random.Random(3000).randbytes(3000))
    with open(root / "val.txt", "a") as f:
        f.write("broken.mp4 1\n")
    nano_classifier(root / "nano.pt", list(COLOURS), head_std=2.0, preprocessing=dict(sampling="dense", stride=2))
    ref = root / "reference"
    assert run_cli(eval_args(root, ref))[0] == 1  # 1: written, broken.mp4 failed
    return root


def eval_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--dataset", "list", "--root", str(root), "--annotations", str(root / "val.txt"), "--labels",
            str(root / "labels.txt"), "--weights", str(root / "nano.pt"), "--views", "1x1", "--workers", "0",
            "--dtype", "fp32", "-o", str(out), *extra]


def assert_same_eval(ref: Path, out: Path) -> dict:
    """The same per-video probabilities, failures and metrics as the reference; returns out's metrics."""
    a = torch.load(ref / "predictions.pt", weights_only=True)
    b = torch.load(out / "predictions.pt", weights_only=True)
    assert a["paths"] == b["paths"] and len(b["paths"]) == 12
    assert torch.equal(a["probs"], b["probs"]) and torch.equal(a["labels"], b["labels"])
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    for key in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_failed", "per_class", "decoders"):
        assert ma[key] == mb[key], key  # decoders: counts kept by the result files across --resume
    assert ma["num_failed"] == 1 and ma["num_videos"] == 12 == sum(ma["decoders"].values())
    for name in ("failed.csv", "confusion.csv"):
        assert (ref / name).read_text() == (out / name).read_text(), name
    assert not (out / ".partial").exists()  # a finished run leaves no partial results behind
    return mb


def count_records(out: Path) -> int:
    return sum(1 for p in glob.glob(str(out / ".partial" / "run*" / "*.records")) for _ in read_records(Path(p)))


def kill_when(procs: list[subprocess.Popen], ready, what: str) -> None:
    """SIGKILL every process once ``ready()`` (polled), as a node failure would."""
    deadline = time.time() + SCENARIO_TIMEOUT
    try:
        while not ready():
            assert time.time() < deadline and all(p.poll() is None for p in procs), \
                f"{what} never happened: {[p.poll() for p in procs]} {[p.stderr.read()[-2000:] for p in procs if p.poll() is not None]}"
            time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def one_process(args: list[str], cwd: Path, faults: str = "") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HIERA_VIDEO_FAULTS": faults}
    return subprocess.Popen([*DRIVER, *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_processes_finishing_far_apart_are_merged(data, tmp_path):
    """Rank 1 needs > 7 s more than rank 0 with a 6 s collective timeout: rank 0 waits on the
    files (saying for whom), and the merged result equals one process's."""
    out = tmp_path / "two"
    results = launch(eval_args(data, out), tmp_path, faults="slow@1:1.2", timeout_s=6)
    assert [rc for rc, _ in results] == [1, 1], results[0][1][-3000:] + results[1][1][-3000:]
    assert "waiting for 1 of 2 processes: rank 1:" in results[0][1] and "videos left" in results[0][1]
    m = assert_same_eval(data / "reference", out)
    assert m["resumed"] == 0 and m["world_size"] == 2


def test_killed_run_is_refused_without_resume_and_resumed_with_it(data, tmp_path):
    """Both processes SIGKILLed midway: a rerun without --resume is refused (nothing mixed or
    deleted); --resume takes the finished videos and ends with the uninterrupted results."""
    out = tmp_path / "killed"
    procs = start_ranks(eval_args(data, out), tmp_path, HIERA_VIDEO_FAULTS="slow@0:0.4,slow@1:0.4")
    kill_when(procs, lambda: count_records(out) >= 3, "3 finished videos")
    done = count_records(out)
    assert 3 <= done < 13 and not (out / "metrics.json").exists()

    results = launch(eval_args(data, out), tmp_path)
    assert [rc for rc, _ in results] == [2, 2]
    lines = [last_line(err) for _, err in results]
    assert lines[0] == lines[1] and "add --resume" in lines[0] and "did not finish" in lines[0], lines
    assert count_records(out) == done  # nothing deleted

    results = launch(eval_args(data, out, "--resume"), tmp_path)
    assert [rc for rc, _ in results] == [1, 1], results[0][1][-3000:]
    m = assert_same_eval(data / "reference", out)
    assert m["resumed"] == done and m["partial"] is False


def test_resume_refuses_another_protocol_and_takes_another_world_size(data, tmp_path, capsys):
    """A SIGINT after 3 videos leaves partial results; --resume with other views, or with other
    weights under the same path, is refused naming the difference; a resume with 2 processes
    of the 1-process run ends with the uninterrupted results."""
    out = tmp_path / "cut"
    proc = one_process(eval_args(data, out), tmp_path, faults="sigint@0:3")
    _, err = proc.communicate(timeout=SCENARIO_TIMEOUT)
    assert proc.returncode == 130 and "--resume continues it" in err, err[-2000:]
    assert json.loads((out / "metrics.json").read_text())["partial"] is True and count_records(out) == 3

    args = eval_args(data, out, "--resume")
    args[args.index("--views") + 1] = "1x2"
    code, _, err = run_cli(args, capsys)
    assert code == 2 and 'views: "1x1" -> "1x2"' in last_line(err), err[-2000:]

    other = tmp_path / "other.pt"
    nano_classifier(other, list(COLOURS), head_std=3.0, preprocessing=dict(sampling="dense", stride=2))
    saved = (data / "nano.pt").read_bytes()
    try:
        (data / "nano.pt").write_bytes(other.read_bytes())  # other weights, same path
        code, _, err = run_cli(eval_args(data, out, "--resume"), capsys)
    finally:
        (data / "nano.pt").write_bytes(saved)
    assert code == 2 and "weights_sha256: sha256" in last_line(err) and "--resume" in last_line(err), err[-2000:]
    assert count_records(out) == 3

    results = launch(eval_args(data, out, "--resume"), tmp_path)
    assert [rc for rc, _ in results] == [1, 1], results[0][1][-3000:]
    m = assert_same_eval(data / "reference", out)
    assert m["resumed"] == 3 and m["partial"] is False


def test_single_process_killed_then_resumed(data, tmp_path, capsys):
    out = tmp_path / "one"
    proc = one_process(eval_args(data, out), tmp_path, faults="slow@0:0.3")
    kill_when([proc], lambda: count_records(out) >= 2, "2 finished videos")
    done = count_records(out)
    code, _, err = run_cli(eval_args(data, out), capsys)
    assert code == 2 and "add --resume" in err
    code, _, err = run_cli(eval_args(data, out, "--resume"), capsys)
    assert code == 1, err
    m = assert_same_eval(data / "reference", out)
    assert 2 <= m["resumed"] == done < 13


def test_a_process_that_dies_is_named(data, tmp_path):
    """Rank 1 is killed while rank 0 waits for it: rank 0 names it in one line instead of
    waiting for ever (or for the collective timeout), and the finished results stay."""
    out = tmp_path / "dies"
    procs = start_ranks(eval_args(data, out), tmp_path, HIERA_VIDEO_FAULTS="slow@1:0.5", HIERA_VIDEO_DIST_TIMEOUT="600")
    state = out / ".partial" / "run1" / "rank0-of-2.json"

    def rank0_waits() -> bool:
        try:
            return json.loads(state.read_text())["state"] == "finished"
        except (OSError, ValueError, KeyError):
            return False

    try:
        deadline = time.time() + SCENARIO_TIMEOUT
        while not rank0_waits():
            assert time.time() < deadline and procs[0].poll() is None, procs[0].stderr.read()[-2000:]
            time.sleep(0.05)
        pid = procs[1].pid
        procs[1].send_signal(signal.SIGKILL)
        _, err = procs[0].communicate(timeout=60)  # well below the 600 s collective timeout
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert procs[0].returncode == 2, err[-2000:]
    line = last_line(err)
    assert f"rank 1 (pid {pid} on " in line and "died" in line and "--resume" in line, line
    assert count_records(out) >= 6  # rank 0's share at least


# ---------------------------------------------------------------------------- AVA and extract


@pytest.fixture(scope="module")
def detector(ava_set, tmp_path_factory):
    """An untrained nano detector (fixed seed) saved as finetune --dataset ava saves one."""
    from hiera_video.ava.files import resolve_label_map
    from hiera_video.models.checkpoints import save_checkpoint
    from hiera_video.ava.model import build_ava_model

    torch.manual_seed(0)
    model = build_ava_model("hiera_nano_8x64", drop_path_rate=0.0, dropout=0.0)
    lm = {str(k): v for k, v in resolve_label_map(ava_set.label_map).items()}
    path = tmp_path_factory.mktemp("detector") / "ava.pt"
    save_checkpoint(path, model, dict(task="ava", model="hiera_nano_8x64", arch={}, head=dict(dropout=0.0), label_map=lm,
                                      preprocessing=dict(num_frames=8, stride=4, crop_size=64, mean=[0.45] * 3, std=[0.225] * 3)))
    return path


def test_ava_eval_killed_then_resumed_with_two_processes(ava_set, detector, tmp_path):
    def args(out):
        return ["eval", "--dataset", "ava", "--root", str(ava_set.root), "--weights", str(detector), "--output", str(out),
                "--workers", "0", "--dtype", "fp32", "--batch-size", "1"]

    ref, out = tmp_path / "ref", tmp_path / "ava"
    assert run_cli(args(ref))[0] == 0
    proc = one_process(args(out), tmp_path, faults="slow@0:0.3")
    kill_when([proc], lambda: count_records(out) >= 3, "3 finished keyframes")
    done = count_records(out)
    results = launch(args(out) + ["--resume"], tmp_path)
    assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert (ref / "detections.csv").read_text() == (out / "detections.csv").read_text()
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert mb["mAP"] == ma["mAP"] and mb["per_class"] == ma["per_class"] and mb["num_keyframes"] == ma["num_keyframes"] > done
    assert mb["decoders"] == ma["decoders"] and sum(ma["decoders"].values()) >= 1  # videos, not keyframes
    assert ma["resumed"] == 0 and 3 <= mb["resumed"] == done and not (out / ".partial").exists()


def test_extract_with_a_slow_process_killed_then_rerun(data, tmp_path):
    """2 processes, rank 1 more than the 6 s timeout slower than rank 0, killed midway, then
    rerun (extract resumes by itself): the files and index equal one process's."""
    videos = sorted(str(p) for p in data.glob("*.mp4") if p.name != "broken.mp4")

    def args(out):
        return ["extract", *videos, "-o", str(out), "--weights", str(data / "nano.pt"), "--dtype", "fp32", "--workers", "0"]

    ref, out = tmp_path / "ref", tmp_path / "feats"
    assert run_cli(args(ref))[0] == 0
    procs = start_ranks(args(out), tmp_path, HIERA_VIDEO_FAULTS="slow@1:1.2", HIERA_VIDEO_DIST_TIMEOUT="6")
    kill_when(procs, lambda: len(list(out.glob("*.npy"))) >= 3, "3 feature files")
    assert (out / ".partial").is_dir() and not (out / "index.jsonl").exists()

    results = launch(args(out), tmp_path, faults="slow@1:1.2", timeout_s=6)
    assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert "waiting for 1 of 2 processes: rank 1:" in results[0][1]
    assert "12 of 12 videos ok (" in results[0][1] and "(0 already done)" not in results[0][1]
    import numpy as np

    for name in (Path(v).name + ".npy" for v in videos):
        np.testing.assert_array_equal(np.load(ref / name), np.load(out / name))
    rows = lambda d: [json.loads(line) for line in (d / "index.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows(ref) == rows(out)
    assert not (out / ".partial").exists() and not list(out.glob("index.rank*.jsonl"))
