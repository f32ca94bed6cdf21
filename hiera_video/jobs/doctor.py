"""``doctor``: what this machine offers hiera-video, and how to fix what is missing (imports stay inside the checks,
so that a broken package is one row). Only a failed ``essential`` row (Python, torch, PyAV) makes it exit non-zero."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass

import hiera_video

STATUSES = ("ok", "warn", "fail")
MIN_PYTHON = (3, 10)
SHM_MIN_BYTES = 1 << 30  # below this, DataLoader workers run out of shared memory on video batches
DISK_MIN_BYTES = 5 << 30  # the largest official checkpoint (Hiera-H) is ~2.7 GB


@dataclass
class Check:
    name: str
    value: str
    status: str = "ok"
    fix: str = ""
    essential: bool = False


def _row(bad: bool, name: str, value: str, fix: str, status: str = "warn", essential: bool = False) -> Check:
    return Check(name, value, status if bad else "ok", fix if bad else "", essential)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _package(module: str, fix: str, missing: str = "not installed", status: str = "warn", essential: bool = False) -> Check:
    try:
        return Check(module, str(getattr(importlib.import_module(module), "__version__", "installed")), essential=essential)
    except Exception:
        return Check(module, missing, status, fix, essential=essential)


def check_python() -> Check:
    return _row(sys.version_info[:2] < MIN_PYTHON, "python", f"{platform.python_version()} ({sys.executable})",
                f"hiera-video needs Python >= {'.'.join(map(str, MIN_PYTHON))}", "fail", essential=True)


def check_torch() -> list[Check]:
    import torch
    return [Check("torch", f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})", essential=True),
            _package("torchvision", "pip install torchvision (matching your torch build)", "not importable", "fail", True)]


def check_gpu() -> list[Check]:
    import torch
    from hiera_video.runtime import cpu_has_bf16, cuda_has_native_bf16
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows = [Check("cuda", f"{len(names)} GPU(s): {', '.join(names)}"),
                Check("bf16 (GPU)", "supported: --dtype auto uses bf16") if cuda_has_native_bf16(torch.device("cuda", 0))
                else Check("bf16 (GPU)", "not supported: --dtype auto uses fp16", "warn",  # emulated bf16 (V100, T4) is slow
                           "fine for inference; prefer a GPU with bf16 (Ampere or newer) for training")]
    elif not (shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0")):
        rows = [Check("cuda", f"no GPU on this machine (torch {build}): runs on the CPU")]
    else:
        cuda = torch.version.cuda
        rows = [Check("cuda", "an NVIDIA GPU is present but torch " + (f"({build}) cannot use it" if cuda else f"is a {build}"), "warn",
                      "check nvidia-smi, the driver version for this CUDA build, and CUDA_VISIBLE_DEVICES" if cuda
                      else "install a CUDA build of torch (see pytorch.org) to use the GPU")]
    return rows + [Check("bf16 (CPU)", "native (AVX512-BF16/AMX): --dtype auto uses bf16 on the CPU") if cpu_has_bf16()
                   else Check("bf16 (CPU)", "no native bf16: CPU inference runs in fp32", "warn",
                              "expected on older CPUs; fp32 is exact but slower (a CPU with AVX512-BF16/AMX or a GPU is faster)")]


def check_decoders() -> list[Check]:
    try:
        import av
        codec, ffmpeg = (getattr(av, "library_versions", {}) or {}).get("libavcodec"), getattr(av, "ffmpeg_version_info", None)
        detail = (f"FFmpeg {ffmpeg}" if ffmpeg else "FFmpeg") + (f", libavcodec {'.'.join(map(str, codec))}" if codec else "")
        rows = [Check("PyAV", f"{av.__version__} ({detail})", essential=True)]
    except Exception:
        rows = [Check("PyAV", "not installed", "fail", "pip install av (required: every video is probed with PyAV)", essential=True)]
    try:
        import decord
        rows.append(Check("decord", f"{getattr(decord, '__version__', 'installed')} (fast decoder for H.264/VP9/MJPEG)"))
    except Exception:
        rows.append(Check("decord", "not installed", "warn",
                          "pip install decord (x86-64 wheels) for faster decoding, or keep --backend pyav (works everywhere)"
                          if rows[0].status == "ok" else "pip install decord or pip install av"))
    return rows + [check_torchcodec()]


def check_torchcodec() -> Check:
    """torchcodec (optional: not installed is ok): the system FFmpeg it loaded, or why it could not (warn)."""
    from importlib.metadata import version
    from hiera_video.data.decode import TORCHCODEC_INSTALL, torchcodec_status
    ffmpeg, problem = torchcodec_status()
    try:
        tc_version = version("torchcodec")
    except Exception:
        return Check("torchcodec", "not installed (optional backend: pip install 'hiera-video[torchcodec]' + FFmpeg libraries)")
    if problem is not None:
        return Check("torchcodec", f"{tc_version}: {problem}", "warn", f"{TORCHCODEC_INSTALL}; until then --backend auto skips it")
    try:
        import torchcodec._core as core
        codec = core.get_ffmpeg_library_versions().get("libavcodec")
    except Exception:
        codec = None
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
    where, name = _existing_parent(hub_dir), "weights cache disk"  # where: must be a folder this user can write in
    if not os.path.isdir(where) or not os.access(where, os.W_OK | os.X_OK):
        what = ("is not writable" if os.path.isdir(where) else "is a file, not a folder" if os.path.isfile(where)
                else "is not a folder")
        return Check(name, f"{hub_dir}: unusable ({where} {what})", "fail",
                     "set TORCH_HOME to a writable folder (weights are downloaded to TORCH_HOME/hub)")
    try:
        free = shutil.disk_usage(where).free
    except OSError as e:
        return Check(name, f"{hub_dir}: unreadable ({e.strerror})", "warn", "set TORCH_HOME to a writable folder")
    return _row(free < min_free, name, f"{_gib(free)} free at {hub_dir}", "official checkpoints take up to 2.7 GB each: "
                f"free space, or set TORCH_HOME to a disk with {_gib(min_free)}+ free")


def check_shm(path: str = "/dev/shm", min_size: int = SHM_MIN_BYTES) -> Check:
    if not os.path.isdir(path):
        return Check("shared memory", f"{path}: not present (not Linux)")
    try:
        total = shutil.disk_usage(path).total
    except OSError as e:
        return Check("shared memory", f"{path}: unreadable ({e.strerror})", "warn", "use --workers 0 if DataLoader workers crash")
    return _row(total < min_size, "shared memory", f"{_gib(total)} at {path}",
                "DataLoader workers pass video batches through /dev/shm and crash ('bus error') when it is small: "
                "use --workers 0, or give the container more (docker run --shm-size=8g / --ipc=host)")


def check_threads() -> Check:
    import torch
    cpus, threads = os.cpu_count() or 1, torch.get_num_threads()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    return _row(threads > usable, "cpu threads", f"torch {threads} threads, {usable} usable CPUs ({cpus} in the machine)",
                f"more threads than usable CPUs slows everything down: export OMP_NUM_THREADS={usable}")


def check_fused() -> Check:
    from hiera_video.models import fused
    if fused.supported():
        return Check("fused CPU kernels", "oneDNN linear+GELU/add epilogues: on (CPU inference)")
    if os.environ.get("HIERA_VIDEO_NO_FUSED"):
        return Check("fused CPU kernels", "off (HIERA_VIDEO_NO_FUSED is set)")
    return Check("fused CPU kernels", "not available in this torch build: plain ops are used", "warn",
                 "CPU inference is slower; a torch build with oneDNN (the official wheels) enables them")


def check_default_weights(model: str = "hiera_base_16x224", tag: str = "mae_k400_ft_k400") -> Check:
    from hiera_video.models import get_spec
    from hiera_video.models.checkpoints import cache_path
    w = get_spec(model).weights[tag]
    if os.path.isfile(path := cache_path(w.url)) and os.path.getsize(path) > 0:
        return Check("default weights", f"{model} {tag}: cached at {path} ({os.path.getsize(path) / 2**20:.0f} MiB)")
    return Check("default weights", f"{model} {tag}: not cached ({path})", "warn",
                 f"downloaded on first use (needs internet); offline: fetch {w.url} elsewhere and put it at {path}, "
                 "or pass --weights /path/to/file")


def check_onnx() -> list[Check]:
    return [_package("onnx", "pip install onnx (export --format onnx checks the graph with it)"),
            _package("onnxruntime", "pip install onnxruntime (export --format onnx runs its numerical check with it)")]


def check_hiera_video() -> Check:
    return Check("hiera-video", f"{hiera_video.__version__} ({os.path.dirname(hiera_video.__file__)})", essential=True)


CHECKS = [check_hiera_video, check_python, check_torch, check_gpu, check_decoders, check_threads, check_fused, check_shm,
          check_cache_disk, check_default_weights, check_onnx]


def run_checks(checks: list | None = None) -> list[Check]:
    """Every check; a check that crashes becomes a ``warn`` row instead of stopping the others."""
    rows = []
    for fn in checks or CHECKS:
        try:
            out = fn()
        except Exception as e:
            out = Check(fn.__name__.removeprefix("check_"), f"check failed: {' '.join(str(e).split())[:160]}", "warn",
                        "report this with the output of 'hiera-video --debug doctor'")
        rows += out if isinstance(out, list) else [out]
    return rows


def healthy(rows: list[Check]) -> bool:
    return not any(r.essential and r.status == "fail" for r in rows)


def report(rows: list[Check]) -> dict:  # doctor --json
    return dict(ok=healthy(rows), summary={s: sum(r.status == s for r in rows) for s in STATUSES}, checks=[asdict(r) for r in rows])
