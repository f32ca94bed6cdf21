"""Training configuration: YAML presets + ``--set section.key=value`` -> typed dataclasses.

Every key has a default and a one-line meaning (the ``help`` metadata); unknown keys are
errors that list the valid ones. ``load_config("demo")`` finds a bundled preset
(``configs/demo.yaml``); a preset may name a ``base`` preset it extends.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hiera_video.errors import HieraVideoError


def setting(default, help: str):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default.copy(), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def variant(base, name: str, keys: str, /, **changes):
    """A config section made from ``base``: the keys ``keys`` (space-separated, in this order),
    each as in ``base`` unless ``changes`` gives it a new ``setting(default, help)``, or a
    ``(type, setting(...))`` for a key ``base`` lacks or whose type changes. The class is named
    ``name`` in the calling module."""
    hints = typing.get_type_hints(base)
    fields = {f.name: f for f in dataclasses.fields(base)}
    spec, unknown = [], set(changes) - set(keys.split())
    assert not unknown, f"changes to keys not listed: {unknown}"
    for k in keys.split():
        typ, new = changes[k] if isinstance(changes.get(k), tuple) else (hints.get(k), changes.get(k))
        if new is None:
            f = fields[k]
            new = field(default=f.default, default_factory=f.default_factory, metadata=f.metadata)
        spec.append((k, typ, new))
    cls = dataclasses.make_dataclass(name, spec)
    cls.__module__ = sys._getframe(1).f_globals["__name__"]  # so instances pickle
    return cls


@dataclass
class DataConfig:
    dataset: str = setting("list", "k400 | k600 | k700 | ssv2 | list | folder | ava")
    root: str | None = setting(None, "dataset folder (video paths are relative to it)")
    annotations: str | None = setting(None, "training annotation file (default: looked up under root)")
    val_annotations: str | None = setting(None, "validation annotation file (default: looked up under root)")
    train_split: str = setting("train", "split name used for training")
    val_split: str = setting("val", "split name used for validation")
    labels: str | None = setting(None, "class-name file for list datasets")
    sampling: str = setting("dense", "dense (Kinetics) | segment (SSv2)")
    stride: int = setting(4, "dense sampling: frame stride at target_fps")
    target_fps: float = setting(30.0, "dense sampling: frame rate the stride refers to")
    repeated_aug: int = setting(2, "clips sampled from each decoded training video (repeated augmentation)")
    workers: int = setting(2, "DataLoader worker processes per training process")
    backend: str = setting("auto", "video decoder: auto | decord | pyav | torchcodec (needs FFmpeg shared libraries)")
    limit_train: int | None = setting(None, "use only the first N training videos")
    limit_val: int | None = setting(None, "use only the first N validation videos")
    # AVA only (data.dataset: ava); file names are looked up under root and root/annotations.
    exclusions: str | None = setting(None, "AVA: excluded timestamps of the training split [default: ava_train_excluded_timestamps_v2.2.csv]")
    val_exclusions: str | None = setting(None, "AVA: excluded timestamps of the validation split [default: ava_val_excluded_timestamps_v2.2.csv]")
    proposals: str | None = setting(None, "AVA: person boxes added to the GT training boxes (SlowFast CSV); null = GT boxes only")
    val_proposals: str | None = setting(None, "AVA: person boxes to detect actions on [default: ava_val_predicted_boxes.csv if present, else GT boxes]")
    proposal_threshold: float = setting(0.8, "AVA: keep proposals with at least this score")
    test_view: str = setting("full", "AVA evaluation view: full (whole frame, short side = crop size, as SlowFast tests) | center (centre square)")
    frames_layout: str = setting("video", "AVA: video (15-minute clips under root or root/videos) | frames (<vid>/<vid>_%06d.jpg)")
    allow_pickle: bool = setting(False, "AVA: allow reading an mmaction2 proposals .pkl (pickle can run code: trusted files only)")


@dataclass
class ModelConfig:
    name: str = setting("hiera_base_16x224", "model name (hiera-video models)")
    weights: str | None = setting(None, "initial weights: zoo tag, URL, hf-hub:ORG/NAME[@REVISION] or path (MAE or Kinetics checkpoints); null = random")
    input_size: list | None = setting(None, "override the input size, e.g. [8, 224, 224]")
    arch: dict = setting({}, "other architecture arguments for the model constructor, e.g. {q_pool: 2}")
    drop_path: float = setting(0.2, "stochastic depth rate (linear over blocks)")
    head_dropout: float = setting(0.3, "dropout before the classifier")
    grad_checkpointing: bool = setting(False, "recompute activations in backward to save memory")
    compile: bool = setting(False, "wrap the model with torch.compile")


@dataclass
class OptimConfig:
    name: str = setting("adamw", "adamw | sgd")
    lr: float = setting(8e-4, "learning rate at base_batch (scaled linearly to the real global batch)")
    base_batch: int = setting(256, "batch size the learning rate is defined for")
    min_lr: float = setting(1e-6, "final learning rate of the cosine schedule (also scaled)")
    weight_decay: float = setting(0.05, "weight decay (never on 1-D params, biases, position embeddings)")
    betas: list = setting([0.9, 0.999], "AdamW betas")
    momentum: float = setting(0.9, "SGD momentum")
    layer_decay: float | None = setting(0.8, "layer-wise lr decay (null = off)")
    clip_grad: float | None = setting(5.0, "max gradient norm (null = off)")
    epochs: int = setting(150, "training epochs")
    warmup_epochs: float = setting(10.0, "linear warmup length in epochs")


@dataclass
class AugmentConfig:
    scale: list = setting([0.08, 1.0], "random-resized-crop area range")
    flip: str = setting("random", "random | none | ssv2 (flip and swap SSv2 left/right labels)")
    randaug: bool = setting(True, "clip-consistent RandAugment")
    randaug_n: int = setting(2, "RandAugment ops per clip")
    randaug_m: float = setting(7.0, "RandAugment magnitude")
    randaug_std: float = setting(0.5, "RandAugment magnitude noise")
    erase_p: float = setting(0.25, "random erasing probability")
    mixup: float = setting(0.8, "mixup alpha (0 = off)")
    cutmix: float = setting(1.0, "cutmix alpha (0 = off)")
    mixup_prob: float = setting(1.0, "probability of applying mixup/cutmix to a batch")
    switch_prob: float = setting(0.5, "probability of cutmix instead of mixup")
    label_smoothing: float = setting(0.1, "label smoothing")


@dataclass
class RunConfig:
    output: str | None = setting(None, "run folder (checkpoints, logs, metrics)")
    batch_size: int = setting(8, "clips per process per forward pass")
    global_batch: int | None = setting(None, "clips per optimizer step over all processes (gradient accumulation reaches it)")
    precision: str = setting("auto", "auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16")
    device: str = setting("auto", "auto | cpu | cuda")
    dist_timeout: float | None = setting(None, "torchrun: seconds a process waits for the others before the run stops with an error (null = $HIERA_VIDEO_DIST_TIMEOUT or 1800)")
    seed: int = setting(0, "random seed")
    ckpt_every_steps: int = setting(0, "also checkpoint every N optimizer steps (0 = only each epoch)")
    lock: bool = setting(True, "lock the run folder against a second run (false: for file systems without file locks, e.g. some NFS/FUSE mounts; then make sure only one run writes there)")
    val_every_epochs: int = setting(1, "fast validation (centre view) every N epochs (0 = off)")
    val_views: str = setting("1x1", "views of the periodic validation")
    final_views: str | None = setting(None, "views of the final evaluation (default: the dataset preset, e.g. 5x3)")
    ema: bool = setting(False, "keep an exponential moving average of the weights (evaluated and saved)")
    ema_decay: float = setting(0.9999, "EMA decay per optimizer step")
    log_every: int = setting(10, "log training metrics every N optimizer steps")
    tensorboard: bool = setting(False, "also write a TensorBoard log (needs the tensorboard package)")
    halt_after_steps: int | None = setting(None, "stop (with a checkpoint) after N optimizer steps, as if interrupted (for tests)")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- loading


def preset_path(name: str) -> Path | None:
    """The bundled preset ``name`` (``configs/<name>.yaml``), or None."""
    f = resources.files("hiera_video.configs").joinpath(f"{name}.yaml")
    return Path(str(f)) if f.is_file() else None


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("hiera_video.configs").iterdir() if p.name.endswith(".yaml"))


# A config is a few kilobytes and about a hundred values: anything far larger is a mistake or
# an attack (a "YAML bomb" of nested aliases expands to billions of values from a few lines).
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 10_000
MAX_CONFIG_DEPTH = 32
MAX_BASE_CHAIN = 16


def _short(value: Any, limit: int = 80) -> str:
    """A bounded one-line repr for error messages: a value of any size (a YAML bomb, a
    megabyte string) is never expanded in full."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring, r.maxother, r.maxlong = limit, limit, 40
    try:
        text = " ".join(r.repr(value).split())
    except Exception:  # pragma: no cover - a value whose repr fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip(text: Any, limit: int = 80) -> str:
    """``str(text)`` on one line, cut to ``limit`` characters (for keys and names in errors)."""
    line = " ".join(str(text)[: limit * 4].split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_size(data: Any, where: str) -> None:
    """Reject loaded YAML whose expansion is unreasonably large or deep (aliases are shared
    references after loading, so the walk is stopped as soon as a limit is passed)."""
    count, stack = 0, [(data, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise HieraVideoError(
                f"{where}: the config expands to more than {MAX_CONFIG_VALUES} values (nested YAML aliases?); "
                "a config holds about a hundred"
            )
        if depth > MAX_CONFIG_DEPTH:
            raise HieraVideoError(f"{where}: the config is nested more than {MAX_CONFIG_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


class _Yaml12Loader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 (core schema) numbers instead of YAML 1.1's: ``1:30`` is the
    text "1:30", not 90 (base 60); ``010`` is 10, not 8 (octal); ``1_000`` and ``0b11`` are
    text; ``0o17``, ``0x1F``, ``1e3`` and ``1.5e3`` are numbers. Text where a number is
    expected is refused by the key's type check. Everything else is PyYAML's safe loading."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _yaml12_int(loader, node) -> int:
    text = loader.construct_scalar(node)
    return int(text[2:], 8) if text.startswith("0o") else int(text[2:], 16) if text.startswith("0x") else int(text, 10)


def _yaml12_float(loader, node) -> float:
    text = loader.construct_scalar(node).lower()
    return float(text.replace(".inf", "inf").replace(".nan", "nan"))


_Yaml12Loader.add_constructor(_INT, _yaml12_int)
_Yaml12Loader.add_constructor(_FLOAT, _yaml12_float)


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 numbers (:class:`_Yaml12Loader`)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def _load_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load`` (YAML 1.2 numbers) with every failure as a one-line HieraVideoError, size-checked."""
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise HieraVideoError(f"{where}{line}: invalid YAML ({_short(getattr(e, 'problem', None) or e, 160)})") from None
    except RecursionError:
        raise HieraVideoError(f"{where}: invalid config (nested too deeply)") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. an impossible date such as 2020-13-45
        raise HieraVideoError(f"{where}: invalid YAML value ({_short(e, 160)})") from None
    _check_size(data, where)
    return data


def _read_yaml(source: str, chain: tuple[Path, ...] = ()) -> dict:
    path = Path(source)
    if not path.is_file() and chain and (chain[-1].parent / source).is_file():
        path = chain[-1].parent / source  # a base named relative to the config that names it
    if not path.is_file():
        bundled = preset_path(source[:-5] if source.endswith(".yaml") else source) if "/" not in source else None
        if bundled is None:
            raise HieraVideoError(f"config '{_clip(source, 200)}' not found: pass a YAML file or a bundled preset ({', '.join(list_presets())})")
        path = bundled
    real = path.resolve()
    if real in chain:
        loop = " -> ".join(p.name for p in (*chain[chain.index(real):], real))
        raise HieraVideoError(f"{path}: the 'base' chain loops ({loop}); a config cannot extend itself")
    if len(chain) >= MAX_BASE_CHAIN:
        raise HieraVideoError(f"{path}: more than {MAX_BASE_CHAIN} configs extend each other through 'base'")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise HieraVideoError(f"{path}: {size} bytes is too large for a config (at most {MAX_CONFIG_BYTES}); is it the right file?")
        raw = path.read_bytes()
    except OSError as e:
        raise HieraVideoError(f"cannot read config '{path}': {e.strerror or _short(e)}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HieraVideoError(f"{path}: not a text file (binary data); a config is a YAML text file") from None
    data = _load_yaml_text(text, str(path))
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise HieraVideoError(f"{path}: a config must be a mapping of sections (data, model, optim, augment, run)")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise HieraVideoError(f"{path}: 'base' must name a bundled preset or a YAML file, got {_short(base)}")
        merged = _read_yaml(base, (*chain, real))
        _merge(merged, data)
        return merged
    return data


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _base_type(typ):
    """``int | None`` -> int."""
    args = typing.get_args(typ)
    return next((a for a in args if a is not type(None)), typ) if args else typ


def _coerce(value: Any, typ, key: str):
    """Check/convert ``value`` for a field of type ``typ`` (from YAML or a --set string)."""
    args = typing.get_args(typ)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise HieraVideoError(f"config key '{key}' cannot be null")
    base = _base_type(typ)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise HieraVideoError(f"config key '{key}' must be true or false, got {_short(value)}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise HieraVideoError(f"config key '{key}' must be an integer, got {_short(value)}")
    if base is float:
        try:  # a string too: YAML 1.1 reads 2e-3 (no dot) as a string
            number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        except OverflowError:  # an int too large for a float
            number = math.inf
        if number is None:
            raise HieraVideoError(f"config key '{key}' must be a number, got {_short(value)}")
        if not math.isfinite(number):
            raise HieraVideoError(f"config key '{key}' must be a finite number, got {_short(value)}")
        return number
    if base is str:
        if isinstance(value, (dict, list, tuple)):
            raise HieraVideoError(f"config key '{key}' must be a single value, got {_short(value)}")
        return str(value)
    if base is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise HieraVideoError(f"config key '{key}' must be a list, got {_short(value)}")
    if base is dict:
        if isinstance(value, dict):
            return dict(value)
        raise HieraVideoError(f"config key '{key}' must be a mapping such as {{q_pool: 2}}, got {_short(value)}")
    return value


def _apply(cfg, data: dict, where: str, raw: str | None = None) -> None:
    """Set ``data``'s keys on ``cfg``. ``raw``: the text of a --set value, kept as it was typed
    for text keys (YAML would read ``0x0`` as the number 0 and ``1e3`` differently)."""
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    for sec, values in data.items():
        if sec not in sections:
            raise HieraVideoError(f"{where}: unknown config section '{_clip(sec, 60)}'; valid sections: {', '.join(sections)}")
        if not isinstance(values, dict):
            raise HieraVideoError(f"{where}: section '{sec}' must be a mapping of keys")
        obj = getattr(cfg, sec)
        hints = typing.get_type_hints(type(obj))
        valid = [f.name for f in dataclasses.fields(obj)]
        for k, v in values.items():
            if k not in valid:
                raise HieraVideoError(f"{where}: unknown config key '{sec}.{_clip(k, 60)}'; valid keys in '{sec}': {', '.join(valid)}")
            if raw is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and _base_type(hints[k]) is str:
                v = raw.strip()
            setattr(obj, k, _coerce(v, hints[k], f"{sec}.{k}"))


def parse_set(item: str) -> dict:
    """``"optim.lr=1e-3"`` -> ``{"optim": {"lr": 0.001}}`` (the value is read as YAML)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise HieraVideoError(f"--set expects section.key=value (e.g. optim.lr=1e-3), got {_short(item)}")
    key, raw = item.split("=", 1)
    sec, k = key.strip().split(".", 1)
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
        value = raw
    _check_size(value, f"--set {_clip(key.strip(), 60)}")
    return {sec: {k: value}}


def load_config(source: str | None = None, sets: list[str] | tuple = (), overrides: dict | None = None,
                cls: type = TrainConfig):
    """Defaults <- preset/YAML ``source`` <- ``overrides`` (command-line options) <- ``--set`` items.

    ``cls``: the config dataclass (``TrainConfig``; pretraining passes its own, with the same
    ``data``/``model``/``optim``/``augment``/``run`` sections). Every key is checked against
    its allowed values (:data:`RULES`) here, before any work starts."""
    cfg = cls()
    if source:
        _apply(cfg, _read_yaml(source), str(source))
    if overrides:
        _apply(cfg, overrides, "command line")
    for item in sets:
        _apply(cfg, parse_set(item), f"--set {_clip(item, 120)}", raw=item.split("=", 1)[1])
    _validate(cfg)
    return cfg


# ---------------------------------------------------------------------------- allowed values


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _views_ok(text: Any) -> bool:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    return bool(m) and int(m.group(1)) >= 1 and int(m.group(2)) >= 1


#: The most epochs (and warmup epochs) a config may ask for: far beyond any real schedule,
#: small enough that epochs x steps per epoch stays a finite integer.
MAX_EPOCHS = 1_000_000


def _choice(*allowed: str) -> tuple:
    return (lambda v: v in allowed), "one of " + ", ".join(allowed)


#: ``section.key`` -> (check, what is allowed). Applies to every config class with that key
#: (finetuning and pretraining); a key without a rule takes any value of its type. Numbers
#: are finite everywhere (``_coerce``); null is checked by the type (``X | None``).
RULES: dict[str, tuple[Any, str]] = {
    "data.dataset": _choice("k400", "k600", "k700", "ssv2", "list", "folder", "ava"),
    "data.sampling": _choice("dense", "segment"),
    "data.stride": (lambda v: v >= 1, "an integer >= 1"),
    "data.target_fps": (lambda v: v > 0, "a number > 0"),
    "data.repeated_aug": (lambda v: v >= 1, "an integer >= 1"),
    "data.workers": (lambda v: 0 <= v <= 1024, "an integer in [0, 1024] (0 = decode in the main process)"),
    "data.backend": _choice("auto", "decord", "pyav", "torchcodec"),
    "data.limit_train": (lambda v: v >= 1, "an integer >= 1 or null"),
    "data.limit_val": (lambda v: v >= 1, "an integer >= 1 or null"),
    "data.proposal_threshold": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "data.test_view": _choice("full", "center"),
    "data.frames_layout": _choice("video", "frames"),
    "model.name": (lambda v: bool(v.strip()), "a model name (hiera-video models)"),
    "model.input_size": (lambda v: len(v) in (2, 3) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v),
                         "null or [frames, height, width] (positive integers)"),
    "model.drop_path": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "model.head_dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "model.mask_ratio": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.name": _choice("adamw", "sgd"),
    "optim.lr": (lambda v: v > 0, "a number > 0"),
    "optim.base_batch": (lambda v: v >= 1, "an integer >= 1"),
    "optim.min_lr": (lambda v: v >= 0, "a number >= 0"),
    "optim.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "optim.betas": (lambda v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9, 0.999]"),
    "optim.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.layer_decay": (lambda v: 0 < v <= 1, "a number in (0, 1] or null"),
    "optim.clip_grad": (lambda v: v > 0, "a number > 0 or null"),
    # Bounded: a warmup of 1e308 epochs overflowed to an infinite step count (OverflowError).
    "optim.epochs": (lambda v: 1 <= v <= MAX_EPOCHS, f"an integer in [1, {MAX_EPOCHS:,}]"),
    "optim.warmup_epochs": (lambda v: 0 <= v <= MAX_EPOCHS, f"a number in [0, {MAX_EPOCHS:,}]"),
    "augment.scale": (lambda v: len(v) == 2 and all(_number(x) for x in v) and 0 < v[0] <= v[1] <= 1,
                      "[min, max] with 0 < min <= max <= 1"),
    "augment.flip": _choice("random", "none", "ssv2"),
    "augment.randaug_n": (lambda v: 0 <= v <= 16, "an integer in [0, 16]"),
    "augment.randaug_m": (lambda v: 0 <= v <= 10, "a number in [0, 10]"),
    "augment.randaug_std": (lambda v: v >= 0, "a number >= 0"),
    "augment.erase_p": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "augment.mixup": (lambda v: v >= 0, "a number >= 0 (0 = off)"),
    "augment.cutmix": (lambda v: v >= 0, "a number >= 0 (0 = off)"),
    "augment.mixup_prob": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "augment.switch_prob": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "augment.label_smoothing": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "run.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "run.global_batch": (lambda v: v >= 1, "an integer >= 1 or null"),
    "run.precision": _choice("auto", "fp32", "bf16", "fp16"),
    "run.device": (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None, "auto, cpu, mps, cuda or cuda:N"),
    "run.dist_timeout": (lambda v: v > 0, "a number of seconds > 0 or null"),
    "run.seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"),
    "run.ckpt_every_steps": (lambda v: v >= 0, "an integer >= 0 (0 = only each epoch)"),
    "run.val_every_epochs": (lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    "run.val_views": (_views_ok, "TxS views with T, S >= 1, e.g. 1x1"),
    "run.final_views": (_views_ok, "TxS views with T, S >= 1 (e.g. 5x3) or null"),
    "run.ema_decay": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "run.log_every": (lambda v: v >= 1, "an integer >= 1"),
    "run.halt_after_steps": (lambda v: v >= 1, "an integer >= 1 or null"),
}


def _validate(cfg) -> None:
    for sec in dataclasses.fields(cfg):
        obj = getattr(cfg, sec.name)
        for f in dataclasses.fields(obj):
            key, value = f"{sec.name}.{f.name}", getattr(obj, f.name)
            rule = RULES.get(key)
            if rule is None or value is None:
                continue
            check, allowed = rule
            try:
                ok = bool(check(value))
            except (TypeError, ValueError, AttributeError):
                ok = False
            if not ok:
                raise HieraVideoError(f"config key '{key}' must be {allowed}, got {_short(value)}")
    if cfg.run.batch_size % cfg.data.repeated_aug:
        raise HieraVideoError(
            f"run.batch_size ({cfg.run.batch_size}) must be a multiple of data.repeated_aug ({cfg.data.repeated_aug}): "
            "each decoded video gives repeated_aug clips of the batch"
        )
    _validate_model(cfg.model)


#: ``model.arch`` keys that have their own config key (or come from the data): giving them in
#: ``arch`` as well would be two values for one argument (the constructor call failed with a
#: TypeError traceback, or one silently won).
_ARCH_ELSEWHERE = {"input_size": "model.input_size", "drop_path_rate": "model.drop_path",
                   "head_dropout": "model.head_dropout", "mask_ratio": "model.mask_ratio"}


def _validate_model(model) -> None:
    """``model.name``, ``model.input_size`` and every ``model.arch`` key against the model's
    constructor (:func:`hiera_video.models.factory.check_arch`: known names, types, ranges and
    the combinations the model needs), so an architecture that cannot train (``q_pool: -5``,
    an input the strides do not divide) is refused before any work, naming the key."""
    from hiera_video.models.factory import check_arch
    from hiera_video.models.zoo import ALIASES, MODELS

    spec = MODELS.get(ALIASES.get(model.name, model.name))
    if spec is None:
        import difflib

        close = difflib.get_close_matches(model.name, MODELS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise HieraVideoError(f"config key 'model.name' must be a model of 'hiera-video models', got {_short(model.name)}{hint}")
    for key in model.arch:
        if not isinstance(key, str):
            raise HieraVideoError(f"config key 'model.arch' must map argument names to values, got the key {_short(key)}")
        elsewhere = _ARCH_ELSEWHERE.get(key)
        if elsewhere is not None and hasattr(model, elsewhere.split(".")[1]):
            raise HieraVideoError(f"config key 'model.arch.{_clip(key, 60)}': set it with {elsewhere}, not in model.arch")
        if key == "num_classes":
            raise HieraVideoError("config key 'model.arch.num_classes': the number of classes comes from the dataset")
    if model.arch.get("in_chans", 3) != 3:
        raise HieraVideoError(f"config key 'model.arch.in_chans' must be 3: training clips are RGB, got {_short(model.arch['in_chans'])}")
    overrides = dict(model.arch)
    if model.input_size:
        overrides["input_size"] = list(model.input_size)
    check_arch(spec, overrides, lambda key: f"config key '{'model.input_size' if key == 'input_size' else 'model.arch.' + _clip(key, 60)}'")


def describe(cfg: TrainConfig) -> list[tuple[str, str, str]]:
    """(key, value, meaning) for every config key: what ``--help-config`` and the run log show."""
    return [(f"{sec.name}.{f.name}", repr(getattr(getattr(cfg, sec.name), f.name)), f.metadata.get("help", ""))
            for sec in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, sec.name))]
