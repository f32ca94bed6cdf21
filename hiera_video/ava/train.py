"""AVA finetuning (``hiera-video finetune --dataset ava``) and loading the detectors it saves.

data (keyframes with all their person boxes, :func:`open_ava_split`) -> detector (Hiera
backbone, e.g. from Kinetics-finetuned weights, + RoI head: :func:`build_ava_model`) ->
the shared :class:`~hiera_video.engine.trainer.Trainer` with per-box BCE over the 80 action
ids -> frame-mAP@0.5 on the validation proposals every ``run.val_every_epochs`` (best.pt)
and at the end (``eval/``: detections.csv in the official format, metrics.json, per_class.csv).
mAP values are fractions in [0, 1] in every file, as the official scorer reports them.

A saved detector records ``task: ava``, the backbone name and architecture arguments, the
head settings, the label map and the clip preprocessing, so ``hiera-video eval --dataset ava
--weights RUN_DIR/best.pt`` needs nothing else (:func:`load_ava_detector`).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hiera_video.config import TrainConfig
from hiera_video.ava.files import find_ava_file
from hiera_video.data.clip_spec import ClipSpec
from hiera_video.ava.dataset import AvaDataset, ava_collate, open_ava_split
from hiera_video.ava.evaluate import ava_loss, evaluate_ava_model, render_ava_metrics, write_ava_outputs
from hiera_video.engine import distributed
from hiera_video.engine.train_data import item_seed
from hiera_video.engine.trainer import Trainer
from hiera_video.errors import HieraVideoError
from hiera_video.ava.model import AvaDetector, build_ava_model
from hiera_video.models.load import Provenance, load

log = logging.getLogger("hiera_video")


class AvaTrainItems(Dataset):
    """Training keyframes for the engine. Item ``i`` of epoch ``e`` draws its scale, crop and
    flip from a generator seeded by ``(seed, e, i)``, so it is the same on any worker or rank
    and after a resume. Returns ``(keyframe item, i, None)`` or ``(None, i, reason)`` when the
    video cannot be read."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        self.dataset.generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
        try:
            return self.dataset[index], index, None
        except HieraVideoError as e:
            return None, index, str(e)


def collate_keyframes(items):
    """``(ava_collate(good items) or None, [(index, reason)] of the bad ones)``."""
    good = [it[0] for it in items if it[0] is not None]
    bad = [(it[1], it[2]) for it in items if it[0] is None]
    return (ava_collate(good) if good else None), bad


def ava_clip_options(clip: ClipSpec) -> dict:
    """The :class:`~hiera_video.ava.dataset.AvaDataset` options for ``clip``: its frames
    around each keyframe (``num_frames`` at ``stride``), crop, normalisation and decoder."""
    return dict(num_frames=clip.num_frames, stride=clip.stride, crop_size=clip.crop_size, mean=clip.mean, std=clip.std,
                backend=clip.backend)


def open_ava_data(cfg: TrainConfig, clip: ClipSpec):
    """Training split (GT boxes, plus ``data.proposals`` when set) and validation split (the
    detector boxes of ``data.val_proposals`` or ``ava_val_predicted_boxes.csv``, else GT
    boxes); the validation split is None when ``data.val_annotations`` is not set and the
    official file is not there."""
    d = cfg.data
    if not d.root:
        raise HieraVideoError("no dataset root: pass --root DIR (or data.root in the config)")
    common = dict(**ava_clip_options(clip), frames_layout=d.frames_layout, proposal_threshold=d.proposal_threshold,
                  allow_pickle=d.allow_pickle)
    train = open_ava_split(d.root, d.train_split, "train", d.annotations, d.exclusions, d.proposals, d.labels,
                           flip_p=0.0 if cfg.augment.flip == "none" else 0.5, limit=d.limit_train, **common)
    val = None
    if d.val_annotations or find_ava_file(Path(d.root), None, f"ava_{d.val_split}_v2.2.csv"):
        val = open_ava_split(d.root, d.val_split, "val", d.val_annotations, d.val_exclusions, d.val_proposals, d.labels,
                             default_proposals=True, test_view=d.test_view, limit=d.limit_val, **common)
    else:
        log.warning("no ava_%s_v2.2.csv under %s: training without validation", d.val_split, d.root)
    if len(train) == 0:
        raise HieraVideoError(f"no AVA training keyframes with readable media under {d.root}")
    return train, val


def finetune_ava(cfg: TrainConfig, resume: str | None = None, console=None) -> dict:
    """Train an AVA detector per ``cfg``; returns the final metrics (rank 0) or {} (other ranks)."""
    trainer = Trainer(cfg, console)
    with trainer.running():
        return _finetune_ava(trainer, cfg, resume, console)


