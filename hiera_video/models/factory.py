"""``create_model`` and ``list_models``: build a zoo architecture, optionally with weights."""

from __future__ import annotations

import difflib
import inspect
import logging
import math

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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ints(ok, what: str):
    """A rule for a list of integers each passing ``ok``."""
    return (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_int(x) and ok(x) for x in v)), what


#: Normalisations over the channel (last) dimension, which is what the blocks normalise.
NORM_LAYERS = tuple(n for n in ("LayerNorm", "RMSNorm") if hasattr(nn, n))

#: What each constructor argument of :class:`Hiera` / :class:`MaskedAutoencoderHiera` may be,
#: one at a time (``check``, allowed); :func:`check_arch` adds the combinations the model needs.
ARCH_RULES: dict[str, tuple] = {
    "input_size": _ints(lambda x: x >= 1, "a list of positive integers ([frames, height, width] or [height, width])"),
    "in_chans": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "embed_dim": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "num_heads": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "num_classes": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "stages": _ints(lambda x: x >= 1, "a list of block counts >= 1, one per stage"),
    "q_pool": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (stage changes with query pooling)"),
    "q_stride": _ints(lambda x: x >= 1, "a list of positive integers, one per input dimension"),
    "mask_unit_size": _ints(lambda x: x >= 1, "a list of positive integers, one per input dimension"),
    "mask_unit_attn": ((lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, bool) for x in v)),
                       "a list of true/false, one per stage"),
    "dim_mul": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "head_mul": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "patch_kernel": _ints(lambda x: x >= 1, "a list of positive integers, one per input dimension"),
    "patch_stride": _ints(lambda x: x >= 1, "a list of positive integers, one per input dimension"),
    "patch_padding": _ints(lambda x: x >= 0, "a list of integers >= 0, one per input dimension"),
    "mlp_ratio": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "drop_path_rate": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "norm_layer": (lambda v: v in NORM_LAYERS or (callable(v) and not isinstance(v, str)), "one of " + ", ".join(NORM_LAYERS)),
    "head_dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "head_init_scale": (_is_number, "a finite number"),
    "sep_pos_embed": (lambda v: isinstance(v, bool), "true or false"),
    "decoder_embed_dim": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "decoder_depth": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "decoder_num_heads": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "mask_ratio": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
}
#: Arguments that hold one entry per input dimension.
PER_DIMENSION = ("input_size", "q_stride", "mask_unit_size", "patch_kernel", "patch_stride", "patch_padding")


