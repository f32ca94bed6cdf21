"""This project's own checkpoint files: written atomically, of plain tensors and Python values only (so they
load back with ``weights_only=True``); :func:`check_resumable` refuses to resume another model's run."""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn

from hiera_video.errors import HieraVideoError, short
from hiera_video.models.checkpoints.common import FORMAT, FORMAT_VERSION, few, groups, model_name, shape_text
from hiera_video.models.checkpoints.formats import load_file
from hiera_video.models.zoo import ALIASES
from hiera_video.report import atomic_path

_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype)


def _plain(obj: Any, where: str) -> Any:
    """``obj`` made of types ``torch.load(weights_only=True)`` reads back, or an error."""
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "state_dict") and callable(obj.state_dict):  # optimizer, scheduler, scaler
        return _plain(obj.state_dict(), where)
    if type(obj).__module__ == "numpy":
        import numpy as np
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.item() if isinstance(obj, np.generic) else torch.from_numpy(obj.copy())
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise HieraVideoError(f"cannot save checkpoint: key {k!r} in {where} is a {type(k).__name__}; use str or int keys")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return OrderedDict(out) if isinstance(obj, OrderedDict) else out
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise HieraVideoError(f"cannot save checkpoint: {where} is a {type(obj).__module__}.{type(obj).__name__}; keep metadata "
                          "and training state to plain Python values (str, int, float, bool, None, lists, dicts) and tensors")


def _unwrapped(model: nn.Module) -> nn.Module:
    while isinstance(inner := getattr(model, "module", None) or getattr(model, "_orig_mod", None), nn.Module):
        model = inner
    return model


def save_checkpoint(path, model: nn.Module, meta: Optional[dict] = None, **extra_state) -> str:
    """Write ``{"format": "hiera-video", "version": 1, "model": sd, "meta": meta, **extra_state}`` to ``path``; returns
    it. ``meta`` adds to the model name, config and num_classes; objects with ``state_dict()`` are saved as that."""
    if reserved := {"model", "meta", "format", "version"} & set(extra_state):
        raise HieraVideoError(f"save_checkpoint: {sorted(reserved)} are reserved names; pass them otherwise")
    net = _unwrapped(model)
    base = {"model": net.spec.name} if getattr(net, "spec", None) is not None else {}
    if isinstance(getattr(net, "config", None), Mapping):
        base["config"] = dict(net.config)
    if getattr(net, "num_classes", None) is not None and hasattr(net, "head"):
        base["num_classes"] = int(net.num_classes)
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "model": {k: v.detach() for k, v in net.state_dict().items()},
               "meta": _plain({**base, **(meta or {})}, "meta"), **{k: _plain(v, k) for k, v in extra_state.items()}}
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    try:
        with atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as e:  # torch.save's C++ writer reports a full disk as a RuntimeError
        free = shutil.disk_usage(os.path.dirname(path)).free if os.path.isdir(os.path.dirname(path)) else None
        raise HieraVideoError(
            f"cannot write checkpoint {path}: {getattr(e, 'strerror', None) or short(e)}"
            + (f" ({free / 1e9:.1f} GB free there: is the disk full?)" if free is not None else "")) from None
    return path


def check_resumable(state: Mapping, model: nn.Module, path) -> None:
    """Refuse, in one line, to resume ``model`` from the training checkpoint ``state`` of another model."""
    net = _unwrapped(model)
    meta = state.get("meta") if isinstance(state.get("meta"), Mapping) else {}
    saved, spec = meta.get("model"), getattr(net, "spec", None)
    hint = (f"resume with the config the run was started with, or start a new run in another --output "
            f"(--weights {path} starts from its weights)")
    if spec is not None and isinstance(saved, str):
        if ALIASES.get(saved, saved) != spec.name:
            raise HieraVideoError(f"cannot resume from {path}: it is a run of {saved}, but this run builds {spec.name}; {hint}")
    sd, own = state.get("model") if isinstance(state.get("model"), Mapping) else {}, net.state_dict()
    missing, unexpected = [k for k in own if k not in sd], [k for k in sd if k not in own]
    resized = [f"{k} {shape_text(sd[k].shape)} vs {shape_text(own[k].shape)}" for k in own
               if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or resized:
        what = "; ".join(part for part in (
            f"{len(resized)} tensors of another shape ({few(resized, 2)})" if resized else "",
            f"{len(missing)} missing ({groups(missing)})" if missing else "",
            f"{len(unexpected)} unexpected ({groups(unexpected)})" if unexpected else "") if part)
        raise HieraVideoError(f"cannot resume from {path}: its weights do not fit this run's {model_name(net)} ({what}); {hint}")


def load_training_state(path) -> dict:
    """Everything in a hiera-video checkpoint: ``{"model": sd, "meta": {...}, **extra_state}``."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isfile(path):
        raise HieraVideoError(f"checkpoint not found: {path}")
    obj, kind = load_file(path)
    if kind != "torch" or not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping) or not isinstance(obj.get("meta"), Mapping):
        raise HieraVideoError(f"{path} is not a hiera-video training checkpoint (no 'model' + 'meta'); to start from "
                              "other weights pass them as --weights instead of resuming")
    return dict(obj)
