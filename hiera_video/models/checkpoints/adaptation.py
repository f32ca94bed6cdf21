"""How weights fit a model: :func:`apply_checkpoint` loads a Checkpoint in steps, each adding to one LoadReport."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn as nn

from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints.common import (CLASSIFIER_ONLY_PREFIXES, MAE_ONLY_PREFIXES, POS_EMBED_KEYS,
                                                   SEMANTIC_KEYS, as_list, block_count, few, groups, model_name,
                                                   shape_text, token_grid)
from hiera_video.models.checkpoints.formats import Checkpoint
from hiera_video.models.mae import MaskedAutoencoderHiera
from hiera_video.models.posembed import resample_grid
from hiera_video.models.zoo import MODELS


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
        (n, m), miss, extra, bad = self.head_reset or (0, 0), self.missing, self.unexpected, self.mismatched
        return [line for line in (
            *self.notes, self.head_reset and f"head re-initialised for {n} classes (checkpoint has {m}): train it before "
                                             "trusting predictions",
            *(f"resampled {k} {shape_text(a)} -> {shape_text(b)} to the model's token grid" for k, a, b in self.resized),
            miss and f"{len(miss)} model tensors are not in the checkpoint and keep their initialisation: {few(miss)}",
            extra and f"ignored {len(extra)} checkpoint tensors the model does not have: {few(extra)}",
            bad and f"skipped {len(bad)} checkpoint tensors of another shape: {_shown(bad)}") if line]

    def __str__(self) -> str:
        return "\n".join([f"loaded {self.loaded} tensors from {self.source or 'checkpoint'} ({self.layout} layout)",
                          *self.messages()])


def _shown(mismatched) -> str:
    return few([f"{k} {shape_text(a)} vs model {shape_text(b)}" for k, a, b in mismatched])


# The part of the encoder's token grid each encoder position embedding covers.
_ENCODER_GRIDS = {"pos_embed": slice(None), "pos_embed_spatial": slice(1, None), "pos_embed_temporal": slice(0, 1)}


def _model_grid(key: str, model: nn.Module) -> list[int] | None:
    if key in _ENCODER_GRIDS:
        return list(getattr(model, "tokens_spatial_shape", []) or [])[_ENCODER_GRIDS[key]]
    final = getattr(model, "tokens_spatial_shape_final", None)  # decoder_pos_embed
    return list(final) if final is not None else None


def _source_grid(key: str, length: int, ckpt: Checkpoint, model: nn.Module) -> list[int] | None:
    """Token grid the checkpoint's ``key`` (``length`` tokens) was made for: from the checkpoint's config, else the
    zoo spec's input size, else the length (1-D: itself, 2-D: square, 3-D: the model's spatial size, or its temporal
    size with a square spatial grid)."""
    for cfg in (ckpt.config, getattr(getattr(model, "spec", None), "kwargs", None)):
        if not (tokens := token_grid(cfg := {**getattr(model, "config", {}), **cfg} if cfg else {})):
            continue
        try:  # the decoder's grid: the token grid after every q-pool
            g = tokens[_ENCODER_GRIDS[key]] if key in _ENCODER_GRIDS else \
                [t // int(s) ** int(cfg.get("q_pool", 2)) for t, s in zip(tokens, cfg.get("q_stride", [2] * len(tokens)))]
        except (TypeError, ValueError, ZeroDivisionError):
            continue
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
        s = math.isqrt(length // target[0])
        return [target[0], s, s] if s * s * target[0] == length else None
    return None


def _describe_weights(sd: Mapping[str, torch.Tensor], model_is_mae: bool) -> str:
    """``"... video weights with embed_dim 96 and stages (2, 3, 16, 3) (fits: hiera_base_16x224)"``."""
    if (pe := sd.get("patch_embed.proj.weight")) is None:
        return ""
    kind = "video" if pe.dim() == 5 else "image" if pe.dim() == 4 else f"{pe.dim() - 2}-D"
    depth = block_count(sd, "blocks.")
    bounds = [0, *sorted(i for i in range(1, depth) if f"blocks.{i}.proj.weight" in sd), depth]
    stages, embed = tuple(b - a for a, b in zip(bounds, bounds[1:])), int(pe.shape[0])
    fits = [n for n, s in MODELS.items()
            if s.mae == model_is_mae and s.kwargs.get("embed_dim") == embed and tuple(s.kwargs.get("stages", ())) == stages
            and len(s.kwargs.get("input_size", ())) == pe.dim() - 2]
    text = f"the checkpoint holds {kind} weights with embed_dim {embed} and stages {stages}"
    return text + (f" (fits: {', '.join(fits)})" if fits else "")


@dataclass
class _Fit:  # one apply_checkpoint in progress: what the steps below read and change
    model: nn.Module
    ckpt: Checkpoint
    strict: bool
    report: LoadReport
    sd: dict  # the checkpoint's tensors still to load (steps drop and resample)
    target: dict  # the model's state dict
    model_is_mae: bool
    expected_missing: set = field(default_factory=set)  # model tensors left initialised on purpose
    problems: list = field(default_factory=list)  # errors when strict, else notes

    name = property(lambda self: model_name(self.model))
    src = property(lambda self: self.ckpt.path or "the checkpoint")


def _note_other_model(fit: _Fit) -> None:
    saved = fit.ckpt.meta.get("model") if isinstance(fit.ckpt.meta.get("model"), str) else None
    if saved and getattr(getattr(fit.model, "spec", None), "name", None) not in (None, saved):
        fit.report.notes.append(f"checkpoint was saved from {saved}; loading it into {fit.name}")


def _check_semantics(fit: _Fit) -> None:
    """Same shapes can still mean another computation (e.g. another number of heads)."""
    cfg, model_cfg = fit.ckpt.config, getattr(fit.model, "config", None)
    if not cfg or not isinstance(model_cfg, Mapping):
        return
    # q_pool too, unless MAE weights go into a classifier (the official MAE pretrains with fewer q-pools)
    keys = SEMANTIC_KEYS + (("q_pool",) if fit.ckpt.is_mae == fit.model_is_mae else ())
    if diffs := [f"{k}={cfg[k]} (model {model_cfg[k]})" for k in keys
                 if k in cfg and k in model_cfg and as_list(cfg[k]) != as_list(model_cfg[k])]:
        fit.problems.append(f"the checkpoint was made with {', '.join(diffs)}")


def _drop(fit: _Fit, prefixes: tuple) -> list[str]:
    dropped = [k for k in fit.sd if k.startswith(prefixes)]
    for k in dropped:
        del fit.sd[k]
    fit.report.dropped += dropped
    return dropped


def _mae_or_classifier(fit: _Fit) -> None:
    """MAE weights into a classifier (decoder dropped), classifier weights into an MAE model (an error when strict),
    a backbone without a classifier (timm num_classes=0, HF HieraModel: like a new head)."""
    head = fit.target.get("head.projection.weight")
    if fit.ckpt.is_mae and not fit.model_is_mae:
        dropped = _drop(fit, MAE_ONLY_PREFIXES)
        fit.expected_missing |= {k for k in fit.target if k.startswith(CLASSIFIER_ONLY_PREFIXES)}
        fit.report.notes.append(f"MAE checkpoint loaded into classifier {fit.name}: kept the encoder, dropped {len(dropped)} "
                                f"decoder/fusion tensors ({groups(dropped)}); the final 'norm' and 'head' are NOT in the "
                                "checkpoint and keep their random initialisation, so finetune before using predictions")
    elif fit.model_is_mae and not fit.ckpt.is_mae:
        msg = (f"{fit.src} holds classifier weights without the MAE decoder that {fit.name} needs; load it into the "
               f"classifier {fit.name.removeprefix('mae_')} instead, or use an MAE checkpoint (e.g. tag mae_k400 / mae_in1k)")
        if fit.strict:
            raise HieraVideoError(msg)
        _drop(fit, CLASSIFIER_ONLY_PREFIXES)
        fit.report.notes.append(msg)
    elif not fit.model_is_mae and head is not None and not any(k.startswith("head.") for k in fit.sd):
        fit.expected_missing |= {k for k in fit.target if k.startswith("head.")}
        fit.report.notes.append(f"the checkpoint has no classification head: the head of {fit.name} is initialised for "
                                f"{int(head.shape[0])} classes; train it before trusting predictions")


def _reset_head(fit: _Fit) -> None:
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
    for key in POS_EMBED_KEYS:
        old, new = fit.sd.get(key), fit.target.get(key)
        if old is None or new is None or old.shape == new.shape or old.dim() != 3 or new.dim() != 3 or old.shape[0] != 1 \
                or old.shape[-1] != new.shape[-1]:  # (another width: a plain shape mismatch)
            continue
        old_grid, new_grid = _source_grid(key, int(old.shape[1]), fit.ckpt, fit.model), _model_grid(key, fit.model)
        if old_grid is None or not new_grid or math.prod(new_grid) != new.shape[1]:
            fit.problems.append(f"cannot tell which token grid {key} {shape_text(old)} was made for (no config in the "
                                "checkpoint and not a square grid); load it into a model with the input size it was trained at")
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
        parts = [p for p in (*fit.problems, missing and f"{len(missing)} model tensors missing from it ({few(missing)})",
                             unexpected and f"{len(unexpected)} tensors the model does not have ({few(unexpected)})",
                             mismatched and f"{len(mismatched)} tensors of another shape ({_shown(mismatched)})") if p]
        arch = _describe_weights(sd, fit.model_is_mae)
        raise HieraVideoError(
            f"{fit.src} ({fit.ckpt.layout} layout) does not fit {fit.name}: {'; '.join(parts)}" + (f"; {arch}" if arch else "")
            + "; pick the model these weights were made for (or, in Python, apply_checkpoint(model, ckpt, strict=False) "
            "to load only what fits)")
    for k in [k for k, _, _ in mismatched] + unexpected:
        del sd[k]
    report.notes += fit.problems
    report.missing, report.unexpected, report.mismatched = missing, unexpected, mismatched
    report.initialised = sorted(k for k in fit.expected_missing if k in target)


STEPS = (_note_other_model, _check_semantics, _mae_or_classifier, _reset_head, _resample_pos_embeds, _match_the_rest)


def apply_checkpoint(model: nn.Module, ckpt: Checkpoint, strict: bool = True) -> LoadReport:
    """Load ``ckpt`` into ``model`` and say what had to be adapted. Never an error: MAE weights into a classifier, a head
    of another size or none (initialised), position embeddings of another grid (resampled). Anything else that does
    not fit raises :class:`HieraVideoError` when ``strict``, else becomes a line of the report."""
    fit = _Fit(model, ckpt, strict, LoadReport(layout=ckpt.layout, source=ckpt.path), dict(ckpt.state_dict),
               model.state_dict(), isinstance(model, MaskedAutoencoderHiera))
    for step in STEPS:
        step(fit)
    with torch.no_grad():
        model.load_state_dict(fit.sd, strict=False)
    fit.report.loaded = len(fit.sd)
    return fit.report
