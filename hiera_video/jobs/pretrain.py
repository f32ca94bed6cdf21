"""``pretrain``: sparse MAE pretraining of ``mae_hiera_*`` on unlabeled video, ending with a reconstruction preview.
One epoch = one pass over the videos = ``repeated_aug`` effective epochs, the papers' count (200 = 800 effective)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from hiera_video.config import (BELOW_1, AugmentConfig, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig,
                                dataset_setting, load_config, setting, variant)
from hiera_video.data import TrainTransform, make_views
from hiera_video.data.datasets import DATASET_KINDS, VideoDataset, build_unlabeled
from hiera_video.engine.train_data import Guarded, TrainClips, collate_items, train_clip_spec
from hiera_video.engine.train_log import read_rows
from hiera_video.engine.trainer import Trainer
from hiera_video.errors import HieraVideoError
from hiera_video.models.factory import create_model

log = logging.getLogger("hiera_video")


# Finetuning's sections with pretraining's defaults; only the keys pretraining uses.
PretrainDataConfig = variant(
    DataConfig, "PretrainDataConfig", "dataset root annotations train_split sampling stride target_fps repeated_aug workers backend limit_train",
    dataset=dataset_setting("folder", DATASET_KINDS, " (list: paths, labels optional; folder: any layout, recursive)"),
    annotations=setting(None, "annotation / list file (default: looked up under root for train_split)"),
    train_split=setting("train", "split of the annotations to pretrain on"), limit_train=setting(None, "use only the first N videos"),
    repeated_aug=setting(4, "clips from each decoded video (repeated sampling); 1 epoch = repeated_aug effective epochs"))
PretrainModelConfig = variant(
    ModelConfig, "PretrainModelConfig", "name weights input_size arch mask_ratio drop_path grad_checkpointing compile",
    name=setting("mae_hiera_base_16x224", "MAE model name (hiera-video models --mae)"),
    weights=setting(None, "initial weights (e.g. mae_k400 to continue the official MAE); null = random"),
    mask_ratio=(float, setting(0.9, "fraction of mask units hidden from the encoder (video 0.9, image 0.6)", BELOW_1)),
    drop_path=(float | None, setting(None, "stochastic depth rate; null = by size (0.1 B, 0.2 B+/L, 0.3 H, 0 nano/micro)")))
PretrainOptimConfig = variant(
    OptimConfig, "PretrainOptimConfig", "name lr base_batch min_lr weight_decay betas momentum layer_decay clip_grad epochs warmup_epochs",
    base_batch=setting(512, "batch size the learning rate is defined for"), betas=setting([0.9, 0.95], "AdamW betas"),
    min_lr=setting(0.0, "final learning rate of the cosine schedule (also scaled)"),
    weight_decay=setting(0.05, "weight decay (never on 1-D params, biases, position embeddings, mask token)"),
    layer_decay=setting(None, "layer-wise lr decay (null = off; MAE pretraining uses none)"),
    clip_grad=setting(None, "max gradient norm (null = off)"),
    epochs=setting(200, "passes over the videos (x repeated_aug = effective epochs)"),
    warmup_epochs=setting(30.0, "linear warmup length in epochs (same units as epochs)"))
PretrainAugmentConfig = variant(AugmentConfig, "PretrainAugmentConfig", "scale flip", flip=setting("random", "", ("random", "none")),
                                scale=setting([0.5, 1.0], "random-resized-crop area range"))
PretrainRunConfig = variant(
    RunConfig, "PretrainRunConfig",
    "output batch_size global_batch precision device dist_timeout seed ckpt_every_steps lock log_every tensorboard preview halt_after_steps",
    batch_size=setting(8, "clips per process per forward pass (a multiple of data.repeated_aug)"),
    preview=(bool, setting(True, "at the end, write reconstruction.png of the first training video")))


@dataclass
class PretrainConfig(TrainConfig):
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    augment: PretrainAugmentConfig = field(default_factory=PretrainAugmentConfig)
    run: PretrainRunConfig = field(default_factory=PretrainRunConfig)


def load_pretrain_config(source: str | None = None, sets=(), overrides: dict | None = None) -> PretrainConfig:
    return load_config(source, sets, overrides, cls=PretrainConfig)


def default_drop_path(name: str) -> float:
    """The paper's drop path by model size: 0.1 T/S/B, 0.2 B+/L, 0.3 H, 0 for the nano/micro test models."""
    sizes = (("huge", 0.3), ("base_plus", 0.2), ("large", 0.2), ("base", 0.1), ("small", 0.1), ("tiny", 0.1))
    return next((p for size, p in sizes if f"_{size}_" in f"_{name}_"), 0.0)


