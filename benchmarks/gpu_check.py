"""One command for a machine with NVIDIA GPUs: does the multi-process GPU path work, does the
flash attention kernel give the same answers as the reference maths, and how fast is Hiera-B
in bf16 next to the official code and timm?

    pip install ".[test]" && python benchmarks/gpu_check.py            # about 10 minutes on one GPU

1. Multi-process (``--skip torchrun`` leaves it out). Backend: with two or more GPUs, nccl,
   each of the 2 processes on its own GPU; with one GPU, the labelled fallback gloo, both
   processes sharing it (nccl refuses two ranks on one GPU). Every row names the backend.
   * ``torchrun all_reduce``: a 2-process all_reduce on the GPUs; the row reports the backend
     the process group really used (``dist.get_backend()``) and each rank's device.
   * Data generation (``hiera-video synth`` list data, a generated AVA set): rows of their own.
   * ``torchrun --nproc-per-node 2`` runs of ``finetune`` (classifier), ``eval``, ``extract``,
     ``finetune --dataset ava`` and ``eval --dataset ava`` on that data. A step whose input
     failed to appear is a ``skip`` row naming the failed step (which is itself a FAIL row).
2. Flash attention (``--skip flash``): every registered model (video and image classifiers,
   video and image MAE models) in bf16 autocast, flash kernel only
   (``torch.nn.attention.sdpa_kernel``) against the math kernel, same weights, same input.
   Random init makes attention nearly uniform, and near-uniform attention hides most kernel
   bugs (wrong key/value pairing, wrong softmax scale), so the query/key weights are redrawn
   (fixed seed) to make attention peaked (``sharpen_attention``). Compared: outputs before any
   softmax, i.e. every stage's feature map and the logits (classifiers), the fused encoder
   latents and the decoder's pixel predictions (MAE), by the relative error
   ``max|flash - math| / max|math|``, which must stay <= 0.1 (``REL_TOL``: bf16 noise measured
   at <= 0.03, broken attention at >= 0.35; ``compare_attention`` runs on CPU too). Also
   Hiera-B 16x224 at batch 200, an attention batch above the kernels' 65,535 launch limit
   (chunked by the model): all 200 clips compared against the math kernel.
3. Throughput (``--skip speed``): Hiera-B 16x224 clips/s in bf16 (autocast) for batch 1..64,
   ours vs the official ``hiera-transformer`` vs timm, same weights, same process. (The
   paper's A100 fp16 figure is 133.6 clips/s without fused attention.)
4. DDP (``--skip ddp``), with two or more GPUs: ``benchmarks/bench_ddp.py`` with nccl on 2
   GPUs, Hiera-B 16x224 in bf16: our trainer's step time against a bare DDP loop (same model,
   clips and global batch; FAIL above 1.05), the communication the backward pass does not hide
   (the bare loop with against without gradient exchange) and the collectives per step. With
   one GPU the row is a ``skip``.
5. NVDEC (``--skip nvdec``): the test corpus (``tests/videogen.py``) decoded by torchcodec on
   the GPU (``--decode-device cuda``) against torchcodec on the CPU, same frames; the row gives
   the max abs pixel difference (YUV->RGB conversion differs: up to ``NVDEC_TOL``) and which
   files fell back to the CPU. FAIL above the tolerance or when no file decoded on the GPU.

Every step is a row of the summary table, which is always printed; the exit code is 1 when any
row is FAIL (or when nothing was checked, e.g. without CUDA), else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Sequence

import torch

RESULTS: list[tuple[str, str, str]] = []  # (check, ok | FAIL | skip, detail)

#: Query/key weight scale of :func:`sharpen_attention`: q and k entries get a standard
#: deviation of about SHARPNESS (their input is LayerNorm'ed, unit variance per channel), so the
#: attention logits q.k/sqrt(d) have a standard deviation of about SHARPNESS**2 = 2.25. Measured
#: (CPU, Hiera-B, seed 0): the mean largest attention weight per query is 0.18-0.55 depending on
#: the block (uniform: 1/64 in a mask unit), against 0.01-0.07 at random init. Sharper (2.0)
#: more than doubles the bf16 noise below without catching more.
SHARPNESS = 1.5

#: Largest relative error ``max|candidate - reference| / max|reference|`` allowed on any compared
#: output (stage maps, logits, MAE latents and predictions) between two bf16-autocast runs that
#: differ only in the attention kernel. bf16 keeps 8 significant bits (rounding step 2**-8 =
#: 0.4%); the kernels round at different places (flash rounds the probabilities to bf16 before
#: the value product; math, by default, reduces bf16 inputs in fp32), so outputs differ by a
#: rounding step here and there, and every later block carries that difference on. Measured with sharpened attention, CPU flash
#: vs CPU math, both in bf16 autocast, batch 1-2: Hiera nano 0.015, tiny-224 0.021, B-224 0.024,
#: B-16x224 0.026, H-224 (48 blocks) 0.030, MAE nano/tiny/H 0.015-0.017; bf16 math vs fp32
#: math is as large (B 0.021, H 0.025), so this is the bf16 noise floor, not a kernel
#: difference. Broken attention, same models (fp32 and bf16): outputs zeroed 0.6-1.3, keys
#: paired with the wrong values 0.4-0.9, softmax scale 1 instead of 1/sqrt(d) 0.35-1.2.
#: 0.1 sits >3x above the deepest model's noise and >3x below the smallest bug effect.
REL_TOL = 0.1

#: Environment variable of hiera_video.engine.distributed that picks the process-group backend.
BACKEND_ENV = "HIERA_VIDEO_DIST_BACKEND"
NPROC = 2


# ---------------------------------------------------------------------------- the summary


def record(name: str, fn: Callable[[], str | None], needs: Sequence[str] = ()) -> bool:
    """Run one step as a row of the summary: ``ok`` with ``fn``'s detail and time, or ``FAIL``
    with its exception (the traceback is printed, and the script goes on). A step whose
    ``needs`` (names of earlier rows) are not all ``ok`` does not run: it is a ``skip`` row
    naming them. Returns whether the step passed."""
    failed = [n for n in needs if row_status(n) != "ok"]
    if failed:
        RESULTS.append((name, "skip", "not run: needs " + ", ".join(failed)))
        return False
    t0 = time.perf_counter()
    try:
        detail = fn() or ""
    except Exception as e:  # report every step, then exit non-zero
        traceback.print_exc()
        text = " ".join(str(e).split()) or type(e).__name__
        RESULTS.append((name, "FAIL", text[:300]))
        return False
    RESULTS.append((name, "ok", f"{detail} ({time.perf_counter() - t0:.0f} s)".strip()))
    return True


def row_status(name: str) -> str | None:
    """Status of the latest row called ``name`` (None: no such row)."""
    return next((s for n, s, _ in reversed(RESULTS) if n == name), None)


def exit_code(results: Sequence[tuple[str, str, str]]) -> int:
    """1 when any row is FAIL or there are no rows at all (nothing checked is no pass), else 0."""
    return 1 if not results or any(status == "FAIL" for _, status, _ in results) else 0


def format_summary(results: Sequence[tuple[str, str, str]]) -> str:
    width = max([len("check")] + [len(n) for n, _, _ in results]) + 2
    lines = ["check".ljust(width) + "result"]
    lines += [f"{name:{width}s}{status:6s}{detail}" for name, status, detail in results]
    fails = sum(s == "FAIL" for _, s, _ in results)
    lines.append(f"{len(results)} rows, {fails} FAIL" + ("" if results else " (nothing was checked)"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- multi-process


def dist_plan(gpu_count: int) -> tuple[str, str]:
    """``(backend, label)`` for the 2-process runs on ``gpu_count`` GPUs."""
    if gpu_count >= 2:
        return "nccl", f"nccl: {NPROC} processes, one GPU each (of {gpu_count})"
    return "gloo", f"gloo fallback: {NPROC} processes share 1 GPU (nccl needs one GPU per process)"


def dist_env(backend: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="2", HIERA_VIDEO_DIST_TIMEOUT="300", **{BACKEND_ENV: backend})


def torchrun(target: list[str], workdir: Path, backend: str, timeout: float = 900) -> str:
    """``torchrun --nproc-per-node 2 TARGET`` with ``backend``; its stdout (an error names the
    exit code and the last line of stderr)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(NPROC), *target]
    return _run(cmd, workdir, dist_env(backend), timeout)


