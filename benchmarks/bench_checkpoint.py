"""How long the training checkpoint (``last.pt``) takes to write, for the large models.

A preempted ``torchrun`` job must stop inside the grace period that follows SIGTERM (torchrun
kills its workers about 30 s after forwarding the signal; SLURM's default KillWait is also
30 s). The stop writes one checkpoint: model + AdamW state (+ EMA) in one file, through
``save_checkpoint`` (temporary file, fsync, rename). This script builds that state for each
model (AdamW moments filled by one real optimizer step on a tiny input is too slow for
Hiera-H on a CPU, so the moments are allocated at their real size and dtype) and times
``save_checkpoint`` into ``--dir`` (put it on the file system your run folder uses).

    python benchmarks/bench_checkpoint.py                              # hiera_large_16x224, hiera_huge_16x224
    python benchmarks/bench_checkpoint.py --models hiera_large_16x224 --ema --dir /shared/runs
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import torch

import hiera_video
from hiera_video.engine.ema import ModelEMA
from hiera_video.engine.optim import build_optimizer
from hiera_video.models.checkpoints import save_checkpoint


def adamw_with_state(model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW whose per-parameter state (step, exp_avg, exp_avg_sq) exists at full size."""
    opt = build_optimizer(model, "adamw", 1e-4)
    for group in opt.param_groups:
        for p in group["params"]:
            opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    return opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["hiera_large_16x224", "hiera_huge_16x224"])
    ap.add_argument("--ema", action="store_true", help="also keep an EMA copy (run.ema=true)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    folder = args.dir or tempfile.mkdtemp(prefix="bench_ckpt_")
    print(f"writing into {folder} (torch {torch.__version__})")
    print(f"{'model':24s} {'params':>8s} {'file GB':>8s} {'seconds':>8s} {'GB/s':>6s}")
    for name in args.models:
        model = hiera_video.create_model(name)
        opt = adamw_with_state(model)
        ema = ModelEMA(model).state_dict() if args.ema else None
        path = os.path.join(folder, f"{name}.pt")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            save_checkpoint(path, model, {"labels": []}, optimizer=opt, ema=ema, run_state={"step": 1})
            times.append(time.perf_counter() - t0)
        size = os.path.getsize(path) / 1e9
        best = min(times)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:24s} {params:7.0f}M {size:8.2f} {best:8.1f} {size / best:6.2f}   (runs: {', '.join(f'{t:.1f}' for t in times)})")
        os.remove(path)
        del model, opt, ema
        gc.collect()


if __name__ == "__main__":
    main()
