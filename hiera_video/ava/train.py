"""AVA finetuning (``finetune --dataset ava``): keyframes with person boxes -> Hiera + RoI head -> the shared Trainer
with per-box BCE -> frame-mAP@0.5 (fractions, as the official scorer) every ``run.val_every_epochs`` and at the end."""

from __future__ import annotations

import logging
import math
from functools import partial
from pathlib import Path

from hiera_video.config import TrainConfig
from hiera_video.ava.files import find_ava_file
from hiera_video.ava.dataset import ava_collate, open_ava_split
from hiera_video.ava.evaluate import ava_loss, evaluate_ava_model, render_ava_metrics, write_ava_outputs
from hiera_video.engine.train_data import Guarded, collate_items
from hiera_video.engine.trainer import Trainer
from hiera_video.errors import HieraVideoError
from hiera_video.ava.model import build_ava_model

log = logging.getLogger("hiera_video")


def finetune_ava(cfg: TrainConfig, resume: str | None = None, console=None) -> dict:
    """Train an AVA detector per ``cfg``; returns the final metrics (rank 0) or {} (other ranks)."""
    trainer = Trainer(cfg, console)
    with trainer.running():
        device, world, out, d, m = trainer.device, trainer.world, trainer.out, cfg.data, cfg.model
        arch = {**m.arch, **({"input_size": tuple(m.input_size)} if m.input_size else {})}
        head = dict(dropout=m.head_dropout, resolution=7, use_norm=True)
        model = build_ava_model(m.name, weights=m.weights, drop_path_rate=m.drop_path, **head, **arch)
        (bb := model.to(device).backbone).set_grad_checkpointing(m.grad_checkpointing)
        clip = bb.spec.clip.with_(num_frames=bb.input_size[0], stride=d.stride, crop_size=bb.input_size[-1], backend=d.backend)
        if not d.root:
            raise HieraVideoError("no dataset root: pass --root DIR (or data.root in the config)")
        common = dict(clip=clip, frames_layout=d.frames_layout, proposal_threshold=d.proposal_threshold, allow_pickle=d.allow_pickle)
        train_set = open_ava_split(d.root, d.train_split, "train", d.annotations, d.exclusions, d.proposals, d.labels,
                                   flip_p=0.0 if cfg.augment.flip == "none" else 0.5, limit=d.limit_train, **common)
        has_val = d.val_annotations or find_ava_file(Path(d.root), None, f"ava_{d.val_split}_v2.2.csv")
        val_set = open_ava_split(d.root, d.val_split, "val", d.val_annotations, d.val_exclusions, d.val_proposals, d.labels,
                                 default_proposals=True, test_view=d.test_view, limit=d.limit_val, **common) if has_val else None
        if not has_val:
            log.warning("no ava_%s_v2.2.csv under %s: training without validation", d.val_split, d.root)
        if len(train_set) == 0:
            raise HieraVideoError(f"no AVA training keyframes with readable media under {d.root}")
        if d.repeated_aug != 1:
            log.info("AVA: data.repeated_aug=%d ignored (one clip per keyframe)", d.repeated_aug)
        trainer.plan(len(train_set), 1)
        trainer.info.update(train_keyframes=len(train_set), val_keyframes=len(val_set) if val_set else 0,
                            val_boxes="ground truth" if getattr(val_set, "proposals", None) is None else "proposals")
        meta = dict(task="ava", model=m.name, arch={k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
                    head=head, label_map={str(k): v for k, v in train_set.label_map.items()},
                    train_config=cfg.to_dict(), preprocessing=dict(clip.recipe(), test_view=d.test_view))
        trainer.prepare(model, meta, ema=cfg.run.ema, ema_decay=cfg.run.ema_decay, compile=m.compile, resume=resume)
        evaluate = partial(evaluate_ava_model, dataset=val_set, batch_size=cfg.run.batch_size, device=device,
                           num_workers=d.workers, amp_dtype=trainer.amp, world=world, stop=trainer.stop_requested)

        def loss_fn(net, batch):
            clips, boxes, labels, _ = batch
            return ava_loss(net(clips.to(device, non_blocking=True), [b.to(device) for b in boxes]), labels), clips.shape[0]

        def end_of_epoch():
            if val_set is not None and cfg.run.val_every_epochs and not trainer.state.epoch % cfg.run.val_every_epochs:
                _, r = evaluate(trainer.eval_model)
                val = None if r is None or r["interrupted"] else dict(mAP=r["mAP"], num_keyframes=r["num_keyframes"])
                trainer.note_val(val, "mAP", out / "best.pt")  # val None: a signal cut it short, nothing to record

        if not trainer.fit(Guarded(train_set, seed=cfg.run.seed), partial(collate_items, join=ava_collate), loss_fn,
                           lambda i: "%s,%04d" % train_set.items[i], end_of_epoch):
            return dict(halted_at_step=trainer.state.step)
        trainer.ensure_published(out / "best.pt")
        final = {}
        if val_set is not None:
            rows, res = evaluate(trainer.eval_model)
            trainer.stop_if_signalled("the final evaluation")
            if world.is_main and res is not None:
                write_ava_outputs(out / "eval", rows, res, dict(split=d.val_split), dataset=val_set)
                if console is not None:
                    render_ava_metrics(res, console)
                groups = {k: None if v is None or math.isnan(v) else v for k, v in res["groups"].items()}
                final = dict(mAP=res["mAP"], groups=groups, num_val_keyframes=res["num_keyframes"], eval_dir=str(out / "eval"))
        best = trainer.state.best_val
        trainer.finish(dict(**final, best_val_mAP=best if math.isfinite(best) else None), val_key="mAP")
        return final if world.is_main else {}