def check_arch(spec: ModelSpec, overrides: dict, name=lambda key: f"model option '{key}'") -> None:
    """Refuse, in one line naming the argument (``name(key)`` says how), constructor
    ``overrides`` of ``spec`` that are unknown, of the wrong type or out of range, or that
    together with the rest of the architecture make no model that runs: q_pool < number of
    stages, one mask_unit_attn flag per stage, mask units = q_stride^(stages - 1), a patch
    embedding giving one token per stride, channels divisible by heads at every stage, and an
    input size of the model's kind that the strides divide. ``None`` values mean "the
    default" (as in :func:`build_model`). Pure Python: no model is built."""
    from hiera_video.models.checkpoints import official_defaults

    cls = MaskedAutoencoderHiera if spec.mae else Hiera
    valid = valid_kwargs(cls)
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        if key not in valid:
            raise HieraVideoError(f"{name(key)} is not an architecture argument of {spec.name}; valid: {', '.join(sorted(valid))}")
        rule = ARCH_RULES.get(key)
        if rule is not None and not rule[0](value):
            raise HieraVideoError(f"{name(key)} must be {rule[1]}, got {value!r}"[:400])
    kw = {**official_defaults(spec.mae), **spec.kwargs, **given}

    def key(*keys: str) -> str:  # the argument to name: the first one given, else the first
        return name(next((k for k in keys if k in given), keys[0]))

    def plain(v):
        return list(v) if isinstance(v, (list, tuple)) else v

    nd = len(spec.input_size)
    dims = "[frames, height, width]" if nd == 3 else "[height, width]"
    for k in sorted(PER_DIMENSION, key=lambda k: k not in given):
        if len(kw[k]) != nd:
            raise HieraVideoError(f"{key(k)} must have {nd} entries, one per input dimension {dims} of the "
                                  f"{spec.kind} model {spec.name}, got {plain(kw[k])}")
    stages = len(kw["stages"])
    if len(kw["mask_unit_attn"]) != stages:
        raise HieraVideoError(f"{key('mask_unit_attn', 'stages')}: mask_unit_attn needs one flag per stage, got "
                              f"{len(kw['mask_unit_attn'])} flags for {stages} stages")
    if not kw["q_pool"] < stages:
        raise HieraVideoError(f"{key('q_pool', 'stages')}: q_pool ({kw['q_pool']}) must be smaller than the number "
                              f"of stages ({stages})")
    for q, m in zip(kw["q_stride"], kw["mask_unit_size"]):
        if q ** (stages - 1) != m:
            raise HieraVideoError(
                f"{key('mask_unit_size', 'q_stride', 'stages')}: the mask unit size {plain(kw['mask_unit_size'])} must be "
                f"q_stride {plain(kw['q_stride'])} to the power of (stages - 1) = {stages - 1} in every dimension"
            )
    for k, s, p in zip(kw["patch_kernel"], kw["patch_stride"], kw["patch_padding"]):
        # The patch convolution gives input // stride tokens (what the token layout needs) iff
        # kernel - stride <= 2 * padding < kernel, for every input size divisible by stride.
        if not k - s <= 2 * p < k:
            raise HieraVideoError(
                f"{key('patch_padding', 'patch_kernel', 'patch_stride')}: patch_kernel {plain(kw['patch_kernel'])}, "
                f"patch_stride {plain(kw['patch_stride'])} and patch_padding {plain(kw['patch_padding'])} must give one token "
                "per stride (kernel - stride <= 2 x padding < kernel in every dimension)"
            )
    for size, s, m, axis in zip(kw["input_size"], kw["patch_stride"], kw["mask_unit_size"], ("frames", "height", "width")[-nd:]):
        if size % (s * m):
            raise HieraVideoError(f"{key('input_size', 'patch_stride', 'mask_unit_size')}: input {axis} {size} must be a "
                                  f"multiple of {s * m} (patch stride {s} x mask unit {m}), got input size {plain(kw['input_size'])}")
    dim, heads = kw["embed_dim"], kw["num_heads"]
    for stage in range(stages):
        if stage:
            dim, heads = int(dim * kw["dim_mul"]), int(heads * kw["head_mul"])
        if heads < 1 or dim < heads or dim % heads or int(dim * kw["mlp_ratio"]) < 1:
            raise HieraVideoError(
                f"{key('num_heads', 'embed_dim', 'dim_mul', 'head_mul', 'mlp_ratio')}: stage {stage + 1} would have {dim} "
                f"channels and {heads} heads; every stage needs at least one head and channels divisible by its heads "
                f"(embed_dim {kw['embed_dim']}, num_heads {kw['num_heads']}, dim_mul {kw['dim_mul']}, head_mul {kw['head_mul']})"
            )
    if spec.mae and kw["decoder_embed_dim"] % kw["decoder_num_heads"]:
        raise HieraVideoError(f"{key('decoder_num_heads', 'decoder_embed_dim')}: decoder_embed_dim {kw['decoder_embed_dim']} "
                              f"must be divisible by decoder_num_heads {kw['decoder_num_heads']}")


def build_model(spec: ModelSpec, **overrides) -> Hiera:
    """Instantiate ``spec`` with constructor ``overrides`` (unknown keys, wrong values and
    combinations that make no runnable model are errors: :func:`check_arch`)."""
    cls = MaskedAutoencoderHiera if spec.mae else Hiera
    valid = valid_kwargs(cls)
    bad = sorted(set(overrides) - valid)
    if bad:
        raise HieraVideoError(f"unknown model option(s) {bad} for {spec.name}; valid options: {sorted(valid)}")
    check_arch(spec, overrides)
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
