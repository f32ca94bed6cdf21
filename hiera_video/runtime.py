"""Device and precision choices shared by every command."""

from __future__ import annotations

import functools

import torch

from hiera_video.errors import HieraVideoError


def pick_device(name: "str | torch.device" = "auto") -> torch.device:
    """``auto`` -> cuda when available, else mps, else cpu."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HieraVideoError(f"--device {name} asked for, but CUDA is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise HieraVideoError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from e


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True on GPUs with native bf16 (compute capability >= 8.0: Ampere and later).
    ``torch.cuda.is_bf16_supported()`` also counts emulation (V100, T4), which is slow."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The default low precision on ``device`` (None = stay in fp32): bf16 on GPUs with
    native bf16, else fp16 (with a grad scaler when training); bf16 on CPUs that have it."""
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None


DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """``auto`` -> :func:`autocast_dtype`; ``fp32`` -> None; ``bf16``/``fp16`` as given."""
    if name == "auto":
        return autocast_dtype(device)
    if name not in DTYPES:
        raise HieraVideoError(f"unknown dtype '{name}': use auto, fp32, bf16 or fp16")
    if name == "fp16" and device.type == "cpu":
        raise HieraVideoError("fp16 autocast is not supported on CPU; use --dtype bf16 or fp32")
    return DTYPES[name]


def casts_weights(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Inference in ``dtype`` by casting weights and inputs (CPU bf16: measured faster, no
    per-layer casts) rather than autocast (GPUs: norms, softmax and reductions stay fp32, so
    fp16 cannot overflow in large models)."""
    return dtype is not None and device.type == "cpu"


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` context for ``dtype`` (a no-op context when ``dtype`` is None)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
