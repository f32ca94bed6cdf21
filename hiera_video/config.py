"""Training configuration: YAML presets + ``--set section.key=value`` -> typed dataclasses. Every key has a default
and a one-line meaning; unknown keys are errors listing the valid ones. A preset may name a ``base`` it extends."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hiera_video.data.datasets import ALL_KINDS, dataset_kind
from hiera_video.errors import HieraVideoError, short

#: The most (warmup) epochs: far beyond any real schedule, small enough that epochs x steps stays a finite integer.
MAX_EPOCHS = 1_000_000
MAX_CONFIG_BYTES = 1 << 20


def setting(default, help: str, check=None):
    """A config key. ``check``: a tuple of choices, ``(predicate, "what is allowed")`` or None (any value of its type)."""
    if check and all(isinstance(c, str) for c in check):
        help = " | ".join(check) + (f" ({help})" if help else "")
        check = (lambda v, c=check: v in c), "one of " + ", ".join(check)
    meta = {"help": help, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default.copy(), metadata=meta)
    return field(default=default, metadata=meta)


def dataset_setting(default: str, kinds: tuple, help: str = ""):
    return setting(default, " | ".join(kinds) + help, (lambda v: dataset_kind(v, kinds), "one of " + ", ".join(kinds)))


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _views_ok(text: Any) -> bool:
    return bool(m := re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))) and int(m.group(1)) >= 1 and int(m.group(2)) >= 1


AT_LEAST_1 = (lambda v: v >= 1, "an integer >= 1")
AT_LEAST_1_OR_NULL = (lambda v: v >= 1, "an integer >= 1 or null")
POSITIVE = (lambda v: v > 0, "a number > 0")
NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
FRACTION = (lambda v: 0 <= v <= 1, "a number in [0, 1]")
BELOW_1 = (lambda v: 0 <= v < 1, "a number in [0, 1)")
MODEL_NAME = (lambda v: bool(v.strip()), "a model name (hiera-video models)")
BETAS = (lambda v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. [0.9, 0.999]")
EPOCHS = (lambda v: 1 <= v <= MAX_EPOCHS, f"an integer in [1, {MAX_EPOCHS:,}]")
WARMUP = (lambda v: 0 <= v <= MAX_EPOCHS, f"a number in [0, {MAX_EPOCHS:,}]")
SCALE = (lambda v: len(v) == 2 and all(_number(x) for x in v) and 0 < v[0] <= v[1] <= 1, "[min, max] with 0 < min <= max <= 1")
DEVICE = (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None, "auto, cpu, mps, cuda or cuda:N")


def variant(base, name: str, keys: str, /, **changes):
    """A section of ``base``'s ``keys``; ``changes``: a new ``setting`` (keeps base's check) or ``(type, setting)``."""
    hints = typing.get_type_hints(base)
    fields, spec = {f.name: f for f in dataclasses.fields(base)}, []
    assert not set(changes) - set(keys.split()), f"changes to keys not listed: {set(changes) - set(keys.split())}"
    for k in keys.split():
        typ, new = changes[k] if isinstance(changes.get(k), tuple) else (hints.get(k), changes.get(k))
        new = new or fields[k]
        check = new.metadata["check"] or (fields[k].metadata["check"] if k in fields else None)
        spec.append((k, typ, field(default=new.default, default_factory=new.default_factory, metadata={**new.metadata, "check": check})))
    cls = dataclasses.make_dataclass(name, spec)
    cls.__module__ = sys._getframe(1).f_globals["__name__"]  # so instances pickle
    return cls


@dataclass
class DataConfig:
    dataset: str = dataset_setting("list", ALL_KINDS)
    root: str | None = setting(None, "dataset folder (video paths are relative to it)")
    annotations: str | None = setting(None, "training annotation file (default: looked up under root)")
    val_annotations: str | None = setting(None, "validation annotation file (default: looked up under root)")
    train_split: str = setting("train", "split name used for training")
    val_split: str = setting("val", "split name used for validation")
    labels: str | None = setting(None, "class-name file for list datasets")
    sampling: str = setting("dense", "dense: Kinetics, segment: SSv2", ("dense", "segment"))
    stride: int = setting(4, "dense sampling: frame stride at target_fps", AT_LEAST_1)
    target_fps: float = setting(30.0, "dense sampling: frame rate the stride refers to", POSITIVE)
    repeated_aug: int = setting(2, "clips sampled from each decoded training video (repeated augmentation)", AT_LEAST_1)
    workers: int = setting(2, "DataLoader worker processes per training process", (lambda v: 0 <= v <= 1024, "an integer in [0, 1024] (0 = decode in the main process)"))
    backend: str = setting("auto", "video decoder; torchcodec needs FFmpeg shared libraries", ("auto", "decord", "pyav", "torchcodec"))
    limit_train: int | None = setting(None, "use only the first N training videos", AT_LEAST_1_OR_NULL)
    limit_val: int | None = setting(None, "use only the first N validation videos", AT_LEAST_1_OR_NULL)
    # AVA only (data.dataset: ava); file names are looked up under root and root/annotations.
    exclusions: str | None = setting(None, "AVA: excluded timestamps of the training split [default: ava_train_excluded_timestamps_v2.2.csv]")
    val_exclusions: str | None = setting(None, "AVA: excluded timestamps of the validation split [default: ava_val_excluded_timestamps_v2.2.csv]")
    proposals: str | None = setting(None, "AVA: person boxes added to the GT training boxes (SlowFast CSV); null = GT boxes only")
    val_proposals: str | None = setting(None, "AVA: person boxes to detect actions on [default: ava_val_predicted_boxes.csv if present, else GT boxes]")
    proposal_threshold: float = setting(0.8, "AVA: keep proposals with at least this score", FRACTION)
    test_view: str = setting("full", "AVA evaluation view; full: whole frame, short side = crop size, as SlowFast tests; center: centre square", ("full", "center"))
    frames_layout: str = setting("video", "AVA; video: 15-minute clips under root or root/videos; frames: <vid>/<vid>_%06d.jpg", ("video", "frames"))
    allow_pickle: bool = setting(False, "AVA: allow reading an mmaction2 proposals .pkl (pickle can run code: trusted files only)")


@dataclass
class ModelConfig:
    name: str = setting("hiera_base_16x224", "model name (hiera-video models)", MODEL_NAME)
    weights: str | None = setting(None, "initial weights: zoo tag, URL, hf-hub:ORG/NAME[@REVISION] or path (MAE or Kinetics checkpoints); null = random")
    input_size: list | None = setting(None, "override the input size, e.g. [8, 224, 224]", (lambda v: len(v) in (2, 3) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v), "null or [frames, height, width] (positive integers)"))
    arch: dict = setting({}, "other architecture arguments for the model constructor, e.g. {q_pool: 2}")
    drop_path: float = setting(0.2, "stochastic depth rate (linear over blocks)", BELOW_1)
    head_dropout: float = setting(0.3, "dropout before the classifier", BELOW_1)
    grad_checkpointing: bool = setting(False, "recompute activations in backward to save memory")
    compile: bool = setting(False, "wrap the model with torch.compile")


@dataclass
class OptimConfig:
    name: str = setting("adamw", "", ("adamw", "sgd"))
    lr: float = setting(8e-4, "learning rate at base_batch (scaled linearly to the real global batch)", POSITIVE)
    base_batch: int = setting(256, "batch size the learning rate is defined for", AT_LEAST_1)
    min_lr: float = setting(1e-6, "final learning rate of the cosine schedule (also scaled)", NON_NEGATIVE)
    weight_decay: float = setting(0.05, "weight decay (never on 1-D params, biases, position embeddings)", NON_NEGATIVE)
    betas: list = setting([0.9, 0.999], "AdamW betas", BETAS)
    momentum: float = setting(0.9, "SGD momentum", BELOW_1)
    layer_decay: float | None = setting(0.8, "layer-wise lr decay (null = off)", (lambda v: 0 < v <= 1, "a number in (0, 1] or null"))
    clip_grad: float | None = setting(5.0, "max gradient norm (null = off)", (lambda v: v > 0, "a number > 0 or null"))
    epochs: int = setting(150, "training epochs", EPOCHS)
    warmup_epochs: float = setting(10.0, "linear warmup length in epochs", WARMUP)


@dataclass
class AugmentConfig:
    scale: list = setting([0.08, 1.0], "random-resized-crop area range", SCALE)
    flip: str = setting("random", "ssv2: flip and swap SSv2 left/right labels", ("random", "none", "ssv2"))
    randaug: bool = setting(True, "clip-consistent RandAugment")
    randaug_n: int = setting(2, "RandAugment ops per clip", (lambda v: 0 <= v <= 16, "an integer in [0, 16]"))
    randaug_m: float = setting(7.0, "RandAugment magnitude", (lambda v: 0 <= v <= 10, "a number in [0, 10]"))
    randaug_std: float = setting(0.5, "RandAugment magnitude noise", NON_NEGATIVE)
    erase_p: float = setting(0.25, "random erasing probability", FRACTION)
    mixup: float = setting(0.8, "mixup alpha (0 = off)", (lambda v: v >= 0, "a number >= 0 (0 = off)"))
    cutmix: float = setting(1.0, "cutmix alpha (0 = off)", (lambda v: v >= 0, "a number >= 0 (0 = off)"))
    mixup_prob: float = setting(1.0, "probability of applying mixup/cutmix to a batch", FRACTION)
    switch_prob: float = setting(0.5, "probability of cutmix instead of mixup", FRACTION)
    label_smoothing: float = setting(0.1, "label smoothing", BELOW_1)


@dataclass
class RunConfig:
    output: str | None = setting(None, "run folder (checkpoints, logs, metrics)")
    batch_size: int = setting(8, "clips per process per forward pass", AT_LEAST_1)
    global_batch: int | None = setting(None, "clips per optimizer step over all processes (gradient accumulation reaches it)", AT_LEAST_1_OR_NULL)
    precision: str = setting("auto", "auto: bf16 on GPU, fp32 on CPU", ("auto", "fp32", "bf16", "fp16"))
    device: str = setting("auto", "auto | cpu | cuda", DEVICE)
    dist_timeout: float | None = setting(None, "torchrun: seconds a process waits for the others before the run stops with an error (null = $HIERA_VIDEO_DIST_TIMEOUT or 1800)", (lambda v: v > 0, "a number of seconds > 0 or null"))
    seed: int = setting(0, "random seed", (lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)"))
    ckpt_every_steps: int = setting(0, "also checkpoint every N optimizer steps (0 = only each epoch)", (lambda v: v >= 0, "an integer >= 0 (0 = only each epoch)"))
    lock: bool = setting(True, "lock the run folder against a second run (false: for file systems without file locks, e.g. some NFS/FUSE mounts; then make sure only one run writes there)")
    val_every_epochs: int = setting(1, "fast validation (centre view) every N epochs (0 = off)", (lambda v: v >= 0, "an integer >= 0 (0 = off)"))
    val_views: str = setting("1x1", "views of the periodic validation", (_views_ok, "TxS views with T, S >= 1, e.g. 1x1"))
    final_views: str | None = setting(None, "views of the final evaluation (default: the dataset preset, e.g. 5x3)", (_views_ok, "TxS views with T, S >= 1 (e.g. 5x3) or null"))
    ema: bool = setting(False, "keep an exponential moving average of the weights (evaluated and saved)")
    ema_decay: float = setting(0.9999, "EMA decay per optimizer step", (lambda v: 0 < v < 1, "a number in (0, 1)"))
    log_every: int = setting(10, "log training metrics every N optimizer steps", AT_LEAST_1)
    tensorboard: bool = setting(False, "also write a TensorBoard log (needs the tensorboard package)")
    halt_after_steps: int | None = setting(None, "stop (with a checkpoint) after N optimizer steps, as if interrupted (for tests)", AT_LEAST_1_OR_NULL)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("hiera_video.configs").iterdir() if p.name.endswith(".yaml"))


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 numbers (``1:30``, ``1_000``, ``0b11`` text; ``010`` = 10; ``0o17``, ``0x1F``, ``1e3``); no aliases."""

    def compose_node(self, parent, index):
        if isinstance(event := self.peek_event(), yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.MarkedYAMLError(problem="anchors and aliases (& and *) are not allowed in a config", problem_mark=event.start_mark)
        return super().compose_node(parent, index)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Yaml12Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
                                         for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _yaml12_int(loader, node) -> int:
    text = loader.construct_scalar(node)
    return int(text[2:], 8) if text.startswith("0o") else int(text[2:], 16) if text.startswith("0x") else int(text, 10)


_Yaml12Loader.add_constructor(_INT, _yaml12_int)
_Yaml12Loader.add_constructor(_FLOAT, lambda loader, node: float(loader.construct_scalar(node).lower().replace(".inf", "inf").replace(".nan", "nan")))


def _load_yaml_text(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        line = f", line {mark.line + 1}" if (mark := getattr(e, "problem_mark", None)) else ""
        raise HieraVideoError(f"{where}{line}: invalid YAML ({short(getattr(e, 'problem', None) or e, 160)})") from None
    except RecursionError:
        raise HieraVideoError(f"{where}: invalid config (nested too deeply)") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. the date 2020-13-45
        raise HieraVideoError(f"{where}: invalid YAML value ({short(e, 160)})") from None


def _read_yaml(source: str, chain: tuple[Path, ...] = ()) -> dict:
    path = Path(source)
    if not path.is_file() and chain and (chain[-1].parent / source).is_file():
        path = chain[-1].parent / source  # a base named relative to the config that names it
    if not path.is_file():
        bundled = resources.files("hiera_video.configs").joinpath(f"{source.removesuffix('.yaml')}.yaml")
        if "/" in source or not bundled.is_file():
            raise HieraVideoError(f"config '{short(source, 200)}' not found: pass a YAML file or a bundled preset ({', '.join(list_presets())})")
        path = Path(str(bundled))
    if (real := path.resolve()) in chain:
        loop = " -> ".join(p.name for p in (*chain[chain.index(real):], real))
        raise HieraVideoError(f"{path}: the 'base' chain loops ({loop}); a config cannot extend itself")
    try:
        if (size := path.stat().st_size) > MAX_CONFIG_BYTES:
            raise HieraVideoError(f"{path}: {size} bytes is too large for a config (at most {MAX_CONFIG_BYTES}); is it the right file?")
        raw = path.read_bytes()
    except OSError as e:
        raise HieraVideoError(f"cannot read config '{path}': {e.strerror or short(repr(e), 80)}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HieraVideoError(f"{path}: not a text file (binary data); a config is a YAML text file") from None
    data = _load_yaml_text(text, str(path))
    if not isinstance(data := {} if data is None else data, dict):
        raise HieraVideoError(f"{path}: a config must be a mapping of sections (data, model, optim, augment, run)")
    if (base := data.pop("base", None)) is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise HieraVideoError(f"{path}: 'base' must name a bundled preset or a YAML file, got {short(repr(base), 80)}")
    return _merge(_read_yaml(base, (*chain, real)), data)


def _merge(into: dict, new: dict) -> dict:
    for k, v in new.items():
        into[k] = _merge(into[k], v) if isinstance(v, dict) and isinstance(into.get(k), dict) else v
    return into


def _base_type(typ):
    return next((a for a in typing.get_args(typ) if a is not type(None)), typ)


_TYPES = {bool: (lambda v: isinstance(v, bool), "true or false"), int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
          list: (lambda v: isinstance(v, (list, tuple)), "a list"), dict: (lambda v: isinstance(v, dict), "a mapping such as {q_pool: 2}")}


def _coerce(value: Any, typ, key: str):
    if value is None:
        if type(None) in typing.get_args(typ):
            return None
        raise HieraVideoError(f"config key '{key}' cannot be null")
    base = _base_type(typ)
    if base in _TYPES:
        if _TYPES[base][0](value):
            return base(value)
        raise HieraVideoError(f"config key '{key}' must be {_TYPES[base][1]}, got {short(repr(value), 80)}")
    if base is float:
        try:  # a string too: YAML 1.1 reads 2e-3 (no dot) as a string
            number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        except OverflowError:  # an int too large for a float
            number = math.inf
        if number is None or not math.isfinite(number):
            raise HieraVideoError(f"config key '{key}' must be a {'' if number is None else 'finite '}number, got {short(repr(value), 80)}")
        return number
    if base is str:
        if isinstance(value, (dict, list, tuple)):
            raise HieraVideoError(f"config key '{key}' must be a single value, got {short(repr(value), 80)}")
        return str(value)
    return value


def _apply(cfg, data: dict, where: str, raw: str | None = None) -> None:
    """Set ``data``'s keys on ``cfg``. ``raw``: a --set value as typed, kept for text keys (YAML reads ``0x0`` as 0)."""
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    for sec, values in data.items():
        if sec not in sections:
            raise HieraVideoError(f"{where}: unknown config section '{short(sec, 60)}'; valid sections: {', '.join(sections)}")
        if not isinstance(values, dict):
            raise HieraVideoError(f"{where}: section '{sec}' must be a mapping of keys")
        obj = getattr(cfg, sec)
        hints, valid = typing.get_type_hints(type(obj)), [f.name for f in dataclasses.fields(obj)]
        for k, v in values.items():
            if k not in valid:
                raise HieraVideoError(f"{where}: unknown config key '{sec}.{short(k, 60)}'; valid keys in '{sec}': {', '.join(valid)}")
            if raw is not None and isinstance(v, (int, float)) and not isinstance(v, bool) and _base_type(hints[k]) is str:
                v = raw.strip()
            setattr(obj, k, _coerce(v, hints[k], f"{sec}.{k}"))


def parse_set(item: str) -> dict:
    """``"optim.lr=1e-3"`` -> ``{"optim": {"lr": 0.001}}``."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise HieraVideoError(f"--set expects section.key=value (e.g. optim.lr=1e-3), got {short(repr(item), 80)}")
    key, raw = item.split("=", 1)
    sec, k = key.strip().split(".", 1)
    try:
        value = yaml.load(raw, Loader=_Yaml12Loader) if raw.strip() else None  # noqa: S506
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
        value = raw
    return {sec: {k: value}}


def load_config(source: str | None = None, sets: list[str] | tuple = (), overrides: dict | None = None, cls: type = TrainConfig):
    """Defaults <- preset/YAML ``source`` <- ``overrides`` (command-line options) <- ``--set`` items, all checked here."""
    cfg = cls()
    if source:
        _apply(cfg, _read_yaml(source), str(source))
    if overrides:
        _apply(cfg, overrides, "command line")
    for item in sets:
        _apply(cfg, parse_set(item), f"--set {short(item, 120)}", raw=item.split("=", 1)[1])
    _validate(cfg)
    return cfg


def _validate(cfg) -> None:
    for sec in dataclasses.fields(cfg):
        obj = getattr(cfg, sec.name)
        for f in dataclasses.fields(obj):
            value, rule = getattr(obj, f.name), f.metadata["check"]
            try:
                ok = rule is None or value is None or bool(rule[0](value))
            except (TypeError, ValueError, AttributeError, HieraVideoError):
                ok = False
            if not ok:
                raise HieraVideoError(f"config key '{sec.name}.{f.name}' must be {rule[1]}, got {short(repr(value), 80)}")
    cfg.data.dataset = dataset_kind(cfg.data.dataset, ALL_KINDS)  # an alias -> its kind
    if cfg.run.batch_size % cfg.data.repeated_aug:
        raise HieraVideoError(f"run.batch_size ({cfg.run.batch_size}) must be a multiple of data.repeated_aug ({cfg.data.repeated_aug}): "
                              "each decoded video gives repeated_aug clips of the batch")
    _validate_model(cfg.model)


#: ``model.arch`` keys that have their own config key: in ``arch`` too they would be two values for one argument.
_ARCH_ELSEWHERE = {"input_size": "model.input_size", "drop_path_rate": "model.drop_path",
                   "head_dropout": "model.head_dropout", "mask_ratio": "model.mask_ratio"}


def _validate_model(model) -> None:
    """Check ``model.name``, ``input_size`` and ``arch`` against the model's constructor before any work."""
    from hiera_video.models.factory import check_arch
    from hiera_video.models.zoo import ALIASES, MODELS
    spec = MODELS.get(ALIASES.get(model.name, model.name))
    if spec is None:
        import difflib
        hint = f" (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(model.name, MODELS, n=3)) else ""
        raise HieraVideoError(f"config key 'model.name' must be a model of 'hiera-video models', got {short(repr(model.name), 80)}{hint}")
    for key in model.arch:
        if not isinstance(key, str):
            raise HieraVideoError(f"config key 'model.arch' must map argument names to values, got the key {short(repr(key), 80)}")
        if (elsewhere := _ARCH_ELSEWHERE.get(key)) is not None and hasattr(model, elsewhere.split(".")[1]):
            raise HieraVideoError(f"config key 'model.arch.{short(key, 60)}': set it with {elsewhere}, not in model.arch")
        if key == "num_classes":
            raise HieraVideoError("config key 'model.arch.num_classes': the number of classes comes from the dataset")
    if model.arch.get("in_chans", 3) != 3:
        raise HieraVideoError(f"config key 'model.arch.in_chans' must be 3: training clips are RGB, got {short(repr(model.arch['in_chans']), 80)}")
    check_arch(spec, {**model.arch, **({"input_size": list(model.input_size)} if model.input_size else {})}, lambda key: f"config key '{'model.input_size' if key == 'input_size' else 'model.arch.' + short(key, 60)}'")


def describe(cfg: TrainConfig) -> list[tuple[str, str, str]]:
    """(key, value, meaning) for every config key (``--show-config``, the run log)."""
    return [(f"{sec.name}.{f.name}", repr(getattr(getattr(cfg, sec.name), f.name)), f.metadata.get("help", ""))
            for sec in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, sec.name))]
