"""Mixup / CutMix for video clips and label smoothing into soft targets (timm semantics).

One lambda per batch. Each sample ``i`` is mixed with sample ``B - 1 - i`` (the batch
flipped), so no permutation is needed:

- mixup: ``x = lam * x + (1 - lam) * x.flip(0)``, ``lam ~ Beta(mixup_alpha, mixup_alpha)``;
- cutmix: one box, the same in every frame (a clip is cut in space, never in time), is
  pasted from the flipped batch; ``lam ~ Beta(cutmix_alpha, cutmix_alpha)`` sets the box
  area ``(1 - lam) * H * W`` and is then corrected to the area actually pasted after the box
  is clipped to the frame, so the targets match the pixels;
- when both alphas are > 0, cutmix is chosen with ``switch_prob``; mixing happens at all
  with ``prob`` (else lam = 1).

Targets: one-hot smoothed first (``on = 1 - s + s / K``, ``off = s / K``), then mixed with
the flipped batch's: ``y = lam * y + (1 - lam) * y.flip(0)``. Each row sums to 1.

Random draws come from a ``torch.Generator`` (or torch's global RNG), so a seeded generator
(or a restored RNG state) repeats the same mixing.
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


def mixup_disabled_config(label_smoothing: float = 0.0) -> MixupConfig:
    """No mixing (for evaluation, or training without mixup): targets are one-hot, smoothed
    only when ``label_smoothing`` > 0."""
    return MixupConfig(mixup_alpha=0.0, cutmix_alpha=0.0, prob=0.0, switch_prob=0.0, label_smoothing=label_smoothing)


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``[B]`` class indices (or ``[B, K]`` probabilities) -> ``[B, K]`` float32 soft targets."""
    off = smoothing / num_classes
    if target.ndim == 2:
        if target.shape[1] != num_classes:
            raise ValueError(f"soft targets have {target.shape[1]} classes, expected {num_classes}")
        return target.float() * (1.0 - smoothing) + off
    if target.ndim != 1:
        raise ValueError(f"targets must be [B] class indices or [B, K] probabilities, got {tuple(target.shape)}")
    out = torch.full((target.shape[0], num_classes), off, dtype=torch.float32, device=target.device)
    return out.scatter_(1, target.long().view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: a box of area about ``(1 - lam) * H * W`` at a uniform random
    centre, clipped to the frame (so it can be smaller near the border)."""
    ratio = math.sqrt(max(1.0 - lam, 0.0))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(y0), int(y1), int(x0), int(x1)


class Mixup:
    """``mixup(clips, target) -> (mixed_clips, soft_targets)``.

    ``clips: [B, C, T, H, W]`` float (``[B, C, H, W]`` also works), ``target: [B]`` int64
    (or ``[B, K]`` probabilities). Returns new tensors (the input is not modified) and
    ``soft_targets: [B, num_classes]`` float32 rows summing to 1. ``last`` records the last
    call's choice (``mode``: "none" | "mixup" | "cutmix", ``lam``, ``box``).
    """

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
        self.num_classes = num_classes
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.correct_lam = correct_lam
        self.generator = generator
        self.last: dict = {"mode": "none", "lam": 1.0, "box": None}

    @classmethod
    def from_config(cls, config: MixupConfig, num_classes: int, generator: torch.Generator | None = None) -> "Mixup":
        return cls(num_classes, **asdict(config), generator=generator)

    @property
    def enabled(self) -> bool:
        """True when a batch can be mixed at all."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def _rng(self) -> np.random.Generator:
        # One 63-bit draw from the torch generator seeds this call's numpy generator, which
        # has Beta sampling with an explicit generator (torch.distributions has none).
        seed = int(torch.randint(0, 2**63 - 1, (), generator=self.generator))
        return np.random.default_rng(seed)

    def sample(self, height: int, width: int) -> tuple[str, float, tuple[int, int, int, int] | None]:
        """Draw ``(mode, lam, box)`` for one batch of ``height x width`` frames."""
        if not self.enabled:
            return "none", 1.0, None
        rng = self._rng()
        if rng.random() >= self.prob:
            return "none", 1.0, None
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = rng.random() < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
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
        if clips.ndim not in (4, 5):
            raise ValueError(f"clips must be [B, C, T, H, W] (or [B, C, H, W]), got {tuple(clips.shape)}")
        if target.shape[0] != clips.shape[0]:
            raise ValueError(f"{clips.shape[0]} clips but {target.shape[0]} targets")
        mode, lam, box = self.sample(clips.shape[-2], clips.shape[-1])
        self.last = {"mode": mode, "lam": lam, "box": box}
        y = smooth_one_hot(target, self.num_classes, self.label_smoothing)
        if mode == "none":
            return clips, y
        if mode == "mixup":
            if not clips.is_floating_point():
                raise ValueError("mixup needs float clips (normalise before mixing)")
            out = clips * lam + clips.flip(0) * (1.0 - lam)
        else:
            y0, y1, x0, x1 = box
            out = clips.clone()
            # Same box in every frame and channel: index only the last two (H, W) dims.
            out[..., y0:y1, x0:x1] = clips.flip(0)[..., y0:y1, x0:x1]
        return out, y * lam + y.flip(0) * (1.0 - lam)


class SoftTargetCrossEntropy(nn.Module):
    """``mean_b( -sum_k target[b, k] * log_softmax(logits)[b, k] )``, computed in float32.

    Also accepts ``[B]`` class indices (plain cross entropy)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return F.cross_entropy(logits.float(), target)
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
