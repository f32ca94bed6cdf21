"""The training engine that ``finetune``, ``pretrain`` and AVA finetuning share.

A task (classification, MAE, AVA detection) builds its model and its training items and
says how a batch becomes a loss; :class:`Trainer` does everything else, the same way for all:

    Trainer(cfg)                 device + torchrun process group (one place), seeds, precision
    .running()                   the context a task runs in: one failure ends every rank alike
    .plan(num_videos, k)         per-process batch, gradient accumulation, global batch, steps
    .prepare(model, ...)         rank 0's weights on every rank, optimizer (layer decay, no decay on
                                 1-D params), warmup+cosine, grad scaler, EMA, resume, torch.compile
    .fit(items, collate, loss)   epochs of steps: micro-batches -> loss -> backward under DDP; ONE
                                 small agreement of all ranks per step; clip -> step -> log /
                                 checkpoint; bad videos skipped and listed; SIGINT/SIGTERM ->
                                 checkpoint + exit 130 (also during validation); NaN -> stop
    .finish(summary)             metrics.json, bad_videos.csv, curves.png

Multi-process rule: every rank joins every step, on ``DistributedDataParallel``. A step's
micro-batches but the last run forward and backward under ``no_sync()`` (no communication);
the last runs its forward, then the step's agreement: ONE all-reduce of a small tensor
(:func:`~hiera_video.engine.distributed.agree_rows`) that tells every rank every rank's clip
count, loss, skipped-video count, signal, non-finite loss and error flag. Only then the last
backward, during which DDP averages the gradients bucket by bucket. So a failing or diverging
rank stops every rank before any gradient is exchanged, a signal stops every rank at the same
step, and text (an error's reason, skipped file names, RNG states) crosses ranks only when a
flag says so or at checkpoints and epoch ends: no pickled collective per step. A rank whose
micro-batch was all unreadable still runs forward and backward, on a stand-in batch (the
epoch's first readable item) with weight zero, so DDP's reducer meets every rank; the gradient is then rescaled to the mean over
the clips actually present (each micro-batch weighs its clip count).

What cannot be agreed: a failure inside the last backward (e.g. out of memory) happens while
the other ranks are inside DDP's all-reduce. The failing rank stops with its reason and rank;
the others stop when the collective timeout (``run.dist_timeout``) ends.

Gradient accumulation: a step is ``accum`` micro-batches; when an epoch's micro-batches are not
a multiple of it, the epoch's last step takes the rest (fewer clips, same mean-over-clips
rule), so no gradient crosses an epoch and every checkpoint is at a clean step boundary.

Exact resume: every random choice of a training item comes from ``(seed, epoch, index)``
(see :mod:`hiera_video.engine.train_data`), the sampler restarts at the saved batch, and the
checkpoint holds model, optimizer, schedule, scaler, EMA, the run state and every rank's RNG
states; a resumed run ends with the weights of an uninterrupted one. Every checkpoint also
checks that all ranks hold identical weights (a fingerprint per tensor).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import socket
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from hiera_video.engine import distributed, faults
from hiera_video.engine.distributed import Agreed, AgreedInterrupt
from hiera_video.engine.ema import ModelEMA
from hiera_video.engine.optim import build_optimizer, scaled_lr
from hiera_video.engine.schedule import Scheduler
from hiera_video.engine.state import rng_state, set_rng_state
from hiera_video.engine.train_data import EpochSampler
from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints import check_resumable, load_training_state, save_checkpoint
from hiera_video.engine.train_log import MetricsLog, Progress, plot_curves
from hiera_video.html_report import write_report_safely
from hiera_video.report import atomic_write_text, check_output, write_csv, write_json
from hiera_video.runtime import DTYPES, autocast, autocast_dtype

log = logging.getLogger("hiera_video")

# ``loss_fn(model, batch) -> (loss, clips in this batch)``; ``batch`` is the collated value;
# ``loss`` is the mean over the batch.
LossFn = Callable[[nn.Module, object], "tuple[torch.Tensor, int]"]


@dataclass
class RunState:
    """Where a run is; saved in every checkpoint."""

    epoch: int = 0  # current epoch
    batch: int = 0  # batches of the current epoch already consumed
    step: int = 0  # optimizer steps done
    best_val: float = -math.inf  # best validation score so far (top-1 or mAP)
    bad_videos: int = 0  # unreadable training items skipped, all ranks, all epochs
    epoch_loss_sum: float = 0.0  # this epoch's step losses so far (for the epoch mean)
    epoch_loss_steps: int = 0
    val_pending: bool = False  # a signal cut the last epoch's validation short: run it on resume


# Signals that stop a run with a checkpoint (SIGUSR1: the early warning SLURM sends with
# --signal=USR1@SECONDS, forwarded by torchrun --signals-to-handle ...,SIGUSR1).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, n))


# Files that only a training run writes into its folder: any of them means an earlier run, and
# a new run there would mix its logs, curves and best weights with that run's (config.json and
# the lock are rewritten by every start).
EARLIER_RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "metrics.json", "curves.png", "bad_videos.csv", "eval")

# Items a rank without one readable clip in its first micro-batch tries for a stand-in batch.
STAND_IN_TRIES = 32


class _Stop(Exception):
    """Raised inside the loop once a checkpoint is written: the agreed reason ('' = halt)."""


def filesystem_type(path: Path) -> str:
    """The type of the file system ``path`` is on (``nfs4``, ``fuse.sshfs``...), from
    /proc/mounts (the longest mount point above it); "unknown" elsewhere."""
    try:
        target, best, kind = str(Path(path).resolve()), "", "unknown"
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, fields[2]
        return kind
    except (OSError, IndexError):
        return "unknown"


def precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training (None = fp32). ``auto``: bf16 on GPUs with native bf16
    (compute capability >= 8.0), fp16 with the grad scaler on older GPUs, fp32 on CPU."""
    if name == "auto":
        return autocast_dtype(device) if device.type == "cuda" else None
    if name == "fp16" and device.type != "cuda":
        raise HieraVideoError("fp16 training needs a GPU; use run.precision=bf16 or fp32 on CPU")
    return DTYPES[name]


