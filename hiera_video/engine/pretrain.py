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

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from hiera_video.config import _f, load_config
from hiera_video.data import TrainTransform
from hiera_video.data.datasets import VIDEO_EXTENSIONS, FileIndex, VideoDataset, VideoItem, build_dataset
from hiera_video.engine.train_data import TrainClips, clip_preprocessing, collate_clips
from hiera_video.engine.trainer import Trainer, read_rows
from hiera_video.errors import HieraVideoError
from hiera_video.models.factory import create_model

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
    arch: dict = _f({}, "other architecture arguments for the model constructor, e.g. {q_pool: 2}")
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
    dist_timeout: float | None = _f(None, "torchrun: seconds a process waits for the others before the run stops with an error (null = $HIERA_VIDEO_DIST_TIMEOUT or 1800)")
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
    return sorted(Path(p) for paths in FileIndex(root).by_stem.values() for p in paths)


def _is_int(text: str) -> bool:
    t = text.strip()
    return t.lstrip("-").isdigit() and t not in ("-", "")


def read_path_list(path: Path) -> list[tuple[int, str]]:
    """``[(line number, video path)]`` from a list of videos: one path per line, optionally
    followed by a label (whitespace or comma separated, ignored). Blank lines, ``#`` comments and
    a ``path,label`` header are skipped; paths may contain spaces."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM from spreadsheet tools is not part of the first path
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
    overrides.update(cfg.model.arch)
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


# ---------------------------------------------------------------------------- the loop


def pretrain(cfg: PretrainConfig, resume: str | None = None, console=None) -> dict:
    """Pretrain per ``cfg``; returns the summary (rank 0) or {} (other ranks)."""
    if not cfg.data.root:
        raise HieraVideoError("no dataset root: pass --root DIR (or data.root in the config)")
    trainer = Trainer(cfg, console)
    with trainer.running():
        return _pretrain(trainer, cfg, resume)


def _pretrain(trainer: Trainer, cfg: PretrainConfig, resume: str | None) -> dict:
    train_set = build_unlabeled(cfg.data.dataset, cfg.data.root, cfg.data.annotations, cfg.data.train_split, cfg.data.limit_train)
    if len(train_set) == 0:
        raise HieraVideoError(f"no videos found for {cfg.data.dataset} under {cfg.data.root}")
    model = create_pretrain_model(cfg)
    model.to(trainer.device)
    num_frames, crop = model.input_size[0], model.input_size[-1]
    mask_ratio = cfg.model.mask_ratio

    trainer.plan(len(train_set), cfg.data.repeated_aug)
    trainer.info.update(effective_epochs=cfg.optim.epochs * cfg.data.repeated_aug,
                        mask_ratio=mask_ratio, missing_videos=len(train_set.missing))
    transform = TrainTransform(crop_size=crop, scale=tuple(cfg.augment.scale), flip=cfg.augment.flip, randaug=False,
                               erase_p=0.0, mean=model.spec.mean, std=model.spec.std, seed=cfg.run.seed)
    clips = TrainClips(train_set, num_frames, crop, cfg.data.repeated_aug, cfg.data.sampling, cfg.data.stride,
                       cfg.data.target_fps, transform, cfg.run.seed, cfg.data.backend)
    meta = dict(task="mae_pretraining", preprocessing=clip_preprocessing(cfg.data, model), mask_ratio=mask_ratio, train_config=cfg.to_dict())
    # The random masks come from torch's global RNG, which every checkpoint saves per rank.
    trainer.prepare(model, meta, compile=cfg.model.compile, resume=resume)

    def loss_fn(net, batch):
        x = batch[0].to(trainer.device, non_blocking=True)
        return net(x, mask_ratio=mask_ratio)[0], x.shape[0]

    if not trainer.fit(clips, collate_clips, loss_fn, lambda i: str(train_set.items[i].path)):
        return dict(halted_at_step=trainer.state.step)
    summary = {}
    if trainer.world.is_main:
        epochs = [r for r in read_rows(trainer.out / "metrics.jsonl") if r.get("kind") == "epoch"]
        preview = _write_preview(cfg, model, train_set, trainer.out / "reconstruction.png") if cfg.run.preview else None
        summary = dict(final_loss=epochs[-1]["loss"] if epochs else None, first_epoch_loss=epochs[0]["loss"] if epochs else None,
                       checkpoint=str(trainer.ckpt_path), preview=preview)
    return trainer.finish(summary)


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
