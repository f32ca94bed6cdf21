"""``create_model`` and ``list_models``: build a zoo architecture, optionally with weights."""

from __future__ import annotations

import difflib
import inspect
import logging

import torch.nn as nn

from hiera_video.errors import HieraVideoError
from hiera_video.models.hiera import Hiera
from hiera_video.models.mae import MaskedAutoencoderHiera
from hiera_video.models.zoo import MODELS, ModelSpec

log = logging.getLogger("hiera_video")


def list_models(kind: str | None = None, mae: bool | None = None) -> list[str]:
    """Registered model names, optionally only ``kind`` ("video"/"image") or MAE/non-MAE."""
    return sorted(
        n for n, s in MODELS.items() if (kind is None or s.kind == kind) and (mae is None or s.mae == mae)
    )


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise HieraVideoError(f"unknown model '{name}'.{hint} Run 'hiera-video models' for the list.")
    return MODELS[name]


def _valid_kwargs(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            continue
        names |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}
    return names


def build_model(spec: ModelSpec, **overrides) -> Hiera:
    """Instantiate ``spec`` with constructor ``overrides`` (unknown keys are errors)."""
    cls = MaskedAutoencoderHiera if spec.mae else Hiera
    valid = _valid_kwargs(cls)
    bad = sorted(set(overrides) - valid)
    if bad:
        raise HieraVideoError(f"unknown model option(s) {bad} for {spec.name}; valid options: {sorted(valid)}")
    kwargs = {**spec.kwargs, **{k: v for k, v in overrides.items() if v is not None}}
    if spec.mae:
        kwargs.pop("num_classes", None)
    model = cls(**kwargs)
    model.spec = spec
    return model


def create_model(name: str, weights: str | None = None, num_classes: int | None = None, **overrides) -> nn.Module:
    """Build model ``name`` (see :func:`list_models`).

    ``weights``: ``None`` (random init), a zoo tag of this model (e.g. ``"mae_k400_ft_k400"``,
    downloaded into the torch hub cache when missing), a URL, or a local checkpoint path in any
    supported layout (official ``.pth``, official hub directory, timm, HF transformers, MAE into
    a classifier, this project's checkpoints). ``num_classes`` different from the checkpoint's
    re-initialises the head (and says so). ``overrides`` are constructor arguments, e.g.
    ``input_size=(8, 224, 224)`` or ``drop_path_rate=0.2``; position embeddings of weights
    made for another input size are resampled.
    """
    spec = get_spec(name)
    ckpt = None
    if weights:
        from hiera_video.models import checkpoints

        ckpt = checkpoints.read_checkpoint(checkpoints.resolve_source(spec, weights))
    return _build_with_checkpoint(spec, ckpt, weights, num_classes, overrides)


def load_model(weights: str, name: str | None = None, num_classes: int | None = None, **overrides) -> nn.Module:
    """Like :func:`create_model`, but the model name may come from the checkpoint itself
    (this project's checkpoints record it, with the architecture they were trained with)."""
    from hiera_video.models import checkpoints

    if name is not None:
        return create_model(name, weights, num_classes, **overrides)
    ckpt = checkpoints.read_checkpoint(weights)
    name = ckpt.meta.get("model")
    if not name:
        raise HieraVideoError(f"checkpoint {weights} does not say which model it belongs to; pass --model NAME")
    return _build_with_checkpoint(get_spec(name), ckpt, weights, num_classes, overrides)


def _build_with_checkpoint(spec: ModelSpec, ckpt, weights, num_classes, overrides) -> nn.Module:
    from hiera_video.models import checkpoints

    if ckpt is not None and ckpt.layout == "hiera-video" and ckpt.config and ckpt.meta.get("model") == spec.name:
        # Our own checkpoint of this very model: rebuild the exact architecture it was
        # trained with (an MAE checkpoint loaded into a classifier keeps the classifier's).
        trained = {k: v for k, v in ckpt.config.items() if k != "num_classes"}
        overrides = {**trained, **overrides}
    if num_classes is None and not spec.mae:
        num_classes = ckpt.num_classes if ckpt is not None and ckpt.num_classes else spec.kwargs.get("num_classes")
    if not spec.mae:
        overrides["num_classes"] = num_classes
    model = build_model(spec, **overrides)
    model.weights_source = weights if ckpt is not None else None
    model.checkpoint_meta = dict(ckpt.meta) if ckpt is not None else {}
    if ckpt is not None:
        report = checkpoints.apply_checkpoint(model, ckpt)
        model.load_report = report
        for line in report.messages():
            log.warning(line)
    return model