def create_pretrain_model(cfg: PretrainConfig) -> nn.Module:
    drop = cfg.model.drop_path if cfg.model.drop_path is not None else default_drop_path(cfg.model.name)
    overrides = {"drop_path_rate": drop, "mask_ratio": cfg.model.mask_ratio,
                 **({"input_size": tuple(cfg.model.input_size)} if cfg.model.input_size else {}), **cfg.model.arch}
    model = create_model(cfg.model.name, weights=cfg.model.weights, **overrides)
    if not model.spec.mae:
        raise HieraVideoError(f"{cfg.model.name} is a classifier; pretrain the MAE model mae_{cfg.model.name} (then finetune "
                              f"{cfg.model.name} with --weights RUN_DIR/last.pt)")
    if model.spec.kind != "video":
        raise HieraVideoError(f"{cfg.model.name} is an image model; video pretraining needs mae_hiera_*_16x224 or another video MAE")
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    return model


def pretrain(cfg: PretrainConfig, resume: str | None = None, console=None) -> dict:
    """Pretrain per ``cfg``; returns the summary (rank 0) or {} (other ranks)."""
    if not cfg.data.root:
        raise HieraVideoError("no dataset root: pass --root DIR (or data.root in the config)")
    trainer = Trainer(cfg, console)
    with trainer.running():
        train_set = build_unlabeled(cfg.data.dataset, cfg.data.root, cfg.data.annotations, cfg.data.train_split, cfg.data.limit_train)
        if train_set.missing:
            log.warning("%d of %d listed videos are missing (first: %s); they are skipped",
                        len(train_set.missing), len(train_set.missing) + len(train_set.items), train_set.missing[0][0])
        if len(train_set) == 0:
            raise HieraVideoError(f"no videos found for {cfg.data.dataset} under {cfg.data.root}")
        model = create_pretrain_model(cfg).to(trainer.device)
        clip, mask_ratio = train_clip_spec(cfg.data, model), cfg.model.mask_ratio
        trainer.plan(len(train_set), cfg.data.repeated_aug)
        trainer.info.update(effective_epochs=cfg.optim.epochs * cfg.data.repeated_aug, mask_ratio=mask_ratio,
                            missing_videos=len(train_set.missing))
        transform = TrainTransform(clip, tuple(cfg.augment.scale), flip=cfg.augment.flip, randaug=False, erase_p=0.0, seed=cfg.run.seed)
        clips = Guarded(TrainClips(train_set, clip, cfg.data.repeated_aug, transform), seed=cfg.run.seed)
        meta = dict(task="mae_pretraining", preprocessing=clip.recipe(), mask_ratio=mask_ratio, train_config=cfg.to_dict())
        trainer.prepare(model, meta, compile=cfg.model.compile, resume=resume)

        def loss_fn(net, batch):
            x = batch[0].to(trainer.device, non_blocking=True)
            return net(x, mask_ratio=mask_ratio)[0], x.shape[0]

        if not trainer.fit(clips, collate_items, loss_fn, lambda i: str(train_set.items[i].path)):
            return dict(halted_at_step=trainer.state.step)
        summary = {}  # the masks came from torch's global RNG, which checkpoints save per rank
        if trainer.world.is_main:
            epochs = [r for r in read_rows(trainer.out / "metrics.jsonl") if r.get("kind") == "epoch"]
            preview = _write_preview(cfg, model, train_set, clip, trainer.out / "reconstruction.png") if cfg.run.preview else None
            summary = dict(final_loss=epochs[-1]["loss"] if epochs else None, first_epoch_loss=epochs[0]["loss"] if epochs else None,
                           checkpoint=str(trainer.ckpt_path), preview=preview)
        return trainer.finish(summary)


def _write_preview(cfg: PretrainConfig, model, train_set: VideoDataset, clip, png: Path) -> str | None:
    """reconstruction.png of the first readable training video (centre clip, seeded mask)."""
    from hiera_video.jobs.reconstruct import reconstruct_clip, save_png
    for item in train_set.items[:5]:
        try:
            views, _ = make_views(str(item.path), clip)
        except HieraVideoError:
            continue
        try:
            save_png(reconstruct_clip(model, views[0], cfg.model.mask_ratio, cfg.run.seed, clip.mean, clip.std), png)
        except Exception as e:  # a preview must never fail a finished run
            log.warning("could not write the reconstruction preview: %s", e)
            return None
        return str(png)
    return None
