"""Shared by the checkpoint modules: key-layout constants, tensor-dict facts, short message texts."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

FORMAT, FORMAT_VERSION = "hiera-video", 1
POS_EMBED_KEYS = ("pos_embed", "pos_embed_spatial", "pos_embed_temporal", "decoder_pos_embed")  # resampled
MAE_ONLY_PREFIXES = ("decoder_", "mask_token", "multi_scale_fusion_heads.", "encoder_norm.")
CLASSIFIER_ONLY_PREFIXES = ("norm.", "head.")
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")  # removed when on every key (DDP, wrappers, torch.compile)
#: Constructor arguments that change what the weights compute without changing their shapes.
SEMANTIC_KEYS = ("num_heads", "head_mul", "mask_unit_attn", "q_stride", "mask_unit_size", "patch_stride",
                 "patch_padding", "patch_kernel", "dim_mul", "mlp_ratio", "in_chans", "sep_pos_embed")


def few(items: Sequence[object], n: int = 3) -> str:
    """``"a, b, c (+5 more)"``."""
    items = list(items)
    return ", ".join(str(i) for i in items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def groups(keys: Iterable[str]) -> str:
    """Keys counted by top-level module, in order of appearance: ``"decoder_blocks (24), encoder_norm (2)"``."""
    return ", ".join(f"{k} ({v})" for k, v in Counter(k.split(".", 1)[0] for k in keys).items())


def shape_text(t: torch.Tensor | torch.Size | Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in (t.shape if isinstance(t, torch.Tensor) else t)) + "]"


def model_name(model: nn.Module) -> str:  # the zoo name, else the class name
    return getattr(getattr(model, "spec", None), "name", None) or type(model).__name__


def as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def block_count(sd: Mapping[str, torch.Tensor], prefix: str = "blocks.") -> int:  # blocks <prefix><i>.* in sd
    idx = {int(m.group(1)) for k in sd if (m := re.match(rf"^{re.escape(prefix)}(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def token_grid(cfg: Mapping) -> list[int] | None:
    """Token grid of a model built with constructor kwargs ``cfg`` (input size / patch stride)."""
    try:
        return [int(i) // int(s) for i, s in zip(cfg["input_size"], cfg["patch_stride"])]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
