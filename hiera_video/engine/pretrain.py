"""``pretrain``: sparse MAE pretraining on video, with the finetuning engine's guarantees.

setup (config, unlabeled videos, ``mae_hiera_*`` model, AdamW, schedule) -> resume -> for each
epoch: for each batch: forward (random mask, only kept units through the encoder) / backward
(accumulated) -> step -> log / checkpoint -> at the end ``metrics.json``, ``curves.png`` and a
reconstruction preview of one training clip.

Labels are never used. ``data.dataset``: ``k400``/``k600``/``k700``/``ssv2`` (their annotation
files; missing labels are fine), ``list`` (one video path per line, a trailing label is
ignored) or ``folder`` (every video under ``root``, any layout, searched recursively).

Epochs: one epoch is one pass over the videos; with repeated sampling each decoded video
gives ``data.repeated_aug`` clips, so one epoch is ``repeated_aug`` *effective* epochs in the
paper's counting (MAE-ST / Hiera report effective epochs). The preset
``pretrain_video`` (repeated_aug 4) uses 200 epochs = 800 effective, warmup 30 = 120
effective.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from hiera_video import errors
from hiera_video.config import _f, load_config
from hiera_video.data import TrainTransform
from hiera_video.data.datasets import VIDEO_EXTENSIONS, VideoDataset, VideoItem, build_dataset
from hiera_video.engine import distributed
from hiera_video.engine.finetune import (
    Interrupted,
    MetricsLog,
    RunState,
    _finish_logs,
    _Progress,
    _restore,
    _save,
    _yaml,
    precision,
)
from hiera_video.engine.optim import build_optimizer, scaled_lr
from hiera_video.engine.schedule import Scheduler
from hiera_video.engine.train_data import EpochSampler, TrainClips, collate_clips
from hiera_video.errors import HieraVideoError
from hiera_video.models.factory import create_model
from hiera_video.report import write_json
from hiera_video.runtime import pick_device

log = logging.getLogger("hiera_video")

PRETRAIN_DATASETS = ("k400", "k600", "k700", "ssv2", "list", "folder")


# ---------------------------------------------------------------------------- config


@dataclass
class PretrainDataConfig:
    dataset: str = _f("folder", "k400 | k600 | k700 | ssv2 | list (paths, labels optional) | folder (any layout, recursive)")
    root: str | None = _f(None, "dataset folder (video paths are relative to it)")
    annotations: str | None = _f(None, "annotation / list file (default: looked up under root for train_split)")
    train_split: str = _f("train", "split of the annotations to pretrain on")
    sampling: str = _f("dense", "dense (Kinetics) | segment (SSv2)")
    stride: int = _f(4, "dense sampling: frame stride at target_fps")
    target_fps: float = _f(30.0, "dense sampling: frame rate the stride refers to")
    repeated_aug: int = _f(4, "clips from each decoded video (repeated sampling); 1 epoch = repeated_aug effective epochs")
    workers: int = _f(2, "DataLoader worker processes per training process")
    backend: str = _f("auto", "video decoder: auto | decord | pyav")
    limit_train: int | None = _f(None, "use only the first N videos")


@dataclass
class PretrainModelConfig:
    name: str = _f("mae_hiera_base_16x224", "MAE model name (hiera-video models --mae)")
    weights: str | None = _f(None, "initial weights (e.g. mae_k400 to continue the official MAE); null = random")
    input_size: list | None = _f(None, "override the input size, e.g. [8, 224, 224]")
    mask_ratio: float = _f(0.9, "fraction of mask units hidden from the encoder (video 0.9, image 0.6)")
    drop_path: float | None = _f(None, "stochastic depth rate; null = by size (0.1 B, 0.2 B+/L, 0.3 H, 0 nano/micro)")
    grad_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    compile: bool = _f(False, "wrap the model with torch.compile")


@dataclass
class PretrainOptimConfig:
    name: str = _f("adamw", "adamw | sgd")
    lr: float = _f(8e-4, "learning rate at base_batch (scaled linearly to the real global batch)")
    base_batch: int = _f(512, "batch size the learning rate is defined for")
    min_lr: float = _f(0.0, "final learning rate of the cosine schedule (also scaled)")
    weight_decay: float = _f(0.05, "weight decay (never on 1-D params, biases, position embeddings, mask token)")
    betas: list = _f([0.9, 0.95], "AdamW betas")
    momentum: float = _f(0.9, "SGD momentum")
    layer_decay: float | None = _f(None, "layer-wise lr decay (null = off; MAE pretraining uses none)")
    clip_grad: float | None = _f(None, "max gradient norm (null = off)")
    epochs: int = _f(200, "passes over the videos (x repeated_aug = effective epochs)")
    warmup_epochs: float = _f(30.0, "linear warmup length in epochs (same units as epochs)")


@dataclass
class PretrainAugmentConfig:
    scale: list = _f([0.5, 1.0], "random-resized-crop area range")
    flip: str = _f("random", "random | none")


@dataclass
class PretrainRunConfig:
    output: str | None = _f(None, "run folder (checkpoints, logs, metrics)")
    batch_size: int = _f(8, "clips per process per forward pass (a multiple of data.repeated_aug)")
    global_batch: int | None = _f(None, "clips per optimizer step over all processes (gradient accumulation reaches it)")
    precision: str = _f("auto", "auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16")
    device: str = _f("auto", "auto | cpu | cuda")
    seed: int = _f(0, "random seed")
    ckpt_every_steps: int = _f(0, "also checkpoint every N optimizer steps (0 = only each epoch)")
    log_every: int = _f(10, "log training metrics every N optimizer steps")
    tensorboard: bool = _f(False, "also write a TensorBoard log (needs the tensorboard package)")
    preview: bool = _f(True, "at the end, write reconstruction.png of the first training video")
    halt_after_steps: int | None = _f(None, "stop (with a checkpoint) after N optimizer steps, as if interrupted (for tests)")


@dataclass
class PretrainConfig:
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    augment: PretrainAugmentConfig = field(default_factory=PretrainAugmentConfig)
    run: PretrainRunConfig = field(default_factory=PretrainRunConfig)

    def to_dict(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)


def load_pretrain_config(source: str | None = None, sets=(), overrides: dict | None = None) -> PretrainConfig:
    """Defaults <- preset/YAML ``source`` <- ``overrides`` <- ``--set`` items (like finetune)."""
    cfg = load_config(source, sets, overrides, cls=PretrainConfig)
    if not 0.0 <= cfg.model.mask_ratio < 1.0:
        raise HieraVideoError(f"config key 'model.mask_ratio' must be in [0, 1), got {cfg.model.mask_ratio}")
    if cfg.augment.flip not in ("random", "none"):
        raise HieraVideoError(f"config key 'augment.flip' must be random or none for pretraining, got '{cfg.augment.flip}'")
    if cfg.model.drop_path is not None and not 0.0 <= cfg.model.drop_path < 1.0:
        raise HieraVideoError(f"config key 'model.drop_path' must be in [0, 1) or null, got {cfg.model.drop_path}")
    return cfg


def default_drop_path(name: str) -> float:
    """The paper's drop path by model size: 0.1 B, 0.2 B+ and L, 0.3 H (0.1 tiny/small, 0 for
    the project's nano/micro test models)."""
    for size, p in (("huge", 0.3), ("base_plus", 0.2), ("large", 0.2), ("base", 0.1), ("small", 0.1), ("tiny", 0.1)):
        if f"_{size}_" in f"_{name}_":
            return p
    return 0.0


