"""Sparse MAE pretraining step vs the official MAE and vs a dense finetuning step, one process.

One training step = forward + backward (fp32, CPU by default) on the same batch:

- ``ours``: ``hiera_video`` ``mae_hiera_*`` at mask ratio 0.9 (only the kept mask units go
  through the encoder);
- ``official``: ``hiera.MaskedAutoencoderHiera`` from the ``hiera-transformer`` package with
  the same weights and the same mask (its loss is checked against ours);
- ``dense``: a finetuning step of the matching classifier ``hiera_*`` (every token through the
  encoder, cross-entropy on the logits).

Timings are interleaved (one step of each model per round, ``--repeat`` rounds after a warm-up)
and the median is reported, so slow drifts of a shared machine hit all three alike. Besides
wall time, the process CPU time of each step is measured: with ``--threads 1`` it counts the
work done and hardly depends on what else runs on the machine (with more threads it also
counts the threads' spin-waiting), so its ratios are the robust numbers on a busy machine.
Prints seconds per step and the ratios ours/official and ours/dense.

    python benchmarks/bench_pretrain.py                                   # base (+ official) and large
    python benchmarks/bench_pretrain.py --models base --repeat 5
    python benchmarks/bench_pretrain.py --models large --official-large --skip-dense   # ours vs official large MAE
    python benchmarks/bench_pretrain.py --threads 1 --repeat 3            # robust CPU-time ratios on a busy machine
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import torch
import torch.nn.functional as F

import hiera_video

TARGETS = {"base": {"official": 0.45, "dense": 0.65}, "large": {"dense": 0.35}}


def step_fn(model, x, kind: str, mask=None, ratio: float = 0.9):
    """A closure running one forward + backward of ``model``; returns the loss."""
    labels = torch.zeros(x.shape[0], dtype=torch.long)

    def run() -> float:
        model.zero_grad(set_to_none=True)
        if kind == "dense":
            loss = F.cross_entropy(model(x), labels)
        else:
            loss = model(x, mask_ratio=ratio, mask=mask)[0]
        loss.backward()
        return loss.item()

    return run


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(size: str, args) -> dict:
    torch.manual_seed(0)
    name = f"hiera_{size}_16x224"
    ours = hiera_video.create_model("mae_" + name).train()
    dense = hiera_video.create_model(name).train()
    # Same encoder weights in the dense model (the decoder-only tensors are dropped).
    enc = {k: v for k, v in ours.state_dict().items() if k in dense.state_dict()}
    dense.load_state_dict(enc, strict=False)
    x = torch.randn(args.batch_size, 3, *ours.input_size)
    mask = ours.get_random_mask(x, args.mask_ratio)
    steps = {"ours": step_fn(ours, x, "mae", mask, args.mask_ratio)}
    if not args.skip_dense:
        steps["dense"] = step_fn(dense, x, "dense")
    else:
        del dense
    with_official = size == "base" or args.official_large
    if with_official:
        import hiera as official_pkg  # hiera-transformer

        kwargs = dict(ours.config)
        kwargs.pop("mask_ratio", None)
        kwargs.pop("norm_layer", None)  # the official MAE class takes a callable here
        official = official_pkg.MaskedAutoencoderHiera(**kwargs).train()
        official.load_state_dict(ours.state_dict(), strict=True)
        steps["official"] = step_fn(official, x, "mae", mask, args.mask_ratio)
        with torch.no_grad():
            a = ours(x, mask=mask)[0].item()
            b = official(x, mask=mask)[0].item()
        print(f"  {size}: loss ours {a:.6f} official {b:.6f} (same weights, same mask)", flush=True)
    times = {k: [] for k in steps}
    cpu = {k: [] for k in steps}
    for k, fn in steps.items():  # warm-up
        fn()
    for _ in range(args.repeat):
        for k, fn in steps.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    spread = {k: (min(v), max(v)) for k, v in times.items()}
    line = f"{size}: batch {args.batch_size}, mask ratio {args.mask_ratio}, kept units {int(mask[0].sum())}/{mask.shape[1]}\n"
    for k in steps:
        line += (f"  {k:9s} wall {med[k]:.3f} s/step (min {spread[k][0]:.3f}, max {spread[k][1]:.3f})  "
                 f"cpu {med_cpu[k]:.3f} s/step\n")
    result = {"size": size, **{f"{k}_s": med[k] for k in med}, **{f"{k}_cpu_s": med_cpu[k] for k in med_cpu}}
    for ref in ("official", "dense"):
        if ref in med:
            r, rc = med["ours"] / med[ref], med_cpu["ours"] / med_cpu[ref]
            target = TARGETS.get(size, {}).get(ref)
            verdict = "" if target is None else (f"  (target <= {target}: wall {'met' if r <= target else 'MISSED'}, "
                                                 f"cpu {'met' if rc <= target else 'MISSED'})")
            line += f"  ours/{ref} wall {r:.3f}  cpu {rc:.3f}{verdict}\n"
            result[f"ours_over_{ref}"] = r
            result[f"ours_over_{ref}_cpu"] = rc
    if size == "large" and not with_official:
        line += "  official large MAE not timed (pass --official-large; it needs several GB and minutes)\n"
    line += f"  peak RSS so far {peak_rss_mb():.0f} MB"
    print(line, flush=True)
    del steps, ours
    gc.collect()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["base", "large"], choices=["base", "base_plus", "large", "huge"])
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--mask-ratio", type=float, default=0.9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--official-large", action="store_true", help="also time the official MAE for sizes other than base")
    ap.add_argument("--skip-dense", action="store_true", help="do not time the dense finetuning step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, fp32 CPU, "
          f"load average {os.getloadavg()[0]:.1f} (a shared machine makes the times noisy)", flush=True)
    for size in args.models:
        bench(size, args)


if __name__ == "__main__":
    main()
