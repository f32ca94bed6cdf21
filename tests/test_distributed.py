"""Multi-process runs agree on every decision: 2 gloo processes started as torchrun starts its
workers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), with real faults (unreadable videos)
and injected ones (HIERA_VIDEO_FAULTS: a signal, a NaN, a hang, an unreadable checkpoint...).
Every scenario must end on every rank within HIERA_VIDEO_TEST_TIMEOUT seconds (default 240);
a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hiera_video.engine.train_data import EpochSampler

from fault_driver import DRIVER, inject
from helpers import COLOURS, assert_same_weights, colour_videos, nano_classifier

SCENARIO_TIMEOUT = float(os.environ.get("HIERA_VIDEO_TEST_TIMEOUT", "240"))
SEED = 0

pytestmark = pytest.mark.usefixtures("one_thread")  # the one-process tests train in this process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(argv: list[str], cwd: Path, nproc: int = 2, **env: str) -> list[subprocess.Popen]:
    """``hiera-video ARGV`` as ``nproc`` processes of one job, with ``env`` added (and the
    faults its HIERA_VIDEO_FAULTS names: tests/fault_driver.py)."""
    port = _free_port()
    return [subprocess.Popen([*DRIVER, *argv], cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(nproc),
                                  "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                  "OMP_NUM_THREADS": "1", **env})
            for rank in range(nproc)]


def launch(argv: list[str], cwd: Path, nproc: int = 2, faults: str = "", timeout_s: float = 60) -> list[tuple[int, str]]:
    """Run the job to its end; returns (exit code, stderr) per rank. Fails (after killing
    them) when any process outlives SCENARIO_TIMEOUT."""
    procs = start_ranks(argv, cwd, nproc, HIERA_VIDEO_DIST_TIMEOUT=str(timeout_s), HIERA_VIDEO_FAULTS=faults)
    deadline = time.time() + SCENARIO_TIMEOUT
    results = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, deadline - time.time()))
            results.append((p.returncode, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"a rank did not end within {SCENARIO_TIMEOUT:.0f} s: {[p.poll() for p in procs]}")
    return results


def last_line(err: str) -> str:
    """The command's final message (its one-line error or interruption note)."""
    return [line for line in err.splitlines() if line.strip()][-1]


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """12 training videos (4 per colour) + 2 unreadable ones placed so that rank 1's first
    micro-batch (2 videos) is entirely unreadable, 3 validation videos."""
    root = tmp_path_factory.mktemp("colours")
    good = colour_videos(root, 5, num_train=4, num_frames=16)
    for name in ("broken_a.mp4", "broken_b.mp4"):
        (root / name).write_bytes(random.Random(3000).randbytes(3000))
    n = len(good) + 2
    first = list(EpochSampler(n, rank=1, world_size=2, seed=SEED, videos_per_batch=2))[:2]  # rank 1, epoch 0, batch 0
    lines, rest = [None] * n, iter(good)
    lines[first[0]], lines[first[1]] = "broken_a.mp4 0", "broken_b.mp4 1"
    lines = [line if line is not None else next(rest) for line in lines]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def finetune_args(root: Path, out: Path, *sets: str) -> list[str]:
    """2 processes x 2 clips per micro-batch, global batch 8 (2 micro-batches per step): 14
    videos give 3 micro-batches per epoch, so each epoch ends with a 1-micro-batch step."""
    base = ["data.dataset=list", f"data.root={root}", "data.annotations=train.txt", "data.val_annotations=val.txt",
            "data.labels=labels.txt", "data.workers=0", "data.repeated_aug=1", "data.stride=2", "model.name=hiera_nano_8x64",
            "augment.randaug=false", "run.batch_size=2", "run.global_batch=8", "optim.base_batch=8", "optim.epochs=2",
            "optim.warmup_epochs=0", "run.precision=fp32", "run.log_every=1", "run.val_every_epochs=0",
            "run.final_views=1x1", f"run.seed={SEED}", f"run.output={out}"]
    args = ["finetune"]
    for s in base + list(sets):
        args += ["--set", s]
    return args


