"""The training engine shared by ``finetune``, ``pretrain`` and AVA finetuning: a task builds its
model and items and says how a batch becomes a loss; :class:`Trainer` does the rest
(``plan`` -> ``prepare`` -> ``fit`` -> ``finish``, inside ``running()``).

Multi-process rule (DDP): a step's micro-batches but the last run forward and backward under
``no_sync()``; the last runs its forward, then the step's ONE agreement (a small all-reduce,
:func:`~hiera_video.engine.distributed.agree_rows`: clips, loss, skips, signal, non-finite and
error flags), and only then its backward, during which DDP averages the gradients. So a failing
or diverging rank stops every rank before any gradient is exchanged, and a signal stops all at
the same step. A rank whose micro-batch was all unreadable runs a stand-in batch with weight zero
so DDP's reducer meets every rank; gradients are rescaled to the mean over the clips present.
A failure inside the last backward (e.g. out of memory) cannot be agreed: the others stop at the
collective timeout. An epoch's last step takes the remaining micro-batches (no gradient crosses
an epoch). Exact resume: items are seeded by ``(seed, epoch, index)``, the sampler restarts at
the saved batch, and checkpoints hold every rank's RNG states (and check the ranks' weights agree).
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from hiera_video.engine import distributed
from hiera_video.engine.distributed import Agreed, AgreedInterrupt
from hiera_video.engine.ema import ModelEMA
from hiera_video.engine.output_lock import check_shared_folder, claim_run_folder
from hiera_video.engine.optim import build_optimizer, scaled_lr
from hiera_video.engine.schedule import Scheduler
from hiera_video.engine.state import rng_state, set_rng_state
from hiera_video.engine.train_data import EpochSampler
from hiera_video.engine.train_log import MetricsLog, Progress, plot_curves
from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints import check_resumable, load_training_state, save_checkpoint
from hiera_video.html_report import write_report_safely
from hiera_video.report import atomic_write_text, check_output, write_csv, write_json
from hiera_video.runtime import DTYPES, autocast, autocast_dtype

log = logging.getLogger("hiera_video")

# ``loss_fn(model, batch) -> (mean loss over the batch, clips in this batch)``
LossFn = Callable[[nn.Module, object], "tuple[torch.Tensor, int]"]


@dataclass
class RunState:
    """Where a run is; saved in every checkpoint."""

    epoch: int = 0
    batch: int = 0  # batches of the current epoch already consumed
    step: int = 0  # optimizer steps done
    best_val: float = -math.inf  # top-1 or mAP
    bad_videos: int = 0  # unreadable training items skipped, all ranks, all epochs
    epoch_loss_sum: float = 0.0
    epoch_loss_steps: int = 0
    val_pending: bool = False  # a signal cut the last epoch's validation short: run it on resume

# Signals that stop a run with a checkpoint (SIGUSR1: SLURM's --signal=USR1@SECONDS early warning).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, n))
STAND_IN_TRIES = 32


class _Stop(Exception):
    """Raised inside the loop once a checkpoint is written: the agreed reason ('' = halt)."""


def precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training (None = fp32). ``auto``: bf16 on GPUs with native bf16, fp16
    (with the grad scaler) on older GPUs, fp32 on CPU."""
    if name == "auto":
        return autocast_dtype(device) if device.type == "cuda" else None
    if name == "fp16" and device.type != "cuda":
        raise HieraVideoError("fp16 training needs a GPU; use run.precision=bf16 or fp32 on CPU")
    return DTYPES[name]


def _merged_bad(parts: list[dict]) -> list[tuple[str, str]]:
    """The skipped items of every rank's ``bad`` payload, unique and sorted."""
    return sorted({(path, reason) for part in parts for path, reason in part["bad"]})


