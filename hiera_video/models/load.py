"""One weights policy for every command that runs a model: :func:`load`.

``load(task, name, weights)`` decides, the same way for ``predict``/``eval``/``export``
(``"classify"``), ``extract`` (``"features"``), ``reconstruct`` (``"mae"``) and AVA
evaluation (``"ava"``):

* default weights: ``weights=None`` takes the model's default zoo weights (downloaded when
  missing); a checkpoint path needs no model name (the checkpoint names it, or its shapes);
* random weights: ``weights="none"`` needs ``allow_random``; so do weights that leave the
  task's head untrained (the classifier head, the AVA detection head, the MAE decoder); weights
  holding NaN or infinite values are refused. These checks are not up to each task: every
  task's loader returns to :func:`load`, and :func:`load` returns only through
  :func:`_checked`, so a new task gets them too;
* labels: the weights' own class names (the checkpoint's, else the zoo tag's); ``--labels`` is
  compared with them (:func:`match_names`: the same classes in another order keep the weights'
  order, other names are an error), and names weights that carry none (when their head has as
  many classes as a built-in set, a warning names the ``--labels`` that would name them);
* clips (:class:`~hiera_video.data.clip_spec.ClipSpec`): the model's defaults, under the zoo
  weights' spec, under the recipe the checkpoint saved (a saved spec wins).

It returns the model and one :class:`Provenance` record (instead of attributes on the model).
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
    net, prov = _checked(task, *_open(task, name, weights, allow_random), allow_random)
    if task == "classify":
        prov.labels = class_names(net.num_classes, prov.spec, prov.source, labels, prov.meta)
    elif task == "features" and not prov.labels:  # the class count of what features come from; no --labels
        prov.labels = class_names(net.num_classes, prov.spec, prov.source, None, prov.meta, suggest=False)
    return net, prov


def _open(task: str, name: str | None, weights: str | None, allow_random: bool) -> tuple[nn.Module, Provenance]:
    """The model and weights of ``task``, unchecked: only :func:`load` calls it, and checks
    what it returns (:func:`_checked`)."""
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
    if random:  # seeded: the same random model every time (an extract folder resumed with it stays one model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net, report = build_from_checkpoint(spec, ckpt)
    else:
        net, report = build_from_checkpoint(spec, ckpt)
    _check_kind(task, spec)
    meta = dict(ckpt.meta) if ckpt is not None else {}
    return net, Provenance(spec, weights, [], *_clip(spec, weights, meta), meta, report)


#: The state-dict keys (prefixes) that make each task's head: weights that leave one of them
#: at its initialisation give random outputs. Features need no head.
HEADS = {"classify": ("head.", "norm."), "ava": ("head.", "backbone.norm."),
         "mae": ("decoder", "mask_token", "multi_scale_fusion_heads."), "features": ()}

# What an untrained head would make random, and what to do instead, per task.
_UNTRAINED = {
    "classify": ("classify", "predictions",
                 "finetune it first (hiera-video finetune --weights ...), pass a classifier checkpoint"),
    "ava": ("detect actions", "detections",
            "train the detector first (hiera-video finetune --dataset ava), pass a detector checkpoint"),
    "mae": ("reconstruct", "reconstructions", "pass MAE weights with their decoder (e.g. RUN_DIR/last.pt of hiera-video pretrain)"),
}


def _checked(task: str, net: nn.Module, prov: Provenance, allow_random: bool) -> tuple[nn.Module, Provenance]:
    """The one way out of :func:`load`, whatever the task: weights holding NaN or infinite
    values are refused (always), weights that leave the task's head (:data:`HEADS`) untrained
    are refused unless ``allow_random`` (then a warning). Random initialisation
    (``prov.source`` None) was allowed, or refused, before anything was built."""
    if prov.source is None:
        return net, prov
    check_finite(net, prov.source)
    untrained = untrained_head(prov.load_report, task)
    if untrained:
        verb, outputs, fix = _UNTRAINED[task]
        if not allow_random:
            raise HieraVideoError(
                f"refusing to {verb} with {prov.source}: {untrained}, so {outputs} would be random; "
                f"{fix}, or --allow-random-weights to run it anyway"
            )
        log.warning("%s: %s; %s are meaningless", prov.source, untrained, outputs)
    return net, prov


def _is_path(weights) -> bool:
    """Weights that name their own model: a local path or an ``hf-hub:`` repo (read as a folder)."""
    from hiera_video.models.checkpoints.sources import is_hub_spec

    return is_hub_spec(str(weights)) or os.path.exists(os.path.expanduser(str(weights)))


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
    from hiera_video.ava.model import build_ava_model

    ckpt = load_training_state(weights)
    meta = ckpt["meta"]
    if meta.get("task") != "ava":
        raise HieraVideoError(
            f"{weights} is not an AVA detector checkpoint (task: {meta.get('task', 'classification')}); "
            "train one with: hiera-video finetune --dataset ava --weights KINETICS_WEIGHTS ..."
        )
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("arch", {}).items()}
    model = build_ava_model(meta["model"], weights=None, drop_path_rate=0.0, **meta.get("head", {}), **arch)
    report = _load_detector_state(model, ckpt["model"], weights)
    spec = get_spec(meta["model"])
    return model, Provenance(spec, str(weights), [], *_clip(spec, None, meta), meta, report)


def _load_detector_state(model: nn.Module, sd, weights):
    """Load a detector checkpoint's tensors into ``model`` and say what they left out, as a
    :class:`~hiera_video.models.checkpoints.LoadReport`: head tensors missing from the file
    stay initialised and are listed in ``initialised`` (:func:`_checked` refuses them);
    anything else that does not fit the saved architecture is a one-line error."""
    from hiera_video.models.checkpoints.adaptation import LoadReport

    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in own if k in sd and tuple(getattr(sd[k], "shape", ())) != tuple(own[k].shape)]
    broken = [k for k in missing if not k.startswith(HEADS["ava"])] + unexpected + mismatched
    if broken:
        raise HieraVideoError(
            f"{weights}: the detector's tensors do not fit the architecture it saved ({len(broken)} missing, unexpected or "
            f"of another shape; first: {broken[0]}); the file is damaged or was not written by hiera-video finetune --dataset ava"
        )
    with torch.no_grad():
        model.load_state_dict(sd, strict=False)
    return LoadReport(layout="hiera-video", source=str(weights), loaded=len(sd), initialised=missing)


def untrained_head(report, task: str = "classify") -> str | None:
    """Why ``task``'s head (:data:`HEADS`) was not loaded from its weights (None when it was,
    or the task needs no head), from the load report
    (:class:`~hiera_video.models.checkpoints.LoadReport`; None: random weights)."""
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
    what = {"classify": "classifier head", "ava": "detection head", "mae": "decoder"}[task]
    return f"it has no trained {what} ({', '.join(keys[:3])} not in the checkpoint)"


def check_finite(net: nn.Module, weights) -> None:
    """Refuse weights holding NaN or infinite values (a diverged run or a corrupt file): they
    would give NaN probabilities that look like a result."""
    bad = [k for k, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise HieraVideoError(
            f"weights {weights} hold NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); "
            "the file is corrupt or comes from a diverged run: use an earlier checkpoint"
        )


def class_names(n: int, spec: ModelSpec, weights, labels: str | None, meta: dict, suggest: bool = True) -> list[str]:
    """``n`` class names for a classifier. The weights' own names (the checkpoint's, else the
    zoo tag's) are never silently replaced: ``labels`` (``--labels``) is compared with them
    (:func:`match_names`). Weights without names take ``labels``, else "class i", and when
    their head has as many classes as a built-in label set, a warning names the ``--labels``
    that would name them (it is never assumed; ``suggest=False``: no warning, for commands
    without ``--labels``)."""
    from hiera_video.data.labels import load_labels

    own = weights_class_names(spec, weights, meta)
    given = load_labels(labels) if labels else None
    if given is not None and own is not None:
        names = match_names(given, own, labels, weights)
    else:
        names = given or own or [f"class {i}" for i in range(n)]
    if len(names) != n:
        raise HieraVideoError(f"labels have {len(names)} classes but the model {spec.name} predicts {n}; pass a matching --labels file")
    if suggest and given is None and own is None and (builtin := builtin_label_set(n)):
        log.warning("the weights %s carry no class names, so classes are shown as 'class N'; their %d classes are as many "
                    "as the built-in set %s: if they are %s weights, pass --labels %s to name them",
                    weights, n, builtin, _BUILTIN_TITLES[builtin], builtin)
    return names


def placeholder_names(names) -> bool:
    """True for names that say nothing: "class 0", "class_1", "LABEL_2" (transformers'
    default id2label) ... in index order."""
    return all(re.fullmatch(rf"(class|label)[ _]?{i}", str(x).strip().lower()) for i, x in enumerate(names))


def weights_class_names(spec: ModelSpec, weights, meta: dict) -> list[str] | None:
    """The class names the weights carry: the checkpoint's ``labels``, else the zoo tag's
    label set; None when they carry none (or only placeholders)."""
    from hiera_video.data.labels import load_labels

    if isinstance(meta.get("labels"), list) and meta["labels"]:
        names = [str(x) for x in meta["labels"]]
        return None if placeholder_names(names) else names
    if isinstance(weights, str) and weights in spec.weights and spec.weights[weights].labels:
        return load_labels(spec.weights[weights].labels)
    return None


def _few(names, n: int = 3) -> str:
    names = list(names)
    return ", ".join(f"'{x}'" for x in names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def match_names(given: list[str], own: list[str], source, weights) -> list[str]:
    """``--labels`` (``given``, read from ``source``) against the names the weights carry (``own``):

    * the same classes in the same order (ignoring case, underscores and quotes): ``given``;
    * the same classes in another order: mapped by name, each output keeps the class the
      weights trained it for (the weights' order, spelled as in ``given``), with a warning;
    * other classes (or another number of them, or a repeated name): :class:`HieraVideoError`
      listing the first differences.
    """
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
    raise HieraVideoError(
        f"--labels {source} ({len(given)} classes) does not name the classes of the weights {weights} ({len(own)}): "
        f"{'; '.join(parts) or 'a class name repeats'}; leave out --labels to use the weights' own names, "
        "or pass weights trained on these classes"
    )


# The built-in label sets a classifier head may be named by (AVA's is a detector's), and how
# their weights are called in the warning.
_BUILTIN_TITLES = {"kinetics400": "Kinetics-400", "kinetics600": "Kinetics-600", "kinetics700": "Kinetics-700",
                   "ssv2": "Something-Something v2"}


def builtin_label_set(n: int) -> str | None:
    """The built-in label set (``--labels NAME``) with ``n`` classes, None when none has."""
    from hiera_video.data.labels import load_labels

    for name in _BUILTIN_TITLES:
        if len(load_labels(name)) == n:
            return name
    return None
