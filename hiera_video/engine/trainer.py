"""The training engine that ``finetune``, ``pretrain`` and AVA finetuning share.

A task (classification, MAE, AVA detection) builds its model and its training items and
says how a batch becomes a loss; :class:`Trainer` does everything else, the same way for all:

    Trainer(cfg)                 device, torchrun processes, seeds, autocast dtype
    .plan(num_videos, k)         per-process batch, gradient accumulation, global batch, steps
    .prepare(model, ...)         optimizer (layer decay, no decay on 1-D params), warmup+cosine,
                                 grad scaler, EMA, resume, DDP / torch.compile wrapping
    .fit(items, collate, loss)   epochs of: batch -> loss -> backward (accumulated) -> clip ->
                                 step -> log / checkpoint; bad videos skipped and listed;
                                 SIGINT/SIGTERM -> checkpoint + exit 130; NaN -> stop
    .finish(summary)             metrics.json, bad_videos.csv, curves.png

Exact resume: every random choice of a training item comes from ``(seed, epoch, index)``
(see :mod:`hiera_video.engine.train_data`), the sampler restarts at the saved batch, and the
checkpoint holds model, optimizer, schedule, scaler, EMA, the run state and every rank's RNG
states; a resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from hiera_video import errors
from hiera_video.engine import distributed
from hiera_video.engine.ema import ModelEMA
from hiera_video.engine.optim import build_optimizer, scaled_lr
from hiera_video.engine.schedule import Scheduler
from hiera_video.engine.state import rng_state, set_rng_state
from hiera_video.engine.train_data import EpochSampler
from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints import load_training_state, save_checkpoint
from hiera_video.report import write_csv, write_json
from hiera_video.runtime import pick_device

log = logging.getLogger("hiera_video")

# ``loss_fn(model, batch) -> (loss, clips in this batch)``; ``batch`` is the collated value.
LossFn = Callable[[nn.Module, object], "tuple[torch.Tensor, int]"]


@dataclass
class RunState:
    """Where a run is; saved in every checkpoint."""

    epoch: int = 0  # current epoch
    batch: int = 0  # batches of the current epoch already consumed
    step: int = 0  # optimizer steps done
    best_val: float = -math.inf  # best validation score so far (top-1 or mAP)
    bad_videos: int = 0
    epoch_loss_sum: float = 0.0  # this epoch's step losses so far (for the epoch mean)
    epoch_loss_steps: int = 0


class _Stop(Exception):
    """Raised inside the loop once a checkpoint is written: signal number, or 0 for a halt."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training (None = fp32)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if name == "fp16" and device.type != "cuda":
        raise HieraVideoError("fp16 training needs a GPU; use run.precision=bf16 or fp32 on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


class Trainer:
    """One training run. ``cfg`` needs ``run`` and ``optim`` sections (finetune and pretrain
    configs both have them) and ``to_dict()``."""

    def __init__(self, cfg, console=None):
        if not cfg.run.output:
            raise HieraVideoError("no run folder: pass --output RUN_DIR")
        self.cfg, self.run, self.optim = cfg, cfg.run, cfg.optim
        self.out = Path(cfg.run.output)
        self.console = console
        device = pick_device(cfg.run.device)
        self.world = distributed.init(device.type)
        if device.type == "cuda" and self.world.distributed:
            device = torch.device("cuda", self.world.local_rank)
        self.device = device
        torch.manual_seed(cfg.run.seed + self.world.rank)
        self.amp = precision(cfg.run.precision, device)
        self.state = RunState()
        self.ckpt_path = self.out / "last.pt"
        self.bad: list[tuple[str, str]] = []
        self.logger: MetricsLog | None = None
        self.progress: _Progress | None = None
        self.info: dict = {}
        self.train_seconds = 0.0

    # ------------------------------------------------------------------ setup

    def plan(self, num_videos: int, clips_per_video: int) -> None:
        """Batches: ``run.batch_size`` clips per process per forward (``clips_per_video`` from
        each decoded video); gradient accumulation reaches ``run.global_batch``; the
        learning rate scales linearly from ``optim.base_batch`` to the real global batch."""
        run, world = self.run, self.world  # load_config checked that batch_size is a multiple of repeated_aug
        per_step = run.batch_size * world.world_size
        accum = 1
        if run.global_batch:
            if run.global_batch % per_step:
                raise HieraVideoError(f"run.global_batch ({run.global_batch}) must be a multiple of batch_size x processes ({per_step})")
            accum = run.global_batch // per_step
        self.accum, self.global_batch = accum, per_step * accum
        self.sampler = EpochSampler(num_videos, world.rank, world.world_size, run.seed, run.batch_size // clips_per_video)
        self.steps_per_epoch = self.sampler.batches_per_epoch() // accum
        if self.steps_per_epoch < 1:
            raise HieraVideoError(
                f"{num_videos} training videos are too few for one step of {self.global_batch} clips "
                f"({clips_per_video} per video); lower run.batch_size or run.global_batch"
            )
        self.total_steps = self.steps_per_epoch * self.optim.epochs
        self.lr = scaled_lr(self.optim.lr, self.optim.base_batch, self.global_batch)
        self.min_lr = scaled_lr(self.optim.min_lr, self.optim.base_batch, self.global_batch)
        self.info = dict(global_batch=self.global_batch, accum_steps=accum, lr=self.lr, steps_per_epoch=self.steps_per_epoch,
                         total_steps=self.total_steps, epochs=self.optim.epochs, train_videos=num_videos, processes=world.world_size)

    def prepare(self, model: nn.Module, meta: dict, generators: dict[str, torch.Generator] | None = None,
                ema: bool = False, ema_decay: float = 0.9999, compile: bool = False, resume: str | None = None) -> None:
        """Optimizer, schedule, scaler and EMA for ``model`` (already on the device); resume
        from ``resume`` (``auto``: RUN_DIR/last.pt if present, or a path); wrap for DDP and
        ``torch.compile``. ``meta`` goes into every checkpoint (labels, preprocessing...);
        ``generators`` are the task's own RNGs, saved and restored with the run."""
        o = self.optim
        self.model = model
        self.meta = meta
        self.generators = generators or {}
        self.optimizer = build_optimizer(model, o.name, self.lr, o.weight_decay, tuple(o.betas), o.momentum, o.layer_decay)
        self.scheduler = Scheduler(self.optimizer, self.total_steps, round(o.warmup_epochs * self.steps_per_epoch), self.lr, self.min_lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.ema = ModelEMA(model, ema_decay) if ema else None
        if not resume and self.ckpt_path.is_file():
            raise HieraVideoError(
                f"{self.out} already holds a training run ({self.ckpt_path.name}); continue it with --resume auto "
                "or choose another --output"
            )
        if resume:
            path = self.ckpt_path if resume == "auto" else Path(resume)
            if path.is_file():
                self._restore(path)
                log.info("resumed from %s at epoch %d, step %d", path, self.state.epoch, self.state.step)
            elif resume != "auto":
                raise HieraVideoError(f"--resume {resume}: checkpoint not found")
        self.train_model: nn.Module = model
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if compile:
            self.train_model = torch.compile(self.train_model)
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", self.cfg.to_dict())
            import yaml

            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            self.logger = MetricsLog(self.out, self.run.tensorboard)
            log.info("training: %s", ", ".join(f"{k} {v}" for k, v in self.info.items()))

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
        list; ``end_of_epoch()`` runs on every rank after each epoch (validation).

        Returns True when training completed, False when it stopped early at
        ``run.halt_after_steps``. SIGINT/SIGTERM raise :class:`errors.Interrupted` (exit 130)
        after a checkpoint; a non-finite loss raises :class:`HieraVideoError`.
        """
        run, state, world = self.run, self.state, self.world
        loader = DataLoader(items, batch_size=self.sampler.videos_per_batch, sampler=self.sampler, num_workers=self.cfg.data.workers,
                            collate_fn=collate, drop_last=False, persistent_workers=False,
                            # its own generator: creating an iterator must not consume the global RNG
                            # (a resumed run creates it at another point than an uninterrupted one)
                            generator=torch.Generator().manual_seed(run.seed))
        stop: dict = {"signum": None}
        handlers = {s: signal.signal(s, lambda signum, _f: stop.__setitem__("signum", signum)) for s in (signal.SIGINT, signal.SIGTERM)}
        t_start = time.perf_counter()
        try:
            self.progress = _Progress(self.console, self.total_steps, state.step) if world.is_main else None
            while state.epoch < self.optim.epochs:
                items.epoch = state.epoch
                self.sampler.set_epoch(state.epoch, state.batch)
                self.train_model.train()
                micro, acc_loss, t_clips, t0 = 0, 0.0, 0, time.perf_counter()
                for batch, bad in loader:
                    state.batch += 1
                    self._note_bad(bad, describe)
                    if batch is None:
                        continue
                    sync = (micro + 1) % self.accum == 0
                    # No gradient all-reduce on accumulation micro-steps (DDP).
                    with self.train_model.no_sync() if world.distributed and not sync else nullcontext():
                        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                            loss, n = loss_fn(self.train_model, batch)
                        value = loss.item()
                        if not math.isfinite(value):
                            raise HieraVideoError(
                                f"loss is {value} at epoch {state.epoch}, step {state.step}: training diverged. The last "
                                f"good checkpoint is {self.ckpt_path}; lower optim.lr or check the data, then --resume auto"
                            )
                        self.scaler.scale(loss / self.accum).backward()
                    micro += 1
                    acc_loss += value / self.accum
                    t_clips += n * world.world_size
                    if sync:
                        self._step(acc_loss, t_clips / max(time.perf_counter() - t0, 1e-9), stop)
                        acc_loss = 0.0
                state.epoch += 1
                state.batch = 0
                if state.epoch_loss_steps and self.logger is not None:
                    self.logger.write(dict(kind="epoch", step=state.step, epoch=state.epoch,
                                           loss=state.epoch_loss_sum / state.epoch_loss_steps, steps=state.epoch_loss_steps))
                state.epoch_loss_sum, state.epoch_loss_steps = 0.0, 0
                if end_of_epoch is not None:
                    end_of_epoch()
                self.save_last()
            return True
        except _Stop as e:
            self._write_logs()
            distributed.cleanup(world)
            if e.signum:
                raise errors.Interrupted(f"{signal.Signals(e.signum).name}: checkpoint saved to {self.ckpt_path}; "
                                         "continue with --resume auto") from None
            return False
        finally:
            self.train_seconds += time.perf_counter() - t_start
            if self.progress is not None:
                self.progress.close()
                self.progress = None
            for s, h in handlers.items():
                signal.signal(s, h)

    def _step(self, loss: float, rate: float, stop: dict) -> None:
        """Optimizer step after the last micro-batch, then logging and checkpoints."""
        run, state = self.run, self.state
        lr_now = self.scheduler.step()
        if self.optim.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        state.step += 1
        state.epoch_loss_sum += loss
        state.epoch_loss_steps += 1
        if self.progress is not None:
            self.progress.update(state, loss, lr_now, rate)
        if self.logger is not None and state.step % run.log_every == 0:
            self.logger.write(dict(kind="train", step=state.step, epoch=state.epoch, loss=loss, lr=lr_now, clips_per_s=rate))
        if run.ckpt_every_steps and state.step % run.ckpt_every_steps == 0:
            self.save_last()
        if stop["signum"] is not None:
            self.save_last()
            raise _Stop(stop["signum"])
        if run.halt_after_steps and state.step >= run.halt_after_steps:
            self.save_last()
            raise _Stop(0)

    def _note_bad(self, bad: list[tuple[int, str]], describe: Callable[[int], str]) -> None:
        for idx, reason in bad:
            self.state.bad_videos += 1
            name = describe(idx)
            if all(name != p for p, _ in self.bad):
                log.warning("skipped training video (and will skip it again): %s", reason)
            self.bad.append((name, reason))

    # ------------------------------------------------------------------ results

    def log_val(self, metrics: dict, key: str) -> bool:
        """Record one validation; True when ``metrics[key]`` is the best so far (rank 0)."""
        state = self.state
        if self.logger is not None:
            self.logger.write(dict(kind="val", step=state.step, epoch=state.epoch, **metrics))
        if self.progress is not None:
            self.progress.note(f"epoch {state.epoch}: val {key} {metrics[key]:.4g}")
        if metrics.get(key) is None or metrics[key] <= state.best_val:
            return False
        state.best_val = metrics[key]
        return True

    def save_published(self, path: Path, extra: dict | None = None) -> None:
        """Weights only (the EMA copy when there is one) with the run's meta: for predict/eval."""
        if self.world.is_main:
            save_checkpoint(path, self.eval_model, dict(self.meta, epoch=self.state.epoch, **(extra or {})))

    def finish(self, summary: dict, val_key: str | None = None) -> dict:
        """Rank 0 writes ``metrics.json`` (``summary`` + the run's numbers), ``bad_videos.csv``
        and ``curves.png``; every rank leaves the process group. Returns the full summary on
        rank 0, {} elsewhere."""
        full = {}
        if self.world.is_main:
            state = self.state
            full = {**self.info, **summary, "epochs_done": state.epoch, "steps": state.step,
                    "train_seconds": round(self.train_seconds, 1), "bad_training_videos": state.bad_videos}
            write_json(self.out / "metrics.json", full)
            self._write_logs()
            plot_curves(self.out / "metrics.jsonl", self.out / "curves.png", val_key)
        distributed.cleanup(self.world)
        return full

    def _write_logs(self) -> None:
        if not self.world.is_main:
            return
        if self.logger is not None:
            self.logger.close()
        if self.bad:
            write_csv(self.out / "bad_videos.csv", ["path", "reason"], sorted(set(self.bad)))

    # ------------------------------------------------------------------ checkpoints

    def save_last(self) -> None:
        """All ranks: gather the per-rank RNG states; rank 0 writes RUN_DIR/last.pt atomically."""
        rngs = distributed.gather_to_main(rng_state(self.generators), self.world)
        if self.world.is_main:
            save_checkpoint(
                self.ckpt_path, self.model, self.meta, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                ema=self.ema.state_dict() if self.ema else None, run_state=dict(vars(self.state)), rng=rngs,
                world_size=self.world.world_size,
            )
        distributed.barrier(self.world)

    def _restore(self, path: Path) -> None:
        ckpt = load_training_state(path)
        if ckpt.get("world_size", 1) != self.world.world_size:
            raise HieraVideoError(
                f"{path} was written by {ckpt.get('world_size')} processes but this run has {self.world.world_size}; "
                "resume with the same number of processes (the data order and RNG streams depend on it)"
            )
        if "optimizer" not in ckpt or "run_state" not in ckpt:
            raise HieraVideoError(f"{path} holds weights only (no optimizer or run state); pass it as --weights to start from it")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        for k, v in ckpt["run_state"].items():
            setattr(self.state, k, v)
        set_rng_state(ckpt["rng"][self.world.rank], self.generators)


# ---------------------------------------------------------------------------- logs


class MetricsLog:
    """metrics.jsonl (one JSON object per line) and, optionally, TensorBoard."""

    def __init__(self, out: Path, tensorboard: bool):
        self.path = out / "metrics.jsonl"
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise HieraVideoError("run.tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row['kind']}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_rows(jsonl: Path) -> list[dict]:
    if not jsonl.is_file():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def plot_curves(jsonl: Path, png: Path, val_key: str | None = None) -> None:
    """Training loss per step (and the epoch means) and lr per step; with ``val_key``, the
    validation metric per epoch as a third panel."""
    rows = read_rows(jsonl)
    train = [r for r in rows if r["kind"] == "train"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    val = [r for r in rows if r["kind"] == "val" and r.get(val_key) is not None] if val_key else []
    if not train and not epochs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if val_key else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.3 * panels, 3.5))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.6, label="step")
    if epochs:
        axes[0].plot([r["step"] for r in epochs], [r["loss"] for r in epochs], marker="o", label="epoch mean")
    axes[0].set_title("training loss")
    axes[0].legend()
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[1].set_title("learning rate")
    for ax in axes[:2]:
        ax.set_xlabel("step")
    if val_key:
        axes[2].plot([r["epoch"] for r in val], [r[val_key] for r in val], marker="o")
        axes[2].set_title(f"validation {val_key}")
        axes[2].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


class _Progress:
    """Rich progress over optimizer steps: loss, lr, clips/s, ETA."""

    def __init__(self, console, total: int, done: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[rate]} clips/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self.p.start()
        self.task = self.p.add_task("train", total=total, completed=done, epoch=0, loss="-", lr="-", rate="-")

    def update(self, state: RunState, loss: float, lr: float, rate: float) -> None:
        # epochs are shown counted from 1, like the validation notes ("epoch 4: ..." after the 4th)
        self.p.update(self.task, completed=state.step, epoch=state.epoch + 1, loss=f"{loss:.4f}", lr=f"{lr:.2e}", rate=f"{rate:.1f}")

    def note(self, text: str) -> None:
        self.p.console.print(text, highlight=False)

    def close(self) -> None:
        self.p.stop()
