"""The Hiera encoder for images (2-D) and video (3-D): official names, constructor and results
(facebookresearch/hiera), with tokens in the window-major order of :mod:`.layout` so every attention
is one 4-D SDPA call. The head returns logits (the official one softmaxes in eval); position
embeddings are resampled when the token grid differs from ``input_size``."""

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
        return x * x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act_layer(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# The fused CUDA SDPA kernels launch the batch on a grid dimension of at most 65,535 blocks (Hiera-B
# 16x224 reaches it at ~168 clips, mask units being folded into the batch): larger batches are split.
SDPA_MAX_BATCH = 65535


class MaskUnitAttention(nn.Module):
    """Attention inside mask units (windows folded into the batch) or over all tokens, with
    optional Q pooling. ``x: [B, N, C]`` in window-major order with ``num_units`` windows."""

    def __init__(self, dim: int, dim_out: int, heads: int, q_stride: int = 1, use_mask_unit_attn: bool = False):
        super().__init__()
        self.dim_out, self.heads, self.head_dim = dim_out, heads, dim_out // heads
        self.q_stride, self.use_mask_unit_attn = q_stride, use_mask_unit_attn
        self.qkv, self.proj = nn.Linear(dim, 3 * dim_out), nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor, num_units: int) -> torch.Tensor:
        return self.proj(self.attend(x, num_units))

    def attend(self, x: torch.Tensor, num_units: int) -> torch.Tensor:
        """Attention output before the output projection, ``[B, N', dim_out]``."""
        (B, N, _), h, d = x.shape, self.heads, self.head_dim
        qkv = fused.linear(x, self.qkv) if fused.usable(x) else self.qkv(x)
        q, k, v = qkv.view(B, N, 3, h, d).unbind(2)  # each [B, N, h, d]
        if self.q_stride > 1:  # max over the finest stride digit of each unit (layout.pool_tokens)
            q = q.reshape(B, num_units, self.q_stride, -1, h, d).amax(dim=2)
        groups = B * num_units if self.use_mask_unit_attn else B
        q, k, v = (t.reshape(groups, -1, h, d).transpose(1, 2) for t in (q, k, v))  # [groups, h, tokens, d]
        if not isinstance(groups, int) or groups <= SDPA_MAX_BATCH:  # (export/compile trace a symbolic batch)
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = torch.cat([F.scaled_dot_product_attention(*qkv) for qkv in
                             zip(q.split(SDPA_MAX_BATCH), k.split(SDPA_MAX_BATCH), v.split(SDPA_MAX_BATCH))])
        return out.transpose(1, 2).reshape(B, -1, self.dim_out)


class HieraBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, act_layer: type[nn.Module] = nn.GELU,
                 q_stride: int = 1, use_mask_unit_attn: bool = False):
        super().__init__()
        self.dim, self.dim_out, self.fusable = dim, dim_out, act_layer is nn.GELU  # fused path: exact GELU only
        self.norm1 = norm_layer(dim)
        self.attn = MaskUnitAttention(dim, dim_out, heads, q_stride, use_mask_unit_attn)
        self.norm2 = norm_layer(dim_out)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor, num_units: int = 1) -> torch.Tensor:
        x_norm = self.norm1(x)
        if self.dim != self.dim_out:
            x = layout.pool_tokens(self.proj(x_norm), num_units, self.attn.q_stride)
        if self.fusable and fused.usable(x):  # inference: bias, GELU and residual adds inside the GEMMs
            x = fused.linear_add(self.attn.attend(x_norm, num_units), x, self.attn.proj)
            return fused.linear_add(fused.linear(self.norm2(x), self.mlp.fc1, gelu=True), x, self.mlp.fc2)
        x = x + self.drop_path(self.attn(x_norm, num_units))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Head(nn.Module):  # returns logits
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
        """Masked pixels are zeroed first so the overlapping kernel cannot see them (official)."""
        return self.proj(x if pixel_mask is None else x * pixel_mask)


