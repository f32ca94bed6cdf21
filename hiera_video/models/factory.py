"""``create_model`` and ``list_models``: build a zoo architecture, optionally with weights."""

from __future__ import annotations

import difflib
import inspect
import logging
import math

import torch
import torch.nn as nn

from hiera_video.errors import HieraVideoError
from hiera_video.models import checkpoints
from hiera_video.models.hiera import Hiera
from hiera_video.models.mae import MaskedAutoencoderHiera
from hiera_video.models.zoo import ALIASES, MODELS, ModelSpec

log = logging.getLogger("hiera_video")


def list_models(kind: str | None = None, mae: bool | None = None) -> list[str]:
    """Registered model names, optionally only ``kind`` ("video"/"image") or MAE/non-MAE."""
    return sorted(n for n, s in MODELS.items() if (kind is None or s.kind == kind) and (mae is None or s.mae == mae))


def get_spec(name: str) -> ModelSpec:
    if name in ALIASES and name not in MODELS:
        log.warning("model %s is now called %s (same architecture)", name, ALIASES[name])
        name = ALIASES[name]
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise HieraVideoError(f"unknown model '{name}'.{hint} Run 'hiera-video models' for the list.")
    return MODELS[name]


def valid_kwargs(cls: type) -> set[str]:  # constructor arguments of cls and its bases
    return {p for klass in cls.__mro__ if klass not in (nn.Module, object)
            for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(ok, what: str, of=_is_int):  # a rule: a non-empty list whose items pass ``of`` and ``ok``
    return (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(of(x) and ok(x) for x in v)), what


NORM_LAYERS = tuple(n for n in ("LayerNorm", "RMSNorm") if hasattr(nn, n))
_INT1 = (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
_POSITIVE = (lambda v: _is_number(v) and v > 0, "a number > 0")
_FRACTION = (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
_PER_DIM = _ints(lambda x: x >= 1, "a list of positive integers, one per input dimension")
#: What each constructor argument may be, one at a time (check, allowed); check_arch adds the combinations.
ARCH_RULES: dict[str, tuple] = {
    "input_size": _ints(lambda x: x >= 1, "a list of positive integers ([frames, height, width] or [height, width])"),
    "in_chans": _INT1, "embed_dim": _INT1, "num_heads": _INT1, "num_classes": _INT1, "q_stride": _PER_DIM,
    "stages": _ints(lambda x: x >= 1, "a list of block counts >= 1, one per stage"), "mask_unit_size": _PER_DIM,
    "q_pool": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (stage changes with query pooling)"),
    "mask_unit_attn": _ints(lambda x: isinstance(x, bool), "a list of true/false, one per stage", of=lambda x: True),
    "dim_mul": _POSITIVE, "head_mul": _POSITIVE, "patch_kernel": _PER_DIM, "patch_stride": _PER_DIM,
    "patch_padding": _ints(lambda x: x >= 0, "a list of integers >= 0, one per input dimension"),
    "mlp_ratio": _POSITIVE, "drop_path_rate": _FRACTION, "head_dropout": _FRACTION, "mask_ratio": _FRACTION,
    "norm_layer": (lambda v: v in NORM_LAYERS or (callable(v) and not isinstance(v, str)), "one of " + ", ".join(NORM_LAYERS)),
    "head_init_scale": (_is_number, "a finite number"), "sep_pos_embed": (lambda v: isinstance(v, bool), "true or false"),
    "decoder_embed_dim": _INT1, "decoder_num_heads": _INT1, "decoder_depth": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
}
PER_DIMENSION = ("input_size", "q_stride", "mask_unit_size", "patch_kernel", "patch_stride", "patch_padding")


def check_arch(spec: ModelSpec, overrides: dict, name=lambda key: f"model option '{key}'") -> None:
    """Refuse, in one line naming the argument (``name(key)`` says how), constructor ``overrides`` of ``spec``
    (None = the default) that are unknown, of the wrong type or range, or that make no model that runs with
    the rest of the architecture. Pure Python: no model is built."""
    valid = valid_kwargs(MaskedAutoencoderHiera if spec.mae else Hiera)
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        if key not in valid:
            raise HieraVideoError(f"{name(key)} is not an architecture argument of {spec.name}; valid: {', '.join(sorted(valid))}")
        rule = ARCH_RULES.get(key)
        if rule is not None and not rule[0](value):
            raise HieraVideoError(f"{name(key)} must be {rule[1]}, got {value!r}"[:400])
    kw = {k: list(v) if isinstance(v, (list, tuple)) else v
          for k, v in {**checkpoints.official_defaults(spec.mae), **spec.kwargs, **given}.items()}

    def key(*keys: str) -> str:  # the argument to name: the first one given, else the first
        return name(next((k for k in keys if k in given), keys[0]))

    nd = len(spec.input_size)
    dims = "[frames, height, width]" if nd == 3 else "[height, width]"
    for k in sorted(PER_DIMENSION, key=lambda k: k not in given):
        if len(kw[k]) != nd:
            raise HieraVideoError(f"{key(k)} must have {nd} entries, one per input dimension {dims} of the "
                                  f"{spec.kind} model {spec.name}, got {kw[k]}")
    stages = len(kw["stages"])
    if len(kw["mask_unit_attn"]) != stages:
        raise HieraVideoError(f"{key('mask_unit_attn', 'stages')}: mask_unit_attn needs one flag per stage, got "
                              f"{len(kw['mask_unit_attn'])} flags for {stages} stages")
    if not kw["q_pool"] < stages:
        raise HieraVideoError(f"{key('q_pool', 'stages')}: q_pool ({kw['q_pool']}) must be smaller than the number "
                              f"of stages ({stages})")
    for q, m in zip(kw["q_stride"], kw["mask_unit_size"]):
        if q ** (stages - 1) != m:
            raise HieraVideoError(f"{key('mask_unit_size', 'q_stride', 'stages')}: the mask unit size {kw['mask_unit_size']} "
                                  f"must be q_stride {kw['q_stride']} to the power of (stages - 1) = {stages - 1} in every dimension")
    for k, s, p in zip(kw["patch_kernel"], kw["patch_stride"], kw["patch_padding"]):
        if not k - s <= 2 * p < k:  # iff the conv gives input // stride tokens for every input divisible by stride
            raise HieraVideoError(f"{key('patch_padding', 'patch_kernel', 'patch_stride')}: patch_kernel {kw['patch_kernel']}, "
                                  f"patch_stride {kw['patch_stride']} and patch_padding {kw['patch_padding']} must give one "
                                  "token per stride (kernel - stride <= 2 x padding < kernel in every dimension)")
    for size, s, m, axis in zip(kw["input_size"], kw["patch_stride"], kw["mask_unit_size"], ("frames", "height", "width")[-nd:]):
        if size % (s * m):
            raise HieraVideoError(f"{key('input_size', 'patch_stride', 'mask_unit_size')}: input {axis} {size} must be a "
                                  f"multiple of {s * m} (patch stride {s} x mask unit {m}), got input size {kw['input_size']}")
    dim, heads = kw["embed_dim"], kw["num_heads"]
    for stage in range(stages):
        if stage:
            dim, heads = int(dim * kw["dim_mul"]), int(heads * kw["head_mul"])
        if heads < 1 or dim < heads or dim % heads or int(dim * kw["mlp_ratio"]) < 1:
            raise HieraVideoError(f"{key('num_heads', 'embed_dim', 'dim_mul', 'head_mul', 'mlp_ratio')}: stage {stage + 1} "
                                  f"would have {dim} channels and {heads} heads; every stage needs at least one head and "
                                  f"channels divisible by its heads (embed_dim {kw['embed_dim']}, num_heads {kw['num_heads']}, "
                                  f"dim_mul {kw['dim_mul']}, head_mul {kw['head_mul']})")
    if spec.mae and kw["decoder_embed_dim"] % kw["decoder_num_heads"]:
        raise HieraVideoError(f"{key('decoder_num_heads', 'decoder_embed_dim')}: decoder_embed_dim {kw['decoder_embed_dim']} "
                              f"must be divisible by decoder_num_heads {kw['decoder_num_heads']}")


def build_model(spec: ModelSpec, **overrides) -> Hiera:
    """Instantiate ``spec`` with constructor ``overrides`` (checked by :func:`check_arch`)."""
    cls = MaskedAutoencoderHiera if spec.mae else Hiera
    if bad := sorted(set(overrides) - valid_kwargs(cls)):
        raise HieraVideoError(f"unknown model option(s) {bad} for {spec.name}; valid options: {sorted(valid_kwargs(cls))}")
    check_arch(spec, overrides)
    kwargs = {**spec.kwargs, **{k: v for k, v in overrides.items() if v is not None}}
    if spec.mae:
        kwargs.pop("num_classes", None)
    model = cls(**kwargs)
    model.spec = spec
    return model


def create_model(name: str | None = None, weights: str | None = None, num_classes: int | None = None,
                 **overrides) -> nn.Module:
    """Build model ``name`` (see :func:`list_models`). ``weights``: None (random init), a zoo tag of the model
    (downloaded into the torch hub cache), a URL or a local checkpoint in any supported layout (``name`` may then
    be left out). ``num_classes`` other than the checkpoint's re-initialises the head; ``overrides`` are
    constructor arguments (position embeddings are resampled to another ``input_size``)."""
    return create_model_and_report(name, weights, num_classes, **overrides)[0]


def create_model_and_report(name: str | None = None, weights: str | None = None, num_classes: int | None = None,
                            **overrides):
    """:func:`create_model`, returning ``(model, LoadReport or None without weights)``."""
    if weights is None and name is None:
        raise HieraVideoError("create_model needs a model name, or weights that name their model")
    spec, ckpt = open_weights(weights, name) if weights else (get_spec(name), None)
    return build_from_checkpoint(spec, ckpt, num_classes, **overrides)


def open_weights(weights, name: str | None = None, ckpt=None):
    """``(spec, checkpoint)`` for ``weights`` (a zoo tag of model ``name``, a URL or a path; ``ckpt``: already
    read). Without ``name`` the checkpoint names its model, or its tensor shapes tell it."""
    if name is not None:
        spec = get_spec(name)
        return spec, ckpt if ckpt is not None else checkpoints.read_checkpoint(checkpoints.resolve_source(spec, weights))
    ckpt = checkpoints.read_checkpoint(weights) if ckpt is None else ckpt
    name = ckpt.meta.get("model")
    if not name:  # official, timm and HF files: the tensor shapes tell the variant
        candidates = infer_model_names(ckpt)
        if len(candidates) > 1:
            raise HieraVideoError(f"checkpoint {weights} does not say which model it belongs to, and its tensor shapes "
                                  f"fit several: {', '.join(candidates)}; pass --model NAME")
        if not candidates:
            pe, kind = ckpt.state_dict.get("patch_embed.proj.weight"), "MAE, " if ckpt.is_mae else ""
            shapes = kind + ("no patch embedding" if pe is None else f"{'video' if pe.dim() == 5 else 'image'}, "
                             f"embed_dim {pe.shape[0]}, {checkpoints.block_count(ckpt.state_dict)} blocks")
            raise HieraVideoError(f"checkpoint {weights} does not say which model it belongs to, and its tensor shapes "
                                  f"({shapes}) fit no registered model; pass --model NAME (hiera-video models lists them)")
        name = candidates[0]
        log.info("%s: model %s (inferred from the tensor shapes)", weights, name)
    return get_spec(name), ckpt


def infer_model_names(ckpt) -> list[str]:
    """Registered models whose every tensor (but the position embeddings and the classifier, which depend on
    the input size and classes) has the checkpoint's shape; built on the meta device, so cheap."""
    sd = ckpt.state_dict
    pe = sd.get("patch_embed.proj.weight")
    if pe is None:
        return []
    blocks, found = checkpoints.block_count(sd), []
    for name in list_models(mae=ckpt.is_mae):
        spec = MODELS[name]
        kw = {**checkpoints.official_defaults(spec.mae), **spec.kwargs}
        if (kw["embed_dim"], len(kw["input_size"]), sum(kw["stages"])) != (pe.shape[0], pe.dim() - 2, blocks):
            continue
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
        size_dependent = ("pos_embed", "decoder_pos_embed", "head.projection.")
        if all(shapes.get(k) == tuple(v.shape) for k, v in sd.items() if not k.startswith(size_dependent)):
            found.append(name)
    return found


def build_from_checkpoint(spec: ModelSpec, ckpt=None, num_classes: int | None = None, **overrides):
    """``(model, load report)``: ``spec`` built and loaded from ``ckpt`` (report None without one)."""
    saved = ckpt.meta.get("model") if ckpt is not None else None
    if ckpt is not None and ckpt.layout == "hiera-video" and ckpt.config and ALIASES.get(saved, saved) == spec.name:
        # Our own checkpoint of this model: rebuild the architecture it was trained with (num_classes aside).
        overrides = {**{k: v for k, v in ckpt.config.items() if k != "num_classes"}, **overrides}
    if not spec.mae:
        if num_classes is None:
            num_classes = ckpt.num_classes if ckpt is not None and ckpt.num_classes else spec.kwargs.get("num_classes")
        overrides["num_classes"] = num_classes
    model = build_model(spec, **overrides)
    if ckpt is None:
        return model, None
    report = checkpoints.apply_checkpoint(model, ckpt)
    for line in report.messages():
        log.warning(line)
    return model, report
