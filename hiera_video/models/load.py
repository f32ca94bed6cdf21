"""One weights policy for every command that runs a model: :func:`load`.

``load(task, name, weights)`` decides, the same way for ``"classify"`` (predict/eval/export),
``"features"`` (extract), ``"mae"`` (reconstruct) and ``"ava"``: default zoo weights when ``weights``
is None (a checkpoint path names its own model); random weights (``"none"``), or weights leaving the
task's head untrained, only with ``allow_random``; NaN/inf weights never (every task returns through
:func:`_checked`); class names are the weights' own, ``--labels`` is checked against them
(:func:`match_names`); clips: the model's defaults < the zoo weights' spec < the checkpoint's saved recipe.
"""

from __future__ import annotations

import logging
import os
import re
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
         labels: str | None = None, opener=None) -> tuple[nn.Module, Provenance]:
    """The model for ``task`` (one of :data:`TASKS`) and its :class:`Provenance`.

    ``"features"`` also takes MAE weights: the encoder goes into the matching classifier, its final
    norm set to identity. ``opener(weights) -> (model, Provenance)`` builds ``"ava"``'s model
    (:mod:`hiera_video.ava.model`); :func:`load` still checks it."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {TASKS}")
    if (task == "ava") != (opener is not None):
        raise ValueError(f"task {task!r} {'needs' if opener is None else 'takes no'} opener")
    net, prov = _checked(task, *(opener(weights) if opener else _open(task, name, weights, allow_random)), allow_random)
    if task == "classify":
        prov.labels = class_names(net.num_classes, prov.spec, prov.source, labels, prov.meta)
    elif task == "features" and not prov.labels:  # the class count of what features come from; no --labels
        prov.labels = class_names(net.num_classes, prov.spec, prov.source, None, prov.meta, suggest=False)
    return net, prov


def _open(task: str, name: str | None, weights: str | None, allow_random: bool) -> tuple[nn.Module, Provenance]:
    """The model and weights of ``task``, unchecked (:func:`load` checks them)."""
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
    mae = task == "mae"
    default = DEFAULT_MAE_MODEL if mae else DEFAULT_MODEL
    if random:
        if not allow_random:
            raise HieraVideoError(f"refusing to {'reconstruct' if mae else 'run a classifier'} with random weights; "
                                  "pass trained --weights, or --allow-random-weights")
        spec, weights = get_spec(name or default), None
        if not mae:
            log.warning("using RANDOM weights for %s: predictions are meaningless", name or default)
        with torch.random.fork_rng(devices=[]):  # seeded: a resumed extract folder stays one model
            torch.manual_seed(0)
            net, report = build_from_checkpoint(spec, None)
    else:
        if name is None and (weights is None or not _is_path(weights)):
            name = default  # zoo tags and URLs belong to a named model
        if weights is None:
            weights = get_spec(name).default_weights
            if weights is None:
                raise HieraVideoError(f"{name} has no official weights; " + (
                    "pass --weights (e.g. RUN_DIR/last.pt of hiera-video pretrain)" if mae else
                    "pass --weights PATH (e.g. a finetuned checkpoint) or --weights none --allow-random-weights"))
        spec, ckpt = open_weights(weights, name, ckpt)
        net, report = build_from_checkpoint(spec, ckpt)
    if mae != spec.mae:
        raise HieraVideoError(f"{spec.name} is " + (
            "a classifier (no decoder); reconstructions need an MAE model (mae_hiera_*) and MAE weights" if mae
            else "an MAE model (no classifier); use the matching hiera_* model"))
    if spec.kind != "video":
        raise HieraVideoError(f"{spec.name} is an image model; " + ("reconstruct takes video MAE models (mae_hiera_*_16x224)"
                              if mae else "video commands need a video model (hiera_*_16x224)"))
    meta = dict(ckpt.meta) if ckpt is not None else {}
    return net, Provenance(spec, weights, [], *weights_clip(spec, weights, meta), meta, report)


#: The state-dict key prefixes of each task's head: weights leaving one at its initialisation give random outputs.
HEADS = {"classify": ("head.", "norm."), "ava": ("head.", "backbone.norm."),
         "mae": ("decoder", "mask_token", "multi_scale_fusion_heads."), "features": ()}
# Per task: the head's name, what its being untrained would make random, and what to do instead.
_UNTRAINED = {
    "classify": ("classifier head", "classify", "predictions",
                 "finetune it first (hiera-video finetune --weights ...), pass a classifier checkpoint"),
    "ava": ("detection head", "detect actions", "detections",
            "train the detector first (hiera-video finetune --dataset ava), pass a detector checkpoint"),
    "mae": ("decoder", "reconstruct", "reconstructions",
            "pass MAE weights with their decoder (e.g. RUN_DIR/last.pt of hiera-video pretrain)"),
}


def _checked(task: str, net: nn.Module, prov: Provenance, allow_random: bool) -> tuple[nn.Module, Provenance]:
    """The one way out of :func:`load`: NaN/inf weights are refused, an untrained head (:data:`HEADS`)
    unless ``allow_random`` (then a warning). Random initialisation was decided before building."""
    if prov.source is None:
        return net, prov
    bad = [k for k, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:  # NaN probabilities would look like a result
        raise HieraVideoError(f"weights {prov.source} hold NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); "
                              "the file is corrupt or comes from a diverged run: use an earlier checkpoint")
    untrained = untrained_head(prov.load_report, task)
    if untrained:
        _, verb, outputs, fix = _UNTRAINED[task]
        if not allow_random:
            raise HieraVideoError(f"refusing to {verb} with {prov.source}: {untrained}, so {outputs} would be random; "
                                  f"{fix}, or --allow-random-weights to run it anyway")
        log.warning("%s: %s; %s are meaningless", prov.source, untrained, outputs)
    return net, prov


def _is_path(weights) -> bool:
    """Weights that name their own model: a local path or an ``hf-hub:`` repo."""
    from hiera_video.models.checkpoints.sources import is_hub_spec

    return is_hub_spec(str(weights)) or os.path.exists(os.path.expanduser(str(weights)))


def weights_clip(spec: ModelSpec, weights, meta: dict) -> tuple[ClipSpec, frozenset[str]]:
    """The clips for these weights (model defaults < zoo tag's spec < ``meta["preprocessing"]``) and
    the fields the checkpoint fixed."""
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
    # the pretraining architecture minus the MAE-only parts: the classifier pools as its own spec says
    keep = valid_kwargs(Hiera) - {"q_pool", "num_classes", "head_dropout", "drop_path_rate", "head_init_scale"}
    net = build_model(spec, **({k: v for k, v in ckpt.config.items() if k in keep}
                               if ckpt.layout == "hiera-video" and ckpt.config else {}))
    report = apply_checkpoint(net, ckpt)
    for line in report.messages():
        log.debug(line)
    nn.init.ones_(net.norm.weight)  # not in an MAE checkpoint: make it a plain LayerNorm
    nn.init.zeros_(net.norm.bias)
    log.info("MAE encoder weights %s loaded into %s (decoder dropped); features only, no classifier", weights, cls_name)
    mae_clip, _ = weights_clip(spec, None, dict(ckpt.meta))  # only mean and std come from the pretraining recipe
    labels = [f"class {i}" for i in range(net.num_classes)]
    return net, Provenance(spec, weights, labels, spec.clip.with_(mean=mae_clip.mean, std=mae_clip.std), meta=dict(mae=True),
                           load_report=report)


def untrained_head(report, task: str = "classify") -> str | None:
    """Why ``task``'s head (:data:`HEADS`) was not loaded, from the load report; None when it was,
    the task needs no head, or the weights are random (``report`` None)."""
    if report is None or not HEADS[task]:
        return None
    if report.head_reset is not None:
        n, m = report.head_reset
        return f"its head has {m} classes, the model {n}, so the head was re-initialised"
    keys = [k for k in report.initialised if k.startswith(HEADS[task])]
    if not keys:
        return None
    if task == "classify" and any(k.startswith("decoder") for k in report.dropped):
        return "it is an MAE checkpoint (encoder only): the final norm and the classifier head are untrained"
    return f"it has no trained {_UNTRAINED[task][0]} ({', '.join(keys[:3])} not in the checkpoint)"


def class_names(n: int, spec: ModelSpec, weights, labels: str | None, meta: dict, suggest: bool = True) -> list[str]:
    """``n`` class names: the weights' own, checked against ``labels`` (:func:`match_names`), else
    ``labels``, else "class i"; ``suggest`` warns when a built-in label set has ``n`` classes."""
    from hiera_video.data.labels import load_labels

    own = None  # the checkpoint's labels (unless placeholders: "class 0", "LABEL_1" ...), else the zoo tag's
    if isinstance(meta.get("labels"), list) and meta["labels"]:
        own = [str(x) for x in meta["labels"]]
        if all(re.fullmatch(rf"(class|label)[ _]?{i}", x.strip().lower()) for i, x in enumerate(own)):
            own = None
    elif isinstance(weights, str) and weights in spec.weights and spec.weights[weights].labels:
        own = load_labels(spec.weights[weights].labels)
    given = load_labels(labels) if labels else None
    if given is not None and own is not None:
        names = match_names(given, own, labels, weights)
    else:
        names = given or own or [f"class {i}" for i in range(n)]
    if len(names) != n:
        raise HieraVideoError(f"labels have {len(names)} classes but the model {spec.name} predicts {n}; pass a matching --labels file")
    if suggest and given is None and own is None and (
            builtin := next((k for k in _BUILTIN_TITLES if len(load_labels(k)) == n), None)):
        log.warning("the weights %s carry no class names, so classes are shown as 'class N'; their %d classes are as many "
                    "as the built-in set %s: if they are %s weights, pass --labels %s to name them",
                    weights, n, builtin, _BUILTIN_TITLES[builtin], builtin)
    return names


def _few(names, n: int = 3) -> str:
    names = list(names)
    return ", ".join(f"'{x}'" for x in names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def match_names(given: list[str], own: list[str], source, weights) -> list[str]:
    """``--labels`` (``given``, from ``source``) against the weights' names (``own``), ignoring case,
    underscores and quotes: the same order gives ``given``; another order keeps the weights' order
    (spelled as in ``given``) with a warning; other classes raise :class:`HieraVideoError`."""
    from hiera_video.data.datasets.base import normalize_name

    gk, ok = [normalize_name(x) for x in given], [normalize_name(x) for x in own]
    if gk == ok:
        return list(given)
    if sorted(gk) == sorted(ok) and len(set(ok)) == len(ok):
        spelled = dict(zip(gk, given))
        log.warning("--labels %s lists the %d classes of the weights %s in another order: mapped by name, each score keeps "
                    "the class the weights trained it for (the weights' order is kept)", source, len(own), weights)
        return [spelled[k] for k in ok]
    in_own, in_given = set(ok), set(gk)
    only_given = [x for x, k in zip(given, gk) if k not in in_own]
    only_own = [x for x, k in zip(own, ok) if k not in in_given]
    parts = ([f"{len(only_given)} only in --labels: {_few(only_given)}"] if only_given else []) + \
            ([f"{len(only_own)} only in the weights: {_few(only_own)}"] if only_own else [])
    raise HieraVideoError(f"--labels {source} ({len(given)} classes) does not name the classes of the weights "
                          f"{weights} ({len(own)}): {'; '.join(parts) or 'a class name repeats'}; leave out --labels to "
                          "use the weights' own names, or pass weights trained on these classes")


# The built-in label sets a classifier head may be named by, and their titles in the warning.
_BUILTIN_TITLES = {"kinetics400": "Kinetics-400", "kinetics600": "Kinetics-600", "kinetics700": "Kinetics-700",
                   "ssv2": "Something-Something v2"}
