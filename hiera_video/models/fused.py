"""Fused CPU inference kernels for the block's Linear layers (oneDNN, via PyTorch).

On CPU, ``F.linear`` copies the bias into the output, runs the GEMM on top of it, and the
GELU or residual add that follows reads and writes the whole activation again. oneDNN can
apply the bias, the exact (erf) GELU and the residual add inside the GEMM epilogue; PyTorch
exposes this as ``torch.ops.mkldnn._linear_pointwise`` (the op ``torch.compile`` uses on
CPU). We use it only where it cannot change training: no autograd, CPU tensors, fp32 or
bf16. It is checked against the plain ops once per process and switched off if it is missing
or disagrees; ``HIERA_VIDEO_NO_FUSED=1`` switches it off by hand, and :func:`disabled`
switches it off for a block of code (tracing and export: the oneDNN op is inference-only and
has no ONNX / ``torch.export`` lowering, so exported graphs must hold the plain ops).
"""

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
    depth = getattr(_off, "depth", 0)
    _off.depth = depth + 1
    try:
        yield
    finally:
        _off.depth = depth


def is_disabled() -> bool:
    """True inside :func:`disabled`."""
    return getattr(_off, "depth", 0) > 0


@functools.lru_cache(maxsize=None)
def supported() -> bool:
    if os.environ.get("HIERA_VIDEO_NO_FUSED"):
        return False
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 16, generator=g)
        w, b = torch.randn(32, 16, generator=g), torch.randn(32, generator=g)
        w2, b2 = torch.randn(16, 32, generator=g), torch.randn(16, generator=g)
        with torch.no_grad():
            h = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")
            y = torch.ops.mkldnn._linear_pointwise.binary(h, x, w2, b2, "add")
            h_ref = F.gelu(F.linear(x, w, b))
            y_ref = x + F.linear(h_ref, w2, b2)
        return bool(torch.allclose(h, h_ref, atol=1e-4) and torch.allclose(y, y_ref, atol=1e-4))
    except Exception:  # op missing or failing on this build: use the plain path
        return False


def usable(x: torch.Tensor) -> bool:
    """True when the fused kernels may serve ``x`` (inference on CPU, fp32/bf16)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()  # inductor fuses on its own (and needs constant weights)
        and not is_disabled()
        and supported()
    )


def linear(x: torch.Tensor, lin: nn.Linear, gelu: bool = False) -> torch.Tensor:
    """``lin(x)``, or ``gelu(lin(x))`` (exact GELU), in one oneDNN call (bias inside the GEMM instead of a separate copy)."""
    attr, algorithm = ("gelu", "none") if gelu else ("none", "")
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), lin.weight, lin.bias, attr, [], algorithm)
    return out.view(*x.shape[:-1], out.shape[-1])


def linear_add(x: torch.Tensor, residual: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """``residual + lin(x)`` in one oneDNN call."""
    out = torch.ops.mkldnn._linear_pointwise.binary(
        x.reshape(-1, x.shape[-1]), residual.reshape(-1, residual.shape[-1]).contiguous(), lin.weight, lin.bias, "add"
    )
    return out.view(residual.shape)
