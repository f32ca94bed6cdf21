"""``finetune``: Kinetics/MAE weights -> Trainer with mixup/cutmix -> centre-view val (best.pt) -> multi-view eval."""

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
from hiera_video.engine.train_data import Guarded, TrainClips, collate_items, train_clip_spec
from hiera_video.engine.trainer import Trainer
from hiera_video.errors import HieraVideoError
from hiera_video.models.factory import create_model

log = logging.getLogger("hiera_video")


def build_data(cfg: TrainConfig) -> tuple[VideoDataset, VideoDataset | None]:
    d = cfg.data
    if not d.root:
        raise HieraVideoError("no dataset root: pass --root DIR (or data.root in the config)")
    root = Path(d.root)  # files named in a preset are relative to the dataset root
    labels, train_ann, val_ann = (str(root / p) if p and not Path(p).exists() and (root / p).exists() else p
                                  for p in (d.labels, d.annotations, d.val_annotations))
    train = build_dataset(d.dataset, d.root, train_ann, d.train_split, labels, d.limit_train)
    try:
        val = build_dataset(d.dataset, d.root, val_ann, d.val_split, labels, d.limit_val)
    except HieraVideoError as e:
        val = None
        log.warning("no validation split (%s): training without validation", e)
    if len(train) == 0:
        raise HieraVideoError(f"no training videos found for {d.dataset} under {d.root}")
    if val is not None and val.classes != train.classes:
        raise HieraVideoError("the training and validation splits have different class lists")
    return train, val


def finetune(cfg: TrainConfig, resume: str | None = None, console=None) -> dict:
    """Train per ``cfg``; returns the final metrics (rank 0) or {} (other ranks)."""
    trainer = Trainer(cfg, console)
    with trainer.running():
        device, world, out = trainer.device, trainer.world, trainer.out
        train_set, val_set = build_data(cfg)
        classes = train_set.classes
        overrides = {"drop_path_rate": cfg.model.drop_path, "head_dropout": cfg.model.head_dropout,
                     **({"input_size": tuple(cfg.model.input_size)} if cfg.model.input_size else {}), **cfg.model.arch}
        model = create_model(cfg.model.name, weights=cfg.model.weights, num_classes=len(classes), **overrides)
        if model.spec.mae:
            raise HieraVideoError(f"{cfg.model.name} is an MAE model; finetune the classifier hiera_* and pass the MAE checkpoint as --weights")
        model.set_grad_checkpointing(cfg.model.grad_checkpointing)
        model.to(device)
        clip = train_clip_spec(cfg.data, model)
        trainer.plan(len(train_set), cfg.data.repeated_aug)
        trainer.info["val_videos"] = len(val_set) if val_set else 0
        a = cfg.augment
        transform = TrainTransform(clip, tuple(a.scale), flip=a.flip, randaug=a.randaug, randaug_ops=a.randaug_n,
                                   randaug_magnitude=a.randaug_m, randaug_std=a.randaug_std, erase_p=a.erase_p, seed=cfg.run.seed)
        clips = Guarded(TrainClips(train_set, clip, cfg.data.repeated_aug, transform), seed=cfg.run.seed)
        mix_gen = torch.Generator().manual_seed(cfg.run.seed * 31 + world.rank)
        mixup = Mixup.from_config(MixupConfig(a.mixup, a.cutmix, a.mixup_prob, a.switch_prob, a.label_smoothing), len(classes), mix_gen)
        criterion, meta = SoftTargetCrossEntropy(), dict(labels=list(classes), preprocessing=clip.recipe(), train_config=cfg.to_dict())
        trainer.prepare(model, meta, {"mixup": mix_gen}, ema=cfg.run.ema, ema_decay=cfg.run.ema_decay, compile=cfg.model.compile, resume=resume)

        def loss_fn(net, batch):
            x, labels = (t.to(device, non_blocking=True) for t in batch)
            x, targets = mixup(x, labels)
            return criterion(net(x), targets), x.shape[0]

        def run_eval(views):  # the training model as it is (the run's autocast); a signal ends it early
            net = trainer.eval_model.eval()
            clf = Classifier(net, net.spec.name, None, list(classes), device, trainer.amp, train_clip_spec(cfg.data, net))
            result = evaluate(clf, protocol := clf.protocol(views), val_set, batch_size=cfg.run.batch_size, workers=cfg.data.workers,
                              world=world, stop=trainer.stop_requested)
            net.train()
            return result, clf, protocol

        def end_of_epoch():
            if val_set is None or not cfg.run.val_every_epochs or trainer.state.epoch % cfg.run.val_every_epochs:
                return
            r = run_eval(parse_views(cfg.run.val_views))[0]
            ok = r is not None and r.metrics is not None and not r.interrupted  # rank 0, with labels, not cut short
            trainer.note_val({k: r.metrics[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos")} if ok else None,
                             "top1", out / "best.pt")

        if not trainer.fit(clips, collate_items, loss_fn, lambda i: str(train_set.items[i].path), end_of_epoch):
            return dict(halted_at_step=trainer.state.step)

        final = {}  # the final evaluation, with the dataset preset's views
        trainer.ensure_published(out / "best.pt")
        if val_set is not None:
            preset = DATASET_PRESETS.get(cfg.data.dataset, DATASET_PRESETS["list"])
            views = parse_views(cfg.run.final_views) if cfg.run.final_views else (preset["temporal_views"], preset["spatial_views"])
            result, clf, protocol = run_eval(views)
            trainer.stop_if_signalled("the final evaluation")
            if world.is_main:
                files = write_outputs(out / "eval", result, val_set, clf, protocol, dict(split=cfg.data.val_split))
                final = dict({k: (result.metrics or {}).get(k) for k in ("top1", "top5", "mean_class_accuracy")}, views=f"{views[0]}x{views[1]}",
                             num_val_videos=len(result.indices), eval_dir=str(files["metrics"].parent))
        best = trainer.state.best_val
        trainer.finish(dict(**final, best_val_top1_centre_view=best if math.isfinite(best) else None), val_key="top1")
        return final if world.is_main else {}

