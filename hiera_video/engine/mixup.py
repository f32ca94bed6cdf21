"""Mixup / CutMix for video clips and label smoothing into soft targets (timm semantics).

One lambda per batch; sample ``i`` is mixed with ``B - 1 - i`` (the batch flipped). CutMix pastes
one box, the same in every frame (cut in space, never in time), and ``lam`` is corrected to the
area actually pasted. Targets are smoothed one-hot, then mixed like the clips (rows sum to 1).
Draws come from a ``torch.Generator`` (or the global RNG), so a restored state repeats them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hiera_video.errors import HieraVideoError


@dataclass
class MixupConfig:
    """Defaults are the paper's finetuning recipe (K400, SSv2)."""
    mixup_alpha: float = 0.8  # Beta(alpha, alpha) for mixup; 0 = no mixup
    cutmix_alpha: float = 1.0  # Beta(alpha, alpha) for cutmix; 0 = no cutmix
    prob: float = 1.0  # probability of mixing a batch at all
    switch_prob: float = 0.5  # probability of cutmix instead of mixup when both are on
    label_smoothing: float = 0.1  # mass spread uniformly over all classes
    correct_lam: bool = True  # lam = 1 - pasted box area / frame area for cutmix


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``[B]`` class indices (or ``[B, K]`` probabilities) -> ``[B, K]`` float32 soft targets."""
    off = smoothing / num_classes
    if target.ndim == 2:
        return target.float() * (1.0 - smoothing) + off
    out = torch.full((target.shape[0], num_classes), off, dtype=torch.float32, device=target.device)
    return out.scatter_(1, target.long().view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: area about ``(1 - lam) * H * W`` at a uniform centre, clipped to the frame."""
    ratio = math.sqrt(max(1.0 - lam, 0.0))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(y0), int(y1), int(x0), int(x1)


class Mixup:
    """``mixup(clips [B, C, (T,) H, W], target [B] or [B, K]) -> (new clips, soft targets [B, K] float32)``;
    ``last`` records the last call's ``mode`` ("none" | "mixup" | "cutmix"), ``lam`` and ``box``."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, correct_lam: bool = True,
                 generator: torch.Generator | None = None):
        if num_classes < 1:
            raise HieraVideoError(f"mixup needs num_classes >= 1, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise HieraVideoError(f"mixup/cutmix alphas must be >= 0, got {mixup_alpha} / {cutmix_alpha}")
        for what, v in (("prob", prob), ("switch_prob", switch_prob), ("label_smoothing", label_smoothing)):
            if not 0.0 <= v <= 1.0:
                raise HieraVideoError(f"mixup {what} must be in [0, 1], got {v}")
        self.num_classes, self.correct_lam, self.generator = num_classes, correct_lam, generator
        self.mixup_alpha, self.cutmix_alpha, self.prob = float(mixup_alpha), float(cutmix_alpha), float(prob)
        self.switch_prob, self.label_smoothing = float(switch_prob), float(label_smoothing)
        self.last: dict = {"mode": "none", "lam": 1.0, "box": None}

    @classmethod
    def from_config(cls, config: MixupConfig, num_classes: int, generator: torch.Generator | None = None) -> "Mixup":
        return cls(num_classes, **asdict(config), generator=generator)

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def _rng(self) -> np.random.Generator:
        # One torch draw seeds numpy, which has Beta sampling with an explicit generator.
        return np.random.default_rng(int(torch.randint(0, 2**63 - 1, (), generator=self.generator)))

    def sample(self, height: int, width: int) -> tuple[str, float, tuple[int, int, int, int] | None]:
        """Draw ``(mode, lam, box)`` for one batch of ``height x width`` frames."""
        if not self.enabled:
            return "none", 1.0, None
        rng = self._rng()
        if rng.random() >= self.prob:
            return "none", 1.0, None
        both = self.mixup_alpha > 0 and self.cutmix_alpha > 0
        use_cutmix = rng.random() < self.switch_prob if both else self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if not use_cutmix:
            return "mixup", lam, None
        box = cutmix_box(height, width, lam, rng)
        if self.correct_lam:
            y0, y1, x0, x1 = box
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
        return "cutmix", lam, box

    def __call__(self, clips: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mode, lam, box = self.sample(clips.shape[-2], clips.shape[-1])
        self.last = {"mode": mode, "lam": lam, "box": box}
        y = smooth_one_hot(target, self.num_classes, self.label_smoothing)
        if mode == "none":
            return clips, y
        if mode == "mixup":
            out = clips * lam + clips.flip(0) * (1.0 - lam)
        else:
            y0, y1, x0, x1 = box
            out = clips.clone()
            out[..., y0:y1, x0:x1] = clips.flip(0)[..., y0:y1, x0:x1]
        return out, y * lam + y.flip(0) * (1.0 - lam)


class SoftTargetCrossEntropy(nn.Module):
    """``mean_b(-sum_k target[b, k] * log_softmax(logits)[b, k])`` in float32; ``[B]`` indices: plain CE."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return F.cross_entropy(logits.float(), target)
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
