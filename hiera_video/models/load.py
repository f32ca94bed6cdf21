"""One weights policy for every command that runs a model: :func:`load`.

``load(task, name, weights)`` decides, the same way for ``predict``/``eval``/``export``
(``"classify"``), ``extract`` (``"features"``), ``reconstruct`` (``"mae"``) and AVA
evaluation (``"ava"``):

* default weights: ``weights=None`` takes the model's default zoo weights (downloaded when
  missing); a checkpoint path needs no model name (the checkpoint names it, or its shapes);
* random weights: ``weights="none"`` needs ``allow_random``; so, for ``"classify"``, do weights
  that leave the classifier head untrained; weights holding NaN or infinite values are refused;
* labels: ``--labels``, else the checkpoint's, else the zoo tag's;
* clips (:class:`~hiera_video.data.clip_spec.ClipSpec`): the model's defaults, under the zoo
  weights' spec, under the recipe the checkpoint saved (a saved spec wins).

It returns the model and one :class:`Provenance` record (instead of attributes on the model).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from hiera_video.data.clip_spec import ClipSpec
from hiera_video.errors import HieraVideoError
from hiera_video.models.factory import build_from_checkpoint, build_model, get_spec, open_weights, valid_kwargs
from hiera_video.models.zoo import ModelSpec

log = logging.getLogger("hiera_video")

TASKS = ("classify", "features", "mae", "ava")
DEFAULT_MODEL = "hiera_base_16x224"
DEFAULT_MAE_MODEL = "mae_hiera_base_16x224"

_RANDOM_REFUSED = {
    "classify": "refusing to run a classifier with random weights; pass trained --weights, or --allow-random-weights",
    "mae": "refusing to reconstruct with random weights; pass trained --weights, or --allow-random-weights",
}
_NO_WEIGHTS = {
    "classify": "{name} has no official weights; pass --weights PATH (e.g. a finetuned checkpoint) "
                "or --weights none --allow-random-weights",
    "mae": "{name} has no official weights; pass --weights (e.g. RUN_DIR/last.pt of hiera-video pretrain)",
}


@dataclass
class Provenance:
    """Where a loaded model's weights came from and what they say about its inputs and outputs."""

    spec: ModelSpec
    source: str | None  # the weights as given (zoo tag, URL, path); None: random initialisation
    labels: list[str]  # class names (empty: no classifier)
    clip: ClipSpec  # the model's defaults < the zoo weights' spec < the checkpoint's saved recipe
    saved: frozenset[str] = frozenset()  # the clip fields the checkpoint fixed (they win over a dataset's)
    meta: dict = field(default_factory=dict)  # the checkpoint's metadata (this project's files)
    load_report: object = None  # checkpoints.LoadReport (None: random weights)