def cli(args: list[str], workdir: Path, timeout: float = 900) -> str:
    """``hiera-video ARGS`` in one process."""
    return _run([sys.executable, "-m", "hiera_video.cli.app", *args], workdir, dict(os.environ), timeout)


def _run(cmd: list[str], workdir: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-40:]
        print(f"--- {' '.join(cmd[-6:])}: exit {proc.returncode}, last lines of stderr:", *tail, sep="\n  ")
        raise RuntimeError(f"exit {proc.returncode}: {failure_reason(proc.stderr)}")
    return proc.stdout


_LAUNCHER_LOG = re.compile(r"^[WEI]\d{4} \d\d:\d\d")  # torchrun's own log lines
_ERROR_LINE = re.compile(r"^(\[rank\d+\]:\s*)?(error:|Error:|[\w.]*(Error|Exception)\b)")


def failure_reason(stderr: str) -> str:
    """The line of a failed command's stderr that says why: the last error line of the
    program itself (``error: ...`` from the CLI, ``SomeError: ...`` from a traceback), not
    torchrun's report that follows it (its last line is a row of ``=``)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    ours = [ln for ln in lines if not _LAUNCHER_LOG.match(ln) and "ChildFailedError" not in ln]
    errors = [ln for ln in ours if _ERROR_LINE.match(ln)]
    if errors:
        return errors[-1]
    plain = [ln for ln in ours if not set(ln) <= set("=-")]
    return plain[-1] if plain else "(no stderr)"


def sets(*items: str) -> list[str]:
    out = []
    for s in items:
        out += ["--set", s]
    return out


def allreduce_worker() -> int:
    """One rank of the ``torchrun all_reduce`` check (``gpu_check.py --allreduce-worker`` under
    torchrun): the backend of ``HIERA_VIDEO_DIST_BACKEND``, this rank's GPU (``LOCAL_RANK``
    modulo the GPU count; CPU without CUDA), an all_reduce of 4 MiB per rank. Rank 0 prints one
    JSON line: the backend the process group reports, every rank's device, whether the sums
    were right on every rank."""
    import datetime

    import torch.distributed as dist

    backend = os.environ.get(BACKEND_ENV, "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cpu")
    if torch.cuda.is_available():
        dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    kwargs: dict = dict(backend=backend, timeout=datetime.timedelta(seconds=120))
    if backend == "nccl":
        kwargs["device_id"] = dev
    dist.init_process_group(**kwargs)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        t = torch.full((1 << 20,), float(rank + 1), device=dev)
        dist.all_reduce(t)
        ok = bool((t == world * (world + 1) / 2).all())
        info: list = [None] * world
        dist.all_gather_object(info, (str(dev), ok))
        if rank == 0:
            print(json.dumps(dict(backend=str(dist.get_backend()), world=world,
                                  devices=[d for d, _ in info], ok=all(o for _, o in info))), flush=True)
    finally:
        dist.destroy_process_group()
    return 0


def allreduce_check(backend: str, workdir: Path, timeout: float = 300) -> str:
    """Run :func:`allreduce_worker` on 2 processes; the row's detail, or an error when the
    sums are wrong, the group ran another backend, or nccl ranks share a GPU."""
    out = torchrun([str(Path(__file__).resolve()), "--allreduce-worker"], workdir, backend, timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no report from rank 0; stdout: {out.strip()[-200:]!r}")
    rep = json.loads(lines[-1])
    if rep["backend"] != backend:
        raise RuntimeError(f"asked for {backend}, the process group ran {rep['backend']}")
    if not rep["ok"]:
        raise RuntimeError(f"{rep['backend']} all_reduce gave wrong sums on {rep['devices']}")
    if backend == "nccl" and len(set(rep["devices"])) != len(rep["devices"]):
        raise RuntimeError(f"nccl ranks share a device: {rep['devices']}")
    return f"backend {rep['backend']}, {rep['world']} ranks on {', '.join(rep['devices'])}, sums right"


def multi_process_checks(work: Path, gpu_count: int) -> None:
    from hiera_video.ava.synthetic import make_synthetic_ava

    backend, label = dist_plan(gpu_count)
    print(f"multi-process backend: {label}")
    tag = f"[{backend}]"
    data, run, ava_root, ava_run = work / "synth", work / "run", work / "ava", work / "ava_run"
    common = ("data.dataset=list", f"data.root={data}", "data.annotations=train.txt", "data.val_annotations=val.txt",
              "data.labels=labels.txt", "data.workers=2", "model.name=hiera_nano_8x64", "run.batch_size=4",
              "optim.base_batch=8", "optim.epochs=2", "run.final_views=1x1", "run.precision=auto")

    def gen_list():
        cli(["synth", str(data), "--train-per-class", "4", "--val-per-class", "2", "--frames", "32", "--size", "64"], work)
        return f"{len(list(data.rglob('*.mp4')))} videos"

    def gen_ava():
        nonlocal ava_root
        ava_root = Path(make_synthetic_ava(ava_root, seed=0, num_videos=6, val_videos=2, seconds=6).root)
        return "6 videos (2 for validation)"

    def finetune():
        torchrun(["-m", "hiera_video.cli.app", "finetune", *sets(*common, f"run.output={run}", "run.ema=true")], work, backend)
        m = json.loads((run / "metrics.json").read_text())
        return f"{m['steps']} steps, top-1 {m['top1']}"

    def evaluate():
        out = work / "eval"
        torchrun(["-m", "hiera_video.cli.app", "eval", "--dataset", "list", "--root", str(data), "--annotations",
                  str(data / "val.txt"), "--weights", str(run / "best.pt"), "--views", "2x3", "--output", str(out)],
                 work, backend)
        m = json.loads((out / "metrics.json").read_text())
        return f"{m['num_videos']} videos, top-1 {m['top1']}"

    def extract():
        out = work / "features"
        torchrun(["-m", "hiera_video.cli.app", "extract", str(data), "-o", str(out), "--weights", str(run / "best.pt"),
                  "--level", "stage2"], work, backend)
        return f"{len(list(out.rglob('*.npy')))} feature files"

    def ava_finetune():
        torchrun(["-m", "hiera_video.cli.app", "finetune", "--config", "ava_large", "--root", str(ava_root), "--model",
                  "hiera_nano_8x64", "--output", str(ava_run),
                  *sets("data.stride=8", "data.workers=2", "model.weights=null", "model.input_size=[4, 64, 64]",
                        "model.arch={q_pool: 2}", "optim.epochs=2", "optim.base_batch=8", "run.batch_size=4",
                        "run.val_every_epochs=1")], work, backend)
        return "trained"

    def ava_eval():
        stdout = torchrun(["-m", "hiera_video.cli.app", "eval", "--dataset", "ava", "--root", str(ava_root), "--weights",
                           str(ava_run / "best.pt"), "--json"], work, backend)
        return f"mAP {json.loads(stdout.strip().splitlines()[-1])['mAP']}"

    n_allreduce, n_list, n_ava = f"torchrun all_reduce {tag}", "generate list data (hiera-video synth)", "generate AVA data"
    n_ft, n_ava_ft = f"torchrun finetune {tag}", f"torchrun finetune --dataset ava {tag}"
    record(n_allreduce, lambda: f"{allreduce_check(backend, work)}; {label}")
    record(n_list, gen_list)
    record(n_ava, gen_ava)
    record(n_ft, finetune, needs=[n_list])
    record(f"torchrun eval {tag}", evaluate, needs=[n_ft])
    record(f"torchrun extract {tag}", extract, needs=[n_ft])
    record(n_ava_ft, ava_finetune, needs=[n_ava])
    record(f"torchrun eval --dataset ava {tag}", ava_eval, needs=[n_ava_ft])


# ---------------------------------------------------------------------------- attention


def sharpen_attention(model: torch.nn.Module, sharpness: float = SHARPNESS, seed: int = 0) -> torch.nn.Module:
    """Redraw the query and key rows of every attention's ``qkv`` weight (encoder and MAE
    decoder) with standard deviation ``sharpness / sqrt(fan_in)``, from a CPU generator seeded
    with ``seed`` (same weights on every device). Values, biases and everything else stay.
    Random init gives logits near 0 and near-uniform attention, under which a kernel that
    pairs keys with the wrong values or scales the logits wrongly still gives nearly the right
    answer; see :data:`SHARPNESS`."""
    from hiera_video.models.hiera import MaskUnitAttention

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MaskUnitAttention):
                w = m.qkv.weight  # [3 * dim_out, dim_in]: q rows, k rows, v rows
                qk = torch.randn(2 * m.dim_out, w.shape[1], generator=g) * (sharpness / math.sqrt(w.shape[1]))
                w[: 2 * m.dim_out] = qk.to(w)
    return model


def prepare_model(name: str, device: str | torch.device = "cpu", seed: int = 0) -> torch.nn.Module:
    """Registered model ``name``: random init from ``seed``, attention sharpened, eval mode."""
    import hiera_video

    torch.manual_seed(seed)
    with torch.device(device):
        model = hiera_video.create_model(name)
    return sharpen_attention(model, seed=seed).eval()


def make_input(model: torch.nn.Module, batch: int = 2, device: str | torch.device = "cpu", seed: int = 1) -> torch.Tensor:
    """``[B, C, T, H, W]`` (video) or ``[B, C, H, W]`` (image) at the model's input size."""
    x = torch.randn(batch, model.in_chans, *model.input_size, generator=torch.Generator().manual_seed(seed))
    return x.to(device)


