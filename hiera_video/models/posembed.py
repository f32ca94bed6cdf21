"""Resampling of learned position embeddings to another token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_grid(pos: torch.Tensor, old_grid, new_grid) -> torch.Tensor:
    """``pos: [1, prod(old_grid), C]`` (row-major grid) -> ``[1, prod(new_grid), C]``: linear (1-D),
    bicubic (2-D) or trilinear (3-D), ``align_corners=False``; ``pos`` itself when the grids are equal."""
    old_grid, new_grid = list(old_grid), list(new_grid)
    if old_grid == new_grid:
        return pos
    C, mode = pos.shape[-1], {1: "linear", 2: "bicubic", 3: "trilinear"}[len(old_grid)]
    x = F.interpolate(pos.reshape(1, *old_grid, C).movedim(-1, 1).float(), size=new_grid, mode=mode, align_corners=False)
    return x.movedim(1, -1).reshape(1, -1, C).to(pos.dtype)
