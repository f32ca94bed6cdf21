"""How weights fit a model: :func:`apply_checkpoint` loads a :class:`Checkpoint` into a model
in small steps, each adding to one :class:`LoadReport`. Not errors (each step says what it
did): an MAE checkpoint into a classifier (decoder dropped, final norm and head stay
initialised), a checkpoint without a head, a head of another size (re-initialised), position
embeddings made for another input size (resampled). Everything else must match exactly, or
it is a :class:`~hiera_video.errors.HieraVideoError` that lists what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn as nn

from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints.common import (
    CLASSIFIER_ONLY_PREFIXES, MAE_ONLY_PREFIXES, POS_EMBED_KEYS, SEMANTIC_KEYS, as_list, block_count, few, groups,
    model_name, shape_text, token_grid,
)
from hiera_video.models.checkpoints.formats import Checkpoint
from hiera_video.models.posembed import resample_grid


@dataclass
class LoadReport:
    """What :func:`apply_checkpoint` did; :meth:`messages` gives the lines worth telling."""

    layout: str
    source: str = ""
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    resized: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    head_reset: tuple[int, int] | None = None  # (model classes, checkpoint classes)
    notes: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        lines = list(self.notes)
        if self.head_reset is not None:
            n, m = self.head_reset
            lines.append(f"head re-initialised for {n} classes (checkpoint has {m}): train it before trusting predictions")
        for key, old, new in self.resized:
            lines.append(f"resampled {key} {shape_text(old)} -> {shape_text(new)} to the model's token grid")
        if self.missing:
            lines.append(f"{len(self.missing)} model tensors are not in the checkpoint and keep their initialisation: {few(self.missing)}")
        if self.unexpected:
            lines.append(f"ignored {len(self.unexpected)} checkpoint tensors the model does not have: {few(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} {shape_text(a)} vs model {shape_text(b)}" for k, a, b in self.mismatched]
            lines.append(f"skipped {len(self.mismatched)} checkpoint tensors of another shape: {few(shown)}")
        return lines

    def __str__(self) -> str:
        head = f"loaded {self.loaded} tensors from {self.source or 'checkpoint'} ({self.layout} layout)"
        return "\n".join([head, *self.messages()])


#: The part of the encoder's token grid each encoder position embedding covers.
_ENCODER_GRIDS = {"pos_embed": slice(None), "pos_embed_spatial": slice(1, None), "pos_embed_temporal": slice(0, 1)}


def _model_grid(key: str, model: nn.Module) -> list[int] | None:
    if key in _ENCODER_GRIDS:
        return list(getattr(model, "tokens_spatial_shape", []) or [])[_ENCODER_GRIDS[key]]
    final = getattr(model, "tokens_spatial_shape_final", None)  # decoder_pos_embed
    return list(final) if final is not None else None


def _grid_for(key: str, cfg: Mapping) -> list[int] | None:
    """The grid of ``key`` for a model built with constructor kwargs ``cfg``."""
    tokens = token_grid(cfg)
    if not tokens:
        return None
    if key in _ENCODER_GRIDS:
        return tokens[_ENCODER_GRIDS[key]]
    try:
        q = [int(s) ** int(cfg.get("q_pool", 2)) for s in cfg.get("q_stride", [2] * len(tokens))]
        return [t // s for t, s in zip(tokens, q)]
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _source_grid(key: str, length: int, ckpt: Checkpoint, model: nn.Module) -> list[int] | None:
    """Token grid the checkpoint's ``key`` (``length`` tokens) was made for.

    In order: the checkpoint's config; the zoo spec's default input size (official weights
    are made at it); else inferred from the length: a 1-D grid is the length itself, 2-D
    grids are square, 3-D grids keep the model's spatial size (or its temporal size with a
    square spatial grid).
    """
    for cfg in (ckpt.config, getattr(getattr(model, "spec", None), "kwargs", None)):
        if cfg:
            g = _grid_for(key, {**getattr(model, "config", {}), **cfg})
            if g and math.prod(g) == length:
                return g
    target = _model_grid(key, model)
    if not target:
        return None
    if len(target) == 1:
        return [length]
    if len(target) == 2:
        s = math.isqrt(length)
        return [s, s] if s * s == length else None
    if len(target) == 3:
        hw = math.prod(target[1:])
        if length % hw == 0:
            return [length // hw, *target[1:]]
        if length % target[0] == 0:
            s = math.isqrt(length // target[0])
            if s * s * target[0] == length:
                return [target[0], s, s]
    return None


def _describe_weights(sd: Mapping[str, torch.Tensor], model_is_mae: bool) -> str:
    """``"video weights with embed_dim 96, stages (2, 3, 16, 3) (fits: hiera_base_16x224)"``."""
    pe = sd.get("patch_embed.proj.weight")
    if pe is None:
        return ""
    kind = "video" if pe.dim() == 5 else "image" if pe.dim() == 4 else f"{pe.dim() - 2}-D"
    depth = block_count(sd, "blocks.")
    starts = sorted(i for i in range(1, depth) if f"blocks.{i}.proj.weight" in sd)
    bounds = [0, *starts, depth]
    stages = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    embed = int(pe.shape[0])
    from hiera_video.models.zoo import MODELS

    fits = [
        n for n, s in MODELS.items()
        if s.mae == model_is_mae and s.kwargs.get("embed_dim") == embed and tuple(s.kwargs.get("stages", ())) == stages
        and len(s.kwargs.get("input_size", ())) == pe.dim() - 2
    ]
    text = f"the checkpoint holds {kind} weights with embed_dim {embed} and stages {stages}"
    return text + (f" (fits: {', '.join(fits)})" if fits else "")


@dataclass
class _Fit:
    """One :func:`apply_checkpoint` in progress: what the steps below read and change."""

    model: nn.Module
    ckpt: Checkpoint
    strict: bool
    report: LoadReport
    sd: dict  # the checkpoint's tensors still to load (steps drop and resample)
    target: dict  # the model's state dict
    model_is_mae: bool
    expected_missing: set = field(default_factory=set)  # model tensors left initialised on purpose
    problems: list = field(default_factory=list)  # errors when strict, else notes

    @property
    def name(self) -> str:
        return model_name(self.model)

    @property
    def src(self) -> str:
        return self.ckpt.path or "the checkpoint"


def _note_other_model(fit: _Fit) -> None:
    saved = fit.ckpt.meta.get("model") if isinstance(fit.ckpt.meta.get("model"), str) else None
    if saved and getattr(getattr(fit.model, "spec", None), "name", None) not in (None, saved):
        fit.report.notes.append(f"checkpoint was saved from {saved}; loading it into {fit.name}")


def _check_semantics(fit: _Fit) -> None:
    """Same shapes can still mean another computation (e.g. another number of heads)."""
    cfg, model_cfg = fit.ckpt.config, getattr(fit.model, "config", None)
    if not cfg or not isinstance(model_cfg, Mapping):
        return
    # q_pool too, unless MAE weights go into a classifier (the official MAE pretrains with
    # fewer q-pools than its classifiers use; pooling has no parameters).
    keys = SEMANTIC_KEYS + (("q_pool",) if fit.ckpt.is_mae == fit.model_is_mae else ())
    diffs = [
        f"{k}={cfg[k]} (model {model_cfg[k]})" for k in keys
        if k in cfg and k in model_cfg and as_list(cfg[k]) != as_list(model_cfg[k])
    ]
    if diffs:
        fit.problems.append(f"the checkpoint was made with {', '.join(diffs)}")


def _mae_into_classifier(fit: _Fit) -> None:
    if fit.model_is_mae or not fit.ckpt.is_mae:
        return
    dropped = [k for k in fit.sd if k.startswith(MAE_ONLY_PREFIXES)]
    for k in dropped:
        del fit.sd[k]
    fit.report.dropped += dropped
    fit.expected_missing |= {k for k in fit.target if k.startswith(CLASSIFIER_ONLY_PREFIXES)}
    fit.report.notes.append(
        f"MAE checkpoint loaded into classifier {fit.name}: kept the encoder, dropped {len(dropped)} decoder/fusion "
        f"tensors ({groups(dropped)}); the final 'norm' and 'head' are NOT in the checkpoint and keep their "
        "random initialisation, so finetune before using predictions"
    )


def _classifier_into_mae(fit: _Fit) -> None:
    if not fit.model_is_mae or fit.ckpt.is_mae:
        return
    name = fit.name
    msg = (
        f"{fit.src} holds classifier weights without the MAE decoder that {name} needs; load it into the "
        f"classifier {name.removeprefix('mae_')} instead, or use an MAE checkpoint (e.g. tag mae_k400 / mae_in1k)"
    )
    if fit.strict:
        raise HieraVideoError(msg)
    cls_keys = [k for k in fit.sd if k.startswith(CLASSIFIER_ONLY_PREFIXES)]
    for k in cls_keys:
        del fit.sd[k]
    fit.report.dropped += cls_keys
    fit.report.notes.append(msg)


def _backbone_without_head(fit: _Fit) -> None:
    """A backbone without a classifier (timm num_classes=0, HF HieraModel): like a new head."""
    head = fit.target.get("head.projection.weight")
    if fit.model_is_mae or fit.ckpt.is_mae or head is None or any(k.startswith("head.") for k in fit.sd):
        return
    fit.expected_missing |= {k for k in fit.target if k.startswith("head.")}
    fit.report.notes.append(
        f"the checkpoint has no classification head: the head of {fit.name} is initialised for "
        f"{int(head.shape[0])} classes; train it before trusting predictions"
    )


def _reset_head(fit: _Fit) -> None:
    """A head for another number of classes is re-initialised."""
    hw, tw = fit.sd.get("head.projection.weight"), fit.target.get("head.projection.weight")
    if hw is None or tw is None or hw.shape[0] == tw.shape[0] or hw.shape[1:] != tw.shape[1:]:
        return
    for k in ("head.projection.weight", "head.projection.bias"):
        fit.sd.pop(k, None)
        fit.expected_missing.add(k)
    fit.report.head_reset = (int(tw.shape[0]), int(hw.shape[0]))
    if hasattr(fit.model, "reset_classifier"):
        fit.model.reset_classifier(int(tw.shape[0]))


def _resample_pos_embeds(fit: _Fit) -> None:
    """Position embeddings of another token grid are resampled to the model's."""
    for key in POS_EMBED_KEYS:
        old, new = fit.sd.get(key), fit.target.get(key)
        if old is None or new is None or old.shape == new.shape:
            continue
        if old.dim() != 3 or new.dim() != 3 or old.shape[0] != 1 or old.shape[-1] != new.shape[-1]:
            continue  # another width: a plain shape mismatch
        old_grid = _source_grid(key, int(old.shape[1]), fit.ckpt, fit.model)
        new_grid = _model_grid(key, fit.model)
        if old_grid is None or not new_grid or math.prod(new_grid) != new.shape[1]:
            fit.problems.append(
                f"cannot tell which token grid {key} {shape_text(old)} was made for (no config in the checkpoint and "
                "not a square grid); load it into a model with the input size it was trained at"
            )
            continue
        fit.sd[key] = resample_grid(old, old_grid, new_grid).contiguous()
        fit.report.resized.append((key, tuple(old.shape), tuple(fit.sd[key].shape)))


