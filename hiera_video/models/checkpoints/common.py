"""What every checkpoint module shares: key-layout constants, tensor-dict facts and the
short texts error messages are made of."""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

FORMAT = "hiera-video"
FORMAT_VERSION = 1

#: Position embeddings that are resampled when the token grid differs.
POS_EMBED_KEYS = ("pos_embed", "pos_embed_spatial", "pos_embed_temporal", "decoder_pos_embed")
#: Key prefixes that exist only in MAE checkpoints (decoder, fusion heads, encoder norm).
MAE_ONLY_PREFIXES = ("decoder_", "mask_token", "multi_scale_fusion_heads.", "encoder_norm.")
#: Key prefixes that exist only in classifier checkpoints.
CLASSIFIER_ONLY_PREFIXES = ("norm.", "head.")
#: Prefixes removed when every key carries them (DDP, wrappers, torch.compile).
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")
#: Constructor arguments that change what the weights compute without changing their shapes.
SEMANTIC_KEYS = (
    "num_heads", "head_mul", "mask_unit_attn", "q_stride", "mask_unit_size", "patch_stride",
    "patch_padding", "patch_kernel", "dim_mul", "mlp_ratio", "in_chans", "sep_pos_embed",
)


# ---------------------------------------------------------------------- texts
def one_line(text: object, limit: int = 200) -> str:
    """First line of ``text``, ANSI codes removed, at most ``limit`` characters."""
    s = re.sub(r"\x1b\[[0-9;]*m", "", str(text)).strip()
    s = s.splitlines()[0] if s else ""
    return s if len(s) <= limit else s[: limit - 3] + "..."


def few(items: Sequence[object], n: int = 3) -> str:
    """``"a, b, c (+5 more)"``."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def groups(keys: Iterable[str]) -> str:
    """Keys summarised by their top-level module: ``"decoder_blocks (24), encoder_norm (2)"``."""
    counts = Counter(k.split(".", 1)[0] for k in keys)  # in order of first appearance
    return ", ".join(f"{k} ({v})" for k, v in counts.items())


def shape_text(t: torch.Tensor | torch.Size | Sequence[int]) -> str:
    """``"[1, 3136, 96]"``."""
    dims = t.shape if isinstance(t, torch.Tensor) else t
    return "[" + ", ".join(str(int(d)) for d in dims) + "]"


def model_name(model: nn.Module) -> str:
    """The zoo name of ``model``, else its class name."""
    spec = getattr(model, "spec", None)
    return getattr(spec, "name", None) or type(model).__name__


# ---------------------------------------------------------------------- facts
def as_list(v) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def block_count(sd: Mapping[str, torch.Tensor], prefix: str = "blocks.") -> int:
    """Number of blocks ``<prefix><i>.*`` in a state dict."""
    idx = {int(m.group(1)) for k in sd if (m := re.match(rf"^{re.escape(prefix)}(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def token_grid(cfg: Mapping) -> list[int] | None:
    """Token grid of a model built with constructor kwargs ``cfg`` (input size / patch stride)."""
    try:
        return [int(i) // int(s) for i, s in zip(cfg["input_size"], cfg["patch_stride"])]
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None

