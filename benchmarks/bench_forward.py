"""Forward-pass speed of hiera-video vs the official implementation and timm, one process.

All three models get the same random weights and the same input. Prints seconds per
forward (median of ``--repeat`` runs after a warm-up), the ratios ours/official and
ours/timm, and the default-precision (bf16 autocast where supported) time.

    python benchmarks/bench_forward.py --model hiera_base_16x224 --batch-sizes 1 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import hiera_video
from hiera_video.models import fused
from hiera_video.runtime import autocast_dtype


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hiera_base_16x224")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    ap.add_argument("--no-fused", action="store_true", help="also time ours without the fused CPU kernels")
    ap.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import hiera as official_pkg  # the official package (hiera-transformer)
    import timm.models.hiera as timm_hiera

    ours = hiera_video.create_model(args.model).eval()
    # Random weights with a meaningful head: the initial head is scaled by 0.001, which would
    # leave the probabilities nearly uniform and the top-1 comparison meaningless.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    kwargs = dict(ours.config)
    official = official_pkg.Hiera(**kwargs).eval()
    official.load_state_dict(ours.state_dict())
    timm_kwargs = {k: v for k, v in kwargs.items() if k not in ("input_size", "head_dropout")}
    timm_model = timm_hiera.Hiera(img_size=tuple(kwargs["input_size"]), **timm_kwargs).eval()
    timm_model.load_state_dict(timm_hiera.checkpoint_filter_fn(ours.state_dict()))
    low = autocast_dtype(torch.device("cpu"))
    print(f"model {args.model}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"default low precision on this CPU: {low}")

    for bs in args.batch_sizes:
        x = torch.randn(bs, 3, *ours.input_size)
        with torch.inference_mode():
            p_ours = ours(x).softmax(-1)
            p_off = official(x)
            diff = (p_ours - p_off).abs().max().item()
            t_off = timeit(lambda: official(x), args.repeat)
            t_timm = timeit(lambda: timm_model(x), args.repeat)
            t_ours = timeit(lambda: ours(x), args.repeat)
            line = (f"batch {bs}: official {t_off:.3f}s  timm {t_timm:.3f}s  ours fp32 {t_ours:.3f}s  "
                    f"ours/official {t_ours / t_off:.3f}  ours/timm {t_ours / t_timm:.3f}  max|dprob| {diff:.1e}")
            if low is not None:
                # Default inference precision: weights and activations in `low` (see
                # hiera_video.runtime.prepare_inference).
                ours_low, x_low = copy.deepcopy(ours).to(low), x.to(low)
                p_low = ours_low(x_low).float().softmax(-1)
                t_low = timeit(lambda: ours_low(x_low), args.repeat)
                same = bool((p_low.argmax(-1) == p_off.argmax(-1)).all())
                low_diff = (p_low - p_off).abs().max().item()
                line += f"  ours {low} {t_low:.3f}s  {low}/official-fp32 {t_low / t_off:.3f} top1-same {same} max|dprob| {low_diff:.1e}"
            print(line, flush=True)
            if args.no_fused:
                with fused.disabled():
                    t_nf = timeit(lambda: ours(x), args.repeat)
                print(f"batch {bs}: ours fp32 without fused oneDNN epilogues {t_nf:.3f}s  ratio to official {t_nf / t_off:.3f}", flush=True)
            if args.compile:
                compiled = torch.compile(ours)
                t_c = timeit(lambda: compiled(x), args.repeat)
                print(f"batch {bs}: torch.compile fp32 {t_c:.3f}s  compiled/eager {t_c / t_ours:.3f}", flush=True)
    if torch.cuda.is_available():
        gpu_throughput(args.model, args.gpu_batch_sizes)


def gpu_throughput(model_name: str, batch_sizes: list[int]) -> None:
    """clips/s of ours in bf16 on the GPU (the paper: 133.6 clips/s for Hiera-B, A100 fp16)."""
    model = hiera_video.create_model(model_name).eval().cuda().to(torch.bfloat16)
    print(f"GPU {torch.cuda.get_device_name()}: {model_name} bf16")
    for bs in batch_sizes:
        x = torch.randn(bs, 3, *model.input_size, device="cuda", dtype=torch.bfloat16)

        def run():
            model(x)
            torch.cuda.synchronize()

        with torch.inference_mode():
            try:
                t = timeit(run, 5)
            except torch.OutOfMemoryError:
                print(f"batch {bs}: out of memory")
                break
        print(f"batch {bs}: {bs / t:.1f} clips/s", flush=True)


if __name__ == "__main__":
    main()