@torch.no_grad()
def fingerprint(modules: list[nn.Module]) -> list[float]:
    """Plain and absolute float64 sums of every float tensor: equal on all ranks = in sync."""
    sums = [torch.stack([t.double().sum(), t.double().abs().sum()]) for m in modules for t in m.state_dict().values()
            if t.is_floating_point()]
    return torch.stack(sums).flatten().tolist() if sums else []


class Trainer:
    """One training run. ``cfg`` needs ``run``, ``optim`` and ``data`` sections and ``to_dict()``."""

    def __init__(self, cfg, console=None):
        if not cfg.run.output:
            raise HieraVideoError("no run folder: pass --output RUN_DIR")
        check_output(cfg.run.output, "--output (run.output)", "dir")  # before any work
        self.cfg, self.run, self.optim, self.out, self.console = cfg, cfg.run, cfg.optim, Path(cfg.run.output), console
        self.world, self.device = distributed.start(cfg.run.device, getattr(cfg.run, "dist_timeout", None))
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.run.seed + self.world.rank)
        self.amp = precision(cfg.run.precision, self.device)
        self.state, self.ckpt_path = RunState(), self.out / "last.pt"
        self.bad: list[tuple[str, str]] = []  # this rank's skipped items (path, reason)
        self.logger: MetricsLog | None = None
        self.progress: Progress | None = None
        self.info: dict = {}
        self.train_seconds = 0.0
        self.ema = self._lock = self._handlers = self._signal = self._stand_in_batch = None
        self.ddp: DistributedDataParallel | None = None
        self._cut = False  # an evaluation stopped early for a signal (since the last epoch's end)

    @contextmanager
    def running(self):
        """The context a task runs in: a failure on any rank ends every rank with its reason; the
        lock is released and the process group left at the end."""
        try:
            with distributed.together(self.world):
                yield self
        finally:
            for s, h in (self._handlers or {}).items():
                signal.signal(s, h)
            if self._lock is not None:
                self._lock.close()
            distributed.cleanup(self.world)

    def plan(self, num_videos: int, clips_per_video: int) -> None:
        """``run.batch_size`` clips per process per forward; gradient accumulation reaches
        ``run.global_batch``; the lr scales linearly from ``optim.base_batch`` to the global batch."""
        run, world = self.run, self.world
        per_step, accum, clips = run.batch_size * world.world_size, 1, num_videos * clips_per_video
        if run.global_batch and run.global_batch > clips:
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
        self.steps_per_epoch = math.ceil(micro / accum)
        self.total_steps = self.steps_per_epoch * self.optim.epochs
        self.lr = scaled_lr(self.optim.lr, self.optim.base_batch, self.global_batch)
        self.min_lr = scaled_lr(self.optim.min_lr, self.optim.base_batch, self.global_batch)
        self.info = dict(global_batch=self.global_batch, accum_steps=accum, lr=self.lr, steps_per_epoch=self.steps_per_epoch,
                         total_steps=self.total_steps, epochs=self.optim.epochs, train_videos=num_videos, processes=world.world_size)

    def prepare(self, model: nn.Module, meta: dict, generators: dict[str, torch.Generator] | None = None,
                ema: bool = False, ema_decay: float = 0.9999, compile: bool = False, resume: str | None = None) -> None:
        """Rank 0's weights on every rank (DDP); optimizer, schedule, scaler, EMA; resume from
        ``resume`` (``auto``: RUN_DIR/last.pt if present, or a path); ``torch.compile``. ``meta``
        goes into every checkpoint; ``generators`` (the task's RNGs) are saved and restored."""
        o, world = self.optim, self.world
        self.model, self.meta, self.generators = model, meta, generators or {}
        self.ddp = self._wrap_ddp(model, compile) if world.distributed else None
        self.optimizer = build_optimizer(model, o.name, self.lr, o.weight_decay, tuple(o.betas), o.momentum, o.layer_decay,
                                         fused=self.device.type == "cuda")
        self.scheduler = Scheduler(self.optimizer, self.total_steps, round(o.warmup_epochs * self.steps_per_epoch), self.lr, self.min_lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.ema = ModelEMA(model, ema_decay) if ema else None  # from the broadcast weights
        path = None
        if world.is_main:
            self._lock, path = claim_run_folder(self.out, self.ckpt_path, resume, self.run.lock)
        path = distributed.from_main(path, world)
        check_shared_folder(self.out, world)
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
        """DDP with gradients straight in the buckets. Every parameter is used in every step (see
        :meth:`_stand_in`): no unused-parameter search. ``static_graph`` only without gradient
        accumulation: with ``no_sync()`` it crashes or silently stops averaging
        (pytorch/pytorch#143580). No buffer broadcast per forward: our buffers never change."""
        distributed.agree(self.world)
        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None,
                                       **distributed.ddp_buffer_option(),
                                       gradient_as_bucket_view=True, static_graph=self.accum == 1 and not compile)

    @property
    def eval_model(self) -> nn.Module:
        """The weights to evaluate and publish (the EMA copy when there is one)."""
        return self.ema.module if self.ema is not None else self.model

    def fit(self, items: Dataset, collate, loss_fn: LossFn, describe: Callable[[int], str],
            end_of_epoch: Callable[[], None] | None = None) -> bool:
        """Train to ``optim.epochs``. ``collate`` makes ``(batch or None, indices, [(index, reason)]
        of unreadable items)``; ``describe(index)`` names a video; ``end_of_epoch()`` (validation)
        runs on every rank and should stop early when :meth:`stop_requested`. Returns False when
        stopped at ``run.halt_after_steps``; a signal on any rank stops all after a checkpoint
        (:class:`AgreedInterrupt`, exit 130)."""
        run, state, world = self.run, self.state, self.world
        loader = DataLoader(items, batch_size=self.sampler.videos_per_batch, sampler=self.sampler, num_workers=self.cfg.data.workers,
                            collate_fn=collate, drop_last=False, persistent_workers=False, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(run.seed))
        self._items, self._collate = items, collate
        self._catch_signals()
        t_start = time.perf_counter()
        try:
            self.progress = Progress(self.console, self.total_steps, state.step) if world.is_main else None
            if state.val_pending and end_of_epoch is not None:  # the validation a signal cut short
                self._end_epoch(end_of_epoch)
                self.save_last()  # a later resume must not validate it again
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
        """Validation (in a forked RNG), then one agreement on signals: a validation a signal cut
        short on any rank stays pending in the checkpoint, run again on ``--resume``."""
        self._cut = False
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            end_of_epoch()
        rows = distributed.agree_rows(self.world, [float(self._signal or 0), float(self._cut)])
        self.state.val_pending = any(r[1] for r in rows)
        self._stop_if_signalled([int(r[0]) for r in rows])

    def _catch_signals(self) -> None:
        """Until :meth:`running` ends, stop signals only set a flag that steps agree on."""
        if self._handlers is None:
            self._signal = None
            self._handlers = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}

    def _on_signal(self, signum, _frame) -> None:
        self._signal = self._signal or signum

    def stop_requested(self) -> bool:
        """True once this process got a stop signal (evaluations check it at every batch)."""
        if self._signal:
            self._cut = True
        return bool(self._signal)

    def stop_if_signalled(self, what: str) -> None:
        """After the final evaluation: when any rank got a signal, every rank stops (exit 130)."""
        rows = distributed.agree_rows(self.world, [float(self._signal or 0)])
        for rank, r in enumerate(rows):
            if r[0]:
                by = f" (received by rank {rank}; every process stopped)" if self.world.distributed else ""
                raise AgreedInterrupt(
                    f"{signal.Signals(int(r[0])).name}{by} during {what}: training is complete and saved in {self.ckpt_path}; "
                    "run the same command with --resume auto to evaluate"
                )

    def _micro_batches(self, batches, count: int, loss_fn: LossFn, describe) -> tuple[dict, torch.Tensor | None]:
        """This rank's part of a step, without collectives: ``count`` micro-batches, all but the last
        forward and backward under ``no_sync()``, the last forward only. Returns the agreement's
        numbers and the last weighted loss (its backward waits for the agreement); an error or a
        non-finite loss ends it early with no loss."""
        state = self.state
        part = dict(clips=0, loss_sum=0.0, bad=0, nonfinite=None, error=None)
        for k in range(count):
            last = k == count - 1
            try:
                batch, _, bad = next(batches)
            except Exception as e:  # a DataLoader worker died
                part["error"] = f"reading training data failed at epoch {state.epoch}, step {state.step}: {type(e).__name__}: {e}"
                return part, None
            state.batch += 1
            part["bad"] += len(bad)
            self._note_bad(bad, describe)
            try:
                stand_in = batch is None
                batch = self._stand_in() if stand_in else batch
                with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                    with autocast(self.device, self.amp):
                        loss, n = loss_fn(self.train_model, batch)
                    value = loss.item()
                    if not math.isfinite(value):
                        part["nonfinite"] = value
                        return part, None
                    n = 0 if stand_in else n
                    # Weighed by its clips (x processes: DDP averages); a full step sums to the mean over clips.
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
        """For a micro-batch with no readable clip: the epoch's first readable item (run with weight
        zero so DDP meets every rank; it depends on the epoch alone, so resume draws the same RNG)."""
        epoch = self.state.epoch
        if self._stand_in_batch is None or self._stand_in_batch[0] != epoch:
            for index in range(min(len(self._items), STAND_IN_TRIES)):
                batch, *_ = self._collate([self._items[index]])
                if batch is not None:
                    self._stand_in_batch = (epoch, batch)
                    break
            else:
                raise HieraVideoError(f"none of the first {STAND_IN_TRIES} training videos could be read; check them with "
                                      "hiera-video check-videos")
        return self._stand_in_batch[1]

    def _step(self, local: dict, last_loss: torch.Tensor | None, t0: float) -> None:
        """The step's ONE agreement (see the module docstring), then the last backward, rescale to
        the mean over clips present, clip, optimizer step, logging, checkpoints, agreed stops."""
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
                raise Agreed(f"loss is {r[5]}{where} at epoch {state.epoch}, step {state.step + 1}: training diverged; "
                             f"{last}. Lower optim.lr or check the data, then --resume auto")
        clips = round(sum(r[0] for r in rows))
        state.bad_videos += round(sum(r[2] for r in rows))
        try:
            last_loss.backward()
        except Exception as e:  # e.g. out of memory: the others wait in DDP's all-reduce
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
        loss = sum(r[1] for r in rows) / clips if clips else float("nan")
        if clips:
            state.epoch_loss_sum += loss
            state.epoch_loss_steps += 1
        rate = clips / max(time.perf_counter() - t0, 1e-9)
        if self.progress is not None:
            self.progress.update(state, loss, lr_now, rate)
        if self.logger is not None and state.step % run.log_every == 0:
            self.logger.write(dict(kind="train", step=state.step, epoch=state.epoch, loss=loss, lr=lr_now, clips_per_s=rate))
        signals = [round(r[6]) for r in rows]
        if run.ckpt_every_steps and state.step % run.ckpt_every_steps == 0 and not any(signals):
            self.save_last()
        self._stop_if_signalled(signals)
        if run.halt_after_steps and state.step >= run.halt_after_steps:
            self.save_last()
            raise _Stop("")

    def _stop_if_signalled(self, signals: list[int]) -> None:
        """When any rank got a stop signal (the agreed list), every rank checkpoints and stops."""
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

    def note_val(self, metrics: dict | None, key: str, best_path: Path) -> None:
        """Record a validation (``metrics`` on rank 0); publish ``best_path`` when it is the best so far."""
        state, is_best = self.state, False
        if self.world.is_main and metrics is not None:
            if self.logger is not None:
                self.logger.write(dict(kind="val", step=state.step, epoch=state.epoch, **metrics))
            if self.progress is not None:
                self.progress.note(f"epoch {state.epoch}: val {key} {metrics[key]:.4g}")
            is_best = metrics.get(key) is not None and not metrics[key] <= state.best_val
            if is_best:
                state.best_val = metrics[key]
            write_report_safely(self.out)
        if distributed.from_main(is_best, self.world):
            self.save_published(best_path, dict(val=metrics))

    def ensure_published(self, path: Path) -> None:
        """Publish the final weights to ``path`` unless a validation already did."""
        if distributed.from_main(not path.exists(), self.world):
            self.save_published(path)

    def save_published(self, path: Path, extra: dict | None = None) -> None:
        """Weights only (EMA copy if any) with the run's meta, for predict/eval; rank 0 writes."""
        with distributed.together(self.world):
            if self.world.is_main:
                save_checkpoint(path, self.eval_model, dict(self.meta, epoch=self.state.epoch, **(extra or {})))

    def finish(self, summary: dict, val_key: str | None = None) -> dict:
        """Rank 0 writes metrics.json, bad_videos.csv and curves.png; returns the summary ({} elsewhere)."""
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
                write_report_safely(self.out)
        return full

    def _gather_bad(self) -> list[tuple[str, str]]:
        return _merged_bad(distributed.agree(self.world, bad=[list(b) for b in self.bad]))

    def _write_logs(self, bad: list[tuple[str, str]]) -> None:
        if not self.world.is_main:
            return
        if self.logger is not None:
            self.logger.close()
        if bad:
            write_csv(self.out / "bad_videos.csv", ["path", "reason"], bad)

    def save_last(self) -> None:
        """All ranks agree on RNG states, skips and weight fingerprints (ranks that differ stop all);
        rank 0 writes RUN_DIR/last.pt atomically."""
        modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
        parts = distributed.agree(self.world, rng=rng_state(self.generators), fp=fingerprint(modules) if self.world.distributed else None,
                                  bad=[list(b) for b in self.bad])
        differ = [rank for rank, p in enumerate(parts) if p["fp"] != parts[0]["fp"]]
        if differ:
            raise Agreed(f"the processes' weights diverged at step {self.state.step} (rank(s) {differ} differ from rank 0): "
                         f"this is a bug or a hardware fault; the last consistent checkpoint is {self.ckpt_path}")
        with distributed.together(self.world):
            if self.world.is_main:
                bad = _merged_bad(parts)
                save_checkpoint(
                    self.ckpt_path, self.model, self.meta, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                    ema=self.ema.state_dict() if self.ema else None, run_state=dict(vars(self.state)),
                    rng=[p["rng"] for p in parts], world_size=self.world.world_size, bad_videos=[list(b) for b in bad],
                )

    def _restore(self, path: Path) -> None:
        try:
            ckpt = load_training_state(path)
        except HieraVideoError as e:
            if self.world.world_size <= 1:
                raise
            raise HieraVideoError(f"{e} (every process must see the run folder: put --output on storage all nodes share)") from None
        if ckpt.get("world_size", 1) != self.world.world_size:
            raise HieraVideoError(
                f"{path} was written by {ckpt.get('world_size')} processes but this run has {self.world.world_size}; "
                "resume with the same number of processes (the data order and RNG streams depend on it)"
            )
        if "optimizer" not in ckpt or "run_state" not in ckpt:
            raise HieraVideoError(f"{path} holds weights only (no optimizer or run state); pass it as --weights to start from it")
        check_resumable(ckpt, self.model, path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        for k, v in ckpt["run_state"].items():
            setattr(self.state, k, v)
        set_rng_state(ckpt["rng"][self.world.rank], self.generators)
        if self.world.is_main:  # every rank's skips before the interruption
            self.bad = [tuple(b) for b in ckpt.get("bad_videos", [])]
