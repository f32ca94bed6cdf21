"""The run folder belongs to one run: a held lock names its holder, a file system without
locks is told apart from a held lock, and a new run never mixes into an earlier run's files.
One process, the real Trainer on a linear model (tests/ddp_driver.py's items)."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from hiera_video.config import load_config
from hiera_video.engine.train_data import Guarded, collate_items
from hiera_video.engine.trainer import Trainer
from hiera_video.errors import HieraVideoError

from ddp_driver import Items


def train(out, *sets, resume=None, n=8) -> Trainer:
    """One epoch (2 steps) of a linear classifier into ``out``."""
    cfg = load_config(None, [f"run.output={out}", "run.batch_size=2", "run.global_batch=4", "optim.name=sgd", "optim.lr=0.1",
                             "optim.base_batch=4", "optim.layer_decay=null", "optim.epochs=1", "optim.warmup_epochs=0", "run.precision=fp32",
                             "run.device=cpu", "data.workers=0", "data.repeated_aug=1", "run.log_every=1", *sets])
    trainer = Trainer(cfg)
    with trainer.running():
        trainer.plan(n, 1)
        torch.manual_seed(0)
        trainer.prepare(torch.nn.Linear(4, 3), {}, resume=resume)
        trainer.fit(Guarded(Items(n, set())), collate_items, lambda net, b: (torch.nn.functional.cross_entropy(net(b[0]), b[1]), len(b[1])), str)
        trainer.finish({})
    return trainer


def test_a_file_system_without_locks_is_named_and_run_lock_false_proceeds(tmp_path, monkeypatch):
    import fcntl

    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(HieraVideoError, match=r"the file system there \(\S+\) does not support file locks .*run\.lock=false"):
        train(tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    train(tmp_path / "run", "run.lock=false")
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.parametrize("left", ["best.pt", "metrics.json", "eval"])
def test_any_earlier_runs_file_means_an_earlier_run(tmp_path, left):
    """A folder with best.pt but no last.pt (deleted to save space), a finished run's
    metrics.json or its eval folder: a new run there is refused, with --resume auto too (nothing
    to continue), and nothing is touched."""
    out = tmp_path / "run"
    out.mkdir()
    (out / left).mkdir() if left == "eval" else (out / left).write_text("earlier")
    for resume in (None, "auto"):
        with pytest.raises(HieraVideoError, match=rf"already holds an earlier training run \({left}\); it cannot be continued"):
            train(out, resume=resume)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [left]


def test_resume_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    """Rows an interrupted run logged after its last checkpoint are not kept next to the
    resumed run's rows for the same steps; a folder whose run stopped before its first
    checkpoint (metrics.jsonl only) starts over with --resume auto."""
    out = tmp_path / "run"
    train(out)
    log = out / "metrics.jsonl"
    with open(log, "a") as f:
        f.write(json.dumps(dict(kind="train", step=3, epoch=1, loss=9.0)) + "\n")
    (out / "metrics.json").unlink()  # (as before a resume: finish writes it again)
    train(out, "optim.epochs=2", resume="auto")
    steps = [r["step"] for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]
    assert all(r["loss"] != 9.0 for r in map(json.loads, log.read_text().splitlines()))

    fresh = tmp_path / "killed"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text(json.dumps(dict(kind="train", step=1, epoch=0, loss=9.0)) + "\n")
    with pytest.raises(HieraVideoError, match=r"earlier training run \(metrics.jsonl\)"):
        train(fresh)
    train(fresh, resume="auto")
    assert [r["loss"] != 9.0 for r in map(json.loads, (fresh / "metrics.jsonl").read_text().splitlines())] == [True] * 3
