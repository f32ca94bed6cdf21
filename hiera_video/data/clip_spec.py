"""One clip recipe: how clips are cut from a video and fed to a model.

A :class:`ClipSpec` is built in layers, each overriding the one before: the model's defaults
(frames and crop from its input, mean/std from its weights) < the spec its checkpoint saved
(``meta["preprocessing"]``, :meth:`ClipSpec.recipe`) < a dataset's test protocol
(:data:`DATASET_PRESETS`) < the command's options. The same spec makes the test views
(:func:`~hiera_video.data.transforms.make_views`), the training clips, and the ``protocol``
record of every result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

from hiera_video.errors import HieraVideoError

if TYPE_CHECKING:
    import torch

    from hiera_video.data.transforms import ViewInfo

# Normalisation of the official weights: Kinetics (video) and ImageNet (image) statistics.
VIDEO_MEAN = (0.45, 0.45, 0.45)
VIDEO_STD = (0.225, 0.225, 0.225)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_KINETICS = dict(sampling="dense", stride=4, temporal_views=5, spatial_views=3)
#: The paper's test protocols per dataset (REFERENCE 2.2-2.4), as overrides of a model's spec:
#: Kinetics dense 16x4 with 5x3 views, SSv2 segments with 1x3.
DATASET_PRESETS = {
    "k400": _KINETICS, "k600": _KINETICS, "k700": _KINETICS,
    "ssv2": dict(sampling="segment", stride=4, temporal_views=1, spatial_views=3),
    "list": _KINETICS, "folder": _KINETICS,
}

#: A video whose clips need more than this fraction of copied frames (frames that could not be
#: decoded are replaced by the nearest decodable one) counts as failed, not scored.
MAX_SUBSTITUTED_FRACTION = 0.25


#: The video decoders a spec may name (``data.decode`` reads them). Listed here, not imported
#: from ``data.decode``: that module loads PyAV, and ``ClipSpec`` is built when the model zoo is
#: imported, so ``import hiera_video`` would load the decoders (tests/test_packaging.py).
BACKENDS = ("auto", "pyav", "decord", "torchcodec")


def check_choices(sampling: str | None = None, backend: str | None = None) -> None:
    """Refuse an unknown sampling kind or decoder (None: not given); commands call it before
    any work, :class:`ClipSpec` on construction."""
    if backend is not None and backend not in BACKENDS:
        raise HieraVideoError(f"unknown --backend '{backend}'; use one of {', '.join(BACKENDS)}")
    if backend == "torchcodec":  # asked for explicitly: say up front when it cannot load (loads it once)
        from hiera_video.data.decode import TORCHCODEC_INSTALL, torchcodec_status

        problem = torchcodec_status()[1]
        if problem is not None:
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

    def __post_init__(self):
        # Checked once here, so a bad option is a usage error instead of one failure per video.
        check_choices(sampling=self.sampling, backend=self.backend)
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))

    @classmethod
    def from_dict(cls, saved: dict | None, **defaults) -> ClipSpec:
        """A saved spec (a checkpoint's ``preprocessing`` or :meth:`to_dict`) over ``defaults``;
        keys that are no field (e.g. AVA's ``test_view``) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{**defaults, **{k: v for k, v in (saved or {}).items() if k in names}})

    def with_(self, **changes) -> ClipSpec:
        """A copy with ``changes``; a ``None`` value keeps the field (an option left unset)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def num_views(self) -> int:
        return self.temporal_views * self.spatial_views

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def recipe(self) -> dict:
        """:meth:`to_dict` without the run's choices (views, decoder): what a checkpoint saves."""
        d = self.to_dict()
        for k in ("temporal_views", "spatial_views", "backend"):
            d.pop(k)
        return d

    def views(self, source) -> tuple[torch.Tensor, list[ViewInfo]]:
        """All views of one video (path or open reader), decoded once: ``[V, 3, T, S, S]``."""
        from hiera_video.data.transforms import make_views  # decoders and torchvision: only when clips are cut

        return make_views(source, self)

    def decode(self, source) -> tuple[torch.Tensor, tuple[int, int]]:
        """:meth:`views` plus ``(substituted, sampled)``: how many of the distinct frames
        decoded for the views could not be decoded and were replaced by the nearest decodable
        frame. Above :data:`MAX_SUBSTITUTED_FRACTION` of them the video is not scored: raises
        :class:`HieraVideoError` (the caller lists the video as failed)."""
        views, infos = self.views(source)
        sampled = max((getattr(i, "sampled", 0) for i in infos), default=0)
        substituted = max((getattr(i, "substituted", 0) for i in infos), default=0)
        if sampled and substituted > MAX_SUBSTITUTED_FRACTION * sampled:
            raise HieraVideoError(
                f"cannot use video '{getattr(source, 'path', source)}': {substituted} of the {sampled} frames its "
                f"clips need could not be decoded (more than {MAX_SUBSTITUTED_FRACTION:.0%}); the file is damaged: "
                "re-encode or re-download it"
            )
        return views, (substituted, sampled)
