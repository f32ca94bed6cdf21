"""Training runs on DistributedDataParallel with one small tensor agreement per step: 2 gloo
processes of tests/ddp_driver.py (the real Trainer on a linear model), started as torchrun
starts its workers. Seconds each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hiera_video.engine.train_data import EpochSampler

from ddp_driver import PICKLED, item

DRIVER = Path(__file__).with_name("ddp_driver.py")
TIMEOUT = float(os.environ.get("HIERA_VIDEO_TEST_TIMEOUT", "240"))


def run_driver(out: Path, unreadable: list[int], n: int, global_batch: int, nproc: int = 2) -> dict:
    from test_distributed import _free_port

    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(DRIVER), str(out), ",".join(map(str, unreadable)), str(n), str(global_batch)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(nproc),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
                                   "HIERA_VIDEO_DIST_TIMEOUT": "60"})
             for r in range(nproc)]
    try:
        errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * nproc, "\n".join(e[-3000:] for e in errs)
    return torch.load(out, weights_only=True)


def micro_batches(n: int, rank: int, world: int = 2) -> list[list[int]]:
    """Rank ``rank``'s micro-batches of epoch 0 (2 items each), as the sampler deals them."""
    order = list(EpochSampler(n, rank=rank, world_size=world, seed=0, videos_per_batch=2))
    return [order[i:i + 2] for i in range(0, len(order), 2)]


def reference_grads(weights: dict, indices: list[int]) -> dict:
    """The gradient of the mean cross-entropy over the items ``indices``, in one process."""
    model = torch.nn.Linear(4, 3)
    model.load_state_dict(weights)
    x = torch.cat([item(i)[0] for i in indices])
    y = torch.cat([item(i)[1] for i in indices])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return {k: p.grad for k, p in model.named_parameters()}


@pytest.mark.parametrize("global_batch", [8, 4], ids=["accumulation", "static-graph"])
def test_a_step_with_an_unreadable_micro_batch_has_the_gradient_of_the_clips_present(tmp_path, global_batch):
    """Rank 1's first micro-batch is all unreadable, and so is rank 0's second (each then runs
    a stand-in with weight zero): every step's gradient equals the mean-over-clips gradient of the items actually present,
    computed in one process; then the counted collectives: DDP built once, one tensor
    agreement and DDP's bucket reductions per step, and no pickled collective per step."""
    n, accum = 80, global_batch // 4
    per_rank = [micro_batches(n, r) for r in range(2)]
    unreadable = per_rank[1][0] + per_rank[0][1]
    result = run_driver(tmp_path / "out.pt", unreadable, n, global_batch)
    steps = result["steps"]
    assert len(steps) == len(per_rank[0]) // accum == 20 // accum
    for s, step in enumerate(steps):
        present = [i for r in range(2) for mb in per_rank[r][s * accum:(s + 1) * accum] for i in mb if i not in unreadable]
        ref = reference_grads(step["weights"], present)
        for k, g in step["grads"].items():
            torch.testing.assert_close(g, ref[k], rtol=1e-5, atol=1e-6, msg=f"step {s + 1}, {k}")
    calls = result["calls_in_fit"]
    assert result["calls"]["ddp_constructed"] == 1
    assert calls.get("all_reduce", 0) == len(steps)  # the agreements (the buckets go through DDP's hook)
    assert calls.get("ddp_buckets", 0) == len(steps)  # one bucket for a linear model, reduced in every step
    pickled = sum(calls.get(name, 0) for name in PICKLED)
    assert pickled <= 2 < len(steps), calls  # the epoch-end checkpoint only
    assert sum(result["calls"].get(name, 0) for name in PICKLED) <= 12, result["calls"]  # the whole run, setup included
    assert result["summary"]["bad_training_videos"] == len(unreadable)