def fixed_mask(model: torch.nn.Module, x: torch.Tensor, seed: int = 2) -> torch.Tensor:
    """An MAE keep-mask ``[B, units]`` at the model's mask ratio, drawn from ``seed`` (the same
    for both runs of a comparison)."""
    B, n = x.shape[0], math.prod(model.mask_grid(x))
    keep = max(1, int(n * (1 - model.default_mask_ratio)))
    order = torch.rand(B, n, generator=torch.Generator().manual_seed(seed)).argsort(dim=1)
    mask = torch.zeros(B, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :keep], True)
    return mask.to(x.device)


def attention_outputs(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The pre-softmax outputs a comparison looks at. Classifier: every stage's feature map and
    the logits. MAE model (``mask`` required): the fused encoder latents and the decoder's pixel
    predictions for every token."""
    if hasattr(model, "forward_decoder"):
        latent, mask = model.forward_encoder(x, model.default_mask_ratio, mask)
        pred, _ = model.forward_decoder(latent, mask.bool(), model.mask_grid(x))
        return {"encoder latents": latent, "decoder predictions": pred}
    maps = model.forward_intermediates(x)  # [B, *grid, C] each
    out = {f"stage {i + 1}": m for i, m in enumerate(maps)}
    out["logits"] = model.forward_head(maps[-1].flatten(1, -2))
    return out


def rel_error(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    """``max|candidate - reference| / max|reference|`` (inf for NaN/inf or a shape mismatch)."""
    if candidate.shape != reference.shape:
        return math.inf
    c, r = candidate.float(), reference.float()
    diff, scale = (c - r).abs().max().item(), r.abs().max().item()
    if not (math.isfinite(diff) and math.isfinite(scale)):
        return math.inf
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


@dataclass
class Comparison:
    errors: dict[str, float]  # output name -> rel_error(candidate, reference)
    tol: float

    @property
    def worst(self) -> tuple[str, float]:
        return max(self.errors.items(), key=lambda kv: kv[1])

    @property
    def ok(self) -> bool:
        return bool(self.errors) and all(e <= self.tol for e in self.errors.values())

    def __str__(self) -> str:
        name, err = self.worst
        each = ", ".join(f"{k} {v:.1e}" for k, v in self.errors.items())
        return f"max rel err {err:.2e} ({name}; tol {self.tol:g}; {each})"


def kernel(*backends) -> Callable[[], ContextManager]:
    """A context factory allowing only ``backends`` (``torch.nn.attention.SDPBackend``)."""
    from torch.nn.attention import sdpa_kernel

    return lambda: sdpa_kernel(list(backends))


def math_kernel() -> ContextManager:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def compare_attention(model: torch.nn.Module, x: torch.Tensor, candidate: Callable[[], ContextManager],
                      reference: Callable[[], ContextManager] = math_kernel, dtype: torch.dtype | None = torch.bfloat16,
                      tol: float = REL_TOL, ref_batch: int | None = None) -> Comparison:
    """Run ``model`` on ``x`` inside ``candidate()`` and inside ``reference()`` (default: the
    math kernel only), under ``dtype`` autocast (None: none) on ``x``'s device, and compare
    :func:`attention_outputs` by :func:`rel_error`. The candidate sees the whole batch in one
    forward; the reference runs in slices of ``ref_batch`` (a batch past a fused kernel's launch
    limit, compared sample by sample with the math kernel). MAE models get a fixed mask."""
    mask = fixed_mask(model, x) if hasattr(model, "forward_decoder") else None
    autocast = lambda: torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None)  # noqa: E731

    def run(ctx, xs, ms):
        with torch.no_grad(), autocast(), ctx():
            return attention_outputs(model, xs, ms)

    cand = run(candidate, x, mask)
    step = ref_batch or x.shape[0]
    parts = [run(reference, x[i:i + step], None if mask is None else mask[i:i + step]) for i in range(0, x.shape[0], step)]
    ref = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return Comparison({k: rel_error(cand[k], ref[k]) for k in ref}, tol)


def check_attention(model, x, candidate, **kwargs) -> str:
    """:func:`compare_attention` as a check: its summary, or an error when over the tolerance."""
    result = compare_attention(model, x, candidate, **kwargs)
    if not result.ok:
        raise RuntimeError(f"flash differs from math: {result}")
    return str(result)


def flash_checks() -> None:
    import hiera_video
    from hiera_video.models import hiera
    from hiera_video.models.factory import get_spec

    flash = []  # the candidate's context factory, once torch is known to have the kernel choice

    def available():
        from torch.nn.attention import SDPBackend

        flash.append(kernel(SDPBackend.FLASH_ATTENTION))
        return f"torch {torch.__version__}"

    if not record("flash attention kernel selectable (torch.nn.attention)", available):
        return

    def one(name: str, batch: int = 2, ref_batch: int | None = None):
        model = prepare_model(name, "cuda")
        x = make_input(model, batch, "cuda")
        if ref_batch is not None:  # the point of this row: more attention groups than one launch takes
            groups = batch * math.prod(model.mask_grid(x))
            if groups <= hiera.SDPA_MAX_BATCH:
                raise RuntimeError(f"{groups} attention groups: not past the {hiera.SDPA_MAX_BATCH} limit")
        try:
            return check_attention(model, x, flash[0], ref_batch=ref_batch)
        finally:
            del model, x
            torch.cuda.empty_cache()

    for name in hiera_video.list_models():  # every registered variant: video, image, classifier, MAE
        spec = get_spec(name)
        record(f"flash bf16 {name} ({spec.kind}{' MAE' if spec.mae else ''})", lambda n=name: one(n))
    # Above the kernel launch limit: 200 clips x 392 mask units (8x7x7, Hiera-B 16x224) > 65,535.
    record(f"flash bf16 hiera_base_16x224 batch 200 (> {hiera.SDPA_MAX_BATCH} groups, chunked)",
           lambda: one("hiera_base_16x224", 200, ref_batch=8))


# ---------------------------------------------------------------------------- throughput


def throughput(batches: list[int]) -> str:
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
    return f"batches {', '.join(map(str, batches))}"


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip", nargs="*", default=[], choices=["torchrun", "flash", "speed", "ddp", "nvdec"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)  # one rank of 'torchrun all_reduce'
    args = ap.parse_args(argv)
    if args.allreduce_worker:
        return allreduce_worker()
    work = Path(tempfile.mkdtemp(prefix="hiera_gpu_check_"))
    try:
        if not record("CUDA device", _cuda_info):
            return 1
        if "torchrun" not in args.skip:
            multi_process_checks(work, torch.cuda.device_count())
        if "flash" not in args.skip:
            flash_checks()
        if "speed" not in args.skip:
            record("throughput", lambda: throughput(args.batches))
        if "ddp" not in args.skip:
            ddp_step_checks(work, torch.cuda.device_count())
        if "nvdec" not in args.skip:
            record("NVDEC decode (torchcodec cuda vs cpu)", lambda: nvdec_check(work))
    except BaseException as e:  # even an interruption leaves the summary of what ran
        RESULTS.append(("gpu_check", "FAIL", f"stopped: {type(e).__name__}: {e}"[:300]))
        if not isinstance(e, Exception):
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print("\n" + format_summary(RESULTS))
    return exit_code(RESULTS)


NVDEC_TOL = 12  # max abs difference (0-255) NVDEC's YUV->RGB may give against FFmpeg's swscale


def nvdec_check(work: Path, device: str = "cuda", frames=(0, 7, 13, 29)) -> str:
    """The corpus decoded with ``device`` against torchcodec on the CPU (``device="cpu"``: the
    comparison itself, on CPU). Raises above ``NVDEC_TOL`` or when every file fell back."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from videogen import FORMATS, has_encoder, write_video

    from hiera_video.data.decode import open_video

    worst, on_device, fallback = 0, 0, []
    for fmt, (ext, encoder, _pix, _opts) in FORMATS.items():
        if not has_encoder(encoder) or ext not in ("mp4", "mkv", "webm", "avi"):  # torchcodec's containers
            continue
        path = write_video(work / f"nvdec_{fmt}", num_frames=30, height=96, width=128, fmt=fmt)
        with open_video(path, "torchcodec") as cpu, open_video(path, "torchcodec", device) as dev:
            diff = int((cpu.get_frames(list(frames)).int() - dev.get_frames(list(frames)).int()).abs().max())
            if "cpu fallback" in dev.decoder:
                fallback.append(fmt)
            else:
                on_device += 1
                worst = max(worst, diff)
        if diff > NVDEC_TOL:
            raise RuntimeError(f"{fmt}: {device} frames differ from the CPU's by up to {diff} (> {NVDEC_TOL})")
    if not on_device:
        raise RuntimeError(f"no corpus file decoded on {device} (fell back: {', '.join(fallback) or 'none'})")
    return f"{on_device} files, max abs diff {worst}" + (f"; CPU fallback: {', '.join(fallback)}" if fallback else "")


def ddp_step_check(work: Path, model: str = "hiera_base_16x224") -> str:
    """``benchmarks/bench_ddp.py`` on 2 GPUs with nccl, bf16: our trainer's step time against
    a bare DDP loop (goal <= 1.05) and the communication the backward pass did not hide (bare
    loop with against without gradient exchange). Fails above the goal."""
    out = work / "bench_ddp.json"
    script = Path(__file__).with_name("bench_ddp.py")
    _run([sys.executable, str(script), "--device", "cuda", "--nproc", str(NPROC), "--precision", "bf16", "--model", model,
          "--batch", "8", "--accum", "2", "--steps", "20", "--json", str(out)], work, dist_env("nccl"), 1200)
    result = json.loads(out.read_text())
    r0 = result["ranks"][0]
    detail = (f"{model}: trainer {r0['trainer_s'] * 1e3:.0f} ms/step, bare DDP {r0['bare_s'] * 1e3:.0f}, ratio "
              f"{result['ratio']:.3f} (goal <= 1.05); exposed communication {(r0['bare_s'] - r0['no_comm_s']) * 1e3:.0f} ms "
              f"of {r0['bare_s'] * 1e3:.0f} ms/step; collectives/step {r0['trainer_calls_per_step']}, "
              f"DDP buckets/step {r0['buckets_per_step']:.0f}")
    if result["ratio"] > 1.05:
        raise RuntimeError("trainer slower than a bare DDP loop by more than 5%: " + detail)
    return detail


def ddp_step_checks(work: Path, gpu_count: int) -> None:
    """The DDP step-time row: nccl needs a GPU per process, so one GPU gives a skip row."""
    name = "DDP step: trainer / bare [nccl]"
    if gpu_count < NPROC:
        RESULTS.append((name, "skip", f"not run: needs {NPROC} GPUs (nccl), {gpu_count} visible; "
                                      "python benchmarks/bench_ddp.py measures it on CPU with gloo"))
        return
    record(name, lambda: ddp_step_check(work))


def _cuda_info() -> str:
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: nothing checked")
    return f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name()}"


if __name__ == "__main__":
    sys.exit(main())
