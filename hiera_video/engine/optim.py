"""Optimizer construction: weight-decay split, BEiT-style layer-wise lr decay, lr scaling.

``param_groups`` splits the trainable parameters into groups keyed by
``(layer id, decay | no_decay)``:

- no weight decay for 1-D parameters (norm weights, all biases), names ending in ``.bias``
  and the names in ``model.no_weight_decay()`` (position embeddings, MAE mask token);
- layer decay (BEiT): ``lr_scale = layer_decay ** (depth + 1 - layer_id(name))`` with the
  ids of ``model.layer_id`` (embeddings 0, block ``i`` -> ``i + 1``, norm/head -> ``depth + 1``),
  so the head trains at the full lr and the patch embedding at ``layer_decay ** (depth + 1)``.

Every group carries ``lr_scale``; the schedule (:func:`hiera_video.engine.schedule.apply_lr`)
sets ``group["lr"] = lr * group["lr_scale"]`` each step. Groups also carry ``param_names``
(understood by ``torch.optim`` since 2.6 and saved in its state dict), ``layer_id`` and a
readable ``name`` for logs and tests.
"""

from __future__ import annotations

import torch
from torch import nn

from hiera_video.errors import HieraVideoError

OPTIMIZERS = ("adamw", "sgd")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / DataParallel (``.module``) and ``torch.compile``
    (``._orig_mod``) wrappers, in any nesting. Parameters are shared, not copied."""
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
    # A listed name matches the parameter itself or everything below a listed module.
    return name in skip or any(name.startswith(s + ".") for s in skip)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None, lr: float | None = None,
                 no_weight_decay: set[str] | None = None) -> list[dict]:
    """Optimizer parameter groups (see the module docstring). Frozen parameters
    (``requires_grad=False``) are left out.

    ``layer_decay=None`` puts every layer at ``lr_scale`` 1.0 and merges the groups into one
    decay and one no-decay group (``layer_id`` None). With ``lr`` each group also gets
    ``lr = lr * lr_scale``. ``no_weight_decay`` adds names to ``model.no_weight_decay()``.
    """
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
            raise HieraVideoError(
                f"layer decay needs a model with layer_id() and depth ({type(m).__name__} has neither); "
                "set layer_decay to null"
            )
        num_layers = int(m.depth) + 2  # embeddings, blocks..., everything after the blocks

    groups: dict[tuple, dict] = {}
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        decay = not _skips_decay(name, p, skip)
        lid = None if layer_decay is None else int(m.layer_id(name))
        scale = 1.0 if lid is None else float(layer_decay ** (num_layers - 1 - lid))
        key = (lid, decay)
        if key not in groups:
            kind = "decay" if decay else "no_decay"
            groups[key] = {
                "name": kind if lid is None else f"layer{lid}_{kind}",
                "params": [],
                "param_names": [],
                "weight_decay": float(weight_decay) if decay else 0.0,
                "lr_scale": scale,
                "layer_id": lid,
            }
            if lr is not None:
                groups[key]["lr"] = float(lr) * scale
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    if not groups:
        raise HieraVideoError("the model has no trainable parameters (all have requires_grad=False)")
    # Fixed order (by layer, decay before no-decay) so a resumed optimizer's groups line up.
    order = sorted(groups, key=lambda k: (-1 if k[0] is None else k[0], not k[1]))
    return [groups[k] for k in order]


def build_optimizer(model: nn.Module, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.05,
                    betas: tuple[float, float] = (0.9, 0.999), momentum: float = 0.9, layer_decay: float | None = None,
                    fused: bool = False) -> torch.optim.Optimizer:
    """AdamW (``betas``) or SGD (``momentum``) over :func:`param_groups`. Works on DDP-wrapped
    and ``torch.compile``'d models. ``fused``: one fused kernel for the whole AdamW update (the
    trainer uses it on CUDA)."""
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
    """Linear scaling rule: ``base_lr * global_batch / base_batch`` (the paper quotes lrs at
    batch 256, e.g. 8e-4 for K400 finetuning)."""
    if base_batch <= 0 or global_batch <= 0:
        raise HieraVideoError(f"batch sizes must be positive (base {base_batch}, global {global_batch})")
    return float(base_lr) * global_batch / base_batch
