"""``finetune``: the training loop, readable top to bottom.

setup (config, data, model, optimizer, schedule) -> resume -> for each epoch: for each batch:
mixup -> forward/backward (accumulated) -> clip -> step -> log / checkpoint -> fast validation
-> final multi-view evaluation through the ``eval`` code -> curves.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from hiera_video.config import TrainConfig
from hiera_video.data import TrainTransform
from hiera_video.data.datasets import VideoDataset, build_dataset
from hiera_video.engine import distributed
from hiera_video.engine.ema import ModelEMA
from hiera_video.engine.evaluate import PRESETS, evaluate, write_outputs
from hiera_video.engine.inference import Classifier, parse_views
from hiera_video.engine.mixup import Mixup, MixupConfig, SoftTargetCrossEntropy
from hiera_video.engine.optim import build_optimizer, scaled_lr, unwrap_model
from hiera_video.engine.schedule import Scheduler
from hiera_video.engine.state import rng_state, set_rng_state
from hiera_video.engine.train_data import EpochSampler, TrainClips, collate_clips
from hiera_video import errors
from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints import load_training_state, save_checkpoint
from hiera_video.models.factory import create_model
from hiera_video.report import write_json
from hiera_video.runtime import pick_device

log = logging.getLogger("hiera_video")


class Interrupted(Exception):
    """Raised inside the loop after SIGINT/SIGTERM once a checkpoint is written."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@dataclass
class RunState:
    epoch: int = 0  # current epoch
    batch: int = 0  # batches of the current epoch already consumed
    step: int = 0  # optimizer steps done
    best_top1: float = -1.0
    bad_videos: int = 0


def precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training (None = fp32)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if name == "fp16" and device.type != "cuda":
        raise HieraVideoError("fp16 training needs a GPU; use run.precision=bf16 or fp32 on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def build_data(cfg: TrainConfig) -> tuple[VideoDataset, VideoDataset | None]:
    d = cfg.data
    if not d.root:
        raise HieraVideoError("no dataset root: pass --root DIR (or data.root in the config)")
    def under_root(p):  # files named in a preset are relative to the dataset root
        return str(Path(d.root) / p) if p and not Path(p).exists() and (Path(d.root) / p).exists() else p

    labels = under_root(d.labels)
    train = build_dataset(d.dataset, d.root, under_root(d.annotations), d.train_split, labels, d.limit_train)
    val = None
    try:
        val = build_dataset(d.dataset, d.root, under_root(d.val_annotations), d.val_split, labels, d.limit_val)
    except HieraVideoError as e:
        log.warning("no validation split (%s): training without validation", e)
    if len(train) == 0:
        raise HieraVideoError(f"no training videos found for {d.dataset} under {d.root}")
    if val is not None and val.classes != train.classes:
        raise HieraVideoError("the training and validation splits have different class lists")
    return train, val


def preprocessing(cfg: TrainConfig, model: nn.Module) -> dict:
    """What predict/eval need to feed this model exactly as it was trained."""
    spec = model.spec
    return dict(
        sampling=cfg.data.sampling, stride=cfg.data.stride, target_fps=cfg.data.target_fps,
        num_frames=model.input_size[0], crop_size=model.input_size[-1], mean=list(spec.mean), std=list(spec.std),
    )


def finetune(cfg: TrainConfig, resume: str | None = None, console=None) -> dict:
    """Train per ``cfg``; returns the final metrics (rank 0) or {} (other ranks)."""
    out = Path(cfg.run.output or "")
    if not cfg.run.output:
        raise HieraVideoError("no run folder: pass --output RUN_DIR")
    device = pick_device(cfg.run.device)
    world = distributed.init(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    torch.manual_seed(cfg.run.seed + world.rank)
    amp = precision(cfg.run.precision, device)

    train_set, val_set = build_data(cfg)
    classes = train_set.classes
    overrides = dict(drop_path_rate=cfg.model.drop_path, head_dropout=cfg.model.head_dropout)
    if cfg.model.input_size:
        overrides["input_size"] = tuple(cfg.model.input_size)
    model = create_model(cfg.model.name, weights=cfg.model.weights, num_classes=len(classes), **overrides)
    if model.spec.mae:
        raise HieraVideoError(f"{cfg.model.name} is an MAE model; finetune the classifier hiera_* and pass the MAE checkpoint as --weights")
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    model.to(device)
    num_frames, crop = model.input_size[0], model.input_size[-1]

    # Batches: clips per process per forward; accumulation reaches the requested global batch.
    per_step = cfg.run.batch_size * world.world_size
    accum = 1
    if cfg.run.global_batch:
        if cfg.run.global_batch % per_step:
            raise HieraVideoError(f"run.global_batch ({cfg.run.global_batch}) must be a multiple of batch_size x processes ({per_step})")
        accum = cfg.run.global_batch // per_step
    global_batch = per_step * accum
    lr = scaled_lr(cfg.optim.lr, cfg.optim.base_batch, global_batch)
    min_lr = scaled_lr(cfg.optim.min_lr, cfg.optim.base_batch, global_batch)

    transform = TrainTransform(
        crop_size=crop, scale=tuple(cfg.augment.scale), flip=cfg.augment.flip, randaug=cfg.augment.randaug,
        randaug_ops=cfg.augment.randaug_n, randaug_magnitude=cfg.augment.randaug_m, randaug_std=cfg.augment.randaug_std,
        erase_p=cfg.augment.erase_p, mean=model.spec.mean, std=model.spec.std, seed=cfg.run.seed,
    )
    clips_ds = TrainClips(train_set, num_frames, crop, cfg.data.repeated_aug, cfg.data.sampling, cfg.data.stride,
                          cfg.data.target_fps, transform, cfg.run.seed, cfg.data.backend)
    sampler = EpochSampler(len(train_set), world.rank, world.world_size, cfg.run.seed, cfg.run.batch_size // cfg.data.repeated_aug)
    steps_per_epoch = sampler.batches_per_epoch() // accum
    if steps_per_epoch < 1:
        raise HieraVideoError(
            f"{len(train_set)} training videos are too few for one step of {global_batch} clips "
            f"({cfg.data.repeated_aug} per video); lower run.batch_size or run.global_batch"
        )
    total_steps = steps_per_epoch * cfg.optim.epochs

    optimizer = build_optimizer(model, cfg.optim.name, lr, cfg.optim.weight_decay, tuple(cfg.optim.betas),
                                cfg.optim.momentum, cfg.optim.layer_decay)
    scheduler = Scheduler(optimizer, total_steps, round(cfg.optim.warmup_epochs * steps_per_epoch), lr, min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    mix_gen = torch.Generator().manual_seed(cfg.run.seed * 31 + world.rank)
    mixup = Mixup.from_config(MixupConfig(cfg.augment.mixup, cfg.augment.cutmix, cfg.augment.mixup_prob,
                                          cfg.augment.switch_prob, cfg.augment.label_smoothing), len(classes), mix_gen)
    criterion = SoftTargetCrossEntropy()
    ema = ModelEMA(model, cfg.run.ema_decay) if cfg.run.ema else None
    state = RunState()
    meta = dict(labels=list(classes), preprocessing=preprocessing(cfg, model), config=None, train_config=cfg.to_dict())
    meta.pop("config")  # save_checkpoint records the model's constructor config itself

    ckpt_path = out / "last.pt"
    if resume:
        path = ckpt_path if resume == "auto" else Path(resume)
        if path.is_file():
            _restore(path, model, optimizer, scheduler, scaler, ema, state, mix_gen, world)
            log.info("resumed from %s at epoch %d, step %d", path, state.epoch, state.step)
        elif resume != "auto":
            raise HieraVideoError(f"--resume {resume}: checkpoint not found")
    train_model: nn.Module = model
    if world.distributed:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.model.compile:
        train_model = torch.compile(train_model)

    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", cfg.to_dict())
        (out / "config.yaml").write_text(_yaml(cfg.to_dict()))
    logger = MetricsLog(out, cfg.run.tensorboard) if world.is_main else None
    loader = DataLoader(clips_ds, batch_size=sampler.videos_per_batch, sampler=sampler, num_workers=cfg.data.workers,
                        collate_fn=collate_clips, drop_last=False, persistent_workers=False,
                        # its own generator: creating an iterator must not consume the global RNG
                        # (a resumed run creates it at another point than an uninterrupted one)
                        generator=torch.Generator().manual_seed(cfg.run.seed))

    stop = {"signum": None}
    handlers = {s: signal.signal(s, lambda signum, _f: stop.__setitem__("signum", signum)) for s in (signal.SIGINT, signal.SIGTERM)}

    def save_last():
        _save(ckpt_path, model, meta, optimizer, scheduler, scaler, ema, state, mix_gen, world)

    info = dict(global_batch=global_batch, accum_steps=accum, lr=lr, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                train_videos=len(train_set), val_videos=len(val_set) if val_set else 0, processes=world.world_size)
    if world.is_main:
        log.info("training: %s", ", ".join(f"{k} {v}" for k, v in info.items()))
    bad_list: list[tuple[str, str]] = []
    try:
        t_start = time.perf_counter()
        progress = _Progress(console, total_steps, state.step) if world.is_main else None
        while state.epoch < cfg.optim.epochs:
            clips_ds.epoch = state.epoch
            sampler.set_epoch(state.epoch, state.batch)
            train_model.train()
            micro = 0
            t_clips, t0 = 0, time.perf_counter()
            for clips, labels, bad in loader:
                state.batch += 1
                for idx, reason in bad:
                    state.bad_videos += 1
                    path = str(train_set.items[idx].path)
                    if all(path != p for p, _ in bad_list):
                        log.warning("skipped training video (and will skip it again): %s", reason)
                    bad_list.append((path, reason))
                if clips is None:
                    continue
                clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                clips, targets = mixup(clips, labels)
                sync = (micro + 1) % accum == 0
                # Without a gradient sync on accumulation micro-steps (DDP), forward and backward.
                with train_model.no_sync() if world.distributed and not sync else nullcontext():
                    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                        loss = criterion(train_model(clips), targets)
                    if not math.isfinite(loss.item()):
                        raise HieraVideoError(
                            f"loss is {loss.item()} at epoch {state.epoch}, step {state.step}: training diverged. The last "
                            f"good checkpoint is {ckpt_path}; lower optim.lr or check the data, then --resume auto"
                        )
                    scaler.scale(loss / accum).backward()
                micro += 1
                t_clips += clips.shape[0] * world.world_size
                if not sync:
                    continue
                lr_now = scheduler.step()
                if cfg.optim.clip_grad:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                state.step += 1
                rate = t_clips / max(time.perf_counter() - t0, 1e-9)
                if progress is not None:
                    progress.update(state, loss.item(), lr_now, rate)
                if logger is not None and state.step % cfg.run.log_every == 0:
                    logger.write(dict(kind="train", step=state.step, epoch=state.epoch, loss=loss.item(), lr=lr_now, clips_per_s=rate))
                if cfg.run.ckpt_every_steps and state.step % cfg.run.ckpt_every_steps == 0:
                    save_last()
                if stop["signum"] is not None:
                    save_last()
                    raise Interrupted(stop["signum"])
                if cfg.run.halt_after_steps and state.step >= cfg.run.halt_after_steps:
                    save_last()
                    raise Interrupted(0)
            state.epoch += 1
            state.batch = 0
            val = None
            if val_set is not None and cfg.run.val_every_epochs and state.epoch % cfg.run.val_every_epochs == 0:
                val = _validate(cfg, ema.module if ema else model, val_set, classes, parse_views(cfg.run.val_views), device, world)
                if world.is_main and val is not None:
                    logger.write(dict(kind="val", step=state.step, epoch=state.epoch, **val))
                    if progress is not None:
                        progress.note(f"epoch {state.epoch}: val top-1 {val['top1']:.2f}%")
                    if val["top1"] is not None and val["top1"] > state.best_top1:
                        state.best_top1 = val["top1"]
                        if world.is_main:
                            save_checkpoint(out / "best.pt", ema.module if ema else model, dict(meta, val=val, epoch=state.epoch))
            save_last()
        if progress is not None:
            progress.close()
        train_seconds = time.perf_counter() - t_start
    except Interrupted as e:
        if progress is not None:
            progress.close()
        _finish_logs(world, out, logger, bad_list)
        for s, h in handlers.items():
            signal.signal(s, h)
        distributed.cleanup(world)
        if e.signum:
            raise errors.Interrupted(f"{signal.Signals(e.signum).name}: checkpoint saved to {ckpt_path}; continue with --resume auto")
        return dict(halted_at_step=state.step)
    for s, h in handlers.items():
        signal.signal(s, h)

    # Final evaluation through the eval code, with the dataset preset's views.
    final = {}
    final_model = ema.module if ema else model
    if not (out / "best.pt").exists() and world.is_main:
        save_checkpoint(out / "best.pt", final_model, dict(meta, epoch=state.epoch))
    if val_set is not None:
        views = parse_views(cfg.run.final_views) if cfg.run.final_views else PRESETS.get(cfg.data.dataset, PRESETS["list"])["views"]
        result, clf, protocol = _run_eval(cfg, final_model, val_set, classes, views, device, world)
        if world.is_main:
            files = write_outputs(out / "eval", result, val_set, clf, protocol, dict(split=cfg.data.val_split))
            final = dict(top1=result.metrics["top1"] if result.metrics else None, top5=result.metrics["top5"] if result.metrics else None,
                         mean_class_accuracy=result.metrics["mean_class_accuracy"] if result.metrics else None,
                         views=f"{views[0]}x{views[1]}", num_val_videos=len(result.indices), eval_dir=str(files["metrics"].parent))
    if world.is_main:
        summary = dict(**final, best_val_top1_centre_view=state.best_top1 if state.best_top1 >= 0 else None,
                       epochs=state.epoch, steps=state.step, train_seconds=round(train_seconds, 1),
                       bad_training_videos=state.bad_videos, **info)
        write_json(out / "metrics.json", summary)
        _finish_logs(world, out, logger, bad_list)
        plot_curves(out / "metrics.jsonl", out / "curves.png")
    distributed.cleanup(world)
    return final if world.is_main else {}


# ---------------------------------------------------------------------------- evaluation


def _run_eval(cfg, model, val_set, classes, views, device, world):
    model.eval()
    spec = model.spec
    clf = Classifier(model, spec.name, None, list(classes), device, None, tuple(spec.mean), tuple(spec.std))
    protocol = clf.protocol(views, sampling=cfg.data.sampling, stride=cfg.data.stride, target_fps=cfg.data.target_fps,
                            backend=cfg.data.backend)
    result = evaluate(clf, protocol, val_set, batch_size=cfg.run.batch_size, workers=cfg.data.workers, world=world)
    model.train()
    return result, clf, protocol


def _validate(cfg, model, val_set, classes, views, device, world) -> dict | None:
    result, _, _ = _run_eval(cfg, model, val_set, classes, views, device, world)
    if result is None or result.metrics is None:
        return None
    m = result.metrics
    return dict(top1=m["top1"], top5=m["top5"], mean_class_accuracy=m["mean_class_accuracy"], num_videos=m["num_videos"])


# ---------------------------------------------------------------------------- checkpoints


def _save(path, model, meta, optimizer, scheduler, scaler, ema, state: RunState, mix_gen, world) -> None:
    """All ranks: gather the per-rank RNG states; rank 0 writes the file atomically."""
    rngs = distributed.gather_to_main(rng_state({"mixup": mix_gen}), world)
    if world.is_main:
        save_checkpoint(
            path, model, meta, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema.state_dict() if ema else None,
            run_state=dict(vars(state)), rng=rngs, world_size=world.world_size,
        )
    distributed.barrier(world)


def _restore(path, model, optimizer, scheduler, scaler, ema, state: RunState, mix_gen, world) -> None:
    ckpt = load_training_state(path)
    if ckpt.get("world_size", 1) != world.world_size:
        raise HieraVideoError(
            f"{path} was written by {ckpt.get('world_size')} processes but this run has {world.world_size}; "
            "resume with the same number of processes (the data order and RNG streams depend on it)"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    for k, v in ckpt["run_state"].items():
        setattr(state, k, v)
    set_rng_state(ckpt["rng"][world.rank], {"mixup": mix_gen})


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


def _finish_logs(world, out: Path, logger, bad_list) -> None:
    if not world.is_main:
        return
    if logger is not None:
        logger.close()
    if bad_list:
        from hiera_video.report import write_csv

        write_csv(out / "bad_videos.csv", ["path", "reason"], sorted(set(bad_list)))


def plot_curves(jsonl: Path, png: Path) -> None:
    """Training loss and lr per step, validation top-1 per epoch."""
    if not jsonl.is_file():
        return
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train])
    axes[0].set_title("training loss")
    axes[0].set_xlabel("step")
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[1].set_title("learning rate")
    axes[1].set_xlabel("step")
    axes[2].plot([r["epoch"] for r in val], [r["top1"] for r in val], marker="o")
    axes[2].set_title("validation top-1 % (centre view)")
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
        self.p.update(self.task, completed=state.step, epoch=state.epoch, loss=f"{loss:.4f}", lr=f"{lr:.2e}", rate=f"{rate:.1f}")

    def note(self, text: str) -> None:
        self.p.console.print(text, highlight=False)

    def close(self) -> None:
        self.p.stop()


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