def _match_the_rest(fit: _Fit) -> None:
    """Everything else must match: an error when strict, else skipped and reported."""
    sd, target, report = fit.sd, fit.target, fit.report
    missing = [k for k in target if k not in sd and k not in fit.expected_missing]
    unexpected = [k for k in sd if k not in target]
    mismatched = [(k, tuple(sd[k].shape), tuple(target[k].shape)) for k in sd if k in target and sd[k].shape != target[k].shape]
    if fit.strict and (missing or unexpected or mismatched or fit.problems):
        parts = list(fit.problems)
        if missing:
            parts.append(f"{len(missing)} model tensors missing from it ({few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors the model does not have ({few(unexpected)})")
        if mismatched:
            shown = [f"{k} {shape_text(a)} vs model {shape_text(b)}" for k, a, b in mismatched]
            parts.append(f"{len(mismatched)} tensors of another shape ({few(shown)})")
        arch = _describe_weights(sd, fit.model_is_mae)
        raise HieraVideoError(
            f"{fit.src} ({fit.ckpt.layout} layout) does not fit {fit.name}: {'; '.join(parts)}"
            + (f"; {arch}" if arch else "")
            + "; pick the model these weights were made for (or, in Python, apply_checkpoint(model, ckpt, strict=False) "
            "to load only what fits)"
        )
    for k, _, _ in mismatched:
        del sd[k]
    for k in unexpected:
        del sd[k]
    report.notes += fit.problems
    report.missing, report.unexpected, report.mismatched = missing, unexpected, mismatched
    report.initialised = sorted(k for k in fit.expected_missing if k in target)