class Hiera(nn.Module):
    """Hiera encoder + classification head. Same constructor arguments as the official class."""

    spec = None  # the zoo ModelSpec, set by factory.build_model

    def __init__(self, input_size: Sequence[int] = (224, 224), in_chans: int = 3, embed_dim: int = 96,
                 num_heads: int = 1, num_classes: int = 1000, stages: Sequence[int] = (2, 3, 16, 3), q_pool: int = 3,
                 q_stride: Sequence[int] = (2, 2), mask_unit_size: Sequence[int] = (8, 8),
                 mask_unit_attn: Sequence[bool] = (True, True, False, False), dim_mul: float = 2.0,
                 head_mul: float = 2.0, patch_kernel: Sequence[int] = (7, 7), patch_stride: Sequence[int] = (4, 4),
                 patch_padding: Sequence[int] = (3, 3), mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 norm_layer: str | Callable[[int], nn.Module] = "LayerNorm", head_dropout: float = 0.0,
                 head_init_scale: float = 0.001, sep_pos_embed: bool = False):
        args = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.config = {**args, "norm_layer": norm_layer if isinstance(norm_layer, str) else "LayerNorm"}
        if isinstance(norm_layer, str):
            norm_layer = partial(getattr(nn, norm_layer), eps=1e-6)
        if not q_pool < len(stages):
            raise HieraVideoError(f"q_pool ({q_pool}) must be smaller than the number of stages ({len(stages)})")
        self.input_size, self.in_chans, self.num_classes = tuple(input_size), in_chans, num_classes
        self.patch_stride, self.q_stride, self.q_pool = tuple(patch_stride), tuple(q_stride), q_pool
        self.mask_unit_size, self.sep_pos_embed = tuple(mask_unit_size), sep_pos_embed
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.unroll_strides = [self.q_stride] * (len(stages) - 1)  # one q_stride digit per stage change
        for d, m in enumerate(self.mask_unit_size):
            if math.prod(s[d] for s in self.unroll_strides) != m:
                raise HieraVideoError(f"mask_unit_size {self.mask_unit_size} must equal q_stride {self.q_stride} "
                                      f"to the power of (stages - 1) = {len(stages) - 1} in every dimension")
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
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList()
        cur_stage, dim = 0, embed_dim
        for i in range(depth):
            dim_out = dim
            use_mu_attn = mask_unit_attn[cur_stage]  # lags one block: a stage's first block uses the previous flag
            if i - 1 in self.stage_ends:
                dim_out, num_heads, cur_stage = int(dim * dim_mul), int(num_heads * head_mul), cur_stage + 1
            self.blocks.append(HieraBlock(
                dim=dim, dim_out=dim_out, heads=num_heads, mlp_ratio=mlp_ratio, drop_path=dpr[i], norm_layer=norm_layer,
                q_stride=math.prod(q_stride) if i in q_pool_blocks else 1, use_mask_unit_attn=use_mu_attn))
            dim = dim_out
        self.num_features, self.grad_checkpointing, self.norm = dim, False, norm_layer(dim)
        self.head = Head(dim, num_classes, dropout_rate=head_dropout)

        for pos in (self.pos_embed_spatial, self.pos_embed_temporal) if sep_pos_embed else (self.pos_embed,):
            nn.init.trunc_normal_(pos, std=0.02)
        self.apply(self._init_weights)
        for p in (self.head.projection.weight, self.head.projection.bias):
            p.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module, init_bias: float = 0.02) -> None:
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, init_bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, init_bias)
            nn.init.constant_(m.weight, 1.0)

    is_video = property(lambda self: len(self.input_size) == 3)
    depth = property(lambda self: len(self.blocks))

    @property
    def feature_info(self) -> list[dict]:
        """Per stage: channels, spatial and temporal stride (in input pixels / frames)."""
        info = []
        for s, end in enumerate(self.stage_ends):
            stride = [p * q ** min(s, self.q_pool) for p, q in zip(self.patch_stride, self.q_stride)]
            info.append(dict(stage=s + 1, module=f"blocks.{end}", channels=self.blocks[end].dim_out,
                             spatial_stride=stride[-1], temporal_stride=stride[0] if self.is_video else 1))
        return info

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed_spatial", "pos_embed_temporal"} if self.sep_pos_embed else {"pos_embed"}

    def layer_id(self, name: str) -> int:
        """BEiT-style layer-wise lr decay id: embeddings 0, block i -> i + 1, the rest depth + 1."""
        if name.startswith(("patch_embed", "pos_embed")):
            return 0
        return int(name.split(".")[1]) + 1 if name.startswith("blocks.") else self.depth + 1

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes."""
        old = self.head
        self.head = Head(self.num_features, num_classes, dropout_rate=getattr(old.dropout, "p", 0.0))
        self.head.apply(self._init_weights)
        for p in (self.head.projection.weight, self.head.projection.bias):
            p.data.mul_(self.config["head_init_scale"])
        self.head.to(old.projection.weight.device)
        self.num_classes = self.config["num_classes"] = num_classes

    def mask_grid(self, x: torch.Tensor) -> list[int]:
        """Mask units per dimension for input ``x: [B, C, *size]``."""
        return [i // p // m for i, p, m in zip(x.shape[2:], self.patch_stride, self.mask_unit_size)]

    def get_random_mask(self, x: torch.Tensor, mask_ratio: float) -> torch.Tensor:
        """Random mask-unit mask ``[B, num_units]``, True = KEEP (official semantics and RNG use)."""
        B, n = x.shape[0], math.prod(self.mask_grid(x))
        noise = torch.rand(B, n, device=x.device)
        ids_restore = torch.argsort(torch.argsort(noise, dim=1), dim=1)
        mask = torch.zeros(B, n, device=x.device)
        mask[:, :int(n * (1 - mask_ratio))] = 1
        return torch.gather(mask, 1, ids_restore).bool()

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
                raise HieraVideoError(f"input {name} size {size} must be a multiple of {p * m} "
                                      f"(patch stride {p} x mask unit {m}); got input shape {tuple(x.shape)}")

    def get_pos_embed(self, grid: Sequence[int]) -> torch.Tensor:
        """Position embedding ``[1, N, C]`` in spatial order for token ``grid`` (resampled if needed)."""
        if self.sep_pos_embed:
            t, *hw = grid
            spatial = resample_grid(self.pos_embed_spatial, self.tokens_spatial_shape[1:], hw)
            temporal = resample_grid(self.pos_embed_temporal, self.tokens_spatial_shape[:1], [t])
            # [1, T, 1, C] + [1, 1, HW, C] -> [1, T*HW, C] (official order)
            return (temporal[:, :, None, :] + spatial[:, None, :, :]).flatten(1, 2)
        return resample_grid(self.pos_embed, self.tokens_spatial_shape, grid)

    def embed_tokens(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Pixels -> window-major tokens ``[B, N, C]`` (masked units dropped) and the units per sample."""
        self._check_input(x)
        B, mask_grid = x.shape[0], self.mask_grid(x)
        pixel_mask = None
        if mask is not None:
            if mask.shape != (B, math.prod(mask_grid)):
                raise HieraVideoError(
                    f"mask must have shape [B, num_mask_units] = {(B, math.prod(mask_grid))}, got {tuple(mask.shape)}")
            pixel_mask = F.interpolate(mask.view(B, 1, *mask_grid).to(x.dtype), size=x.shape[2:])
        x = self.patch_embed(x, pixel_mask)  # [B, C, *grid]
        grid = list(x.shape[2:])
        x = x.flatten(2) + self.get_pos_embed(grid).transpose(1, 2)  # [B, C, N]
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
            ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
            x = checkpoint(blk, x, n_units, use_reentrant=False) if ckpt else blk(x, n_units)
            if i in keep:
                outs.append(x)
        return x, outs

    def reroll(self, x: torch.Tensor, block_idx: int, n_units: int, mask_grid, mask=None) -> torch.Tensor:
        """Tokens after ``block_idx`` -> ``[B, *grid, C]``, or with a mask ``[B, kept_units, *unit_shape, C]``
        (the official ``return_intermediates`` layout)."""
        B, N, C = x.shape
        pools = sum(1 for e in self.stage_ends[: self.q_pool] if e < block_idx)  # stride digits consumed
        units = layout.windows_to_units(x.view(B, n_units, N // n_units, C), self.unroll_strides[pools:],
                                        len(self.input_size))
        return units if mask is not None else layout.units_to_spatial(units, mask_grid)

    def forward_features(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Final-stage tokens ``[B, N, C]`` (window-major; spatial once q_pool consumed every stride)."""
        return self._blocks(*self.embed_tokens(x, mask))[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, 3, T, H, W]`` (video) or ``[B, 3, H, W]`` (image) -> logits ``[B, classes]``."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, channels_last: bool = True,
                              dense: bool = True) -> list[torch.Tensor]:
        """Spatially ordered map of every stage: ``[B, T', H', W', C]`` (channels_last) or ``[B, C, T', H', W']``;
        masked and ``dense``: masked units are zeros; masked, not dense: ``[B, kept_units, *unit_shape, C]``."""
        B, mask_grid = x.shape[0], self.mask_grid(x)
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
