"""``create_model`` and ``list_models``: build a zoo architecture, optionally with weights."""

from __future__ import annotations

import difflib
import inspect
import logging

import torch.nn as nn

from hiera_video.errors import HieraVideoError
from hiera_video.models.hiera import Hiera
from hiera_video.models.mae import MaskedAutoencoderHiera
from hiera_video.models.zoo import ALIASES, MODELS, ModelSpec

log = logging.getLogger("hiera_video")


def list_models(kind: str | None = None, mae: bool | None = None) -> list[str]:
    """Registered model names, optionally only ``kind`` ("video"/"image") or MAE/non-MAE."""
    return sorted(
        n for n, s in MODELS.items() if (kind is None or s.kind == kind) and (mae is None or s.mae == mae)
    )


def get_spec(name: str) -> ModelSpec:
    if name in ALIASES and name not in MODELS:
        log.warning("model %s is now called %s (same architecture)", name, ALIASES[name])
        name = ALIASES[name]
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise HieraVideoError(f"unknown model '{name}'.{hint} Run 'hiera-video models' for the list.")
    return MODELS[name]


def valid_kwargs(cls: type) -> set[str]:
    """Constructor arguments of ``cls`` and its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            continue
        names |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}
    return names


def build_model(spec: ModelSpec, **overrides) -> Hiera:
    """Instantiate ``spec`` with constructor ``overrides`` (unknown keys are errors)."""
    cls = MaskedAutoencoderHiera if spec.mae else Hiera
    valid = valid_kwargs(cls)
    bad = sorted(set(overrides) - valid)
    if bad:
        raise HieraVideoError(f"unknown model option(s) {bad} for {spec.name}; valid options: {sorted(valid)}")
    kwargs = {**spec.kwargs, **{k: v for k, v in overrides.items() if v is not None}}
    if spec.mae:
        kwargs.pop("num_classes", None)
    model = cls(**kwargs)
    model.spec = spec  # declared on Hiera
    return model


def create_model(name: str | None = None, weights: str | None = None, num_classes: int | None = None,
                 **overrides) -> nn.Module:
    """Build model ``name`` (see :func:`list_models`).

    ``weights``: ``None`` (random init), a zoo tag of this model (e.g. ``"mae_k400_ft_k400"``,
    downloaded into the torch hub cache when missing), a URL, or a local checkpoint path in any
    supported layout (official ``.pth``, official hub directory, timm, HF transformers, MAE into
    a classifier, this project's checkpoints); with a path, ``name`` may be left out: the
    checkpoint names its model, or its tensor shapes tell it. ``num_classes`` different from the
    checkpoint's re-initialises the head (and says so). ``overrides`` are constructor arguments,
    e.g. ``input_size=(8, 224, 224)`` or ``drop_path_rate=0.2``; position embeddings of weights
    made for another input size are resampled. :func:`create_model_and_report` also returns how
    the weights fitted.
    """
    return create_model_and_report(name, weights, num_classes, **overrides)[0]


def create_model_and_report(name: str | None = None, weights: str | None = None, num_classes: int | None = None,
                            **overrides):
    """:func:`create_model`, returning ``(model, load report)``
    (:class:`~hiera_video.models.checkpoints.LoadReport`; None without weights)."""
    if weights is None and name is None:
        raise HieraVideoError("create_model needs a model name, or weights that name their model")
    spec, ckpt = open_weights(weights, name) if weights else (get_spec(name), None)
    return build_from_checkpoint(spec, ckpt, num_classes, **overrides)


def open_weights(weights, name: str | None = None, ckpt=None):
    """``(spec, checkpoint)`` for ``weights`` (a zoo tag of model ``name``, a URL or a path;
    ``ckpt``: already read). Without ``name`` the checkpoint names its model, or its tensor
    shapes tell it."""
    from hiera_video.models import checkpoints

    if name is not None:
        spec = get_spec(name)
        return spec, ckpt if ckpt is not None else checkpoints.read_checkpoint(checkpoints.resolve_source(spec, weights))
    if ckpt is None:
        ckpt = checkpoints.read_checkpoint(weights)
    name = ckpt.meta.get("model")
    if not name:  # official, timm and HF files: the tensor shapes tell the variant
        candidates = infer_model_names(ckpt)
        if len(candidates) == 1:
            name = candidates[0]
            log.info("%s: model %s (inferred from the tensor shapes)", weights, name)
        elif candidates:
            raise HieraVideoError(
                f"checkpoint {weights} does not say which model it belongs to, and its tensor shapes fit several: "
                f"{', '.join(candidates)}; pass --model NAME"
            )
        else:
            raise HieraVideoError(
                f"checkpoint {weights} does not say which model it belongs to, and its tensor shapes ({_signature(ckpt)}) "
                "fit no registered model; pass --model NAME (hiera-video models lists them)"
            )
    return get_spec(name), ckpt


# Tensors whose shapes depend on the input size or the number of classes, not on the variant.
_SIZE_DEPENDENT = ("pos_embed", "decoder_pos_embed", "head.projection.")


def _signature(ckpt) -> str:
    from hiera_video.models.checkpoints import block_count

    pe = ckpt.state_dict.get("patch_embed.proj.weight")
    kind = "MAE, " if ckpt.is_mae else ""
    if pe is None:
        return kind + "no patch embedding"
    return f"{kind}{'video' if pe.dim() == 5 else 'image'}, embed_dim {pe.shape[0]}, {block_count(ckpt.state_dict)} blocks"


def infer_model_names(ckpt) -> list[str]:
    """Registered models whose every tensor (but position embeddings and the classifier, which
    depend on the input size and the classes) has the checkpoint's shape. Candidates are
    narrowed by embed dim, depth and video/image first; the rest are built on the meta device
    (no memory, no initialisation), so this is cheap even for the huge models."""
    import torch

    from hiera_video.models.checkpoints import block_count, official_defaults

    sd = ckpt.state_dict
    pe = sd.get("patch_embed.proj.weight")
    if pe is None:
        return []
    blocks, found = block_count(sd), []
    for name in list_models(mae=ckpt.is_mae):
        spec = MODELS[name]
        kw = {**official_defaults(spec.mae), **spec.kwargs}
        if (kw["embed_dim"], len(kw["input_size"]), sum(kw["stages"])) != (pe.shape[0], pe.dim() - 2, blocks):
            continue
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
        if all(shapes.get(k) == tuple(v.shape) for k, v in sd.items() if not k.startswith(_SIZE_DEPENDENT)):
            found.append(name)
    return found


def build_from_checkpoint(spec: ModelSpec, ckpt=None, num_classes: int | None = None, **overrides):
    """``(model, load report)``: ``spec`` built and loaded from ``ckpt`` (report None without one)."""
    from hiera_video.models import checkpoints

    if ckpt is not None and ckpt.layout == "hiera-video" and ckpt.config and ALIASES.get(ckpt.meta.get("model"), ckpt.meta.get("model")) == spec.name:
        # Our own checkpoint of this very model: rebuild the exact architecture it was
        # trained with (an MAE checkpoint loaded into a classifier keeps the classifier's).
        trained = {k: v for k, v in ckpt.config.items() if k != "num_classes"}
        overrides = {**trained, **overrides}
    if num_classes is None and not spec.mae:
        num_classes = ckpt.num_classes if ckpt is not None and ckpt.num_classes else spec.kwargs.get("num_classes")
    if not spec.mae:
        overrides["num_classes"] = num_classes
    model = build_model(spec, **overrides)
    if ckpt is None:
        return model, None
    report = checkpoints.apply_checkpoint(model, ckpt)
    for line in report.messages():
        log.warning(line)
    return model, report
