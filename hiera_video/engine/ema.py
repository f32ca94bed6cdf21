"""Exponential moving average of model weights (no warmup): ``ema = d * ema + (1 - d) * w``.

The EMA copy is a separate, frozen ``nn.Module`` (``ema.module``) in eval mode, which can be
evaluated and saved like the model. Float parameters and buffers are averaged; other buffers
(integer counters such as BatchNorm's ``num_batches_tracked``) are not averaged but copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hiera_video.engine.optim import unwrap_model


class ModelEMA:
    """``ModelEMA(model, decay=0.9999, device=None)``; call :meth:`update` after each
    optimizer step.

    ``device`` places the copy (e.g. ``"cpu"`` to save accelerator memory); default: where
    the model is. DDP / ``torch.compile`` wrappers are unwrapped, both when copying and in
    :meth:`update`. Averaging runs in the EMA copy's dtype (keep the model in float32).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, device: torch.device | str | None = None):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap_model(model))
        self.module.eval()
        self.module.requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self.num_updates = 0

    def _pairs(self, model: nn.Module):
        src = unwrap_model(model).state_dict(keep_vars=False)
        dst = self.module.state_dict(keep_vars=False)
        missing = dst.keys() - src.keys()
        if missing:
            raise KeyError(f"model lacks EMA entries: {sorted(missing)[:5]}")
        return ((dst[k], src[k]) for k in dst)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step: average float tensors towards ``model``, copy the others."""
        w = 1.0 - self.decay
        groups: dict[tuple, tuple[list, list]] = {}
        for e, m in self._pairs(model):
            m = m.detach().to(device=e.device, dtype=e.dtype)  # no copy when both match
            if e.is_floating_point():
                dst, src = groups.setdefault((e.device, e.dtype), ([], []))
                dst.append(e)
                src.append(m)
            else:
                e.copy_(m)
        for dst, src in groups.values():
            # ema += (model - ema) * (1 - decay), all tensors of a device/dtype in one call.
            torch._foreach_lerp_(dst, src, w)
        self.num_updates += 1

    def state_dict(self) -> dict:
        """``{"decay", "num_updates", "module"}``; loadable with ``torch.load(weights_only=True)``."""
        return {"decay": self.decay, "num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the averaged weights and the update count; the decay stays the
        constructor's (the run's config)."""
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state.get("num_updates", 0))