def load(task: str, name: str | None = None, weights: str | None = None, *, allow_random: bool = False,
         labels: str | None = None) -> tuple[nn.Module, Provenance]:
    """The model for ``task`` (one of :data:`TASKS`) and its :class:`Provenance` (see the module doc).

    ``"features"`` also takes MAE weights (an ``mae_hiera_*`` name, an MAE zoo tag or an MAE
    checkpoint): the encoder goes into the matching classifier, its untrained final norm set to
    the identity affine map. ``"ava"`` takes a detector checkpoint of ``hiera-video finetune
    --dataset ava``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {TASKS}")
    if task == "ava":
        return _ava_detector(weights)
    random = weights is not None and str(weights).lower() == "none"
    ckpt = None
    if task == "features":
        mae_name = name if name is not None and get_spec(name).mae else None
        name = mae_name.removeprefix("mae_") if mae_name else name
        if not random:
            spec = get_spec(mae_name or name or DEFAULT_MODEL)  # the model whose tags name the weights
            is_path = weights is not None and _is_path(weights)
            weights = weights if weights is not None else spec.default_weights
            if weights is not None:  # read once to see whether they are MAE weights
                from hiera_video.models.checkpoints import read_checkpoint, resolve_source

                ckpt = read_checkpoint(weights if is_path else resolve_source(spec, weights))
                if ckpt.is_mae:
                    saved = ckpt.meta.get("model") if isinstance(ckpt.meta.get("model"), str) else None
                    return _mae_encoder(ckpt, name or (saved.removeprefix("mae_") if saved else DEFAULT_MODEL), str(weights))
    policy = "mae" if task == "mae" else "classify"
    default = DEFAULT_MAE_MODEL if task == "mae" else DEFAULT_MODEL
    if random:
        if not allow_random:
            raise HieraVideoError(_RANDOM_REFUSED[policy])
        spec, weights = get_spec(name or default), None
        if task != "mae":
            log.warning("using RANDOM weights for %s: predictions are meaningless", name or default)
    else:
        if name is None and (weights is None or not _is_path(weights)):
            name = default  # zoo tags and URLs belong to a named model
        if weights is None:
            weights = get_spec(name).default_weights
            if weights is None:
                raise HieraVideoError(_NO_WEIGHTS[policy].format(name=name))
        spec, ckpt = open_weights(weights, name, ckpt)
    net, report = build_from_checkpoint(spec, ckpt)
    _check_kind(task, spec)
    meta = dict(ckpt.meta) if ckpt is not None else {}
    prov = Provenance(spec, weights, [], *_clip(spec, weights, meta), meta, report)
    if task == "mae":
        return net, prov
    if weights is not None:
        check_finite(net, weights)
        untrained = untrained_head(report)
        if untrained and task == "classify":  # features need no head
            if not allow_random:
                raise HieraVideoError(
                    f"refusing to classify with {weights}: {untrained}, so predictions would be random; "
                    "finetune it first (hiera-video finetune --weights ...), pass a classifier checkpoint, "
                    "or --allow-random-weights to run it anyway"
                )
            log.warning("%s: %s; predictions are meaningless", weights, untrained)
    prov.labels = class_names(net.num_classes, spec, weights, labels, meta)
    return net, prov


def _is_path(weights) -> bool:
    return os.path.exists(os.path.expanduser(str(weights)))


def _check_kind(task: str, spec: ModelSpec) -> None:
    if task == "mae":
        if not spec.mae:
            raise HieraVideoError(
                f"{spec.name} is a classifier (no decoder); reconstructions need an MAE model (mae_hiera_*) and MAE weights"
            )
        if spec.kind != "video":
            raise HieraVideoError(f"{spec.name} is an image model; reconstruct takes video MAE models (mae_hiera_*_16x224)")
        return
    if spec.mae:
        raise HieraVideoError(f"{spec.name} is an MAE model (no classifier); use the matching hiera_* model")
    if spec.kind != "video":
        raise HieraVideoError(f"{spec.name} is an image model; video commands need a video model (hiera_*_16x224)")


def _clip(spec: ModelSpec, weights, meta: dict) -> tuple[ClipSpec, frozenset[str]]:
    """The clips for these weights and the fields the checkpoint fixed: the model's defaults,
    under the zoo tag's spec, under the checkpoint's saved recipe (``meta["preprocessing"]``)."""
    tag = spec.weights.get(weights) if isinstance(weights, str) else None
    saved = meta.get("preprocessing") if isinstance(meta.get("preprocessing"), dict) else {}
    clip = ClipSpec.from_dict(saved, **(tag.clip if tag else spec.clip).to_dict())
    return clip, frozenset(k for k in saved if k in clip.to_dict())


def _mae_encoder(ckpt, cls_name: str, weights: str) -> tuple[nn.Module, Provenance]:
    """MAE weights into the classifier ``cls_name`` for features: decoder dropped, final norm identity."""
    from hiera_video.models.checkpoints import apply_checkpoint
    from hiera_video.models.hiera import Hiera

    spec = get_spec(cls_name)
    if spec.mae or spec.kind != "video":
        raise HieraVideoError(f"{cls_name} is not a video classifier; pass --model hiera_*_16x224 (or its mae_ name)")
    overrides = {}
    if ckpt.layout == "hiera-video" and ckpt.config:
        # The architecture it was pretrained with, minus what is MAE-only (decoder, q_pool,
        # mask ratio): the classifier pools as its own spec says, as in finetuning.
        keep = valid_kwargs(Hiera) - {"q_pool", "num_classes", "head_dropout", "drop_path_rate", "head_init_scale"}
        overrides = {k: v for k, v in ckpt.config.items() if k in keep}
    net = build_model(spec, **overrides)
    report = apply_checkpoint(net, ckpt)
    for line in report.messages():
        log.debug(line)
    check_finite(net, weights)
    with torch.no_grad():  # not in an MAE checkpoint: make it a plain LayerNorm
        net.norm.weight.fill_(1.0)
        net.norm.bias.zero_()
    log.info("MAE encoder weights %s loaded into %s (decoder dropped); features only, no classifier", weights, cls_name)
    # Only mean and std are taken from the pretraining run's recipe (features sample as the classifier does).
    mae_clip, _ = _clip(spec, None, dict(ckpt.meta))
    labels = [f"class {i}" for i in range(net.num_classes)]
    return net, Provenance(spec, weights, labels, spec.clip.with_(mean=mae_clip.mean, std=mae_clip.std), meta=dict(mae=True),
                           load_report=report)


def _ava_detector(weights) -> tuple[nn.Module, Provenance]:
    from hiera_video.models.checkpoints import load_training_state
    from hiera_video.models.heads import build_ava_model

    ckpt = load_training_state(weights)
    meta = ckpt["meta"]
    if meta.get("task") != "ava":
        raise HieraVideoError(
            f"{weights} is not an AVA detector checkpoint (task: {meta.get('task', 'classification')}); "
            "train one with: hiera-video finetune --dataset ava --weights KINETICS_WEIGHTS ..."
        )
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("arch", {}).items()}
    model = build_ava_model(meta["model"], weights=None, drop_path_rate=0.0, **meta.get("head", {}), **arch)
    model.load_state_dict(ckpt["model"])
    spec = get_spec(meta["model"])
    return model, Provenance(spec, str(weights), [], *_clip(spec, None, meta), meta)


def untrained_head(report) -> str | None:
    """Why the classifier head was not loaded from its weights (None when it was), from the
    load report (:class:`~hiera_video.models.checkpoints.LoadReport`; None: random weights)."""
    if report is None:
        return None
    if report.head_reset is not None:
        n, m = report.head_reset
        return f"its head has {m} classes, the model {n}, so the head was re-initialised"
    keys = [k for k in report.initialised if k.startswith(("head.", "norm."))]
    if not keys:
        return None
    if any(k.startswith("decoder") for k in report.dropped):
        return "it is an MAE checkpoint (encoder only): the final norm and the classifier head are untrained"
    return f"it has no trained classifier head ({', '.join(keys[:3])} not in the checkpoint)"


def check_finite(net: nn.Module, weights) -> None:
    """Refuse weights holding NaN or infinite values (a diverged run or a corrupt file): they
    would give NaN probabilities that look like a result."""
    bad = [k for k, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise HieraVideoError(
            f"weights {weights} hold NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); "
            "the file is corrupt or comes from a diverged run: use an earlier checkpoint"
        )


def class_names(n: int, spec: ModelSpec, weights, labels: str | None, meta: dict) -> list[str]:
    """``n`` class names: the ``labels`` file, else the checkpoint's, else the zoo tag's, else "class i"."""
    from hiera_video.data.labels import load_labels

    if labels:
        names = load_labels(labels)
    elif isinstance(meta.get("labels"), list):
        names = [str(x) for x in meta["labels"]]
    elif isinstance(weights, str) and weights in spec.weights and spec.weights[weights].labels:
        names = load_labels(spec.weights[weights].labels)
    else:
        names = [f"class {i}" for i in range(n)]
    if len(names) != n:
        raise HieraVideoError(f"labels have {len(names)} classes but the model {spec.name} predicts {n}; pass a matching --labels file")
    return names
