"""``doctor``: what this machine offers hiera-video, and how to fix what is missing.

Every check returns a :class:`Check` row: a value, a status (``ok`` / ``warn`` / ``fail``)
and, for anything not ``ok``, a fix. ``essential`` rows are the ones without which no command
works (Python, torch, a video decoder); only they make ``doctor`` exit non-zero.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from typing import Callable

STATUSES = ("ok", "warn", "fail")
MIN_PYTHON = (3, 10)
SHM_MIN_BYTES = 1 << 30  # below this, DataLoader workers run out of shared memory on video batches
DISK_MIN_BYTES = 5 << 30  # the largest official checkpoint (Hiera-H) is ~2.7 GB
DEFAULT_MODEL, DEFAULT_WEIGHTS = "hiera_base_16x224", "mae_k400_ft_k400"


@dataclass
class Check:
    name: str
    value: str
    status: str = "ok"
    fix: str = ""
    essential: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _package(module: str, fix: str, missing: str = "not installed", status: str = "warn", essential: bool = False) -> Check:
    """The version of an importable package, or ``missing`` with ``status`` and ``fix``."""
    try:
        version = str(getattr(importlib.import_module(module), "__version__", "installed"))
    except Exception:
        return Check(module, missing, status, fix, essential=essential)
    return Check(module, version, essential=essential)


# ====================================================================== checks
def check_python() -> Check:
    value = f"{platform.python_version()} ({sys.executable})"
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", value, "fail", f"hiera-video needs Python >= {'.'.join(map(str, MIN_PYTHON))}", essential=True)
    return Check("python", value, essential=True)


def check_torch() -> list[Check]:
    import torch

    return [Check("torch", f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})", essential=True),
            _package("torchvision", "pip install torchvision (matching your torch build)", "not importable", "fail", True)]


def check_gpu() -> list[Check]:
    import torch

    from hiera_video.runtime import cpu_has_bf16, cuda_has_native_bf16

    rows = []
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(Check("cuda", f"{len(names)} GPU(s): {', '.join(names)}"))
        if cuda_has_native_bf16(torch.device("cuda", 0)):  # native only: emulated bf16 (V100, T4) is slow
            rows.append(Check("bf16 (GPU)", "supported: --dtype auto uses bf16"))
        else:
            rows.append(Check("bf16 (GPU)", "not supported: --dtype auto uses fp16", "warn", "fine for inference; prefer a GPU with bf16 (Ampere or newer) for training"))
    else:
        has_nvidia = bool(shutil.which("nvidia-smi")) or os.path.exists("/dev/nvidia0")
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        if not has_nvidia:
            rows.append(Check("cuda", f"no GPU on this machine (torch {build}): runs on the CPU"))
        elif torch.version.cuda:
            rows.append(Check("cuda", f"an NVIDIA GPU is present but torch ({build}) cannot use it", "warn",
                              "check nvidia-smi, the driver version for this CUDA build, and CUDA_VISIBLE_DEVICES"))
        else:
            rows.append(Check("cuda", f"an NVIDIA GPU is present but torch is a {build}", "warn",
                              "install a CUDA build of torch (see pytorch.org) to use the GPU"))
    if cpu_has_bf16():
        rows.append(Check("bf16 (CPU)", "native (AVX512-BF16/AMX): --dtype auto uses bf16 on the CPU"))
    else:
        rows.append(Check("bf16 (CPU)", "no native bf16: CPU inference runs in fp32", "warn",
                          "expected on older CPUs; fp32 is exact but slower (a CPU with AVX512-BF16/AMX or a GPU is faster)"))
    return rows


def check_decoders() -> list[Check]:
    rows = []
    av_ok = False
    try:
        import av

        libs = getattr(av, "library_versions", {}) or {}
        codec = libs.get("libavcodec")
        ffmpeg = getattr(av, "ffmpeg_version_info", None)
        detail = f"FFmpeg {ffmpeg}" if ffmpeg else "FFmpeg"
        if codec:
            detail += f", libavcodec {'.'.join(map(str, codec))}"
        rows.append(Check("PyAV", f"{av.__version__} ({detail})", essential=True))
        av_ok = True
    except Exception:
        rows.append(Check("PyAV", "not installed", "fail", "pip install av (required: every video is probed with PyAV)", essential=True))
    try:
        import decord

        rows.append(Check("decord", f"{getattr(decord, '__version__', 'installed')} (fast decoder for H.264/VP9/MJPEG)"))
    except Exception:
        rows.append(Check("decord", "not installed", "warn",
                          "pip install decord (x86-64 wheels) for faster decoding, or keep --backend pyav (works everywhere)"
                          if av_ok else "pip install decord or pip install av"))
    rows.append(check_torchcodec())
    return rows


def check_torchcodec() -> Check:
    """torchcodec (optional backend): the FFmpeg it loaded from the system, or why it could not.

    Not installed is fine (``ok``: it is optional); installed without loadable FFmpeg 4-8
    libraries is a warning, with the install commands."""
    from hiera_video.data.decode import TORCHCODEC_INSTALL, torchcodec_status

    ffmpeg, problem = torchcodec_status()
    try:
        from importlib.metadata import version

        tc_version = version("torchcodec")
    except Exception:
        tc_version = None
    if tc_version is None:
        return Check("torchcodec", "not installed (optional backend: pip install 'hiera-video[torchcodec]' + FFmpeg libraries)")
    if problem is not None:
        return Check("torchcodec", f"{tc_version}: {problem}", "warn", f"{TORCHCODEC_INSTALL}; until then --backend auto skips it")
    libs = {}
    try:
        import torchcodec._core as core

        libs = core.get_ffmpeg_library_versions()
    except Exception:
        pass
    codec = libs.get("libavcodec")
    detail = f"FFmpeg {ffmpeg} from the system" + (f", libavcodec {'.'.join(map(str, codec))}" if codec else "")
    return Check("torchcodec", f"{tc_version} ({detail})")


def _existing_parent(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


def check_cache_disk(hub_dir: str | None = None, min_free: int = DISK_MIN_BYTES) -> Check:
    import torch

    hub_dir = hub_dir or torch.hub.get_dir()
    # Free space is no use if no file can be made there: the cache (or the first part of its path
    # that exists, e.g. TORCH_HOME) must be a folder this user can write in.
    where = _existing_parent(hub_dir)
    fix = "set TORCH_HOME to a writable folder (weights are downloaded to TORCH_HOME/hub)"
    if not os.path.isdir(where):
        what = f"{where} is a file, not a folder" if os.path.isfile(where) else f"{where} is not a folder"
        return Check("weights cache disk", f"{hub_dir}: unusable ({what})", "fail", fix)
    if not os.access(where, os.W_OK | os.X_OK):
        return Check("weights cache disk", f"{hub_dir}: unusable ({where} is not writable)", "fail", fix)
    try:
        free = shutil.disk_usage(_existing_parent(hub_dir)).free
    except OSError as e:
        return Check("weights cache disk", f"{hub_dir}: unreadable ({e.strerror})", "warn", "set TORCH_HOME to a writable folder")
    value = f"{_gib(free)} free at {hub_dir}"
    if free < min_free:
        return Check("weights cache disk", value, "warn",
                     f"official checkpoints take up to 2.7 GB each: free space, or set TORCH_HOME to a disk with {_gib(min_free)}+ free")
    return Check("weights cache disk", value)


def check_shm(path: str = "/dev/shm", min_size: int = SHM_MIN_BYTES) -> Check:
    if not os.path.isdir(path):
        return Check("shared memory", f"{path}: not present (not Linux)")
    try:
        total = shutil.disk_usage(path).total
    except OSError as e:
        return Check("shared memory", f"{path}: unreadable ({e.strerror})", "warn", "use --workers 0 if DataLoader workers crash")
    value = f"{_gib(total)} at {path}"
    if total < min_size:
        return Check("shared memory", value, "warn",
                     "DataLoader workers pass video batches through /dev/shm and crash ('bus error') when it is small: "
                     "use --workers 0, or give the container more (docker run --shm-size=8g / --ipc=host)")
    return Check("shared memory", value)


def check_threads() -> Check:
    import torch

    cpus = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = cpus
    threads = torch.get_num_threads()
    value = f"torch {threads} threads, {usable} usable CPUs ({cpus} in the machine)"
    if threads > usable:
        return Check("cpu threads", value, "warn",
                     f"more threads than usable CPUs slows everything down: export OMP_NUM_THREADS={usable}")
    return Check("cpu threads", value)


def check_fused() -> Check:
    from hiera_video.models import fused

    if fused.supported():
        return Check("fused CPU kernels", "oneDNN linear+GELU/add epilogues: on (CPU inference)")
    if os.environ.get("HIERA_VIDEO_NO_FUSED"):
        return Check("fused CPU kernels", "off (HIERA_VIDEO_NO_FUSED is set)")
    return Check("fused CPU kernels", "not available in this torch build: plain ops are used", "warn",
                 "CPU inference is slower; a torch build with oneDNN (the official wheels) enables them")


def check_default_weights(model: str = DEFAULT_MODEL, tag: str = DEFAULT_WEIGHTS) -> Check:
    from hiera_video.models import get_spec
    from hiera_video.models.checkpoints import cache_path

    w = get_spec(model).weights[tag]
    path = cache_path(w.url)
    name = "default weights"
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        return Check(name, f"{model} {tag}: cached at {path} ({os.path.getsize(path) / 2**20:.0f} MiB)")
    return Check(name, f"{model} {tag}: not cached ({path})", "warn",
                 f"downloaded on first use (needs internet); offline: fetch {w.url} elsewhere and put it at {path}, "
                 "or pass --weights /path/to/file")


def check_onnx() -> list[Check]:
    return [_package("onnx", "pip install onnx (export --format onnx checks the graph with it)"),
            _package("onnxruntime", "pip install onnxruntime (export --format onnx runs its numerical check with it)")]


def check_hiera_video() -> Check:
    import hiera_video

    return Check("hiera-video", f"{hiera_video.__version__} ({os.path.dirname(hiera_video.__file__)})", essential=True)


CHECKS: list[Callable[[], Check | list[Check]]] = [
    check_hiera_video, check_python, check_torch, check_gpu, check_decoders, check_threads, check_fused,
    check_shm, check_cache_disk, check_default_weights, check_onnx,
]


def run_checks(checks: list[Callable[[], Check | list[Check]]] | None = None) -> list[Check]:
    """Every check; a check that crashes becomes a ``warn`` row instead of stopping the others."""
    rows: list[Check] = []
    for fn in checks or CHECKS:
        try:
            out = fn()
        except Exception as e:  # a diagnostic must never take the report down
            out = Check(fn.__name__.removeprefix("check_"), f"check failed: {' '.join(str(e).split())[:160]}", "warn",
                        "report this with the output of 'hiera-video --debug doctor'")
        rows += out if isinstance(out, list) else [out]
    return rows


def healthy(rows: list[Check]) -> bool:
    """False when an essential check failed."""
    return not any(r.essential and r.status == "fail" for r in rows)


def report(rows: list[Check]) -> dict:
    """The JSON document of ``doctor --json``."""
    return dict(
        ok=healthy(rows),
        summary={s: sum(r.status == s for r in rows) for s in STATUSES},
        checks=[r.to_json() for r in rows],
    )
