"""The Hiera encoder for images (2-D) and video (3-D), official semantics, fast layout.

Parameter names and constructor arguments are the official ones
(``facebookresearch/hiera``), so an official ``model_state`` or hub ``config.json`` loads
as is. Differences that do not change results:

* tokens run in the window-major order of :mod:`hiera_video.models.layout`, so every
  attention call is a 4-D ``scaled_dot_product_attention`` (fused kernels on CPU and GPU);
* the classifier returns logits (the official head applies softmax in eval mode);
* any input size compatible with the strides works: position embeddings are resampled
  on the fly when the token grid differs from ``input_size``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hiera_video.errors import HieraVideoError
from hiera_video.models import fused, layout
from hiera_video.models.posembed import resample_grid


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# The fused CUDA attention kernels (flash, memory-efficient) put the batch on a grid
# dimension limited to 65,535 blocks; with mask units folded into the batch, Hiera-B at 16x224
# reaches it at about 168 clips per forward. Larger attention batches are split.
SDPA_MAX_BATCH = 65535


class MaskUnitAttention(nn.Module):
    """Attention inside mask units (windows) or over all tokens, with optional Q pooling.

    Input ``x: [B, N, C]`` in window-major order with ``num_units`` windows. Windows are
    folded into the batch, so the attention is a single 4-D SDPA call.
    """

    def __init__(self, dim: int, dim_out: int, heads: int, q_stride: int = 1, use_mask_unit_attn: bool = False):
        super().__init__()
        self.dim_out, self.heads, self.head_dim = dim_out, heads, dim_out // heads
        self.q_stride = q_stride
        self.use_mask_unit_attn = use_mask_unit_attn
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor, num_units: int) -> torch.Tensor:
        return self.proj(self.attend(x, num_units))

    def attend(self, x: torch.Tensor, num_units: int) -> torch.Tensor:
        """Attention output before the output projection, ``[B, N', dim_out]``."""
        B, N, _ = x.shape
        h, d = self.heads, self.head_dim
        qkv = fused.linear(x, self.qkv) if fused.usable(x) else self.qkv(x)
        q, k, v = qkv.view(B, N, 3, h, d).unbind(2)  # each [B, N, h, d]
        if self.q_stride > 1:
            # Max over the finest stride digit of each unit (see layout.pool_tokens).
            q = q.reshape(B, num_units, self.q_stride, -1, h, d).amax(dim=2)
        groups = B * num_units if self.use_mask_unit_attn else B
        # [B, N, h, d] -> [groups, h, tokens_per_group, d]; a view, no copy.
        q, k, v = (t.reshape(groups, -1, h, d).transpose(1, 2) for t in (q, k, v))
        if not isinstance(groups, int) or groups <= SDPA_MAX_BATCH:  # (export/compile trace a symbolic batch: no split)
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # past the fused kernels' launch limit (see SDPA_MAX_BATCH): chunks of the batch
            out = torch.cat([F.scaled_dot_product_attention(*qkv) for qkv in
                             zip(q.split(SDPA_MAX_BATCH), k.split(SDPA_MAX_BATCH), v.split(SDPA_MAX_BATCH))])
        return out.transpose(1, 2).reshape(B, -1, self.dim_out)


class HieraBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, act_layer: type[nn.Module] = nn.GELU,
                 q_stride: int = 1, use_mask_unit_attn: bool = False):
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.norm1 = norm_layer(dim)
        self.attn = MaskUnitAttention(dim, dim_out, heads, q_stride, use_mask_unit_attn)
        self.norm2 = norm_layer(dim_out)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)
        # The fused inference path implements exactly LayerNorm + exact GELU blocks.
        self.fusable = act_layer is nn.GELU

    def forward(self, x: torch.Tensor, num_units: int = 1) -> torch.Tensor:
        x_norm = self.norm1(x)
        if self.dim != self.dim_out:
            x = layout.pool_tokens(self.proj(x_norm), num_units, self.attn.q_stride)
        if self.fusable and fused.usable(x):
            # Same maths, with bias, GELU and residual adds inside the GEMMs (inference only).
            x = fused.linear_add(self.attn.attend(x_norm, num_units), x, self.attn.proj)
            return fused.linear_add(fused.linear(self.norm2(x), self.mlp.fc1, gelu=True), x, self.mlp.fc2)
        x = x + self.drop_path(self.attn(x_norm, num_units))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Head(nn.Module):
    """Dropout + linear classifier. Returns logits (no softmax, unlike the official head)."""

    def __init__(self, dim: int, num_classes: int, dropout_rate: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim_in, dim_out, kernel, stride, padding):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(kernel)]
        self.proj = conv(dim_in, dim_out, kernel_size=kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor, pixel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x: [B, C, *size]`` -> ``[B, C', *grid]``; masked pixels are zeroed first so the
        overlapping kernel cannot see them (official behaviour)."""
        if pixel_mask is not None:
            x = x * pixel_mask
        return self.proj(x)


class Hiera(nn.Module):
    """Hiera encoder + classification head. Same constructor arguments as the official class."""

    #: The zoo entry (:class:`~hiera_video.models.zoo.ModelSpec`) it was built from: set by
    #: ``models.factory.build_model``; None for a model built directly.
    spec = None

    def __init__(
        self,
        input_size: Sequence[int] = (224, 224),
        in_chans: int = 3,
        embed_dim: int = 96,
        num_heads: int = 1,
        num_classes: int = 1000,
        stages: Sequence[int] = (2, 3, 16, 3),
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        mask_unit_size: Sequence[int] = (8, 8),
        mask_unit_attn: Sequence[bool] = (True, True, False, False),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        patch_kernel: Sequence[int] = (7, 7),
        patch_stride: Sequence[int] = (4, 4),
        patch_padding: Sequence[int] = (3, 3),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        norm_layer: str | Callable[[int], nn.Module] = "LayerNorm",
        head_dropout: float = 0.0,
        head_init_scale: float = 0.001,
        sep_pos_embed: bool = False,
    ):
        super().__init__()
        self.config = dict(
            input_size=list(input_size), in_chans=in_chans, embed_dim=embed_dim, num_heads=num_heads,
            num_classes=num_classes, stages=list(stages), q_pool=q_pool, q_stride=list(q_stride),
            mask_unit_size=list(mask_unit_size), mask_unit_attn=list(mask_unit_attn), dim_mul=dim_mul, head_mul=head_mul,
            patch_kernel=list(patch_kernel), patch_stride=list(patch_stride), patch_padding=list(patch_padding),
            mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate,
            norm_layer=norm_layer if isinstance(norm_layer, str) else "LayerNorm",
            head_dropout=head_dropout, head_init_scale=head_init_scale, sep_pos_embed=sep_pos_embed,
        )
        if isinstance(norm_layer, str):
            norm_layer = partial(getattr(nn, norm_layer), eps=1e-6)
        if not q_pool < len(stages):
            raise HieraVideoError(f"q_pool ({q_pool}) must be smaller than the number of stages ({len(stages)})")

        self.input_size = tuple(input_size)
        self.in_chans = in_chans
        self.patch_stride = tuple(patch_stride)
        self.q_stride = tuple(q_stride)
        self.q_pool = q_pool
        self.mask_unit_size = tuple(mask_unit_size)
        self.sep_pos_embed = sep_pos_embed
        self.num_classes = num_classes
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        # Unrolled digits: one q_stride per stage change (official unroll schedule).
        self.unroll_strides = [self.q_stride] * (len(stages) - 1)
        for d, m in enumerate(self.mask_unit_size):
            if math.prod(s[d] for s in self.unroll_strides) != m:
                raise HieraVideoError(
                    f"mask_unit_size {self.mask_unit_size} must equal q_stride {self.q_stride} "
                    f"to the power of (stages - 1) = {len(stages) - 1} in every dimension"
                )
        self.tokens_spatial_shape = [i // s for i, s in zip(input_size, patch_stride)]

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_kernel, patch_stride, patch_padding)
        if sep_pos_embed:
            t, *hw = self.tokens_spatial_shape
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, math.prod(hw), embed_dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, embed_dim))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.tokens_spatial_shape), embed_dim))

        q_pool_blocks = [e + 1 for e in self.stage_ends[:q_pool]]
        depth = sum(stages)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear rule
        self.blocks = nn.ModuleList()
        cur_stage, dim = 0, embed_dim
        for i in range(depth):
            dim_out = dim
            # The attention type lags one block: a stage's first block (which pools) still
            # uses the previous stage's mask-unit flag.
            use_mu_attn = mask_unit_attn[cur_stage]
            if i - 1 in self.stage_ends:
                dim_out = int(dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                cur_stage += 1
            self.blocks.append(HieraBlock(
                dim=dim, dim_out=dim_out, heads=num_heads, mlp_ratio=mlp_ratio, drop_path=dpr[i], norm_layer=norm_layer,
                q_stride=math.prod(q_stride) if i in q_pool_blocks else 1, use_mask_unit_attn=use_mu_attn,
            ))
            dim = dim_out
        self.num_features = dim
        self.norm = norm_layer(dim)
        self.head = Head(dim, num_classes, dropout_rate=head_dropout)
        self.grad_checkpointing = False

        for pos in (self.pos_embed_spatial, self.pos_embed_temporal) if sep_pos_embed else (self.pos_embed,):
            nn.init.trunc_normal_(pos, std=0.02)
        self.apply(self._init_weights)
        self.head.projection.weight.data.mul_(head_init_scale)
        self.head.projection.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module, init_bias: float = 0.02) -> None:
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, init_bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, init_bias)
            nn.init.constant_(m.weight, 1.0)

    # ------------------------------------------------------------------ info and hooks
    @property
    def is_video(self) -> bool:
        return len(self.input_size) == 3

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def feature_info(self) -> list[dict]:
        """Per stage: channels, spatial and temporal stride (in input pixels / frames)."""
        info = []
        for s, end in enumerate(self.stage_ends):
            pools = min(s, self.q_pool)  # stage s + 1 comes after this many q-pools
            stride = [p * q**pools for p, q in zip(self.patch_stride, self.q_stride)]
            info.append(dict(stage=s + 1, module=f"blocks.{end}", channels=self.blocks[end].dim_out,
                             spatial_stride=stride[-1], temporal_stride=stride[0] if self.is_video else 1))
        return info

    def no_weight_decay(self) -> set[str]:
        """Parameter names that must not get weight decay (besides 1-D params and biases)."""
        return {"pos_embed_spatial", "pos_embed_temporal"} if self.sep_pos_embed else {"pos_embed"}

    def layer_id(self, name: str) -> int:
        """BEiT-style layer id for layer-wise lr decay: embeddings 0, block i -> i + 1,
        everything after the blocks (norms, heads, decoder) -> depth + 1."""
        if name.startswith(("patch_embed", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes."""
        old = self.head
        self.head = Head(self.num_features, num_classes, dropout_rate=getattr(old.dropout, "p", 0.0))
        self.head.apply(self._init_weights)
        self.head.projection.weight.data.mul_(self.config["head_init_scale"])
        self.head.projection.bias.data.mul_(self.config["head_init_scale"])
        self.head.to(old.projection.weight.device)
        self.num_classes = self.config["num_classes"] = num_classes

    # ------------------------------------------------------------------ masking
    def mask_grid(self, x: torch.Tensor) -> list[int]:
        """Mask units per dimension for input ``x: [B, C, *size]``."""
        return [i // p // m for i, p, m in zip(x.shape[2:], self.patch_stride, self.mask_unit_size)]

    def get_random_mask(self, x: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        """Random mask-unit mask ``[B, num_units]``, True = KEEP (official semantics and RNG use)."""
        B = x.shape[0]
        n = math.prod(self.mask_grid(x))
        len_keep = int(n * (1 - mask_ratio))
        noise = torch.rand(B, n, device=x.device)
        ids_restore = torch.argsort(torch.argsort(noise, dim=1), dim=1)
        mask = torch.zeros(B, n, device=x.device)
        mask[:, :len_keep] = 1
        return torch.gather(mask, 1, ids_restore).bool()

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        nd = len(self.input_size)
        if x.dim() != nd + 2:
            kind = "[B, C, T, H, W]" if nd == 3 else "[B, C, H, W]"
            hint = " (add a batch dimension with x[None])" if x.dim() == nd + 1 else ""
            raise HieraVideoError(f"expected a {nd + 2}-D input {kind}, got shape {tuple(x.shape)}{hint}")
        if x.shape[1] != self.in_chans:
            raise HieraVideoError(f"expected {self.in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        for size, p, m, name in zip(x.shape[2:], self.patch_stride, self.mask_unit_size, "THW"[-nd:]):
            if size % (p * m) != 0:
                raise HieraVideoError(
                    f"input {name} size {size} must be a multiple of {p * m} "
                    f"(patch stride {p} x mask unit {m}); got input shape {tuple(x.shape)}"
                )

    def get_pos_embed(self, grid: Sequence[int]) -> torch.Tensor:
        """Position embedding ``[1, N, C]`` in spatial order for token grid ``grid``.

        Resampled (temporal linear, spatial bicubic) when ``grid`` differs from the grid
        the parameters were made for.
        """
        if self.sep_pos_embed:
            t, *hw = grid
            spatial = resample_grid(self.pos_embed_spatial, self.tokens_spatial_shape[1:], hw)
            temporal = resample_grid(self.pos_embed_temporal, self.tokens_spatial_shape[:1], [t])
            # [1, T, 1, C] + [1, 1, HW, C] -> [1, T*HW, C]: spatial tiled over time,
            # temporal repeated per location (official order).
            return (temporal[:, :, None, :] + spatial[:, None, :, :]).flatten(1, 2)
        return resample_grid(self.pos_embed, self.tokens_spatial_shape, grid)

    def embed_tokens(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Pixels -> window-major tokens ``[B, N, C]`` (masked units dropped); returns also
        the number of mask units per sample."""
        self._check_input(x)
        B = x.shape[0]
        mask_grid = self.mask_grid(x)
        pixel_mask = None
        if mask is not None:
            if mask.shape != (B, math.prod(mask_grid)):
                raise HieraVideoError(
                    f"mask must have shape [B, num_mask_units] = {(B, math.prod(mask_grid))}, got {tuple(mask.shape)}"
                )
            pixel_mask = F.interpolate(mask.view(B, 1, *mask_grid).to(x.dtype), size=x.shape[2:])
        x = self.patch_embed(x, pixel_mask)  # [B, C, *grid]
        grid = list(x.shape[2:])
        pos = self.get_pos_embed(grid)  # [1, N, C]
        x = x.flatten(2) + pos.transpose(1, 2)  # [B, C, N]
        x = layout.spatial_to_windows(x.view(B, -1, *grid), self.mask_unit_size, self.unroll_strides)
        n_units = x.shape[1]
        if mask is not None:
            n_units = int(mask[0].sum())
            x = x[mask.bool()]  # [B * kept, unit_tokens, C], row-major (sample, unit)
        return x.reshape(B, -1, x.shape[-1]), n_units

    def _blocks(self, x: torch.Tensor, n_units: int, keep: Sequence[int] = ()):
        """Run the blocks; returns the last tokens and the tokens after each block index in ``keep``."""
        outs = []
        for i, blk in enumerate(self.blocks):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, n_units, use_reentrant=False)
            else:
                x = blk(x, n_units)
            if i in keep:
                outs.append(x)
        return x, outs

    def _strides_left(self, block_idx: int) -> list[tuple[int, ...]]:
        """Stride digits still inside each mask unit after block ``block_idx``."""
        pools = sum(1 for e in self.stage_ends[: self.q_pool] if e < block_idx)
        return self.unroll_strides[pools:]

    def reroll(self, x: torch.Tensor, block_idx: int, n_units: int, mask_grid, mask=None) -> torch.Tensor:
        """Tokens after ``block_idx`` -> spatial order.

        Unmasked: ``[B, *grid, C]``. Masked: ``[B, kept_units, *unit_shape, C]`` (the
        official ``return_intermediates`` layout).
        """
        B, N, C = x.shape
        strides = self._strides_left(block_idx)
        units = layout.windows_to_units(x.view(B, n_units, N // n_units, C), strides, len(self.input_size))
        return units if mask is not None else layout.units_to_spatial(units, mask_grid)

    def forward_features(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Final-stage tokens ``[B, N, C]`` (window-major order; spatial order when q_pool
        consumed every stride, as in the classifiers)."""
        x, n_units = self.embed_tokens(x, mask)
        return self._blocks(x, n_units)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, 3, T, H, W]`` (video) or ``[B, 3, H, W]`` (image) -> logits ``[B, classes]``."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, channels_last: bool = True,
                              dense: bool = True) -> list[torch.Tensor]:
        """Spatially ordered feature map of every stage.

        Unmasked: ``[B, T', H', W', C]`` (channels_last) or ``[B, C, T', H', W']``.
        Masked and ``dense``: the same full-grid maps with masked units filled with zeros.
        Masked and not ``dense``: ``[B, kept_units, *unit_shape, C]`` (official layout).
        """
        B = x.shape[0]
        mask_grid = self.mask_grid(x)
        tokens, n_units = self.embed_tokens(x, mask)
        _, outs = self._blocks(tokens, n_units, keep=self.stage_ends)
        maps = []
        for idx, out in zip(self.stage_ends, outs):
            m = self.reroll(out, idx, n_units, mask_grid, mask)
            if mask is not None and dense:
                full = m.new_zeros(B, math.prod(mask_grid), *m.shape[2:])
                full[mask.bool()] = m.flatten(0, 1)
                m = layout.units_to_spatial(full, mask_grid)
            spatial = mask is None or dense  # the per-unit (official) layout stays channels-last
            maps.append(m if channels_last or not spatial else m.movedim(-1, 1))
        return maps
