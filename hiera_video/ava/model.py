"""The AVA detector (the paper's SlowFast/MViT-style setup): last-stage map ``[B, C, T', H', W']`` -> mean over T'
-> aligned RoIAlign 7x7 at 1/stride -> max over cells ``[K, C]`` -> dropout -> Linear ``[K, classes]``. Boxes in
input pixels: a list of ``[K_i, 4]`` per clip or ``[K, 5]`` with the clip index first. Also loads saved detectors."""

import logging
import math

import torch
import torch.nn as nn
from torchvision.ops import roi_align

from hiera_video.errors import HieraVideoError

log = logging.getLogger("hiera_video")

AVA_NUM_CLASSES = 80


def _check_boxes(boxes, batch: int, dtype: torch.dtype, device) -> list[torch.Tensor] | torch.Tensor:
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise HieraVideoError(f"boxes must be a [K, 5] tensor (batch index, x1, y1, x2, y2) or a list of [K_i, 4]; got shape {tuple(boxes.shape)}")
        return boxes.to(device=device, dtype=dtype)
    boxes = [torch.as_tensor(b) for b in boxes]
    if len(boxes) != batch:
        raise HieraVideoError(f"got boxes for {len(boxes)} clips but a batch of {batch} clips")
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            raise HieraVideoError(f"boxes of clip {i} must have shape [K, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
    return [b.to(device=device, dtype=dtype) for b in boxes]


class AvaRoIHead(nn.Module):
    """``forward(features [B, C, T', H', W'], boxes) -> logits [K, num_classes]``; ``spatial_scale``:
    input pixels -> feature cells (set by :class:`AvaDetector` from the backbone)."""

    def __init__(self, in_channels: int, num_classes: int = AVA_NUM_CLASSES, resolution: int = 7,
                 spatial_scale: float = 1 / 32, dropout: float = 0.5, sampling_ratio: int = 0, aligned: bool = True):
        super().__init__()
        self.in_channels, self.num_classes, self.resolution = int(in_channels), int(num_classes), int(resolution)
        self.spatial_scale, self.sampling_ratio, self.aligned = float(spatial_scale), int(sampling_ratio), bool(aligned)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(self.in_channels, self.num_classes)
        nn.init.normal_(self.projection.weight, std=0.01)  # SlowFast head init
        nn.init.zeros_(self.projection.bias)

    def pool(self, features: torch.Tensor, boxes) -> torch.Tensor:
        """Per-box features ``[K, C]`` (before dropout and the linear layer)."""
        if features.shape[1] != self.in_channels:
            raise HieraVideoError(f"AVA head built for {self.in_channels} channels, feature map has {features.shape[1]}")
        x = features.float().mean(dim=2)  # [B, C, H', W'], float32: boxes keep sub-cell precision under autocast
        rois = _check_boxes(boxes, x.shape[0], torch.float32, x.device)
        return roi_align(x, rois, output_size=self.resolution, spatial_scale=self.spatial_scale,
                         sampling_ratio=self.sampling_ratio, aligned=self.aligned).amax(dim=(2, 3))  # max over [K, C, r, r]

    def forward(self, features: torch.Tensor, boxes) -> torch.Tensor:
        return self.projection(self.dropout(self.pool(features, boxes)))


class AvaDetector(nn.Module):
    """Hiera + :class:`AvaRoIHead`: ``forward(clips [B, 3, T, H, W], boxes) -> logits [K, 80]``; the head gets the
    last stage in spatial order, normed by the backbone's ``norm`` (``use_norm``, as MViT). ``depth``, ``layer_id``
    (head: ``depth + 1``) and ``no_weight_decay`` follow the backbone's conventions for the optimizer."""

    def __init__(self, backbone: nn.Module, head: AvaRoIHead, use_norm: bool = True):
        super().__init__()
        info = backbone.feature_info[-1]
        if head.in_channels != info["channels"]:
            raise HieraVideoError(f"AVA head has {head.in_channels} input channels but the backbone's last stage has {info['channels']}")
        self.backbone, self.head, self.use_norm = backbone, head, use_norm
        self.feature_stride = int(info["spatial_stride"])
        head.spatial_scale = 1.0 / self.feature_stride

    @property
    def depth(self) -> int:
        return int(self.backbone.depth)

    def layer_id(self, name: str) -> int:
        return self.backbone.layer_id(name[len("backbone."):]) if name.startswith("backbone.") else self.depth + 1

    def no_weight_decay(self) -> set[str]:
        return {"backbone." + n for n in getattr(self.backbone, "no_weight_decay", lambda: ())()}

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """``forward_intermediates(...)[-1]`` (+ norm) ``[B, C, T', H', W']``, without rerolling earlier stages."""
        bb = self.backbone
        grid = bb.mask_grid(clips)
        fmap = bb.reroll(bb.forward_features(clips), bb.stage_ends[-1], math.prod(grid), grid)  # [B, T', H', W', C]
        return (bb.norm(fmap) if self.use_norm else fmap).movedim(-1, 1)

    def forward(self, clips: torch.Tensor, boxes) -> torch.Tensor:
        return self.head(self.features(clips), boxes)


def build_ava_model(name: str = "hiera_base_16x224", weights: str | None = None, num_classes: int = AVA_NUM_CLASSES,
                    dropout: float = 0.5, drop_path_rate: float = 0.4, resolution: int = 7, use_norm: bool = True,
                    **overrides) -> AvaDetector:
    """AVA detector on a zoo backbone, optionally from (Kinetics) ``weights``, its classifier dropped (listed in
    ``model.notes``); drop path 0.4 and dropout 0.5 as the paper; ``overrides`` go to the backbone."""
    from hiera_video.models.factory import create_model_and_report

    backbone, report = create_model_and_report(name, weights, drop_path_rate=drop_path_rate, **overrides)
    if getattr(backbone, "decoder_embed", None) is not None or not hasattr(backbone, "feature_info"):
        raise HieraVideoError(f"'{name}' is not an encoder with feature maps; use a classifier architecture such as hiera_base_16x224")
    if not getattr(backbone, "is_video", False):
        raise HieraVideoError(f"AVA needs a video backbone; '{name}' is an image model")
    notes = [] if report is None else [str(report).splitlines()[0]]
    head_params = [f"head.{k}" for k, _ in backbone.head.named_parameters()] if isinstance(backbone.head, nn.Module) else []
    if head_params:
        what = f"{weights}'s {backbone.num_classes}-class classifier" if weights else "the randomly initialised classifier"
        notes.append(f"dropped the backbone classification head ({', '.join(head_params)}: {what}, unused for AVA)")
    backbone.head = nn.Identity()
    info = backbone.feature_info[-1]
    head = AvaRoIHead(info["channels"], num_classes, resolution, 1.0 / info["spatial_stride"], dropout)
    model = AvaDetector(backbone, head, use_norm)
    model.notes, model.model_name = notes, name
    for line in notes:
        log.info("%s", line)
    return model


def _open_detector(weights):
    from hiera_video.models.checkpoints import load_training_state
    from hiera_video.models.factory import get_spec
    from hiera_video.models.load import Provenance, weights_clip

    ckpt = load_training_state(weights)
    meta = ckpt["meta"]
    if meta.get("task") != "ava":
        raise HieraVideoError(f"{weights} is not an AVA detector checkpoint (task: {meta.get('task', 'classification')}); "
                              "train one with: hiera-video finetune --dataset ava --weights KINETICS_WEIGHTS ...")
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("arch", {}).items()}
    model = build_ava_model(meta["model"], weights=None, drop_path_rate=0.0, **meta.get("head", {}), **arch)
    spec = get_spec(meta["model"])
    report = _load_state(model, ckpt["model"], weights)
    return model, Provenance(spec, str(weights), [], *weights_clip(spec, None, meta), meta, report)


def _load_state(model: nn.Module, sd, weights):
    """Load ``sd``; a LoadReport's ``initialised`` lists missing head tensors (refused later); other misfits raise."""
    from hiera_video.models.checkpoints.adaptation import LoadReport
    from hiera_video.models.load import HEADS

    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in own if k in sd and tuple(getattr(sd[k], "shape", ())) != tuple(own[k].shape)]
    broken = [k for k in missing if not k.startswith(HEADS["ava"])] + unexpected + mismatched
    if broken:
        raise HieraVideoError(f"{weights}: the detector's tensors do not fit the architecture it saved ({len(broken)} missing, "
                              f"unexpected or of another shape; first: {broken[0]}); the file is damaged or was not written "
                              "by hiera-video finetune --dataset ava")
    model.load_state_dict(sd, strict=False)
    return LoadReport(layout="hiera-video", source=str(weights), loaded=len(sd), initialised=missing)


def load_ava_detector(weights, device="cpu", allow_random_weights: bool = False):
    """A detector saved by ``finetune --dataset ava`` and its Provenance, through every task's weights checks."""
    from hiera_video.models.load import load

    model, prov = load("ava", weights=weights, allow_random=allow_random_weights, opener=_open_detector)
    return model.to(device).eval(), prov