# ---------------------------------------------------------------------------- unlabeled data


def _walk_videos(root: Path) -> list[Path]:
    """Every video file under ``root`` (recursive, symlinks followed with loop protection,
    hidden entries skipped), sorted by path."""
    found, seen, stack = [], set(), [str(root)]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir():
                    stack.append(e.path)
                elif os.path.splitext(e.name)[1].lower() in VIDEO_EXTENSIONS:
                    found.append(Path(e.path))
            except OSError:
                continue
    return sorted(found)


def _is_int(text: str) -> bool:
    t = text.strip()
    return t.lstrip("-").isdigit() and t not in ("-", "")


def read_path_list(path: Path) -> list[tuple[int, str]]:
    """``[(line number, video path)]`` from a list of videos: one path per line, optionally
    followed by a label (whitespace or comma separated, ignored). Blank lines, ``#`` comments and
    a ``path,label`` header are skipped; paths may contain spaces."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HieraVideoError(f"list file '{path}' not found; check --annotations") from None
    except UnicodeDecodeError as e:
        raise HieraVideoError(f"{path}: not a text file ({e.reason} at byte {e.start}); pass a list of video paths") from None
    rows = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        video = line
        if "," in line and _is_int(line.rsplit(",", 1)[1]):
            video = line.rsplit(",", 1)[0].strip()
        else:
            parts = line.split()
            if len(parts) >= 2 and _is_int(parts[-1]):
                video = line[: line.rstrip().rfind(parts[-1])].strip()
        if not rows and video.lower() in ("path", "video", "filename", "file", "path,label", "video,label"):
            continue  # header
        if os.path.splitext(video)[1].lower() not in VIDEO_EXTENSIONS and os.path.splitext(line)[1].lower() in VIDEO_EXTENSIONS:
            video = line  # a name that merely ends in digits
        rows.append((n, video))
    return rows


def _find_list(root: Path, split: str) -> Path:
    from hiera_video.data.datasets.lists import find_list_file, split_aliases

    names = []
    for s in split_aliases(split):
        names += [f"{s}.txt", f"{s}.csv", f"{s}_list.txt", f"{s}_list_videos.txt", f"{s}_videos.txt",
                  f"annotations/{s}.txt", f"annotations/{s}.csv"]
    names += ["videos.txt", "list.txt"]
    found, tried = find_list_file(root, split, names)
    if found is None:
        shown = ", ".join(str(p.relative_to(root)) for p in tried[:6])
        raise HieraVideoError(f"no list file for split '{split}' under '{root}' (tried {shown}, ...); pass --annotations FILE")
    return found


def build_unlabeled(kind: str, root, annotations=None, split: str = "train", limit: int | None = None) -> VideoDataset:
    """The videos to pretrain on; every item's label is -1 (labels are never used).

    ``folder``: every video under ``root`` (any layout). ``list``: one path per line (relative
    to ``root`` or absolute; a trailing label is ignored; files missing at the listed path are
    looked up by name under ``root``). Kinetics / SSv2: their annotation files via
    :func:`build_dataset`. Missing files are reported, not errors.
    """
    key = str(kind).strip().lower()
    key = {"kinetics400": "k400", "kinetics600": "k600", "kinetics700": "k700"}.get(key, key)
    if key not in PRETRAIN_DATASETS:
        raise HieraVideoError(f"unknown dataset '{kind}'; use one of {', '.join(PRETRAIN_DATASETS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise HieraVideoError(f"dataset root '{root}' is not a folder; check --root")
    if limit is not None and limit < 0:
        raise HieraVideoError(f"data.limit_train must be >= 0, got {limit}")
    if annotations:  # a file named in a preset is relative to the dataset root
        ann = Path(annotations).expanduser()
        if not ann.exists() and not ann.is_absolute() and (root / ann).exists():
            ann = root / ann
        annotations = ann
    if key == "folder":
        paths = _walk_videos(root)
        if not paths:
            raise HieraVideoError(f"no videos under '{root}' (extensions {', '.join(VIDEO_EXTENSIONS)}); check --root")
        items = [VideoItem(path=p, label=-1, id=p.relative_to(root).with_suffix("").as_posix()) for p in paths]
        ds = VideoDataset(name="folder", items=items, classes=[], root=root, annotated=len(items), limit=limit)
    elif key == "list":
        from hiera_video.data.datasets.lists import _resolve_listed

        ann = annotations if annotations else _find_list(root, split)
        rows = read_path_list(ann)
        ds = VideoDataset(name="list", items=[], classes=[], root=root, annotations=ann, split=split, annotated=len(rows), limit=limit)
        holder: list = []
        for n, video in rows:
            found, reason = _resolve_listed(video, root, holder, (split,) if split else ())
            if found is None:
                ds.missing.append((str(Path(video) if Path(video).is_absolute() else root / video), f"{reason} ({ann.name}, line {n})"))
            else:
                ds.items.append(VideoItem(path=found, label=-1, id=Path(video).with_suffix("").as_posix()))
    else:
        ds = build_dataset(key, root, annotations, split, None, None)
        ds.items = [VideoItem(path=it.path, label=-1, id=it.id) for it in ds.items]
        ds.classes = []
    if limit is not None:
        ds.items = ds.items[:limit]
    if ds.missing:
        log.warning("%d of %d listed videos are missing (first: %s); they are skipped",
                    len(ds.missing), len(ds.missing) + len(ds.items), ds.missing[0][0])
    return ds


# ---------------------------------------------------------------------------- model


def create_pretrain_model(cfg: PretrainConfig) -> nn.Module:
    """The ``mae_hiera_*`` model of ``cfg`` (mask ratio and drop path set from the config)."""
    drop = cfg.model.drop_path if cfg.model.drop_path is not None else default_drop_path(cfg.model.name)
    overrides = dict(drop_path_rate=drop, mask_ratio=cfg.model.mask_ratio)
    if cfg.model.input_size:
        overrides["input_size"] = tuple(cfg.model.input_size)
    model = create_model(cfg.model.name, weights=cfg.model.weights, **overrides)
    if not model.spec.mae:
        raise HieraVideoError(
            f"{cfg.model.name} is a classifier; pretrain the MAE model mae_{cfg.model.name} (then finetune "
            f"{cfg.model.name} with --weights RUN_DIR/last.pt)"
        )
    if model.spec.kind != "video":
        raise HieraVideoError(f"{cfg.model.name} is an image model; video pretraining needs mae_hiera_*_16x224 or another video MAE")
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    return model


def preprocessing(cfg: PretrainConfig, model: nn.Module) -> dict:
    spec = model.spec
    return dict(sampling=cfg.data.sampling, stride=cfg.data.stride, target_fps=cfg.data.target_fps,
                num_frames=model.input_size[0], crop_size=model.input_size[-1], mean=list(spec.mean), std=list(spec.std))


# ---------------------------------------------------------------------------- the loop


def pretrain(cfg: PretrainConfig, resume: str | None = None, console=None) -> dict:
    """Pretrain per ``cfg``; returns the summary (rank 0) or {} (other ranks)."""
    if not cfg.run.output:
        raise HieraVideoError("no run folder: pass --output RUN_DIR")
    if not cfg.data.root:
        raise HieraVideoError("no dataset root: pass --root DIR (or data.root in the config)")
    out = Path(cfg.run.output)
    device = pick_device(cfg.run.device)
    world = distributed.init(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    torch.manual_seed(cfg.run.seed + world.rank)
    amp = precision(cfg.run.precision, device)

    train_set = build_unlabeled(cfg.data.dataset, cfg.data.root, cfg.data.annotations, cfg.data.train_split, cfg.data.limit_train)
    if len(train_set) == 0:
        raise HieraVideoError(f"no videos found for {cfg.data.dataset} under {cfg.data.root}")
    model = create_pretrain_model(cfg)
    model.to(device)
    num_frames, crop = model.input_size[0], model.input_size[-1]
    mask_ratio = cfg.model.mask_ratio

    per_step = cfg.run.batch_size * world.world_size
    accum = 1
    if cfg.run.global_batch:
        if cfg.run.global_batch % per_step:
            raise HieraVideoError(f"run.global_batch ({cfg.run.global_batch}) must be a multiple of batch_size x processes ({per_step})")
        accum = cfg.run.global_batch // per_step
    global_batch = per_step * accum
    lr = scaled_lr(cfg.optim.lr, cfg.optim.base_batch, global_batch)
    min_lr = scaled_lr(cfg.optim.min_lr, cfg.optim.base_batch, global_batch) if cfg.optim.min_lr > 0 else 0.0

    transform = TrainTransform(crop_size=crop, scale=tuple(cfg.augment.scale), flip=cfg.augment.flip, randaug=False,
                               erase_p=0.0, mean=model.spec.mean, std=model.spec.std, seed=cfg.run.seed)
    clips_ds = TrainClips(train_set, num_frames, crop, cfg.data.repeated_aug, cfg.data.sampling, cfg.data.stride,
                          cfg.data.target_fps, transform, cfg.run.seed, cfg.data.backend)
    sampler = EpochSampler(len(train_set), world.rank, world.world_size, cfg.run.seed, cfg.run.batch_size // cfg.data.repeated_aug)
    steps_per_epoch = sampler.batches_per_epoch() // accum
    if steps_per_epoch < 1:
        raise HieraVideoError(
            f"{len(train_set)} videos are too few for one step of {global_batch} clips "
            f"({cfg.data.repeated_aug} per video); lower run.batch_size or run.global_batch"
        )
    total_steps = steps_per_epoch * cfg.optim.epochs

    optimizer = build_optimizer(model, cfg.optim.name, lr, cfg.optim.weight_decay, tuple(cfg.optim.betas),
                                cfg.optim.momentum, cfg.optim.layer_decay)
    scheduler = Scheduler(optimizer, total_steps, round(cfg.optim.warmup_epochs * steps_per_epoch), lr, min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    spare_gen = torch.Generator()  # the shared checkpoint helpers also save a named generator
    state = RunState()
    meta = dict(task="mae_pretraining", preprocessing=preprocessing(cfg, model), mask_ratio=mask_ratio, train_config=cfg.to_dict())

    ckpt_path = out / "last.pt"
    if resume:
        path = ckpt_path if resume == "auto" else Path(resume)
        if path.is_file():
            _restore(path, model, optimizer, scheduler, scaler, None, state, spare_gen, world)
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
                        generator=torch.Generator().manual_seed(cfg.run.seed))

    stop = {"signum": None}
    handlers = {s: signal.signal(s, lambda signum, _f: stop.__setitem__("signum", signum)) for s in (signal.SIGINT, signal.SIGTERM)}

    def save_last():
        _save(ckpt_path, model, meta, optimizer, scheduler, scaler, None, state, spare_gen, world)

    info = dict(global_batch=global_batch, accum_steps=accum, lr=lr, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                epochs=cfg.optim.epochs, effective_epochs=cfg.optim.epochs * cfg.data.repeated_aug, mask_ratio=mask_ratio,
                train_videos=len(train_set), missing_videos=len(train_set.missing), processes=world.world_size)
    if world.is_main:
        log.info("pretraining: %s", ", ".join(f"{k} {v}" for k, v in info.items()))
    bad_list: list[tuple[str, str]] = []
    epoch_losses: list[float] = []
    last_epoch_loss = None
    progress = None
    try:
        t_start = time.perf_counter()
        progress = _Progress(console, total_steps, state.step) if world.is_main else None
        while state.epoch < cfg.optim.epochs:
            clips_ds.epoch = state.epoch
            sampler.set_epoch(state.epoch, state.batch)
            train_model.train()
            micro, acc_loss = 0, 0.0
            t_clips, t0 = 0, time.perf_counter()
            for clips, _labels, bad in loader:
                state.batch += 1
                for idx, reason in bad:
                    state.bad_videos += 1
                    path = str(train_set.items[idx].path)
                    if all(path != p for p, _ in bad_list):
                        log.warning("skipped training video (and will skip it again): %s", reason)
                    bad_list.append((path, reason))
                if clips is None:
                    continue
                clips = clips.to(device, non_blocking=True)
                sync = (micro + 1) % accum == 0
                with train_model.no_sync() if world.distributed and not sync else nullcontext():
                    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                        loss = train_model(clips, mask_ratio=mask_ratio)[0]
                    value = loss.item()
                    if not math.isfinite(value):
                        raise HieraVideoError(
                            f"loss is {value} at epoch {state.epoch}, step {state.step}: training diverged. The last "
                            f"good checkpoint is {ckpt_path}; lower optim.lr or check the data, then --resume auto"
                        )
                    scaler.scale(loss / accum).backward()
                micro += 1
                acc_loss += value / accum
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
                state.step += 1
                step_loss, acc_loss = acc_loss, 0.0
                epoch_losses.append(step_loss)
                rate = t_clips / max(time.perf_counter() - t0, 1e-9)
                if progress is not None:
                    progress.update(state, step_loss, lr_now, rate)
                if logger is not None and state.step % cfg.run.log_every == 0:
                    logger.write(dict(kind="train", step=state.step, epoch=state.epoch, loss=step_loss, lr=lr_now, clips_per_s=rate))
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
            if logger is not None and epoch_losses:
                logger.write(dict(kind="epoch", step=state.step, epoch=state.epoch, loss=sum(epoch_losses) / len(epoch_losses),
                                  steps=len(epoch_losses)))
            last_epoch_loss = sum(epoch_losses) / len(epoch_losses) if epoch_losses else None
            epoch_losses = []
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
    except BaseException:
        if progress is not None:
            progress.close()
        for s, h in handlers.items():
            signal.signal(s, h)
        raise
    for s, h in handlers.items():
        signal.signal(s, h)

    summary = {}
    if world.is_main:
        preview = None
        if cfg.run.preview:
            preview = _write_preview(cfg, model, train_set, out / "reconstruction.png")
        rows = _read_rows(out / "metrics.jsonl")
        epochs_rows = [r for r in rows if r.get("kind") == "epoch"]
        summary = dict(final_loss=epochs_rows[-1]["loss"] if epochs_rows else last_epoch_loss,
                       first_epoch_loss=epochs_rows[0]["loss"] if epochs_rows else None,
                       steps=state.step, epochs_done=state.epoch, train_seconds=round(train_seconds, 1),
                       bad_training_videos=state.bad_videos, checkpoint=str(ckpt_path), preview=preview, **info)
        write_json(out / "metrics.json", summary)
        _finish_logs(world, out, logger, bad_list)
        plot_pretrain_curves(out / "metrics.jsonl", out / "curves.png")
    distributed.cleanup(world)
    return summary


def _write_preview(cfg: PretrainConfig, model, train_set: VideoDataset, png: Path) -> str | None:
    """reconstruction.png of the first readable training video (centre clip, seeded mask)."""
    from hiera_video.data.transforms import make_views
    from hiera_video.engine.reconstruct import reconstruct_clip, save_png

    T, S = model.input_size[0], model.input_size[-1]
    for item in train_set.items[:5]:
        try:
            views, _ = make_views(str(item.path), 1, 1, cfg.data.sampling, S, T, cfg.data.stride, cfg.data.target_fps,
                                  mean=model.spec.mean, std=model.spec.std, backend=cfg.data.backend)
        except HieraVideoError:
            continue
        try:
            rec = reconstruct_clip(model, views[0], cfg.model.mask_ratio, cfg.run.seed, model.spec.mean, model.spec.std)
            save_png(rec, png)
        except Exception as e:  # a preview must never fail a finished run
            log.warning("could not write the reconstruction preview: %s", e)
            return None
        return str(png)
    return None


def _read_rows(jsonl: Path) -> list[dict]:
    if not jsonl.is_file():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def plot_pretrain_curves(jsonl: Path, png: Path) -> None:
    """Reconstruction loss per step (and per-epoch mean) and the learning rate."""
    rows = _read_rows(jsonl)
    train = [r for r in rows if r.get("kind") == "train"]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    if not train and not epochs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.6, label="step")
    if epochs:
        axes[0].plot([r["step"] for r in epochs], [r["loss"] for r in epochs], marker="o", label="epoch mean")
    axes[0].set_title("MAE loss (normalised pixels, masked patches)")
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[1].set_title("learning rate")
    axes[1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
