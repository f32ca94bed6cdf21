"""Per-iteration learning-rate schedule: linear warmup, then cosine decay to ``min_lr``.

The lr is set every iteration (not every epoch), as in the MAE / Hiera recipes. Warmup
starts at 0 (step 0 has lr 0) and reaches ``base_lr`` at ``step == warmup_steps``; the
cosine then falls to ``min_lr`` at ``step == total_steps`` and stays there.

Layer decay rides on top: :func:`apply_lr` multiplies by each group's ``lr_scale``.
The :class:`Scheduler` keeps the step counter in its state dict, so a resumed run continues
with exactly the lr it would have had.
"""

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
    """The lr of iteration ``step`` (0-based).

    ``step < warmup_steps``: ``base_lr * step / warmup_steps``; afterwards
    ``min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2`` with
    ``p = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1].
    A warmup longer than the run just ends the run in warmup.
    """
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
    """Set ``group["lr"] = lr * group.get("lr_scale", 1.0)`` for every param group."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class Scheduler:
    """Steps :func:`lr_at` once per iteration and writes it into the optimizer.

    Call :meth:`step` once per iteration *before* ``optimizer.step()``: it applies the lr of
    the current iteration and advances the counter. ``state_dict()`` holds the counter (and
    the schedule, for a check on resume); ``load_state_dict()`` restores the counter and
    re-applies the lr, so the next :meth:`step` gives what the interrupted run would have.
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, total_steps: int, warmup_steps: int, base_lr: float,
                 min_lr: float = 0.0):
        _check(total_steps, warmup_steps, base_lr, min_lr)
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.base_lr = float(base_lr)
        self.min_lr = float(min_lr)
        self.step_count = 0  # iterations already stepped

    def lr(self, step: int | None = None) -> float:
        """The lr of ``step`` (default: the next iteration's)."""
        s = self.step_count if step is None else step
        return lr_at(s, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)

    def step(self) -> float:
        """Apply the current iteration's lr to the optimizer, advance, return that lr."""
        lr = self.lr()
        if self.optimizer is not None:
            apply_lr(self.optimizer, lr)
        self.step_count += 1
        return lr

    def state_dict(self) -> dict:
        return dict(step=self.step_count, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                    base_lr=self.base_lr, min_lr=self.min_lr)

    def load_state_dict(self, state: dict) -> None:
        """Restore the step counter. The schedule itself comes from the constructor (the run's
        config); a saved schedule that differs is reported, not silently adopted."""
        self.step_count = int(state["step"])
        mine = self.state_dict()
        diff = [f"{k} {state[k]} -> {mine[k]}" for k in ("total_steps", "warmup_steps", "base_lr", "min_lr")
                if k in state and state[k] != mine[k]]
        if diff:
            log.warning("lr schedule differs from the checkpoint's (saved -> now): %s", ", ".join(diff))
        if self.optimizer is not None and self.step_count > 0:
            apply_lr(self.optimizer, self.lr(self.step_count - 1))
