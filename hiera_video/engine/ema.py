"""EMA of model weights (no warmup): ``ema = d * ema + (1 - d) * w`` in a frozen eval copy; int buffers copied."""

import copy

import torch
from torch import nn

from hiera_video.engine.optim import unwrap_model


class ModelEMA:
    """Call :meth:`update` after each optimizer step; wrappers are unwrapped; averages in the copy's dtype."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, device: torch.device | str | None = None):
        self.decay, self.num_updates = float(decay), 0
        self.module = copy.deepcopy(unwrap_model(model)).eval().requires_grad_(False)
        if device is not None:
            self.module.to(device)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src, groups = unwrap_model(model).state_dict(), {}
        for k, e in self.module.state_dict().items():
            m = src[k].detach().to(device=e.device, dtype=e.dtype)  # no copy when both match
            if e.is_floating_point():
                groups.setdefault((e.device, e.dtype), []).append((e, m))
            else:
                e.copy_(m)
        for pairs in groups.values():
            torch._foreach_lerp_([e for e, _ in pairs], [m for _, m in pairs], 1.0 - self.decay)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the weights and update count; the decay stays the constructor's (the config)."""
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state.get("num_updates", 0))