def _merged_bad(parts: list[dict]) -> list[tuple[str, str]]:
    """The skipped items every rank reported in an agreement (``bad`` payloads), unique, sorted."""
    return sorted({(path, reason) for part in parts for path, reason in part["bad"]})


@torch.no_grad()
def fingerprint(modules: list[nn.Module]) -> list[float]:
    """Two float64 sums per tensor (plain and absolute) of every tensor of ``modules``:
    equal lists on all ranks = ranks in sync (checked at every checkpoint)."""
    sums = [torch.stack([t.double().sum(), t.double().abs().sum()]) for m in modules for t in m.state_dict().values()
            if t.is_floating_point()]
    return torch.stack(sums).flatten().tolist() if sums else []


class Trainer:
    """One training run. ``cfg`` needs ``run`` and ``optim`` sections (finetune and pretrain
    configs both have them) and ``to_dict()``."""

    def __init__(self, cfg, console=None):
        if not cfg.run.output:
            raise HieraVideoError("no run folder: pass --output RUN_DIR")
        check_output(cfg.run.output, "--output (run.output)", "dir")  # before any work
        self.cfg, self.run, self.optim = cfg, cfg.run, cfg.optim
        self.out = Path(cfg.run.output)
        self.console = console
        # Device and process group first, before any model or tensor is placed.
        self.world, self.device = distributed.start(cfg.run.device, getattr(cfg.run, "dist_timeout", None))
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls in training: TF32 on Ampere+
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.run.seed + self.world.rank)
        self.amp = precision(cfg.run.precision, self.device)
        self.state = RunState()
        self.ckpt_path = self.out / "last.pt"
        self.bad: list[tuple[str, str]] = []  # this rank's skipped items (path, reason)
        self.logger: MetricsLog | None = None
        self.progress: Progress | None = None
        self.info: dict = {}
        self.train_seconds = 0.0
        self.ema = None
        self._lock = None  # the run folder's lock file (rank 0, from prepare() on)
        self.ddp: DistributedDataParallel | None = None  # the model under DDP (several processes)
        self._handlers = None  # signal handlers replaced by fit() until running() ends
        self._signal = None  # the first stop signal this process received
        self._cut = False  # an evaluation stopped early for a signal (since the last epoch's end)
        self._stand_in_batch = None  # (epoch, batch) for micro-batches without a readable clip (see _stand_in)

    @contextmanager
    def running(self):
        """The context a task runs in: a failure on any rank ends every rank with that rank's
        reason (see :func:`~hiera_video.engine.distributed.together`); the run folder's lock is
        released and the process group left at the end."""
        try:
            with distributed.together(self.world):
                yield self
        finally:
            for s, h in (self._handlers or {}).items():
                signal.signal(s, h)
            if self._lock is not None:
                self._lock.close()  # releases the flock
            distributed.cleanup(self.world)

    def _lock_run_folder(self) -> None:
        """Rank 0 takes an exclusive lock on RUN_DIR/.lock for the whole run, so a second run
        into the same folder stops instead of mixing its files in; the holder writes its pid
        and host into the file, so the refusal names it. The OS releases the lock when the
        process ends, however it ends, so a killed run leaves no stale lock. A file system
        without file locks is named in the error (``run.lock=false`` proceeds without one).
        Then the temporary checkpoint files a killed run may have left are removed."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no lock
            return
        path = self.out / ".lock"
        if self.run.lock:
            f = open(path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                f.seek(0)
                holder = " ".join(f.read().split())[:200] or "a process that wrote no name"
                f.close()
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise HieraVideoError(
                        f"{self.out} is in use by another training run ({holder}); wait for it to finish or stop it, "
                        "or choose another --output"
                    ) from None
                raise HieraVideoError(
                    f"cannot lock {path}: the file system there ({filesystem_type(self.out)}) does not support file locks "
                    f"({e.strerror or e}); put --output on a local or lock-capable file system, or pass --set run.lock=false "
                    "and make sure no other run writes into this folder"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
            self._lock = f
        for leftover in list(self.out.glob(".last.pt.*.tmp")) + list(self.out.glob(".best.pt.*.tmp")):
            leftover.unlink(missing_ok=True)
            log.info("removed %s, left by a run that was killed while writing a checkpoint", leftover.name)

    # ------------------------------------------------------------------ setup

    def plan(self, num_videos: int, clips_per_video: int) -> None:
        """Batches: ``run.batch_size`` clips per process per forward (``clips_per_video`` from
        each decoded video); gradient accumulation reaches ``run.global_batch``; the
        learning rate scales linearly from ``optim.base_batch`` to the real global batch."""
        run, world = self.run, self.world  # load_config checked that batch_size is a multiple of repeated_aug
        per_step = run.batch_size * world.world_size
        accum = 1
        clips = num_videos * clips_per_video
        if run.global_batch and run.global_batch > clips:  # refused, not clipped: the lr would be scaled for clips never seen
            raise HieraVideoError(
                f"run.global_batch ({run.global_batch}) is larger than the training set ({num_videos} videos x {clips_per_video} "
                f"clips = {clips} clips per epoch): no optimizer step could see that many clips, yet the learning rate would "
                f"be scaled for them ({self.optim.lr:g} x {run.global_batch} / optim.base_batch {self.optim.base_batch} = "
                f"{scaled_lr(self.optim.lr, self.optim.base_batch, run.global_batch):g}); use run.global_batch <= {clips}, or null"
            )
        if run.global_batch:
            if run.global_batch % per_step:
                raise HieraVideoError(f"run.global_batch ({run.global_batch}) must be a multiple of batch_size x processes ({per_step})")
            accum = run.global_batch // per_step
        self.accum, self.global_batch = accum, per_step * accum
        self.sampler = EpochSampler(num_videos, world.rank, world.world_size, run.seed, run.batch_size // clips_per_video)
        micro = self.sampler.batches_per_epoch()
        if micro < 1:
            raise HieraVideoError(
                f"{num_videos} training videos are too few for one batch of {run.batch_size} clips per process "
                f"({clips_per_video} per video, {world.world_size} processes); lower run.batch_size"
            )
        self.steps_per_epoch = math.ceil(micro / accum)  # the epoch's last step may take fewer micro-batches
        self.total_steps = self.steps_per_epoch * self.optim.epochs
        self.lr = scaled_lr(self.optim.lr, self.optim.base_batch, self.global_batch)
        self.min_lr = scaled_lr(self.optim.min_lr, self.optim.base_batch, self.global_batch)
        self.info = dict(global_batch=self.global_batch, accum_steps=accum, lr=self.lr, steps_per_epoch=self.steps_per_epoch,
                         total_steps=self.total_steps, epochs=self.optim.epochs, train_videos=num_videos, processes=world.world_size)

    def prepare(self, model: nn.Module, meta: dict, generators: dict[str, torch.Generator] | None = None,
                ema: bool = False, ema_decay: float = 0.9999, compile: bool = False, resume: str | None = None) -> None:
        """Rank 0's weights on every rank; optimizer, schedule, scaler and EMA for ``model``
        (already on the device); resume from ``resume`` (``auto``: RUN_DIR/last.pt if present,
        or a path; rank 0 decides, every rank reads it); ``torch.compile``. ``meta`` goes into
        every checkpoint (labels, preprocessing...); ``generators`` are the task's own RNGs,
        saved and restored with the run."""
        o, world = self.optim, self.world
        self.model = model
        self.meta = meta
        self.generators = generators or {}
        # DDP gives every rank rank 0's weights (randomly initialised heads differ per rank until
        # now); an agreement first, as before every collective.
        self.ddp = self._wrap_ddp(model, compile) if world.distributed else None
        self.optimizer = build_optimizer(model, o.name, self.lr, o.weight_decay, tuple(o.betas), o.momentum, o.layer_decay,
                                         fused=self.device.type == "cuda")
        self.scheduler = Scheduler(self.optimizer, self.total_steps, round(o.warmup_epochs * self.steps_per_epoch), self.lr, self.min_lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.ema = ModelEMA(model, ema_decay) if ema else None  # from the broadcast weights: equal on all ranks
        path = distributed.from_main(self._resume_decision(resume), world)
        self._check_shared_folder()
        if path:
            with distributed.together(world):
                self._restore(Path(path))
            log.info("resumed from %s at epoch %d, step %d", path, self.state.epoch, self.state.step)
        wrapped = self.ddp if self.ddp is not None else model
        self.train_model: nn.Module = torch.compile(wrapped) if compile else wrapped
        with distributed.together(world):
            if world.is_main:
                write_json(self.out / "config.json", self.cfg.to_dict())
                atomic_write_text(self.out / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
                self.logger = MetricsLog(self.out, self.run.tensorboard, keep_until=self.state.step)
                log.info("training: %s", ", ".join(f"{k} {v}" for k, v in self.info.items()))

    def _wrap_ddp(self, model: nn.Module, compile: bool) -> DistributedDataParallel:
        """``DistributedDataParallel`` for the steps: gradients are averaged bucket by bucket
        while the backward pass runs (communication overlapped with computation), straight in
        the buckets (``gradient_as_bucket_view``: no copies). Every parameter of our models is
        used in every step (a micro-batch without readable clips runs a stand-in with weight
        zero, see :meth:`_stand_in`), so unused-parameter search stays off. ``static_graph``
        (DDP skips per-step graph bookkeeping) only without gradient accumulation: with
        ``no_sync()`` it crashes or silently stops averaging (pytorch/pytorch#143580, still
        open in torch 2.14). No buffer broadcast per forward: our models' buffers never change."""
        distributed.agree(self.world)
        cuda = self.device.type == "cuda"
        return DistributedDataParallel(model, device_ids=[self.device] if cuda else None, **distributed.ddp_buffer_option(),
                                       gradient_as_bucket_view=True, static_graph=self.accum == 1 and not compile)

    def _resume_decision(self, resume: str | None) -> str | None:
        """Rank 0 alone looks at the run folder (after locking it): the checkpoint to resume
        from, or None."""
        if not self.world.is_main:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock_run_folder()
        earlier = [name for name in EARLIER_RUN_FILES if (self.out / name).exists()]
        path = (self.ckpt_path if resume == "auto" else Path(resume)) if resume else None
        if resume and resume != "auto" and not path.is_file():
            raise HieraVideoError(f"--resume {resume}: checkpoint not found")
        continuing = path is not None and path.is_file() and path.resolve() == self.ckpt_path.resolve()
        if resume == "auto" and earlier == ["metrics.jsonl"]:
            earlier = []  # a run stopped before its first checkpoint: --resume auto starts over (its rows dropped)
        if earlier and not continuing:
            how = "continue it with --resume auto" if self.ckpt_path.is_file() else "it cannot be continued (no last.pt)"
            raise HieraVideoError(
                f"{self.out} already holds an earlier training run ({', '.join(earlier)}); {how}, or choose another --output"
            )
        return str(path.resolve()) if path is not None and path.is_file() else None

    def _check_shared_folder(self) -> None:
        """Rank 0 writes a random token into the run folder; every other rank must read it
        back, else the folder is not shared between the nodes (checkpoints written by rank 0
        would be invisible to them on resume)."""
        if not self.world.distributed:
            return
        marker = self.out / ".hiera-video-run"
        token = None
        with distributed.together(self.world):
            if self.world.is_main:
                token = uuid.uuid4().hex
                marker.write_text(token)
        token = distributed.from_main(token, self.world)
        with distributed.together(self.world):
            seen = marker.read_text() if marker.is_file() else None
            if seen != token or faults.active("unshared_run_folder", self.world.rank):
                raise HieraVideoError(
                    f"the run folder {self.out.resolve()} is not shared: this process on {socket.gethostname()} does not see "
                    "the file rank 0 wrote there. Put --output on storage every node mounts at the same path"
                )

    @property
    def eval_model(self) -> nn.Module:
        """The weights to evaluate and publish: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------ the loop

    def fit(self, items: Dataset, collate, loss_fn: LossFn, describe: Callable[[int], str],
            end_of_epoch: Callable[[], None] | None = None) -> bool:
        """Train to ``optim.epochs``. ``items`` (with an ``epoch`` attribute) gives one video's
        clips per index; ``collate`` turns a list of items into ``(batch or None, [(index,
        reason)] of the unreadable ones)``; ``describe(index)`` names a video for the bad-video
        list; ``end_of_epoch()`` runs on every rank after each epoch (validation; it should
        stop early when :meth:`stop_requested` says so).

        Returns True when training completed, False when it stopped early at
        ``run.halt_after_steps``. SIGINT/SIGTERM on any rank stop every rank at the same step
        after a checkpoint (:class:`~hiera_video.engine.distributed.AgreedInterrupt`, exit 130);
        a non-finite loss on any rank stops every rank with the same error.
        """
        run, state, world = self.run, self.state, self.world
        loader = DataLoader(items, batch_size=self.sampler.videos_per_batch, sampler=self.sampler, num_workers=self.cfg.data.workers,
                            collate_fn=collate, drop_last=False, persistent_workers=False, pin_memory=self.device.type == "cuda",
                            # its own generator: creating an iterator must not consume the global RNG
                            # (a resumed run creates it at another point than an uninterrupted one)
                            generator=torch.Generator().manual_seed(run.seed))
        self._items, self._collate = items, collate
        self._catch_signals()
        t_start = time.perf_counter()
        try:
            self.progress = Progress(self.console, self.total_steps, state.step) if world.is_main else None
            if state.val_pending and end_of_epoch is not None:  # the validation a signal cut short
                self._end_epoch(end_of_epoch)
                self.save_last()  # done: a later resume must not validate (and log) it again
            per_epoch = self.sampler.batches_per_epoch()
            while state.epoch < self.optim.epochs:
                items.epoch = state.epoch
                self.sampler.set_epoch(state.epoch, state.batch)
                self.train_model.train()
                batches = iter(loader)
                while state.batch < per_epoch:
                    t0 = time.perf_counter()
                    part, last_loss = self._micro_batches(batches, min(self.accum, per_epoch - state.batch), loss_fn, describe)
                    self._step(part, last_loss, t0)
                del batches
                state.epoch += 1
                state.batch = 0
                if state.epoch_loss_steps and self.logger is not None:
                    self.logger.write(dict(kind="epoch", step=state.step, epoch=state.epoch,
                                           loss=state.epoch_loss_sum / state.epoch_loss_steps, steps=state.epoch_loss_steps))
                state.epoch_loss_sum, state.epoch_loss_steps = 0.0, 0
                if end_of_epoch is not None:
                    self._end_epoch(end_of_epoch)
                self.save_last()
            return True
        except _Stop as e:
            self._write_logs(self._gather_bad())
            if str(e):
                raise AgreedInterrupt(str(e)) from None
            return False
        finally:
            self.train_seconds += time.perf_counter() - t_start
            if self.progress is not None:
                self.progress.close()
                self.progress = None

    def _end_epoch(self, end_of_epoch: Callable[[], None]) -> None:
        """Validation, then one agreement on signals: a validation that a signal cut short on
        any rank recorded nothing (its partial result is marked interrupted) and stays pending
        in the checkpoint, so ``--resume`` runs it again before training on."""
        self._cut = False
        # Validation draws no random number the training sees (an interrupted validation run
        # again on resume must leave the same RNG state as one that ran once).
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            end_of_epoch()
        rows = distributed.agree_rows(self.world, [float(self._signal or 0), float(self._cut)])
        self.state.val_pending = any(r[1] for r in rows)
        self._stop_if_signalled([int(r[0]) for r in rows])

    # ------------------------------------------------------------------ signals

    def _catch_signals(self) -> None:
        """From the first step to the end of :meth:`running` (final evaluation included),
        SIGINT/SIGTERM/SIGUSR1 only set a flag: steps act on it at their agreement, and
        evaluations stop at their next batch (:meth:`stop_requested`)."""
        if self._handlers is None:
            self._signal = None
            self._handlers = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}

    def _on_signal(self, signum, _frame) -> None:
        self._signal = self._signal or signum

    def stop_requested(self) -> bool:
        """True once this process got a stop signal: an evaluation inside the run checks it at
        every batch and stops (its result marked interrupted)."""
        if self._signal:
            self._cut = True
        return bool(self._signal)

    def stop_if_signalled(self, what: str) -> None:
        """After the final evaluation (outside :meth:`fit`): when any rank got a signal, every
        rank stops with exit 130. Training is complete and saved; ``--resume auto`` evaluates."""
        rows = distributed.agree_rows(self.world, [float(self._signal or 0)])
        for rank, r in enumerate(rows):
            if r[0]:
                by = f" (received by rank {rank}; every process stopped)" if self.world.distributed else ""
                raise AgreedInterrupt(
                    f"{signal.Signals(int(r[0])).name}{by} during {what}: training is complete and saved in {self.ckpt_path}; "
                    "run the same command with --resume auto to evaluate"
                )

    # ------------------------------------------------------------------ the step

    def _micro_batches(self, batches, count: int, loss_fn: LossFn, describe) -> tuple[dict, torch.Tensor | None]:
        """This rank's part of one step, without any collective: ``count`` micro-batches, all
        but the last forward and backward under DDP's ``no_sync()`` (gradients add up locally),
        the last one forward only. Returns what the step's agreement needs and the last
        micro-batch's weighted loss, whose backward (which exchanges the gradients) waits for
        the agreement. An error or a non-finite loss ends the part early, with no loss."""
        state, rank = self.state, self.world.rank
        part = dict(clips=0, loss_sum=0.0, bad=0, nonfinite=None, error=None)
        for k in range(count):
            last = k == count - 1
            try:
                batch, bad = next(batches)
            except Exception as e:  # a DataLoader worker died (native crash, out of memory...)
                part["error"] = f"reading training data failed at epoch {state.epoch}, step {state.step}: {type(e).__name__}: {e}"
                return part, None
            state.batch += 1
            part["bad"] += len(bad)
            self._note_bad(bad, describe)
            if faults.active("hang", rank, state.step + 1):
                time.sleep(3600)
            try:
                stand_in = batch is None  # every item unreadable: this rank adds no clips to the step
                batch = self._stand_in() if stand_in else batch
                with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                    with autocast(self.device, self.amp):
                        loss, n = loss_fn(self.train_model, batch)
                    if faults.active("nan_loss", rank, state.step + 1):
                        loss = loss * float("nan")
                    value = loss.item()
                    if not math.isfinite(value):
                        part["nonfinite"] = value
                        return part, None
                    n = 0 if stand_in else n
                    # Weigh the micro-batch by its clips (x processes: DDP averages over them);
                    # a full step sums to the mean over clips (see _step).
                    weighted = self.scaler.scale(loss * (n * self.world.world_size / self.global_batch))
                    part["clips"] += n
                    part["loss_sum"] += value * n
                    if last:
                        return part, weighted
                    weighted.backward()
            except Exception as e:
                part["error"] = f"training failed at epoch {state.epoch}, step {state.step + 1}: {type(e).__name__}: {e}"
                return part, None
        raise AssertionError("unreachable: the last micro-batch returns")

    def _stand_in(self):
        """A batch for a micro-batch with no readable clip on this rank. DDP averages gradients
        during every rank's backward pass, so this rank runs one too, with weight zero, on the
        epoch's first readable training item. It depends on the epoch alone (not on what this
        rank read before), so a resumed run draws the same random numbers for it (mixup,
        masks) as an uninterrupted one."""
        epoch = self.state.epoch
        if self._stand_in_batch is None or self._stand_in_batch[0] != epoch:
            for index in range(min(len(self._items), STAND_IN_TRIES)):
                batch, _ = self._collate([self._items[index]])
                if batch is not None:
                    self._stand_in_batch = (epoch, batch)
                    break
            else:
                raise HieraVideoError(f"none of the first {STAND_IN_TRIES} training videos could be read; check them with "
                                      "hiera-video check-videos")
        return self._stand_in_batch[1]

    def _step(self, local: dict, last_loss: torch.Tensor | None, t0: float) -> None:
        """The step's agreement: ONE small all-reduce (:func:`~hiera_video.engine.distributed.agree_rows`)
        of each rank's clips, loss sum, skipped videos, error and non-finite flags and signal,
        after the last micro-batch's forward and before its backward. A failing or diverging
        rank stops every rank there, before any gradient is exchanged (an error's text is
        gathered only then). Otherwise every rank runs the last backward (DDP averages the
        gradients bucket by bucket while it runs), the gradient is rescaled to the mean over
        the clips present, clipped, and the optimizer steps; then logging, checkpoints and
        agreed stops."""
        run, state, world = self.run, self.state, self.world
        rows = distributed.agree_rows(world, [local["clips"], local["loss_sum"], local["bad"], float(local["error"] is not None),
                                              float(local["nonfinite"] is not None), local["nonfinite"] or 0.0,
                                              float(self._signal or 0)])
        if any(r[3] for r in rows):  # some rank failed: hear its reason (raises on every rank)
            distributed.agree(world, HieraVideoError(local["error"]) if local["error"] else None)
        for rank, r in enumerate(rows):
            if r[4]:
                last = f"the last good checkpoint is {self.ckpt_path}" if self.ckpt_path.is_file() else "no checkpoint was written yet"
                where = f" on rank {rank}" if world.distributed else ""
                raise Agreed(
                    f"loss is {r[5]}{where} at epoch {state.epoch}, step {state.step + 1}: training diverged; "
                    f"{last}. Lower optim.lr or check the data, then --resume auto"
                )
        clips = round(sum(r[0] for r in rows))
        state.bad_videos += round(sum(r[2] for r in rows))
        try:
            last_loss.backward()
        except Exception as e:  # e.g. out of memory: the others wait in DDP's all-reduce, which cannot be agreed
            raise Agreed(
                f"rank {world.rank} ({socket.gethostname()}): training failed in the backward pass of step {state.step + 1}: "
                f"{type(e).__name__}: {e}" + ("; the other processes cannot be told and stop when the collective "
                                              "timeout (run.dist_timeout) ends" if world.distributed else "")
            ) from None
        lr_now = self.scheduler.step()
        if clips:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if clips != self.global_batch:  # backward weighed by n / global_batch: make it n / clips
                torch._foreach_mul_(grads, self.global_batch / clips)
            if self.optim.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.optim.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            log.warning("step %d: no readable clip on any process; the weights are not updated", state.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        state.step += 1
        if faults.active("diverge", world.rank, state.step):
            with torch.no_grad():
                next(self.model.parameters()).add_(1e-3)
        loss = sum(r[1] for r in rows) / clips if clips else float("nan")
        if clips:
            state.epoch_loss_sum += loss
            state.epoch_loss_steps += 1
        rate = clips / max(time.perf_counter() - t0, 1e-9)
        if self.progress is not None:
            self.progress.update(state, loss, lr_now, rate)
        if self.logger is not None and state.step % run.log_every == 0:
            self.logger.write(dict(kind="train", step=state.step, epoch=state.epoch, loss=loss, lr=lr_now, clips_per_s=rate))
        if faults.active("sigterm", world.rank, state.step):
            os.kill(os.getpid(), signal.SIGTERM)
        signals = [round(r[6]) for r in rows]
        if run.ckpt_every_steps and state.step % run.ckpt_every_steps == 0 and not any(signals):
            self.save_last()
        self._stop_if_signalled(signals)
        if run.halt_after_steps and state.step >= run.halt_after_steps:
            self.save_last()
            raise _Stop("")

    def _stop_if_signalled(self, signals: list[int]) -> None:
        """When any rank got SIGINT/SIGTERM (the agreed list), every rank checkpoints and stops."""
        for rank, signum in enumerate(signals):
            if signum:
                self.save_last()
                by = f" (received by rank {rank}; every process stopped)" if self.world.distributed else ""
                raise _Stop(f"{signal.Signals(signum).name}{by} at step {self.state.step}: checkpoint saved to "
                            f"{self.ckpt_path}; continue with --resume auto")

    def _note_bad(self, bad: list[tuple[int, str]], describe: Callable[[int], str]) -> None:
        for idx, reason in bad:
            name = describe(idx)
            if all(name != p for p, _ in self.bad):
                log.warning("skipped training video (and will skip it again): %s", reason)
            self.bad.append((name, reason))

    # ------------------------------------------------------------------ results

    def note_val(self, metrics: dict | None, key: str, best_path: Path) -> None:
        """Record a validation (``metrics`` on rank 0, None elsewhere); when ``metrics[key]`` is
        the best so far (rank 0 decides), every rank joins publishing it to ``best_path``."""
        state, is_best = self.state, False
        if self.world.is_main and metrics is not None:
            if self.logger is not None:
                self.logger.write(dict(kind="val", step=state.step, epoch=state.epoch, **metrics))
            if self.progress is not None:
                self.progress.note(f"epoch {state.epoch}: val {key} {metrics[key]:.4g}")
            is_best = metrics.get(key) is not None and not metrics[key] <= state.best_val
            if is_best:
                state.best_val = metrics[key]
            write_report_safely(self.out)  # report.html, updated at every validation (a failure is a warning)
        if distributed.from_main(is_best, self.world):
            self.save_published(best_path, dict(val=metrics))

    def ensure_published(self, path: Path) -> None:
        """Publish the final weights to ``path`` unless a validation already did (rank 0 looks)."""
        if distributed.from_main(not path.exists(), self.world):
            self.save_published(path)

    def save_published(self, path: Path, extra: dict | None = None) -> None:
        """Weights only (the EMA copy when there is one) with the run's meta: for predict/eval.
        Rank 0 writes; every rank learns whether it worked."""
        with distributed.together(self.world):
            if self.world.is_main:
                save_checkpoint(path, self.eval_model, dict(self.meta, epoch=self.state.epoch, **(extra or {})))

    def finish(self, summary: dict, val_key: str | None = None) -> dict:
        """Rank 0 writes ``metrics.json`` (``summary`` + the run's numbers), ``bad_videos.csv``
        (every rank's skips) and ``curves.png``. Returns the full summary on rank 0, {}
        elsewhere."""
        full = {}
        bad = self._gather_bad()
        with distributed.together(self.world):
            if self.world.is_main:
                state = self.state
                full = {**self.info, **summary, "epochs_done": state.epoch, "steps": state.step,
                        "train_seconds": round(self.train_seconds, 1), "bad_training_videos": state.bad_videos}
                write_json(self.out / "metrics.json", full)
                self._write_logs(bad)
                plot_curves(self.out / "metrics.jsonl", self.out / "curves.png", val_key)
                write_report_safely(self.out)  # report.html of the finished run (a failure is a warning)
        return full

    def _gather_bad(self) -> list[tuple[str, str]]:
        """Every rank's skipped items, unique and sorted (on every rank)."""
        return _merged_bad(distributed.agree(self.world, bad=[list(b) for b in self.bad]))

    def _write_logs(self, bad: list[tuple[str, str]]) -> None:
        if not self.world.is_main:
            return
        if self.logger is not None:
            self.logger.close()
        if bad:
            write_csv(self.out / "bad_videos.csv", ["path", "reason"], bad)

    # ------------------------------------------------------------------ checkpoints

    def save_last(self) -> None:
        """All ranks: agree on the per-rank RNG states, skipped items and weight fingerprints
        (different fingerprints = the ranks diverged: every rank stops); rank 0 writes
        RUN_DIR/last.pt atomically (a temporary file renamed), every rank learns the outcome."""
        modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
        parts = distributed.agree(self.world, rng=rng_state(self.generators), fp=fingerprint(modules) if self.world.distributed else None,
                                  bad=[list(b) for b in self.bad])
        differ = [rank for rank, p in enumerate(parts) if p["fp"] != parts[0]["fp"]]
        if differ:
            raise Agreed(
                f"the processes' weights diverged at step {self.state.step} (rank(s) {differ} differ from rank 0): "
                f"this is a bug or a hardware fault; the last consistent checkpoint is {self.ckpt_path}"
            )
        with distributed.together(self.world):
            if self.world.is_main:
                bad = _merged_bad(parts)
                save_checkpoint(
                    self.ckpt_path, self.model, self.meta, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                    ema=self.ema.state_dict() if self.ema else None, run_state=dict(vars(self.state)),
                    rng=[p["rng"] for p in parts], world_size=self.world.world_size, bad_videos=[list(b) for b in bad],
                )

    def _restore(self, path: Path) -> None:
        if faults.active("unreadable_checkpoint", self.world.rank):
            raise HieraVideoError(f"cannot read checkpoint {path}: permission denied (injected fault)")
        try:
            ckpt = load_training_state(path)
        except HieraVideoError as e:
            if self.world.world_size <= 1:  # the shared-storage hint is only about several processes
                raise
            raise HieraVideoError(f"{e} (every process must see the run folder: put --output on storage all nodes share)") from None
        if ckpt.get("world_size", 1) != self.world.world_size:
            raise HieraVideoError(
                f"{path} was written by {ckpt.get('world_size')} processes but this run has {self.world.world_size}; "
                "resume with the same number of processes (the data order and RNG streams depend on it)"
            )
        if "optimizer" not in ckpt or "run_state" not in ckpt:
            raise HieraVideoError(f"{path} holds weights only (no optimizer or run state); pass it as --weights to start from it")
        check_resumable(ckpt, self.model, path)  # another model: one line, not a size-mismatch traceback
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        for k, v in ckpt["run_state"].items():
            setattr(self.state, k, v)
        set_rng_state(ckpt["rng"][self.world.rank], self.generators)
        if self.world.is_main:  # the skips before the interruption (the others' are in it too)
            self.bad = [tuple(b) for b in ckpt.get("bad_videos", [])]
