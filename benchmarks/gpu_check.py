"""One command for a machine with NVIDIA GPUs: does the multi-process GPU path work, and how fast
is Hiera-B in bf16 next to the official code and timm?

    pip install ".[test]" && python benchmarks/gpu_check.py            # about 10 minutes on one GPU

1. Multi-process commands: ``torchrun --nproc-per-node 2`` runs of ``finetune`` (classifier),
   ``eval``, ``extract``, ``finetune --dataset ava`` and ``eval --dataset ava`` on tiny
   generated data. Ranks map to GPUs modulo the GPU count: with one GPU both processes share
   it through the gloo backend (``HIERA_VIDEO_DIST_BACKEND=gloo``; nccl refuses two ranks on
   one GPU), with two or more each has its own GPU and nccl.
2. Flash attention: every attention call of every registered video classifier, in bf16, with
   only the flash kernel allowed (``torch.nn.attention.sdpa_kernel``), including an attention
   batch above the 65,535 launch limit (chunked by the model).
3. Throughput: Hiera-B 16x224 clips/s in bf16 (autocast) for batch 1..64, ours vs the official
   ``hiera-transformer`` vs timm, same weights, same process. (The paper's A100 fp16 figure is
   133.6 clips/s without fused attention.)

Prints a summary table; exits non-zero when any check failed. Runs nothing without CUDA.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

RESULTS: list[tuple[str, str, str]] = []  # (check, ok | FAIL, detail)


def record(name: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        detail = fn() or ""
        RESULTS.append((name, "ok", f"{detail} ({time.perf_counter() - t0:.0f} s)"))
    except Exception as e:  # report every check, then exit non-zero
        traceback.print_exc()
        RESULTS.append((name, "FAIL", str(e).splitlines()[-1][:160] if str(e) else type(e).__name__))


def torchrun(args: list[str], workdir: Path, timeout: float = 900) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="2", HIERA_VIDEO_DIST_TIMEOUT="300")
    if torch.cuda.device_count() < 2:
        env["HIERA_VIDEO_DIST_BACKEND"] = "gloo"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "hiera_video.cli.app", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}")
    return proc.stdout


def sets(*items: str) -> list[str]:
    out = []
    for s in items:
        out += ["--set", s]
    return out


def multi_process_checks(work: Path) -> None:
    import json

    from hiera_video.data.synthetic_ava import make_synthetic_ava

    data = work / "synth"
    subprocess.run([sys.executable, "-m", "hiera_video.cli.app", "synth", str(data), "--train-per-class", "4",
                    "--val-per-class", "2", "--frames", "32", "--size", "64"], check=True, capture_output=True)
    run = work / "run"
    common = ("data.dataset=list", f"data.root={data}", "data.annotations=train.txt", "data.val_annotations=val.txt",
              "data.labels=labels.txt", "data.workers=2", "model.name=hiera_nano_8x64", "run.batch_size=4",
              "optim.base_batch=8", "optim.epochs=2", "run.final_views=1x1", "run.precision=auto")

    def finetune():
        torchrun(["finetune", *sets(*common, f"run.output={run}", "run.ema=true")], work)
        m = json.loads((run / "metrics.json").read_text())
        return f"{m['steps']} steps, 2 processes, top-1 {m['top1']}"

    def evaluate():
        out = work / "eval"
        torchrun(["eval", "--dataset", "list", "--root", str(data), "--annotations", str(data / "val.txt"),
                  "--weights", str(run / "best.pt"), "--views", "2x3", "--output", str(out)], work)
        m = json.loads((out / "metrics.json").read_text())
        return f"{m['num_videos']} videos, top-1 {m['top1']}"

    def extract():
        out = work / "features"
        torchrun(["extract", str(data), "-o", str(out), "--weights", str(run / "best.pt"), "--level", "stage2"], work)
        return f"{len(list(out.rglob('*.npy')))} feature files"

    ava = make_synthetic_ava(work / "ava", seed=0, num_videos=6, val_videos=2, seconds=6)
    ava_run = work / "ava_run"

    def ava_finetune():
        torchrun(["finetune", "--config", "ava_large", "--root", str(ava.root), "--model", "hiera_nano_8x64", "--output",
                  str(ava_run), *sets("data.stride=8", "data.workers=2", "model.weights=null", "model.input_size=[4, 64, 64]",
                                      "model.arch={q_pool: 2}", "optim.epochs=2", "optim.base_batch=8", "run.batch_size=4",
                                      "run.val_every_epochs=1")], work)
        return "ok"

    def ava_eval():
        stdout = torchrun(["eval", "--dataset", "ava", "--root", str(ava.root), "--weights", str(ava_run / "best.pt"), "--json"], work)
        return f"mAP {json.loads(stdout.strip().splitlines()[-1])['mAP']}"

    for name, fn in (("torchrun finetune", finetune), ("torchrun eval", evaluate), ("torchrun extract", extract),
                     ("torchrun finetune --dataset ava", ava_finetune), ("torchrun eval --dataset ava", ava_eval)):
        record(name, fn)


def flash_checks() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import hiera_video
    from hiera_video.models import hiera

    def one(name: str, batch: int = 1):
        model = hiera_video.create_model(name).cuda().eval()
        x = torch.randn(batch, 3, *model.input_size, device="cuda")
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            out = model(x)
        ref_x = x[:1]
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.MATH]):
            ref = model(ref_x)
        err = (out[:1].float().softmax(-1) - ref.float().softmax(-1)).abs().max().item()
        if not err < 2e-2:
            raise RuntimeError(f"flash vs math max |dprob| {err:.3g}")
        return f"max |dprob| vs math {err:.1e}"

    video = [n for n in hiera_video.list_models() if n.startswith("hiera_") and ("_16x" in n or "_8x" in n)]
    for name in video:
        record(f"flash bf16 {name}", lambda n=name: one(n))
    # Above the kernel launch limit: 200 clips x 392 mask units (8x7x7, Hiera-B 16x224) > 65,535.
    record(f"flash bf16 hiera_base_16x224 batch 200 (> {hiera.SDPA_MAX_BATCH} groups, chunked)", lambda: one("hiera_base_16x224", 200))


def throughput(batches: list[int]) -> None:
    """Same weights in the three implementations (timm's Hiera takes a video ``img_size``)."""
    import hiera as official_pkg
    import timm.models.hiera as timm_hiera

    import hiera_video

    ours = hiera_video.create_model("hiera_base_16x224").eval()
    kwargs = dict(ours.config)
    official = official_pkg.Hiera(**kwargs).eval()
    official.load_state_dict(ours.state_dict())
    timm_model = timm_hiera.Hiera(img_size=tuple(kwargs["input_size"]),
                                  **{k: v for k, v in kwargs.items() if k not in ("input_size", "head_dropout")}).eval()
    timm_model.load_state_dict(timm_hiera.checkpoint_filter_fn(ours.state_dict()))
    models = {"ours": ours.cuda(), "official": official.cuda(), "timm": timm_model.cuda()}
    print(f"\nHiera-B 16x224 clips/s, bf16 autocast, {torch.cuda.get_device_name()}")
    print(f"{'batch':>5s} " + " ".join(f"{k:>9s}" for k in models) + "   ours/official  ours/timm")
    for b in batches:
        row = {}
        x = torch.randn(b, 3, 16, 224, 224, device="cuda")
        for name, m in models.items():
            try:
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    for _ in range(3):
                        m(x)
                    torch.cuda.synchronize()
                    n, t0 = 10, time.perf_counter()
                    for _ in range(n):
                        m(x)
                    torch.cuda.synchronize()
                row[name] = b * n / (time.perf_counter() - t0)
            except torch.OutOfMemoryError:
                row[name] = float("nan")
            torch.cuda.empty_cache()
        del x
        print(f"{b:5d} " + " ".join(f"{row[k]:9.1f}" for k in models)
              + f"   {row['ours'] / row['official']:13.2f}  {row['ours'] / row['timm']:9.2f}")
        RESULTS.append((f"clips/s batch {b}", "ok", ", ".join(f"{k} {v:.1f}" for k, v in row.items())))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip", nargs="*", default=[], choices=["torchrun", "flash", "speed"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name()}")
    work = Path(tempfile.mkdtemp(prefix="hiera_gpu_check_"))
    try:
        if "torchrun" not in args.skip:
            multi_process_checks(work)
        if "flash" not in args.skip:
            flash_checks()
        if "speed" not in args.skip:
            record("throughput", lambda: throughput(args.batches))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\ncheck".ljust(52) + "result")
    for name, status, detail in RESULTS:
        print(f"{name:50s} {status:5s} {detail}")
    return 1 if any(s == "FAIL" for _, s, _ in RESULTS) else 0


if __name__ == "__main__":
    sys.exit(main())
