"""The model zoo as data: every architecture and official checkpoint. Official weights (facebookresearch/hiera,
CC-BY-NC-4.0) are downloaded on demand into the torch hub cache, never shipped. The ``*_nano_*``, ``*_micro_*`` and
video ``tiny``/``small`` variants are this project's configurations for tests and demos (no official weights)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hiera_video.data.clip_spec import IMAGENET_MEAN, IMAGENET_STD, VIDEO_MEAN, VIDEO_STD, ClipSpec

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/hiera/{file}"
LICENSE = "CC-BY-NC-4.0"

#: The official training/test clips (REFERENCE 2.2): Kinetics dense 16 frames at stride 4 (30 fps),
#: 224 crops; ImageNet 224 crops. Datasets add their views.
KINETICS_CLIP = ClipSpec(sampling="dense", num_frames=16, stride=4, target_fps=30.0, crop_size=224,
                         mean=VIDEO_MEAN, std=VIDEO_STD)
IMAGENET_CLIP = ClipSpec(num_frames=1, crop_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclass(frozen=True)
class Weights:
    """One official checkpoint: where it lives and how its clips must look."""
    tag: str
    url: str
    dataset: str  # what it was trained on, e.g. "Kinetics-400 (MAE + finetune)"
    labels: str | None  # class-name file in hiera_video/data/labels (None: no classifier)
    num_classes: int | None
    top1: float | None  # reported top-1 accuracy (K400 5x3 views / IN-1K), percent
    clip: ClipSpec
    license: str = LICENSE

    filename = property(lambda self: self.url.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "video" | "image"
    mae: bool
    kwargs: dict
    weights: dict[str, Weights] = field(default_factory=dict)
    default_weights: str | None = None
    official: bool = True
    note: str = ""

    input_size = property(lambda self: tuple(self.kwargs["input_size"]))

    @property
    def clip(self) -> ClipSpec:
        """The architecture's default clips: its input frames and size, its kind's normalisation."""
        base = KINETICS_CLIP if self.kind == "video" else IMAGENET_CLIP
        return base.with_(num_frames=self.input_size[0] if self.kind == "video" else 1, crop_size=self.input_size[-1])


VIDEO = dict(input_size=(16, 224, 224), q_stride=(1, 2, 2), mask_unit_size=(1, 8, 8), patch_kernel=(3, 7, 7),
             patch_stride=(2, 4, 4), patch_padding=(1, 3, 3), sep_pos_embed=True)
# name -> (embed_dim, num_heads, stages, K400 top-1 or None, IN-1K top-1 or None)
SIZES = {"tiny": (96, 1, (1, 2, 7, 2), None, 82.8), "small": (96, 1, (1, 2, 11, 2), None, 83.8),
         "base": (96, 1, (2, 3, 16, 3), 84.0, 84.5), "base_plus": (112, 2, (2, 3, 16, 3), 85.0, 85.2),
         "large": (144, 2, (2, 6, 36, 4), 87.3, 86.1), "huge": (256, 4, (2, 6, 36, 4), 87.8, 86.9)}
# The project's small video configs; 128, not 112: sizes must be multiples of 32 (patch stride 4 x unit 8).
SMALL_VIDEO = {"hiera_nano_8x64": dict(embed_dim=32, num_heads=1, stages=(1, 1, 2, 1), input_size=(8, 64, 64)),
               "hiera_micro_16x128": dict(embed_dim=48, num_heads=1, stages=(1, 1, 3, 1), input_size=(16, 128, 128))}
# Former names -> current names (hiera_micro_16x112 could not run at its own listed size).
ALIASES = {"hiera_micro_16x112": "hiera_micro_16x128", "mae_hiera_micro_16x112": "mae_hiera_micro_16x128"}


def _official_weights(size: str, top1: float | None, video: bool) -> tuple[dict[str, Weights], dict[str, Weights]]:
    """The weights of one official size: ``({finetuned, MAE}, {MAE})`` (classifier's, MAE model's)."""
    res, data, name, labels, n, clip = (("16x224", "k400", "Kinetics-400", "kinetics400", 400, KINETICS_CLIP) if video
                                        else ("224", "in1k", "ImageNet-1K", "imagenet1k", 1000, IMAGENET_CLIP))
    cls = Weights(f"mae_{data}_ft_{data}", OFFICIAL_URL.format(file=f"hiera_{size}_{res}.pth"),
                  f"{name} (MAE pretrain + finetune)", labels, n, top1, clip)
    mae = Weights(f"mae_{data}", OFFICIAL_URL.format(file=f"mae_hiera_{size}_{res}.pth"),
                  f"{name} (MAE pretrain only)", None, None, None, clip)
    return {cls.tag: cls, mae.tag: mae}, {mae.tag: mae}


def _build_registry() -> dict[str, ModelSpec]:
    reg: dict[str, ModelSpec] = {}
    def add(name, kind, mae, kwargs, weights=None, default=None, official=True, note=""):
        reg[name] = ModelSpec(name, kind, mae, kwargs, weights or {}, default, official, note)
    for size, (dim, heads, stages, k400, in1k) in SIZES.items():
        arch, official = dict(embed_dim=dim, num_heads=heads, stages=stages), k400 is not None
        image, video = {"input_size": (224, 224), **arch}, {**VIDEO, **arch}
        cls_w, mae_w = _official_weights(size, in1k, video=False)
        add(f"hiera_{size}_224", "image", False, {**image, "num_classes": 1000}, cls_w, "mae_in1k_ft_in1k")
        add(f"mae_hiera_{size}_224", "image", True, {**image, "q_pool": 2, "mask_ratio": 0.6}, mae_w, "mae_in1k")
        cls_w, mae_w = _official_weights(size, k400, video=True) if official else ({}, {})
        note = "" if official else "project config: no official video weights exist for this size"
        add(f"hiera_{size}_16x224", "video", False, {**video, "num_classes": 400}, cls_w,
            "mae_k400_ft_k400" if official else None, official, note)
        add(f"mae_hiera_{size}_16x224", "video", True, {**video, "q_pool": 2, "mask_ratio": 0.9}, mae_w,
            "mae_k400" if official else None, official, note)
    note = "project config for tests and demos: no official weights"
    for name, arch in SMALL_VIDEO.items():
        add(name, "video", False, {**VIDEO, **arch, "num_classes": 400}, official=False, note=note)
        add("mae_" + name, "video", True, {**VIDEO, **arch, "q_pool": 2, "mask_ratio": 0.9, "decoder_embed_dim": 64,
                                           "decoder_depth": 2, "decoder_num_heads": 2}, official=False, note=note)
    return reg


MODELS: dict[str, ModelSpec] = _build_registry()
