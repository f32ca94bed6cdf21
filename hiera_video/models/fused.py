"""Fused CPU inference kernels for the blocks' Linear layers (oneDNN ``mkldnn._linear_pointwise``, as
``torch.compile`` uses on CPU): bias, exact GELU and residual add inside the GEMM. Only without autograd,
on CPU, fp32/bf16; checked against the plain ops once per process. ``HIERA_VIDEO_NO_FUSED=1`` or
:func:`disabled` switch it off (tracing, export: the op has no ONNX / ``torch.export`` lowering)."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

_off = threading.local()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Use the plain PyTorch ops inside this block (this thread only; nests)."""
    _off.depth = getattr(_off, "depth", 0) + 1
    try:
        yield
    finally:
        _off.depth -= 1


def is_disabled() -> bool:
    return getattr(_off, "depth", 0) > 0


@functools.lru_cache(maxsize=None)
def supported() -> bool:
    if os.environ.get("HIERA_VIDEO_NO_FUSED") or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b, w2, b2 = (torch.randn(*s, generator=g) for s in ((8, 16), (32, 16), (32,), (16, 32), (16,)))
        with torch.no_grad():
            h = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")
            y = torch.ops.mkldnn._linear_pointwise.binary(h, x, w2, b2, "add")
            h_ref = F.gelu(F.linear(x, w, b))
        return bool(torch.allclose(h, h_ref, atol=1e-4) and torch.allclose(y, x + F.linear(h_ref, w2, b2), atol=1e-4))
    except Exception:  # op missing or failing on this build: use the plain path
        return False


def usable(x: torch.Tensor) -> bool:
    """True when the fused kernels may serve ``x`` (inference on CPU, fp32/bf16; inductor fuses on its own)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling() and not is_disabled()
            and supported())


def linear(x: torch.Tensor, lin: nn.Linear, gelu: bool = False) -> torch.Tensor:
    """``lin(x)``, or ``gelu(lin(x))`` (exact GELU), in one oneDNN call."""
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), lin.weight, lin.bias, attr, [], algorithm)
    return out.view(*x.shape[:-1], out.shape[-1])


def linear_add(x: torch.Tensor, residual: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """``residual + lin(x)`` in one oneDNN call."""
    out = torch.ops.mkldnn._linear_pointwise.binary(x.reshape(-1, x.shape[-1]), residual.reshape(-1, residual.shape[-1])
                                                    .contiguous(), lin.weight, lin.bias, "add")
    return out.view(residual.shape)
