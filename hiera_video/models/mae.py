"""Masked-autoencoder Hiera (official ``MaskedAutoencoderHiera`` semantics and names): the sparse
encoder (masked units dropped before the first block) with multi-scale fusion of the stage outputs;
a decoder of global-attention blocks predicting the normalised pixels of each token."""

from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn as nn

from hiera_video.models import layout
from hiera_video.models.hiera import Hiera, HieraBlock
from hiera_video.models.posembed import resample_grid


class MaskedAutoencoderHiera(Hiera):
    """``forward(x, mask_ratio, mask=None) -> (loss, pred, label, mask)``; ``mask: [B, num_mask_units]``,
    True = KEEP; ``pred`` and ``label`` are the normalised pixels of the masked tokens, ``[num_masked, P]``."""

    def __init__(self, in_chans: int = 3, patch_stride: Sequence[int] = (4, 4), mlp_ratio: float = 4.0,
                 decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 norm_layer="LayerNorm", mask_ratio: float = 0.6, **kwargs):
        super().__init__(in_chans=in_chans, patch_stride=patch_stride, mlp_ratio=mlp_ratio, norm_layer=norm_layer, **kwargs)
        self.config.update(decoder_embed_dim=decoder_embed_dim, decoder_depth=decoder_depth,
                           decoder_num_heads=decoder_num_heads, mask_ratio=mask_ratio)
        self.default_mask_ratio = mask_ratio
        norm = partial(nn.LayerNorm, eps=1e-6)
        del self.norm, self.head
        enc_dim = self.blocks[-1].dim_out
        self.encoder_norm = norm(enc_dim)
        # Mask unit and token grid once every q-pool has been applied (the decoder's grid).
        self.unit_shape_final = [m // q**self.q_pool for m, q in zip(self.mask_unit_size, self.q_stride)]
        self.tokens_spatial_shape_final = [t // q**self.q_pool for t, q in zip(self.tokens_spatial_shape, self.q_stride)]
        # Fusion heads: a conv (kernel = stride) brings each pre-q-pool stage to the final unit shape.
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[len(self.q_stride)]
        self.multi_scale_fusion_heads = nn.ModuleList()
        unit = list(self.mask_unit_size)
        for end in self.stage_ends[: self.q_pool]:
            kernel = [u // f for u, f in zip(unit, self.unit_shape_final)]
            unit = [u // q for u, q in zip(unit, self.q_stride)]
            self.multi_scale_fusion_heads.append(conv(self.blocks[end].dim_out, enc_dim, kernel_size=kernel, stride=kernel))
        self.multi_scale_fusion_heads.append(nn.Identity())
        self.decoder_embed = nn.Linear(enc_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.tokens_spatial_shape_final), decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(HieraBlock(decoder_embed_dim, decoder_embed_dim, decoder_num_heads,
                                                       norm_layer=norm, mlp_ratio=mlp_ratio) for _ in range(decoder_depth))
        self.decoder_norm = norm(decoder_embed_dim)
        self.pred_stride = self.patch_stride[-1] * self.q_stride[-1] ** self.q_pool
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.pred_stride ** min(2, len(self.q_stride)) * in_chans)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                (nn.init.xavier_uniform_ if isinstance(m, nn.Linear) else nn.init.ones_)(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embed.proj.weight.data.flatten(1))

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"mask_token", "decoder_pos_embed"}

    def reset_classifier(self, num_classes: int) -> None:  # pragma: no cover - MAE has no head
        raise TypeError("an MAE model has no classifier; create the hiera_* classifier and load the MAE weights into it")

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float,
                        mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns fused latents ``[B, kept_units, *unit_shape_final, C]`` and the mask."""
        mask = self.get_random_mask(x, mask_ratio) if mask is None else mask
        mask_grid = self.mask_grid(x)
        tokens, n_units = self.embed_tokens(x, mask)
        keep = self.stage_ends[: self.q_pool] + self.stage_ends[-1:]  # the pooled stages and the last one
        _, outs = self._blocks(tokens, n_units, keep=keep)
        fused = 0.0
        for head, idx, out in zip(self.multi_scale_fusion_heads, keep, outs):
            units = self.reroll(out, idx, n_units, mask_grid, mask)  # [B, kept, *unit, C]
            if not isinstance(head, nn.Identity):  # conv per unit: [B, n, *unit, C] -> [B, n, *unit', C']
                y = head(units.flatten(0, 1).movedim(-1, 1))
                units = y.movedim(1, -1).reshape(*units.shape[:2], *y.shape[2:], y.shape[1])
            fused = fused + units
        return self.encoder_norm(fused), mask

    def forward_decoder(self, latent: torch.Tensor, mask: torch.Tensor, mask_grid) -> tuple[torch.Tensor, torch.Tensor]:
        """``latent: [B, kept, *unit, C]`` -> predictions ``[B, N_final, P]`` in spatial order, and the
        per-token keep mask ``[B, N_final]``."""
        x = self.decoder_embed(latent)
        B, unit, C = x.shape[0], x.shape[2:-1], x.shape[-1]
        full = self.mask_token.to(x.dtype).expand(B, mask.shape[1], *unit, C).clone()
        full[mask] = x.flatten(0, 1)
        x = layout.units_to_spatial(full, mask_grid).reshape(B, -1, C)  # [B, N, C], spatial order
        token_mask = mask.view(B, mask.shape[1], *([1] * len(unit))).expand(B, mask.shape[1], *unit)
        token_mask = layout.units_to_spatial(token_mask[..., None], mask_grid).reshape(B, -1)
        grid = [g * u for g, u in zip(mask_grid, unit)]
        x = x + resample_grid(self.decoder_pos_embed, self.tokens_spatial_shape_final, grid)
        for blk in self.decoder_blocks:
            x = blk(x, 1)
        return self.decoder_pred(self.decoder_norm(x)), token_mask

    def pixel_targets(self, x: torch.Tensor, norm: bool = True) -> torch.Tensor:
        """Targets ``[B, N_final, P]`` in spatial token order. Image: patches flattened as (channel, y, x).
        Video: the first frame of each temporal token, as (y, x, channel): the official order."""
        p = self.pred_stride
        if x.dim() == 4:
            B, C, H, W = x.shape
            t = x.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
        else:
            x = x[:, :, :: self.patch_stride[0]]
            B, C, T, H, W = x.shape
            t = x.reshape(B, C, T, H // p, p, W // p, p).permute(0, 2, 3, 5, 4, 6, 1)
        t = t.reshape(B, -1, math.prod(t.shape[-3:]))
        if norm:
            t = (t - t.mean(dim=-1, keepdim=True)) / (t.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
        return t

    def forward(self, x: torch.Tensor, mask_ratio: Optional[float] = None, mask: Optional[torch.Tensor] = None):
        mask_ratio = self.default_mask_ratio if mask_ratio is None else mask_ratio
        latent, mask = self.forward_encoder(x, mask_ratio, mask)
        pred, token_keep = self.forward_decoder(latent, mask.bool(), self.mask_grid(x))
        label, pred = self.pixel_targets(x)[~token_keep], pred[~token_keep]
        return ((pred - label) ** 2).mean(), pred, label, mask
