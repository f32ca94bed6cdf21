"""Our trainer's step time against a bare ``DistributedDataParallel`` loop, and the collectives
of a step.

Every process of a ``--nproc`` job (gloo on CPU by default; ``--device cuda`` uses nccl, one
GPU per process) trains the same model on the same synthetic clips with the same global batch
(``--batch`` clips per process per micro-batch, ``--accum`` micro-batches per step):

- ``bare``: the textbook loop: ``no_sync()`` for all micro-batches but the last, forward,
  backward (DDP averages the gradients during it), optimizer step. Nothing else.
- ``trainer``: :class:`hiera_video.engine.trainer.Trainer` (``fit`` with its DataLoader, the
  stand-in rule, the step's tensor agreement, loss logging, progress), same optimizer
  settings.
- ``no-comm``: the bare loop with every micro-batch under ``no_sync()``: no gradient is ever
  exchanged, so ``bare - no-comm`` is the communication the backward pass did not hide.

Step time = the median time between consecutive optimizer steps after ``--warmup`` steps; the
bare loop runs before and after the trainer and the mean of its two medians is used, so a drift
of the machine hits both. Collectives: the trainer's calls of each ``torch.distributed``
collective during its steps, counted in every process; DDP's bucket reductions per step are
counted by a comm hook on a separate DDP of the same model (same bucket size).

    python benchmarks/bench_ddp.py                                   # 2 gloo processes on CPU
    python benchmarks/bench_ddp.py --model hiera_tiny_16x224 --device cuda --nproc 2 --precision bf16

Goal: ``trainer / bare <= 1.05`` with one agreement plus DDP's buckets per step.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

TARGET = 1.05
COLLECTIVES = ("all_reduce", "all_gather_object", "gather_object", "broadcast_object_list", "broadcast", "all_gather",
               "barrier", "reduce_scatter", "all_to_all")


def options(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="hiera_nano_8x64", help="a registered classifier")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--batch", type=int, default=2, help="clips per process per micro-batch")
    p.add_argument("--accum", type=int, default=2, help="micro-batches per step")
    p.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process (CPU)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def synthetic(model, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, *model.input_size, generator=generator)
    return x, torch.randint(0, model.num_classes, (batch,), generator=generator)


def median_step(times: list[float], warmup: int) -> float:
    """Median seconds between consecutive optimizer steps after ``warmup`` steps."""
    gaps = [b - a for a, b in zip(times, times[1:])][max(warmup - 1, 0):]
    return statistics.median(gaps)


def bare_loop(model, bank, opt: argparse.Namespace, device, amp, sync: bool = True, hook=None) -> list[float]:
    """The textbook DDP loop; returns the time of each optimizer step."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from hiera_video.engine.distributed import ddp_buffer_option

    ddp = DDP(model, device_ids=[device] if device.type == "cuda" else None, gradient_as_bucket_view=True, **ddp_buffer_option())
    if hook is not None:
        ddp.register_comm_hook(None, hook)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    stamps = []
    for step in range(opt.warmup + opt.steps):
        for k in range(opt.accum):
            x, y = bank[(step * opt.accum + k) % len(bank)]
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with ddp.no_sync() if (k < opt.accum - 1 or not sync) else _nothing():
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = F.cross_entropy(ddp(x), y) / opt.accum
                loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return stamps


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def trainer_config(opt: argparse.Namespace, folder: str):
    from hiera_video.config import load_config

    per_step = opt.batch * opt.nproc * opt.accum
    return load_config(None, [
        f"run.output={folder}", f"run.batch_size={opt.batch}", f"run.global_batch={per_step}", "optim.name=adamw",
        "optim.layer_decay=null", "optim.clip_grad=null", "optim.epochs=1", "optim.warmup_epochs=0",
        f"optim.base_batch={per_step}", f"run.precision={opt.precision}", f"run.device={opt.device}", "data.workers=0",
        "data.repeated_aug=1", "run.log_every=1000000",
    ])