def test_unreadable_micro_batch_on_one_rank(colours, tmp_path):
    """Rank 1's first micro-batch has no readable video: it joins the step with zero clips,
    the run finishes, every checkpoint found identical weights (and EMA) on both ranks, and
    bad_videos.csv lists rank 1's skips."""
    out = tmp_path / "run"
    results = launch(finetune_args(colours, out, "run.ema=true", "run.ema_decay=0.9"), tmp_path)
    assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["processes"] == 2 and m["steps_per_epoch"] == 2 and m["steps"] == 4 and m["bad_training_videos"] >= 2
    assert m["num_val_videos"] == 3 and m["top1"] is not None
    listed = {row.split(",")[0] for row in (out / "bad_videos.csv").read_text().splitlines()[1:]}
    assert listed == {str(colours / "broken_a.mp4"), str(colours / "broken_b.mp4")}
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["run_state"]["step"] == 4 and len(state["rng"]) == 2 and state["ema"] is not None


def test_sigterm_on_one_worker_then_resume(colours, tmp_path):
    """SIGTERM reaches rank 1 only: both ranks stop at the same step with one checkpoint and
    exit 130; a resume where rank 1 cannot read the checkpoint fails on both ranks with that
    reason; a plain --resume auto ends with the weights of an uninterrupted run."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert [rc for rc, _ in launch(finetune_args(colours, full), tmp_path)] == [0, 0]

    results = launch(finetune_args(colours, cut), tmp_path, faults="sigterm@1:1")
    assert [rc for rc, _ in results] == [130, 130], results[1][1][-3000:]
    lines = [last_line(err) for _, err in results]
    assert lines[0] == lines[1] and "SIGTERM (received by rank 1; every process stopped) at step 2" in lines[0], lines
    assert torch.load(cut / "last.pt", weights_only=True)["run_state"]["step"] == 2
    assert not list(cut.glob(".last.pt.*"))  # no temporary checkpoint left behind

    results = launch(finetune_args(colours, cut) + ["--resume", "auto"], tmp_path, faults="unreadable_checkpoint@1")
    assert [rc for rc, _ in results] == [2, 2]
    lines = [last_line(err) for _, err in results]
    assert lines[0] == lines[1] and "rank 1: cannot read checkpoint" in lines[0], lines

    assert [rc for rc, _ in launch(finetune_args(colours, cut) + ["--resume", "auto"], tmp_path)] == [0, 0]
    assert_same_weights(full, cut, steps=4)


@pytest.mark.parametrize("fault, sets, expected", [
    ("nan_loss@1:3", (), "loss is nan on rank 1 at epoch 1, step 3: training diverged; the last good checkpoint is"),
    ("diverge@1:1", ("run.ckpt_every_steps=1",), "weights diverged at step 1 (rank(s) [1] differ from rank 0)"),
    ("unshared_run_folder@1", (), "rank 1: the run folder"),
])
def test_a_fault_on_one_rank_stops_every_rank_alike(colours, tmp_path, fault, sets, expected):
    results = launch(finetune_args(colours, tmp_path / "run", *sets), tmp_path, faults=fault)
    assert [rc for rc, _ in results] == [2, 2], results[0][1][-3000:]
    lines = [last_line(err) for _, err in results]
    assert lines[0] == lines[1] and expected in lines[0], lines
    assert "Traceback" not in results[0][1] + results[1][1]


def test_a_hung_rank_ends_the_others_within_the_timeout(colours, tmp_path):
    """Rank 1 hangs inside a step; rank 0 stops after the collective timeout (5 s here)
    with a message that says so, instead of waiting forever."""
    procs = start_ranks(finetune_args(colours, tmp_path / "run", "run.dist_timeout=5"), tmp_path, HIERA_VIDEO_FAULTS="hang@1:2")
    try:
        _, err = procs[0].communicate(timeout=SCENARIO_TIMEOUT)
        assert procs[0].returncode == 2 and "lost contact with the other processes" in last_line(err), err[-2000:]
        assert procs[1].poll() is None  # still hung: torchrun would now end it
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_eval_failure_on_one_rank_fails_every_rank(colours, tmp_path):
    """eval --strict under 2 processes: the unreadable video is in rank 1's shard; both
    ranks stop with rank 1's reason (rank 0 does not wait for a result that never comes)."""
    _, ckpt = nano_classifier(tmp_path / "model.pt", list(COLOURS), preprocessing=dict(sampling="dense", stride=2))
    (colours / "eval.txt").write_text("red0.mp4 0\nbroken_a.mp4 0\ngreen0.mp4 1\n")  # shard of rank 1: index 1
    args = ["eval", "--dataset", "list", "--root", str(colours), "--annotations", str(colours / "eval.txt"), "--labels",
            str(colours / "labels.txt"), "--weights", ckpt, "--views", "1x1", "--workers", "0", "--strict", "--dtype", "fp32",
            "--allow-random-weights"]
    results = launch(args, tmp_path)
    assert [rc for rc, _ in results] == [2, 2], results[0][1][-2000:]
    lines = [last_line(err) for _, err in results]
    assert lines[0] == lines[1] and "rank 1:" in lines[0] and "broken_a.mp4" in lines[0], lines


