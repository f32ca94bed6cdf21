"""Token layouts: spatial order <-> the "window-major unrolled" order the encoder runs in.

Hiera pools by a fixed stride ``s`` at each stage change and attends inside mask units of
``mu = s**K`` tokens per dimension. Like the official "Unroll", we order tokens so both are plain
reshapes, but with the unit index OUTERMOST: a coordinate ``c = U * mu + d_K * s**(K-1) + ... + d_1``
(unit ``U``, stride digits ``d_1`` finest .. ``d_K`` coarsest) is stored as ``[B, U, d_1, ..., d_K, C]``
(each of U, d_j one entry per spatial dimension, flattened). Then a mask unit is a contiguous block
(windowed attention is a ``view``, one fused 4-D SDPA call), each q-pool is
``view(B, units, s, -1, C).amax(2)`` (removing ``d_1``, then ``d_2``, ...), and dropping masked units
is ``x[mask]``. Attention and the token mean ignore order, so results equal the official ones
(whose order is ``[d_1, ..., d_K, U]``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def spatial_to_windows(x: torch.Tensor, unit_size: Sequence[int], strides: Sequence[Sequence[int]]) -> torch.Tensor:
    """``[B, C, *grid]`` -> window-major ``[B, num_units, unit_tokens, C]``. ``strides``: pooling strides,
    finest first, their product per dimension = ``unit_size``. Each grid dimension is viewed as
    ``(U, d_K, ..., d_1)`` (row-major) and permuted to ``(U..., d_1..., ..., d_K...)``."""
    B, C, *grid = x.shape
    D, K = len(grid), len(strides)
    num_units = [g // m for g, m in zip(grid, unit_size)]
    x = x.reshape(B, C, *[n for d in range(D) for n in [num_units[d]] + [strides[k][d] for k in reversed(range(K))]])
    # Axis of (dim d, level j): 2 + d*(K+1) for U, 2 + d*(K+1) + (K - j + 1) for d_j.
    order = [0] + [2 + d * (K + 1) for d in range(D)]
    for j in range(1, K + 1):
        order += [2 + d * (K + 1) + (K - j + 1) for d in range(D)]
    return x.permute(order + [1]).reshape(B, math.prod(num_units), math.prod(unit_size), C)


def windows_to_units(x: torch.Tensor, strides_left: Sequence[Sequence[int]], ndim: int) -> torch.Tensor:
    """Window-major ``[B, n_units, L, C]`` -> per-unit spatial ``[B, n_units, *unit_shape, C]``.
    ``strides_left``: the digits still in each unit (finest first, stored finest outermost);
    spatial order wants the coarsest first per dimension, hence the reversal."""
    B, n, _, C = x.shape
    K, D = len(strides_left), ndim
    x = x.reshape(B, n, *[s for st in strides_left for s in st], C)
    # Axis of (level j, dim d) = 2 + j*D + d.
    order = [0, 1] + [2 + j * D + d for d in range(D) for j in reversed(range(K))] + [x.dim() - 1]
    unit_shape = [math.prod(st[d] for st in strides_left) for d in range(D)]
    return x.permute(order).reshape(B, n, *unit_shape, C)


def units_to_spatial(x: torch.Tensor, units_grid: Sequence[int]) -> torch.Tensor:
    """``[B, n_units, *unit_shape, C]`` (units row-major in ``units_grid``) -> ``[B, *grid, C]``:
    ``[B, U_0, U_1, .., u_0, u_1, .., C] -> [B, U_0, u_0, U_1, u_1, .., C]``."""
    B, _, *unit_shape, C = x.shape
    D = len(unit_shape)
    x = x.reshape(B, *units_grid, *unit_shape, C)
    order = [0] + [a for d in range(D) for a in (1 + d, 1 + D + d)] + [2 * D + 1]
    return x.permute(order).reshape(B, *[u * s for u, s in zip(units_grid, unit_shape)], C)


def pool_tokens(x: torch.Tensor, num_units: int, stride: int) -> torch.Tensor:
    """Max-pool window-major ``[B, N, C]`` by the finest remaining stride digit (outermost in each unit)."""
    if stride == 1:
        return x
    B, N, C = x.shape
    return x.view(B, num_units, stride, N // (num_units * stride), C).amax(dim=2).view(B, -1, C)
