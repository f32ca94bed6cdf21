"""Per-iteration lr (as in the MAE / Hiera recipes): linear warmup from 0 to ``base_lr`` at
``warmup_steps``, then cosine to ``min_lr`` at ``total_steps``; times each group's ``lr_scale``."""

from __future__ import annotations

import logging
import math

import torch

from hiera_video.errors import HieraVideoError

log = logging.getLogger(__name__)


def _check(total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> None:
    if total_steps <= 0:
        raise HieraVideoError(f"the schedule needs at least one step, got total_steps={total_steps}")
    if warmup_steps < 0:
        raise HieraVideoError(f"warmup steps must be >= 0, got {warmup_steps}")
    if base_lr < 0 or min_lr < 0:
        raise HieraVideoError(f"learning rates must be >= 0 (base {base_lr}, min {min_lr})")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """The lr of iteration ``step`` (0-based); a warmup longer than the run ends the run in warmup."""
    _check(total_steps, warmup_steps, base_lr, min_lr)
    step = max(int(step), 0)
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    span = total_steps - warmup_steps
    if span <= 0:
        return float(base_lr)
    p = min((step - warmup_steps) / span, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class Scheduler:
    """Call :meth:`step` once per iteration before ``optimizer.step()``; the state dict holds the
    counter, so a resumed run continues with exactly the lr it would have had."""

    def __init__(self, optimizer: torch.optim.Optimizer | None, total_steps: int, warmup_steps: int, base_lr: float,
                 min_lr: float = 0.0):
        _check(total_steps, warmup_steps, base_lr, min_lr)
        self.optimizer, self.total_steps, self.warmup_steps = optimizer, int(total_steps), int(warmup_steps)
        self.base_lr, self.min_lr = float(base_lr), float(min_lr)
        self.step_count = 0  # iterations already stepped

    def lr(self, step: int | None = None) -> float:
        """The lr of ``step`` (default: the next iteration's)."""
        return lr_at(self.step_count if step is None else step, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)

    def step(self) -> float:
        lr = self.lr()
        if self.optimizer is not None:
            apply_lr(self.optimizer, lr)
        self.step_count += 1
        return lr

    def state_dict(self) -> dict:
        return dict(step=self.step_count, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                    base_lr=self.base_lr, min_lr=self.min_lr)

    def load_state_dict(self, state: dict) -> None:
        """Restore the counter; a saved schedule that differs from the config's is only reported."""
        self.step_count = int(state["step"])
        mine = self.state_dict()
        diff = [f"{k} {state[k]} -> {mine[k]}" for k in ("total_steps", "warmup_steps", "base_lr", "min_lr")
                if k in state and state[k] != mine[k]]
        if diff:
            log.warning("lr schedule differs from the checkpoint's (saved -> now): %s", ", ".join(diff))
        if self.optimizer is not None and self.step_count > 0:
            apply_lr(self.optimizer, self.lr(self.step_count - 1))
