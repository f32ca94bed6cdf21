"""Device and precision choices shared by every command."""

import functools

import torch

from hiera_video.errors import HieraVideoError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: "str | torch.device" = "auto") -> torch.device:
    """``auto`` -> cuda when available, else mps, else cpu."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        mps = torch.backends.mps.is_available()
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HieraVideoError(f"--device {name} asked for, but CUDA is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise HieraVideoError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from e


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX)."""
    try:
        return any(f in open("/proc/cpuinfo").read() for f in ("avx512_bf16", "amx_bf16"))
    except OSError:
        return False


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Compute capability >= 8.0 (``torch.cuda.is_bf16_supported()`` also counts slow emulation: V100, T4)."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Default low precision (None = fp32): bf16 on GPUs with native bf16, else fp16; bf16 on CPUs that have it."""
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None


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
    """Cast weights and inputs (CPU bf16: measured faster) rather than autocast (GPUs: norms and softmax stay fp32)."""
    return dtype is not None and device.type == "cpu"


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` (a no-op when None)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
