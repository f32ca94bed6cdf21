"""How clips are cut from a video and fed to a model (:class:`ClipSpec`), built in layers: the model's
defaults < the spec its checkpoint saved (:meth:`ClipSpec.recipe`) < a dataset's test protocol
(:data:`DATASET_PRESETS`) < the command's options. Recorded as the ``protocol`` of every result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from hiera_video.errors import HieraVideoError

# Normalisation of the official weights: Kinetics (video) and ImageNet (image) statistics.
VIDEO_MEAN = (0.45, 0.45, 0.45)
VIDEO_STD = (0.225, 0.225, 0.225)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_KINETICS = dict(sampling="dense", stride=4, temporal_views=5, spatial_views=3)
#: The paper's test protocols (REFERENCE 2.2-2.4): Kinetics dense 16x4 with 5x3 views, SSv2 segments with 1x3.
DATASET_PRESETS = {"k400": _KINETICS, "k600": _KINETICS, "k700": _KINETICS, "list": _KINETICS, "folder": _KINETICS,
                   "ssv2": dict(sampling="segment", stride=4, temporal_views=1, spatial_views=3)}
#: A video whose clips need more than this fraction of substituted (undecodable) frames counts as failed.
MAX_SUBSTITUTED_FRACTION = 0.25
#: The decoders a spec may name; not imported from ``data.decode``, which loads PyAV (``import
#: hiera_video`` builds ClipSpecs and must not load the decoders: tests/test_packaging.py).
BACKENDS = ("auto", "pyav", "decord", "torchcodec")


def check_choices(sampling: str | None = None, backend: str | None = None, decode_device: str | None = None) -> None:
    """Refuse an unknown sampling kind or decoder, or a decode device it cannot use (None: not given)."""
    if backend is not None and backend not in BACKENDS:
        raise HieraVideoError(f"unknown --backend '{backend}'; use one of {', '.join(BACKENDS)}")
    if decode_device not in (None, "cpu", "cuda"):
        raise HieraVideoError(f"unknown --decode-device '{decode_device}'; use cpu or cuda")
    if decode_device == "cuda" or backend == "torchcodec":
        import torch
        from hiera_video.data.decode import TORCHCODEC_INSTALL, torchcodec_status
    if decode_device == "cuda":  # torchcodec's NVDEC: that backend, and a GPU torch can see
        if backend not in ("torchcodec", "auto"):
            raise HieraVideoError(f"--decode-device cuda decodes with torchcodec (NVDEC), not {backend}: "
                                  "add --backend torchcodec, or drop --decode-device")
        if (problem := torchcodec_status()[1]) is not None:
            raise HieraVideoError(f"--decode-device cuda needs torchcodec: {problem}; {TORCHCODEC_INSTALL}, "
                                  "or drop --decode-device")
        if not torch.cuda.is_available():
            raise HieraVideoError("--decode-device cuda needs a CUDA GPU and torch sees none: drop --decode-device "
                                  "(decode on the CPU)")
    if backend == "torchcodec" and (problem := torchcodec_status()[1]) is not None:  # asked for: say it up front
        raise HieraVideoError(f"--backend torchcodec is unavailable: {problem}; {TORCHCODEC_INSTALL}, or use --backend pyav")
    if sampling is not None and sampling not in ("dense", "segment"):
        raise HieraVideoError(f"unknown --sampling '{sampling}'; use dense or segment")


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a video; recorded with every result so it can be reproduced."""

    sampling: str = "dense"  # dense (Kinetics) | segment (SSv2)
    num_frames: int = 16
    stride: int = 4  # dense: frame stride at target_fps
    target_fps: float = 30.0
    temporal_views: int = 1
    spatial_views: int = 1
    crop_size: int = 224
    short_side: int | None = None  # default: crop_size
    mean: tuple[float, ...] = VIDEO_MEAN
    std: tuple[float, ...] = VIDEO_STD
    backend: str = "auto"
    decode_device: str = "cpu"  # cuda: torchcodec's NVDEC (not in to_dict: the decoders a result records say it)

    def __post_init__(self):  # a bad option is one usage error, not one failure per video
        check_choices(sampling=self.sampling, backend=self.backend, decode_device=self.decode_device)
        for k in ("mean", "std"):
            object.__setattr__(self, k, tuple(getattr(self, k)))

    @classmethod
    def from_dict(cls, saved: dict | None, **defaults) -> ClipSpec:
        """A saved spec (a checkpoint's ``preprocessing``) over ``defaults``; unknown keys are ignored."""
        return cls(**{**defaults, **{k: v for k, v in (saved or {}).items() if k in {f.name for f in fields(cls)}}})

    def with_(self, **changes) -> ClipSpec:
        """A copy with ``changes``; a ``None`` value keeps the field (an option left unset)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def num_views(self) -> int:
        return self.temporal_views * self.spatial_views

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "decode_device"}
        return {**d, "mean": list(self.mean), "std": list(self.std)}

    def recipe(self) -> dict:
        """:meth:`to_dict` without the run's choices (views, decoder): what a checkpoint saves."""
        return {k: v for k, v in self.to_dict().items() if k not in ("temporal_views", "spatial_views", "backend")}
