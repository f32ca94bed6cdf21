"""``finetune``: train a Hiera classifier, readable top to bottom.

data (train / val splits) -> model (``--weights``: Kinetics or MAE checkpoints) -> training
clips (one decode, ``repeated_aug`` augmented clips) -> :class:`~hiera_video.engine.trainer.Trainer`
(the shared loop: accumulation, schedule, checkpoints, resume, signals, torchrun) with mixup/cutmix
and soft-target cross entropy -> fast centre-view validation per epoch (best.pt) -> final
multi-view evaluation through the ``eval`` code -> metrics.json and curves.png.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from hiera_video.config import TrainConfig
from hiera_video.data import DATASET_PRESETS, TrainTransform
from hiera_video.data.datasets import VideoDataset, build_dataset
from hiera_video.jobs.evaluate import evaluate, write_outputs
from hiera_video.engine.inference import Classifier, parse_views
from hiera_video.engine.mixup import Mixup, MixupConfig, SoftTargetCrossEntropy
from hiera_video.engine.train_data import TrainClips, collate_clips, train_clip_spec
from hiera_video.engine.trainer import Trainer
from hiera_video.errors import HieraVideoError
from hiera_video.models.factory import create_model

log = logging.getLogger("hiera_video")


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


def finetune(cfg: TrainConfig, resume: str | None = None, console=None) -> dict:
    """Train per ``cfg``; returns the final metrics (rank 0) or {} (other ranks).

    ``data.dataset: ava`` trains an action detector instead (:func:`hiera_video.ava.train.finetune_ava`).
    """
    if cfg.data.dataset == "ava":
        from hiera_video.ava.train import finetune_ava

        return finetune_ava(cfg, resume, console)
    trainer = Trainer(cfg, console)
    with trainer.running():
        return _finetune(trainer, cfg, resume)


def _finetune(trainer: Trainer, cfg: TrainConfig, resume: str | None) -> dict:
    device, world, out = trainer.device, trainer.world, trainer.out
    train_set, val_set = build_data(cfg)
    classes = train_set.classes
    overrides = dict(drop_path_rate=cfg.model.drop_path, head_dropout=cfg.model.head_dropout)
    if cfg.model.input_size:
        overrides["input_size"] = tuple(cfg.model.input_size)
    overrides.update(cfg.model.arch)
    model = create_model(cfg.model.name, weights=cfg.model.weights, num_classes=len(classes), **overrides)
    if model.spec.mae:
        raise HieraVideoError(f"{cfg.model.name} is an MAE model; finetune the classifier hiera_* and pass the MAE checkpoint as --weights")
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    model.to(device)
    clip = train_clip_spec(cfg.data, model)

    trainer.plan(len(train_set), cfg.data.repeated_aug)
    trainer.info["val_videos"] = len(val_set) if val_set else 0
    a = cfg.augment
    transform = TrainTransform(
        crop_size=clip.crop_size, scale=tuple(a.scale), flip=a.flip, randaug=a.randaug, randaug_ops=a.randaug_n,
        randaug_magnitude=a.randaug_m, randaug_std=a.randaug_std, erase_p=a.erase_p, mean=clip.mean,
        std=clip.std, seed=cfg.run.seed,
    )
    clips = TrainClips(train_set, clip, cfg.data.repeated_aug, transform, cfg.run.seed)
    mix_gen = torch.Generator().manual_seed(cfg.run.seed * 31 + world.rank)
    mixup = Mixup.from_config(MixupConfig(a.mixup, a.cutmix, a.mixup_prob, a.switch_prob, a.label_smoothing), len(classes), mix_gen)
    criterion = SoftTargetCrossEntropy()
    meta = dict(labels=list(classes), preprocessing=clip.recipe(), train_config=cfg.to_dict())
    trainer.prepare(model, meta, {"mixup": mix_gen}, ema=cfg.run.ema, ema_decay=cfg.run.ema_decay,
                    compile=cfg.model.compile, resume=resume)

    def loss_fn(net, batch):
        x, labels = (t.to(device, non_blocking=True) for t in batch)
        x, targets = mixup(x, labels)
        return criterion(net(x), targets), x.shape[0]

    def end_of_epoch():
        if val_set is None or not cfg.run.val_every_epochs or trainer.state.epoch % cfg.run.val_every_epochs:
            return
        val = _validate(cfg, trainer.eval_model, val_set, classes, parse_views(cfg.run.val_views), device, world, trainer.amp,
                        trainer.stop_requested)
        trainer.note_val(val, "top1", out / "best.pt")

    if not trainer.fit(clips, collate_clips, loss_fn, lambda i: str(train_set.items[i].path), end_of_epoch):
        return dict(halted_at_step=trainer.state.step)

    # Final evaluation through the eval code, with the dataset preset's views.
    final = {}
    trainer.ensure_published(out / "best.pt")
    if val_set is not None:
        preset = DATASET_PRESETS.get(cfg.data.dataset, DATASET_PRESETS["list"])
        views = parse_views(cfg.run.final_views) if cfg.run.final_views else (preset["temporal_views"], preset["spatial_views"])
        result, clf, protocol = _run_eval(cfg, trainer.eval_model, val_set, classes, views, device, world, trainer.amp,
                                          trainer.stop_requested)
        trainer.stop_if_signalled("the final evaluation")
        if world.is_main:
            files = write_outputs(out / "eval", result, val_set, clf, protocol, dict(split=cfg.data.val_split))
            m = result.metrics or {}
            final = dict(top1=m.get("top1"), top5=m.get("top5"), mean_class_accuracy=m.get("mean_class_accuracy"),
                         views=f"{views[0]}x{views[1]}", num_val_videos=len(result.indices), eval_dir=str(files["metrics"].parent))
    best = trainer.state.best_val
    trainer.finish(dict(**final, best_val_top1_centre_view=best if math.isfinite(best) else None), val_key="top1")
    return final if world.is_main else {}


# ---------------------------------------------------------------------------- evaluation


def _run_eval(cfg, model, val_set, classes, views, device, world, amp=None, stop=None):
    """Multi-view evaluation of the training model as it is (fp32 weights, the run's autocast);
    ``stop`` (the trainer's signal flag) ends it early, the result marked interrupted."""
    model.eval()
    clf = Classifier(model, model.spec.name, None, list(classes), device, amp, train_clip_spec(cfg.data, model))
    protocol = clf.protocol(views)
    result = evaluate(clf, protocol, val_set, batch_size=cfg.run.batch_size, workers=cfg.data.workers, world=world, stop=stop)
    model.train()
    return result, clf, protocol


def _validate(cfg, model, val_set, classes, views, device, world, amp=None, stop=None) -> dict | None:
    """Validation metrics (rank 0; None elsewhere, without labels, or when a signal cut it short)."""
    result, _, _ = _run_eval(cfg, model, val_set, classes, views, device, world, amp, stop)
    if result is None or result.metrics is None or result.interrupted:
        return None
    m = result.metrics
    return dict(top1=m["top1"], top5=m["top5"], mean_class_accuracy=m["mean_class_accuracy"], num_videos=m["num_videos"])
