"""Resampling of learned position embeddings to another token grid."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def resample_grid(pos: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int]) -> torch.Tensor:
    """Resample ``pos: [1, prod(old_grid), C]`` (row-major grid order) to ``new_grid``.

    1-D grids (the temporal embedding) use linear interpolation, 2-D grids bicubic and 3-D
    grids trilinear, all with ``align_corners=False``. Returns ``pos`` itself when the grids
    are equal.
    """
    old_grid, new_grid = list(old_grid), list(new_grid)
    if old_grid == new_grid:
        return pos
    C = pos.shape[-1]
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(old_grid)]
    # [1, N, C] -> [1, C, *old_grid] for interpolate, then back to [1, N', C].
    x = pos.reshape(1, *old_grid, C).movedim(-1, 1).float()
    x = F.interpolate(x, size=new_grid, mode=mode, align_corners=False)
    return x.movedim(1, -1).reshape(1, -1, C).to(pos.dtype)