def _finetune_ava(trainer: Trainer, cfg: TrainConfig, resume: str | None, console) -> dict:
    device, world, out = trainer.device, trainer.world, trainer.out
    arch = dict(cfg.model.arch)
    if cfg.model.input_size:
        arch["input_size"] = tuple(cfg.model.input_size)
    head = dict(dropout=cfg.model.head_dropout, resolution=7, use_norm=True)
    model = build_ava_model(cfg.model.name, weights=cfg.model.weights, drop_path_rate=cfg.model.drop_path, **head, **arch)
    model.backbone.set_grad_checkpointing(cfg.model.grad_checkpointing)
    model.to(device)
    backbone = model.backbone
    clip = backbone.spec.clip.with_(num_frames=backbone.input_size[0], stride=cfg.data.stride, crop_size=backbone.input_size[-1],
                                    backend=cfg.data.backend)
    train_set, val_set = open_ava_data(cfg, clip)
    if cfg.data.repeated_aug != 1:
        log.info("AVA: data.repeated_aug=%d ignored (one clip per keyframe)", cfg.data.repeated_aug)
    trainer.plan(len(train_set), 1)
    trainer.info.update(train_keyframes=len(train_set), val_keyframes=len(val_set) if val_set else 0,
                        val_boxes="proposals" if val_set is not None and val_set.proposals is not None else "ground truth")
    meta = dict(
        task="ava", model=cfg.model.name, arch={k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}, head=head,
        label_map={str(k): v for k, v in train_set.label_map.items()}, train_config=cfg.to_dict(),
        preprocessing=dict(clip.recipe(), test_view=cfg.data.test_view),
    )
    trainer.prepare(model, meta, ema=cfg.run.ema, ema_decay=cfg.run.ema_decay, compile=cfg.model.compile, resume=resume)

    def loss_fn(net, batch):
        clips, boxes, labels, _ = batch
        logits = net(clips.to(device, non_blocking=True), [b.to(device) for b in boxes])
        return ava_loss(logits, labels), clips.shape[0]

    def evaluate(model):
        return evaluate_ava_model(model, val_set, batch_size=cfg.run.batch_size, device=device, num_workers=cfg.data.workers,
                                  amp_dtype=trainer.amp, world=world, stop=trainer.stop_requested)

    def end_of_epoch():
        if val_set is None or not cfg.run.val_every_epochs or trainer.state.epoch % cfg.run.val_every_epochs:
            return
        _, metrics = evaluate(trainer.eval_model)
        done = metrics is not None and not metrics["interrupted"]  # a signal cut it short: nothing to record
        val = dict(mAP=metrics["mAP"], num_keyframes=metrics["num_keyframes"]) if done else None
        trainer.note_val(val, "mAP", out / "best.pt")

    items = AvaTrainItems(train_set, cfg.run.seed)
    if not trainer.fit(items, collate_keyframes, loss_fn, lambda i: "%s,%04d" % train_set.items[i], end_of_epoch):
        return dict(halted_at_step=trainer.state.step)
    trainer.ensure_published(out / "best.pt")
    final = {}
    if val_set is not None:
        rows, metrics = evaluate(trainer.eval_model)
        trainer.stop_if_signalled("the final evaluation")
        if world.is_main and metrics is not None:
            write_ava_outputs(out / "eval", rows, metrics, dict(split=cfg.data.val_split), dataset=val_set)
            if console is not None:
                render_ava_metrics(metrics, console)
            final = dict(mAP=metrics["mAP"], groups={k: None if v is None or math.isnan(v) else v for k, v in metrics["groups"].items()},
                         num_val_keyframes=metrics["num_keyframes"], eval_dir=str(out / "eval"))
    best = trainer.state.best_val
    trainer.finish(dict(**final, best_val_mAP=best if math.isfinite(best) else None), val_key="mAP")
    return final if world.is_main else {}


@dataclass
class AvaEvalJob:
    """What ``hiera-video eval --dataset ava`` evaluates, inside its process group."""

    world: distributed.World
    model: AvaDetector
    prov: Provenance
    dataset: AvaDataset
    device: torch.device
    amp: torch.dtype | None


@contextmanager
def ava_eval_job(root, split, annotations, label_map, weights, proposals, exclusions, threshold: float, frames: bool,
                 view: str | None, allow_pickle: bool, limit, output, device: str, dtype: str, backend: str,
                 allow_random: bool = False):
    """The device and the process group, the output check (rank 0), then the detector and the
    split with the clips it was trained on (the process group ends with the block)."""
    from hiera_video.engine.shard_files import output_claim
    from hiera_video.report import check_output
    from hiera_video.runtime import resolve_dtype

    if not weights:
        raise HieraVideoError("AVA evaluation needs --weights RUN_DIR/best.pt (a detector saved by finetune --dataset ava)")
    with distributed.session(device) as (world, dev):
        if world.is_main:
            check_output(output, "--output", "dir")
        with output_claim(output, world, "eval --dataset ava"):  # OUTPUT/.lock until the outputs are written
            model, prov = load_ava_detector(weights, dev, allow_random)
            ds = open_ava_split(root, split, "val", annotations, exclusions, proposals, label_map or prov.meta.get("label_map"),
                                default_proposals=True, **ava_clip_options(prov.clip.with_(backend=backend)),
                                proposal_threshold=threshold, frames_layout="frames" if frames else "video",
                                test_view=view or prov.meta["preprocessing"].get("test_view", "full"),
                                allow_pickle=allow_pickle, limit=limit)
            if len(ds) == 0:  # the rule of every eval: scoring nothing is an error, not a 0.0
                if limit == 0:
                    source = "--limit 0"
                elif ds.proposals is not None:
                    source = (f"the proposals ({proposals or 'ava_' + split + '_predicted_boxes.csv'}) give no person box scoring "
                              f"at least --proposal-threshold {threshold}")
                else:
                    source = "the annotations list no keyframe"
                raise HieraVideoError(f"nothing to evaluate in AVA {split}: {source}; check the file, or lower --proposal-threshold")
            yield AvaEvalJob(world, model, prov, ds, dev, resolve_dtype(dtype, dev))


def load_ava_detector(weights: str | Path, device: str | torch.device = "cpu",
                      allow_random_weights: bool = False) -> tuple[AvaDetector, Provenance]:
    """A detector saved by :func:`finetune_ava` (``best.pt`` / ``last.pt``) and its provenance
    (``clip``: the clips it was trained on; ``meta``: label map, test view...), through the
    weights checks every task gets (:func:`~hiera_video.models.load.load`: NaN/inf weights
    refused; a missing head refused unless ``allow_random_weights``)."""
    model, prov = load("ava", weights=weights, allow_random=allow_random_weights)
    model.to(device).eval()
    return model, prov