#: The steps of :func:`apply_checkpoint`, in order.
STEPS = (
    _note_other_model, _check_semantics, _mae_into_classifier, _classifier_into_mae, _backbone_without_head,
    _reset_head, _resample_pos_embeds, _match_the_rest,
)


def apply_checkpoint(model: nn.Module, ckpt: Checkpoint, strict: bool = True) -> LoadReport:
    """Load ``ckpt`` into ``model`` and say what had to be adapted.

    Never an error: an MAE checkpoint into a classifier (decoder/fusion tensors dropped; the
    final ``norm`` and ``head`` stay initialised), a head of another number of classes
    (re-initialised), a checkpoint without any head (a backbone: the head stays initialised),
    position embeddings of another token grid (resampled: temporal linear, spatial bicubic).
    Anything else that does not fit (missing or unexpected tensors, other shapes, classifier
    weights into an MAE model, another number of heads...) raises :class:`HieraVideoError`
    when ``strict``, else becomes a line of the report.
    """
    from hiera_video.models.mae import MaskedAutoencoderHiera

    fit = _Fit(model, ckpt, strict, LoadReport(layout=ckpt.layout, source=ckpt.path), dict(ckpt.state_dict),
               model.state_dict(), isinstance(model, MaskedAutoencoderHiera))
    for step in STEPS:
        step(fit)
    with torch.no_grad():
        model.load_state_dict(fit.sd, strict=False)
    fit.report.loaded = len(fit.sd)
    return fit.report