def trainer_steps(trainer, model, bank, opt: argparse.Namespace, calls: Counter) -> tuple[list[float], Counter]:
    """Our Trainer's ``fit`` on the same clips; returns the time of each optimizer step and the
    collectives called during the steps (the epoch-end checkpoint included)."""
    from torch.utils.data import Dataset

    clips_per_step = opt.batch * opt.nproc

    class Clips(Dataset):  # item i: one clip of the bank, in the order the bare loop uses them
        epoch = 0

        def __len__(self):
            return clips_per_step * opt.accum * (opt.warmup + opt.steps)

        def __getitem__(self, i):
            x, y = bank[(i // clips_per_step) % len(bank)]
            j = i % opt.batch
            return x[j:j + 1], y[j:j + 1]

    def collate(items):
        return (torch.cat([x for x, _ in items]), torch.cat([y for _, y in items])), []

    def loss_fn(net, batch):
        x, y = (t.to(trainer.device, non_blocking=True) for t in batch)
        return F.cross_entropy(net(x), y), x.shape[0]

    stamps = []
    trainer.plan(len(Clips()), 1)
    trainer.prepare(model.to(trainer.device), {})
    step = trainer.optimizer.step

    def timed_step(*args, **kwargs):
        out = step(*args, **kwargs)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return out

    trainer.optimizer.step = timed_step
    before = Counter(calls)
    trainer.fit(Clips(), collate, loss_fn, str)
    during = Counter(calls)
    during.subtract(before)
    return stamps, during


def worker(rank: int, opt: argparse.Namespace, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(opt.nproc), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(opt.threads)
    import hiera_video
    from hiera_video.engine.trainer import Trainer

    calls: Counter = Counter()
    for name in COLLECTIVES:  # count every collective called through torch.distributed
        def counted(*args, _real=getattr(dist, name), _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        setattr(dist, name, counted)
    buckets = Counter()

    def hook(_state, bucket):  # DDP's default reduction (the bucket's mean), counted; not through the counted name
        buckets["n"] += 1
        tensor = bucket.buffer().div_(opt.nproc)
        return dist.distributed_c10d.all_reduce(tensor, async_op=True).get_future().then(lambda f: f.value()[0])

    amp = torch.bfloat16 if opt.precision == "bf16" else None
    torch.manual_seed(0)
    model = hiera_video.create_model(opt.model, num_classes=10)
    ours = hiera_video.create_model(opt.model, num_classes=10)
    ours.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(0)
    bank = [synthetic(model, opt.batch, gen) for _ in range(4)]
    trainer = Trainer(trainer_config(opt, folder))  # the process group, as a run starts it
    with trainer.running():
        device = trainer.device
        model.to(device)
        bare_a = median_step(bare_loop(model, bank, opt, device, amp), opt.warmup)
        stamps, during = trainer_steps(trainer, ours, bank, opt, calls)
        no_comm = median_step(bare_loop(model, bank, opt, device, amp, sync=False), opt.warmup)
        bare_b = median_step(bare_loop(model, bank, opt, device, amp), opt.warmup)
        counting = argparse.Namespace(**{**vars(opt), "warmup": 1, "steps": 2})
        bare_loop(model, bank, counting, device, amp, hook=hook)
    steps = opt.warmup + opt.steps
    result = dict(
        rank=rank, trainer_s=median_step(stamps, opt.warmup), bare_s=(bare_a + bare_b) / 2, bare_runs_s=[bare_a, bare_b],
        no_comm_s=no_comm, buckets_per_step=buckets["n"] / (counting.warmup + counting.steps),
        trainer_calls_per_step={k: v / steps for k, v in during.items() if v}, steps=steps,
    )
    Path(folder, f"rank{rank}.json").write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    opt = options(argv)
    if opt.device == "cuda" and torch.cuda.device_count() < opt.nproc:
        print(f"--device cuda needs {opt.nproc} GPUs, {torch.cuda.device_count()} visible", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(worker, args=(opt, free_port(), folder), nprocs=opt.nproc)
        results = [json.loads(Path(folder, f"rank{r}.json").read_text()) for r in range(opt.nproc)]
    main_rank = results[0]
    ratio = main_rank["trainer_s"] / main_rank["bare_s"]
    exposed = main_rank["bare_s"] - main_rank["no_comm_s"]
    calls = main_rank["trainer_calls_per_step"]
    print(f"{opt.model}, {opt.nproc} processes ({'nccl' if opt.device == 'cuda' else 'gloo'}, {opt.device}, {opt.precision}), "
          f"{opt.batch} clips x {opt.accum} micro-batches per process per step, {opt.steps} timed steps")
    print(f"  bare DDP loop      {main_rank['bare_s'] * 1e3:8.1f} ms/step  (runs: "
          + ", ".join(f"{t * 1e3:.1f}" for t in main_rank["bare_runs_s"]) + ")")
    print(f"  our trainer        {main_rank['trainer_s'] * 1e3:8.1f} ms/step")
    print(f"  no communication   {main_rank['no_comm_s'] * 1e3:8.1f} ms/step  (exposed communication: {exposed * 1e3:.1f} ms/step)")
    print(f"  trainer / bare     {ratio:8.3f}   (goal <= {TARGET})")
    print(f"  collectives per step, trainer (from Python): {json.dumps({k: round(v, 2) for k, v in calls.items()})}; "
          f"DDP buckets per step: {main_rank['buckets_per_step']:.0f}")
    if opt.json:
        opt.json.write_text(json.dumps(dict(options=vars(opt) | {"json": str(opt.json)}, ranks=results, ratio=ratio), indent=1))
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
