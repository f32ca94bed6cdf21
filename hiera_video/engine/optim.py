"""Optimizers: parameter groups by ``(layer id, decay | no_decay)`` with no weight decay for 1-D
parameters, biases and ``model.no_weight_decay()``, and BEiT layer decay ``lr_scale =
layer_decay ** (depth + 1 - model.layer_id(name))`` (head at the full lr); the lr scaling rule."""

from __future__ import annotations

import torch
from torch import nn

from hiera_video.errors import HieraVideoError

OPTIMIZERS = ("adamw", "sgd")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / DataParallel / ``torch.compile`` wrappers, in any nesting."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _skips_decay(name: str, param: torch.Tensor, skip: set[str]) -> bool:
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    return name in skip or any(name.startswith(s + ".") for s in skip)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None, lr: float | None = None,
                 no_weight_decay: set[str] | None = None) -> list[dict]:
    """Groups of the trainable parameters (``name``, ``param_names``, ``lr_scale``, ``layer_id``);
    ``layer_decay=None``: one decay and one no-decay group; with ``lr``, ``lr * lr_scale`` each."""
    if weight_decay < 0:
        raise HieraVideoError(f"weight decay must be >= 0, got {weight_decay}")
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise HieraVideoError(f"layer decay must be in (0, 1], got {layer_decay}")
    m = unwrap_model(model)
    skip = set(no_weight_decay or ())
    if hasattr(m, "no_weight_decay"):
        skip |= set(m.no_weight_decay())
    if layer_decay is not None:
        if not (hasattr(m, "layer_id") and hasattr(m, "depth")):
            raise HieraVideoError(f"layer decay needs a model with layer_id() and depth ({type(m).__name__} has neither); "
                                  "set layer_decay to null")
        num_layers = int(m.depth) + 2  # embeddings, blocks..., everything after the blocks
    groups: dict[tuple, dict] = {}
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        decay = not _skips_decay(name, p, skip)
        lid = None if layer_decay is None else int(m.layer_id(name))
        scale = 1.0 if lid is None else float(layer_decay ** (num_layers - 1 - lid))
        kind = "decay" if decay else "no_decay"
        group = groups.setdefault((lid, decay), dict(name=kind if lid is None else f"layer{lid}_{kind}", params=[], param_names=[],
                                                     weight_decay=float(weight_decay) if decay else 0.0, lr_scale=scale,
                                                     layer_id=lid, **({} if lr is None else dict(lr=float(lr) * scale))))
        group["params"].append(p)
        group["param_names"].append(name)
    if not groups:
        raise HieraVideoError("the model has no trainable parameters (all have requires_grad=False)")
    # Fixed order (by layer, decay before no-decay) so a resumed optimizer's groups line up.
    order = sorted(groups, key=lambda k: (-1 if k[0] is None else k[0], not k[1]))
    return [groups[k] for k in order]


def build_optimizer(model: nn.Module, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.05,
                    betas: tuple[float, float] = (0.9, 0.999), momentum: float = 0.9, layer_decay: float | None = None,
                    fused: bool = False) -> torch.optim.Optimizer:
    """AdamW (``betas``; ``fused``: one kernel, on CUDA) or SGD (``momentum``) over :func:`param_groups`."""
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise HieraVideoError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise HieraVideoError(f"learning rate must be > 0, got {lr}")
    groups = param_groups(model, weight_decay, layer_decay, lr)
    if key == "adamw":
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise HieraVideoError(f"AdamW betas must be two numbers in [0, 1), got {tuple(betas)}")
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(float(b) for b in betas), weight_decay=weight_decay,
                                 fused=fused or None)
    if not 0.0 <= momentum < 1.0:
        raise HieraVideoError(f"SGD momentum must be in [0, 1), got {momentum}")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def scaled_lr(base_lr: float, base_batch: int, global_batch: int) -> float:
    """Linear scaling rule (the paper quotes lrs at batch 256, e.g. 8e-4 for K400 finetuning)."""
    if base_batch <= 0 or global_batch <= 0:
        raise HieraVideoError(f"batch sizes must be positive (base {base_batch}, global {global_batch})")
    return float(base_lr) * global_batch / base_batch
