"""Token layouts: spatial order <-> the "window-major unrolled" order the encoder runs in.

Hiera pools with a fixed stride (2x2 spatially) at every stage change and attends inside
mask units (8x8 tokens) in the first stages. Both become plain reshapes if the tokens are
stored in the right order, which is what the official "Unroll" achieves. We use the same
idea with one change: the mask-unit (window) index is the OUTERMOST token axis instead of
the innermost. A token at spatial coordinate ``c`` (per dimension) with mask unit size
``mu = s**K`` (K pooling steps of stride ``s``) is written as::

    c = U * mu + d_K * s**(K-1) + ... + d_2 * s + d_1

where ``U`` is the mask unit coordinate and ``d_1`` (finest) ... ``d_K`` (coarsest) are
the stride digits. Tokens are stored as ``[B, U, d_1, d_2, ..., d_K, C]`` (each of U and
d_j expands to one entry per spatial dimension, flattened). Then:

* a mask unit is a contiguous block of ``mu`` tokens, so windowed attention is a
  ``view(B * num_units, mu, C)``: no copy, and every attention call is a plain 4-D
  (fused-kernel) call;
* the first q-pool is ``view(B, num_units, s, -1, C).amax(2)`` (it removes ``d_1``), the
  next one removes ``d_2`` with the same expression, and so on;
* dropping masked units (MAE) is ``x[mask]`` on ``[B, num_units, mu, C]``.

Attention and the mean over tokens do not depend on token order, so the encoder gives the
same results as the official implementation (whose order is ``[d_1, ..., d_K, U]``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def spatial_to_windows(x: torch.Tensor, unit_size: Sequence[int], strides: Sequence[Sequence[int]]) -> torch.Tensor:
    """Spatial map ``[B, C, *grid]`` -> window-major tokens ``[B, num_units, unit_tokens, C]``.

    ``strides`` lists the pooling strides finest first (``[(1,2,2)] * 3`` for video); their
    product per dimension must equal ``unit_size``. Each grid dimension ``g`` is viewed as
    ``(U, d_K, ..., d_1)`` (coarse to fine, the natural row-major split) and permuted to
    ``(U..., d_1..., ..., d_K...)``.
    """
    B, C, *grid = x.shape
    D, K = len(grid), len(strides)
    num_units = [g // m for g, m in zip(grid, unit_size)]
    # View each grid dim as [U, d_K, ..., d_1].
    split = []
    for d in range(D):
        split += [num_units[d]] + [strides[k][d] for k in reversed(range(K))]
    x = x.reshape(B, C, *split)
    # Axis of (dim d, level j): 2 + d*(K+1) + 0 for U, and 2 + d*(K+1) + (K - j + 1) for d_j.
    per = K + 1
    order = [0] + [2 + d * per for d in range(D)]
    for j in range(1, K + 1):
        order += [2 + d * per + (K - j + 1) for d in range(D)]
    order.append(1)
    x = x.permute(order)
    return x.reshape(B, math.prod(num_units), math.prod(unit_size), C)


def windows_to_units(x: torch.Tensor, strides_left: Sequence[Sequence[int]], ndim: int) -> torch.Tensor:
    """Window-major ``[B, n_units, L, C]`` -> per-unit spatial ``[B, n_units, *unit_shape, C]``.

    ``strides_left`` are the pooling digits still present in each unit (finest first); the
    unit's spatial shape is their per-dimension product. Inside a unit the token order is
    ``(d_j, d_j+1, ..., d_K)`` with the finest digit outermost; spatial order needs, per
    dimension, the coarsest digit first, hence the reversal.
    """
    B, n, _, C = x.shape
    K, D = len(strides_left), ndim
    x = x.reshape(B, n, *[s for st in strides_left for s in st], C)
    # Axis of (level j, dim d) = 2 + j*D + d; spatial order wants, for each d, j = K-1 .. 0.
    order = [0, 1] + [2 + j * D + d for d in range(D) for j in reversed(range(K))] + [x.dim() - 1]
    unit_shape = [math.prod(st[d] for st in strides_left) for d in range(D)]
    return x.permute(order).reshape(B, n, *unit_shape, C)


def units_to_spatial(x: torch.Tensor, units_grid: Sequence[int]) -> torch.Tensor:
    """Per-unit maps ``[B, n_units, *unit_shape, C]`` -> spatial map ``[B, *grid, C]``.

    Units are in row-major order of ``units_grid``; interleave unit and in-unit axes:
    ``[B, U_0, U_1, .., u_0, u_1, .., C] -> [B, U_0, u_0, U_1, u_1, .., C]``.
    """
    B, _, *unit_shape, C = x.shape
    D = len(unit_shape)
    x = x.reshape(B, *units_grid, *unit_shape, C)
    order = [0] + [a for d in range(D) for a in (1 + d, 1 + D + d)] + [2 * D + 1]
    grid = [u * s for u, s in zip(units_grid, unit_shape)]
    return x.permute(order).reshape(B, *grid, C)


def pool_tokens(x: torch.Tensor, num_units: int, stride: int) -> torch.Tensor:
    """Max-pool window-major tokens ``[B, N, C]`` by the next (finest) stride digit.

    Inside each unit the finest remaining digit is the outermost axis, so pooling is a max
    over axis 2 of ``[B, num_units, stride, rest, C]``.
    """
    if stride == 1:
        return x
    B, N, C = x.shape
    return x.view(B, num_units, stride, N // (num_units * stride), C).amax(dim=2).view(B, -1, C)