# ---------------------------------------------------------------------------- one process


def test_accumulation_leftover_and_resume_from_the_epoch_end(colours, tmp_path):
    """3 micro-batches per epoch with 2 per step: the epoch's last step takes the leftover
    (no gradient crosses into the next epoch), and resuming from the checkpoint written at
    the end of epoch 1 gives the weights of an uninterrupted run."""
    from hiera_video.config import load_config
    from hiera_video.jobs.finetune import finetune

    def cfg(out, *sets):
        args = finetune_args(colours, out, "run.batch_size=4", "run.global_batch=8", *sets)[1:]
        return load_config(None, [a for a in args if a != "--set"])

    finetune(cfg(tmp_path / "a"))
    halted = finetune(cfg(tmp_path / "b", "run.halt_after_steps=2"))
    assert halted == {"halted_at_step": 2}
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["run_state"]
    assert state["epoch"] == 0 and state["batch"] == 3  # halted at the end of epoch 1 (0-based epoch 0)
    finetune(cfg(tmp_path / "b"), resume="auto")
    assert_same_weights(tmp_path / "a", tmp_path / "b", steps=4)


def test_a_run_folder_in_use_is_refused_and_a_killed_runs_leftovers_removed(colours, tmp_path):
    """A second run into a folder another live run holds stops with a clear message; once that
    run is killed (SIGKILL: no cleanup of its own), its lock is gone and the next run cleans
    up the temporary checkpoint file it left."""
    from hiera_video.config import load_config
    from hiera_video.jobs.finetune import finetune
    from hiera_video.errors import HieraVideoError

    out = tmp_path / "run"
    out.mkdir()
    leftover = out / ".last.pt.k1ll3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write('pid 4242 on elsewhere'); f.flush(); print('locked', flush=True); time.sleep(600)"), str(out / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = finetune_args(colours, out, "optim.epochs=1", "run.final_views=1x1")[1:]
        cfg = load_config(None, [a for a in args if a != "--set"])
        with pytest.raises(HieraVideoError, match=r"is in use by another training run \(pid 4242 on elsewhere\)"):
            finetune(cfg)
        assert leftover.exists() and not (out / "metrics.jsonl").exists()  # nothing touched
    finally:
        holder.kill()
        holder.wait()
    finetune(cfg)
    assert not leftover.exists() and (out / "metrics.json").is_file()


def test_sigterm_during_validation_stops_within_seconds_then_resume_validates_again(colours, tmp_path):
    """SIGTERM to both processes (as torchrun forwards it) while they validate after epoch 1,
    validation slowed to 3 s a video (6 videos each: 18 s): both exit 130 within seconds, with
    last.pt at the epoch's end; the cut validation recorded nothing and stays pending, so
    --resume auto runs it again first and ends with the weights and validation rows of an
    uninterrupted run."""
    import shutil

    lines = []
    for k in range(4):  # 12 validation videos (copies: a list must not name a file twice)
        for line in (colours / "val.txt").read_text().split("\n"):
            if line.strip():
                name, label = line.split()
                shutil.copy(colours / name, colours / f"copy{k}_{name}")
                lines.append(f"copy{k}_{name} {label}")
    (colours / "val_long.txt").write_text("\n".join(lines) + "\n")
    sets = ("data.val_annotations=val_long.txt", "run.val_every_epochs=1")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert [rc for rc, _ in launch(finetune_args(colours, full, *sets), tmp_path)] == [0, 0]

    procs = start_ranks(finetune_args(colours, cut, *sets), tmp_path, HIERA_VIDEO_DIST_TIMEOUT="60", HIERA_VIDEO_FAULTS="slow@:3")
    try:
        deadline = time.time() + SCENARIO_TIMEOUT
        log = cut / "metrics.jsonl"
        while not (log.is_file() and any(json.loads(r)["kind"] == "epoch" for r in log.read_text().splitlines())):
            assert time.time() < deadline and all(p.poll() is None for p in procs), "epoch 1 never ended"
            time.sleep(0.1)
        time.sleep(1.0)  # inside the validation's first video
        t0 = time.time()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=SCENARIO_TIMEOUT)[1] for p in procs]
        stopped_after = time.time() - t0
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [130, 130], errs[0][-2000:]
    assert stopped_after < 10, stopped_after  # the rest of the validation alone would take 15 s
    assert "SIGTERM" in last_line(errs[0]) and "at step 2" in last_line(errs[0]), last_line(errs[0])
    state = torch.load(cut / "last.pt", weights_only=True)["run_state"]
    assert state["step"] == 2 and state["epoch"] == 1 and state["val_pending"]
    assert not [r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "val"]

    assert [rc for rc, _ in launch(finetune_args(colours, cut, *sets) + ["--resume", "auto"], tmp_path)] == [0, 0]
    assert_same_weights(full, cut, steps=4)
    val_rows = [(r["epoch"], r["top1"]) for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "val"]
    assert val_rows == [(r["epoch"], r["top1"]) for r in map(json.loads, (full / "metrics.jsonl").read_text().splitlines())
                        if r["kind"] == "val"] and len(val_rows) == 2


def test_a_signal_during_the_final_evaluation_stops_it_and_resume_evaluates(colours, tmp_path, monkeypatch):
    """SIGINT after the final evaluation's first video (one process): the evaluation stops
    at its next video with exit 130 and a message saying training is complete and saved; no
    eval outputs are written; --resume auto then evaluates and finishes the run."""
    from hiera_video.config import load_config
    from hiera_video.engine.distributed import AgreedInterrupt
    from hiera_video.jobs.finetune import finetune

    args = finetune_args(colours, tmp_path / "run", "optim.epochs=1")[1:]
    cfg = load_config(None, [a for a in args if a != "--set"])
    inject("sigint@0:1", monkeypatch.setattr)
    with pytest.raises(AgreedInterrupt, match=r"SIGINT during the final evaluation: training is complete and saved in .*--resume auto"):
        finetune(cfg)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["run_state"]["epoch"] == 1
    assert not (tmp_path / "run" / "eval").exists() and not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.undo()
    final = finetune(cfg, resume="auto")
    assert final["num_val_videos"] == 3 and (tmp_path / "run" / "eval" / "metrics.json").is_file()
