"""Training configuration: YAML presets + ``--set section.key=value`` -> typed dataclasses.

Every key has a default and a one-line meaning (the ``help`` metadata); unknown keys are
errors that list the valid ones. ``load_config("demo")`` finds a bundled preset
(``configs/demo.yaml``); a preset may name a ``base`` preset it extends.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hiera_video.errors import HieraVideoError


def _f(default, help: str):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default.copy(), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    dataset: str = _f("list", "k400 | k600 | k700 | ssv2 | list | folder | ava")
    root: str | None = _f(None, "dataset folder (video paths are relative to it)")
    annotations: str | None = _f(None, "training annotation file (default: looked up under root)")
    val_annotations: str | None = _f(None, "validation annotation file (default: looked up under root)")
    train_split: str = _f("train", "split name used for training")
    val_split: str = _f("val", "split name used for validation")
    labels: str | None = _f(None, "class-name file for list datasets")
    sampling: str = _f("dense", "dense (Kinetics) | segment (SSv2)")
    stride: int = _f(4, "dense sampling: frame stride at target_fps")
    target_fps: float = _f(30.0, "dense sampling: frame rate the stride refers to")
    repeated_aug: int = _f(2, "clips sampled from each decoded training video (repeated augmentation)")
    workers: int = _f(2, "DataLoader worker processes per training process")
    backend: str = _f("auto", "video decoder: auto | decord | pyav")
    limit_train: int | None = _f(None, "use only the first N training videos")
    limit_val: int | None = _f(None, "use only the first N validation videos")
    # AVA only (data.dataset: ava); file names are looked up under root and root/annotations.
    exclusions: str | None = _f(None, "AVA: excluded timestamps of the training split [default: ava_train_excluded_timestamps_v2.2.csv]")
    val_exclusions: str | None = _f(None, "AVA: excluded timestamps of the validation split [default: ava_val_excluded_timestamps_v2.2.csv]")
    proposals: str | None = _f(None, "AVA: person boxes added to the GT training boxes (SlowFast CSV); null = GT boxes only")
    val_proposals: str | None = _f(None, "AVA: person boxes to detect actions on [default: ava_val_predicted_boxes.csv if present, else GT boxes]")
    proposal_threshold: float = _f(0.8, "AVA: keep proposals with at least this score")
    test_view: str = _f("full", "AVA evaluation view: full (whole frame, short side = crop size, as SlowFast tests) | center (centre square)")
    frames_layout: str = _f("video", "AVA: video (15-minute clips under root or root/videos) | frames (<vid>/<vid>_%06d.jpg)")
    allow_pickle: bool = _f(False, "AVA: allow reading an mmaction2 proposals .pkl (pickle can run code: trusted files only)")


@dataclass
class ModelConfig:
    name: str = _f("hiera_base_16x224", "model name (hiera-video models)")
    weights: str | None = _f(None, "initial weights: zoo tag, URL or path (MAE or Kinetics checkpoints); null = random")
    input_size: list | None = _f(None, "override the input size, e.g. [8, 224, 224]")
    arch: dict = _f({}, "other architecture arguments for the model constructor, e.g. {q_pool: 2}")
    drop_path: float = _f(0.2, "stochastic depth rate (linear over blocks)")
    head_dropout: float = _f(0.3, "dropout before the classifier")
    grad_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    compile: bool = _f(False, "wrap the model with torch.compile")


@dataclass
class OptimConfig:
    name: str = _f("adamw", "adamw | sgd")
    lr: float = _f(8e-4, "learning rate at base_batch (scaled linearly to the real global batch)")
    base_batch: int = _f(256, "batch size the learning rate is defined for")
    min_lr: float = _f(1e-6, "final learning rate of the cosine schedule (also scaled)")
    weight_decay: float = _f(0.05, "weight decay (never on 1-D params, biases, position embeddings)")
    betas: list = _f([0.9, 0.999], "AdamW betas")
    momentum: float = _f(0.9, "SGD momentum")
    layer_decay: float | None = _f(0.8, "layer-wise lr decay (null = off)")
    clip_grad: float | None = _f(5.0, "max gradient norm (null = off)")
    epochs: int = _f(150, "training epochs")
    warmup_epochs: float = _f(10.0, "linear warmup length in epochs")


@dataclass
class AugmentConfig:
    scale: list = _f([0.08, 1.0], "random-resized-crop area range")
    flip: str = _f("random", "random | none | ssv2 (flip and swap SSv2 left/right labels)")
    randaug: bool = _f(True, "clip-consistent RandAugment")
    randaug_n: int = _f(2, "RandAugment ops per clip")
    randaug_m: float = _f(7.0, "RandAugment magnitude")
    randaug_std: float = _f(0.5, "RandAugment magnitude noise")
    erase_p: float = _f(0.25, "random erasing probability")
    mixup: float = _f(0.8, "mixup alpha (0 = off)")
    cutmix: float = _f(1.0, "cutmix alpha (0 = off)")
    mixup_prob: float = _f(1.0, "probability of applying mixup/cutmix to a batch")
    switch_prob: float = _f(0.5, "probability of cutmix instead of mixup")
    label_smoothing: float = _f(0.1, "label smoothing")


@dataclass
class RunConfig:
    output: str | None = _f(None, "run folder (checkpoints, logs, metrics)")
    batch_size: int = _f(8, "clips per process per forward pass")
    global_batch: int | None = _f(None, "clips per optimizer step over all processes (gradient accumulation reaches it)")
    precision: str = _f("auto", "auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16")
    device: str = _f("auto", "auto | cpu | cuda")
    seed: int = _f(0, "random seed")
    ckpt_every_steps: int = _f(0, "also checkpoint every N optimizer steps (0 = only each epoch)")
    val_every_epochs: int = _f(1, "fast validation (centre view) every N epochs (0 = off)")
    val_views: str = _f("1x1", "views of the periodic validation")
    final_views: str | None = _f(None, "views of the final evaluation (default: the dataset preset, e.g. 5x3)")
    ema: bool = _f(False, "keep an exponential moving average of the weights (evaluated and saved)")
    ema_decay: float = _f(0.9999, "EMA decay per optimizer step")
    log_every: int = _f(10, "log training metrics every N optimizer steps")
    tensorboard: bool = _f(False, "also write a TensorBoard log (needs the tensorboard package)")
    halt_after_steps: int | None = _f(None, "stop (with a checkpoint) after N optimizer steps, as if interrupted (for tests)")


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


def _read_yaml(source: str) -> dict:
    path = Path(source)
    if not path.is_file():
        bundled = preset_path(source[:-5] if source.endswith(".yaml") else source) if "/" not in source else None
        if bundled is None:
            raise HieraVideoError(f"config '{source}' not found: pass a YAML file or a bundled preset ({', '.join(list_presets())})")
        path = bundled
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise HieraVideoError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise HieraVideoError(f"{path}: a config must be a mapping of sections (data, model, optim, augment, run)")
    base = data.pop("base", None)
    if base:
        merged = _read_yaml(str(base) if Path(str(base)).is_file() else str(base))
        _merge(merged, data)
        return merged
    return data


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _coerce(value: Any, typ, key: str):
    """Check/convert ``value`` for a field of type ``typ`` (from YAML or a --set string)."""
    args = typing.get_args(typ)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise HieraVideoError(f"config key '{key}' cannot be null")
    base = next((a for a in args if a is not type(None)), typ) if args else typ
    if base is bool:
        if isinstance(value, bool):
            return value
        raise HieraVideoError(f"config key '{key}' must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise HieraVideoError(f"config key '{key}' must be an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise HieraVideoError(f"config key '{key}' must be a number, got {value!r}")
    if base is str:
        return str(value)
    if base is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise HieraVideoError(f"config key '{key}' must be a list, got {value!r}")
    if base is dict:
        if isinstance(value, dict):
            return dict(value)
        raise HieraVideoError(f"config key '{key}' must be a mapping such as {{q_pool: 2}}, got {value!r}")
    return value


def _apply(cfg, data: dict, where: str) -> None:
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    for sec, values in data.items():
        if sec not in sections:
            raise HieraVideoError(f"{where}: unknown config section '{sec}'; valid sections: {', '.join(sections)}")
        if not isinstance(values, dict):
            raise HieraVideoError(f"{where}: section '{sec}' must be a mapping of keys")
        obj = getattr(cfg, sec)
        hints = typing.get_type_hints(type(obj))
        valid = [f.name for f in dataclasses.fields(obj)]
        for k, v in values.items():
            if k not in valid:
                raise HieraVideoError(f"{where}: unknown config key '{sec}.{k}'; valid keys in '{sec}': {', '.join(valid)}")
            setattr(obj, k, _coerce(v, hints[k], f"{sec}.{k}"))


def parse_set(item: str) -> dict:
    """``"optim.lr=1e-3"`` -> ``{"optim": {"lr": 0.001}}`` (the value is read as YAML)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise HieraVideoError(f"--set expects section.key=value (e.g. optim.lr=1e-3), got '{item}'")
    key, raw = item.split("=", 1)
    sec, k = key.strip().split(".", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return {sec: {k: value}}


def load_config(source: str | None = None, sets: list[str] | tuple = (), overrides: dict | None = None,
                cls: type = TrainConfig):
    """Defaults <- preset/YAML ``source`` <- ``overrides`` (command-line options) <- ``--set`` items.

    ``cls``: the config dataclass (``TrainConfig``; pretraining passes its own, with the same
    ``data``/``model``/``optim``/``augment``/``run`` sections)."""
    cfg = cls()
    if source:
        _apply(cfg, _read_yaml(source), str(source))
    if overrides:
        _apply(cfg, overrides, "command line")
    for item in sets:
        _apply(cfg, parse_set(item), f"--set {item}")
    _validate(cfg)
    return cfg


def _validate(cfg: TrainConfig) -> None:
    choices = {
        "data.sampling": (cfg.data.sampling, ("dense", "segment")),
        "augment.flip": (cfg.augment.flip, ("random", "none", "ssv2")),
        "optim.name": (cfg.optim.name, ("adamw", "sgd")),
        "run.precision": (cfg.run.precision, ("auto", "fp32", "bf16", "fp16")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise HieraVideoError(f"config key '{key}' must be one of {', '.join(allowed)}, got '{value}'")
    for key, value in (("run.batch_size", cfg.run.batch_size), ("data.repeated_aug", cfg.data.repeated_aug), ("optim.epochs", cfg.optim.epochs)):
        if value < 1:
            raise HieraVideoError(f"config key '{key}' must be >= 1, got {value}")
    if cfg.run.batch_size % cfg.data.repeated_aug:
        raise HieraVideoError(
            f"run.batch_size ({cfg.run.batch_size}) must be a multiple of data.repeated_aug ({cfg.data.repeated_aug}): "
            "each decoded video gives repeated_aug clips of the batch"
        )


def describe(cfg: TrainConfig) -> list[tuple[str, str, str]]:
    """(key, value, meaning) for every config key: what ``--help-config`` and the run log show."""
    rows = []
    for sec in dataclasses.fields(cfg):
        obj = getattr(cfg, sec.name)
        for f in dataclasses.fields(obj):
            rows.append((f"{sec.name}.{f.name}", repr(getattr(obj, f.name)), f.metadata.get("help", "")))
    return rows
