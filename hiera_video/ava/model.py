"""Task heads on top of the Hiera encoder: the AVA action-detection RoI head and detector.

AVA head (SlowFast / MViT style, as in the Hiera paper's AVA setup)::

    last-stage map [B, C, T', H', W'] (spatially ordered)
      -> mean over T'                           [B, C, H', W']
      -> RoIAlign 7x7 on the person boxes        [K, C, 7, 7]   (aligned=True, sampling_ratio 0,
                                                                  spatial_scale = 1 / stride)
      -> max over the 7x7 cells                  [K, C]
      -> dropout -> Linear                       [K, num_classes] logits

Sigmoid belongs to the loss (BCE with logits) and to evaluation. Boxes are in input-pixel
coordinates of the clip: either a list with one ``[K_i, 4]`` tensor (x1, y1, x2, y2) per
clip, or one ``[K, 5]`` tensor whose first column is the clip index in the batch.
"""

from __future__ import annotations

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
        if boxes.numel() and (boxes[:, 0].min() < 0 or boxes[:, 0].max() >= batch):
            raise HieraVideoError(f"box batch indices must be in 0..{batch - 1}")
        return boxes.to(device=device, dtype=dtype)
    boxes = list(boxes)
    if len(boxes) != batch:
        raise HieraVideoError(f"got boxes for {len(boxes)} clips but a batch of {batch} clips")
    out = []
    for i, b in enumerate(boxes):
        b = torch.as_tensor(b)
        if b.dim() != 2 or b.shape[1] != 4:
            raise HieraVideoError(f"boxes of clip {i} must have shape [K, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
        out.append(b.to(device=device, dtype=dtype))
    return out


class AvaRoIHead(nn.Module):
    """RoI head for AVA: ``forward(features [B, C, T', H', W'], boxes) -> logits [K, num_classes]``.

    ``spatial_scale`` maps input pixels to feature cells (1/32 for Hiera's last stage);
    :class:`AvaDetector` sets it from the backbone's ``feature_info``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int = AVA_NUM_CLASSES,
        resolution: int = 7,
        spatial_scale: float = 1 / 32,
        dropout: float = 0.5,
        sampling_ratio: int = 0,
        aligned: bool = True,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.resolution = int(resolution)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(self.in_channels, self.num_classes)
        nn.init.normal_(self.projection.weight, std=0.01)  # SlowFast head init
        nn.init.zeros_(self.projection.bias)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, resolution={self.resolution}, "
                f"spatial_scale={self.spatial_scale:g}, sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")

    def pool(self, features: torch.Tensor, boxes) -> torch.Tensor:
        """Per-box features ``[K, C]`` (before dropout and the linear layer)."""
        if features.dim() != 5:
            raise HieraVideoError(f"AVA head expects a feature map [B, C, T, H, W], got shape {tuple(features.shape)}")
        if features.shape[1] != self.in_channels:
            raise HieraVideoError(f"AVA head built for {self.in_channels} channels, feature map has {features.shape[1]}")
        # temporal average: [B, C, H', W']; RoIAlign in float32 so that box coordinates keep
        # sub-pixel precision under bf16/fp16 autocast (the map is small at stride 32)
        x = features.float().mean(dim=2)
        rois = _check_boxes(boxes, x.shape[0], torch.float32, x.device)
        out = roi_align(x, rois, output_size=self.resolution, spatial_scale=self.spatial_scale,
                        sampling_ratio=self.sampling_ratio, aligned=self.aligned)  # [K, C, r, r]
        return out.amax(dim=(2, 3))

    def forward(self, features: torch.Tensor, boxes) -> torch.Tensor:
        return self.projection(self.dropout(self.pool(features, boxes)))


class AvaDetector(nn.Module):
    """Hiera backbone + :class:`AvaRoIHead`: ``forward(clips [B, 3, T, H, W], boxes) -> logits [K, 80]``.

    The backbone's last-stage tokens are put back in spatial order (``reroll``), optionally
    layer-normalised with the backbone's final ``norm`` (``use_norm``, as MViT applies its
    final norm before the AVA head; with Kinetics weights this reuses the trained norm), and
    fed to the head. The head's ``spatial_scale`` is set to ``1 / feature_info[-1]
    ["spatial_stride"]`` of the backbone. The backbone's classification head is not used
    (and is removed by :func:`build_ava_model`).

    For the optimizer: ``depth``, ``layer_id(name)`` (backbone ids; the RoI head gets
    ``depth + 1``) and ``no_weight_decay()`` follow the backbone's conventions.
    """

    def __init__(self, backbone: nn.Module, head: AvaRoIHead, use_norm: bool = True):
        super().__init__()
        info = backbone.feature_info[-1]
        if head.in_channels != info["channels"]:
            raise HieraVideoError(
                f"AVA head has {head.in_channels} input channels but the backbone's last stage has {info['channels']}"
            )
        self.backbone = backbone
        self.head = head
        self.use_norm = use_norm
        stride = int(info["spatial_stride"])
        if not math.isclose(head.spatial_scale, 1.0 / stride):
            log.debug("AVA head spatial_scale %g replaced by the backbone's 1/%d", head.spatial_scale, stride)
        head.spatial_scale = 1.0 / stride
        self.feature_stride = stride

    @property
    def depth(self) -> int:
        return int(self.backbone.depth)

    def layer_id(self, name: str) -> int:
        if name.startswith("backbone."):
            return self.backbone.layer_id(name[len("backbone."):])
        return self.depth + 1

    def no_weight_decay(self) -> set[str]:
        nwd = getattr(self.backbone, "no_weight_decay", None)
        return {"backbone." + n for n in (nwd() if nwd else ())}

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """Last-stage map ``[B, C, T', H', W']`` in spatial order.

        Same values as ``backbone.forward_intermediates(clips, channels_last=False)[-1]`` (plus
        the optional norm) without rerolling the earlier stages.
        """
        bb = self.backbone
        tokens = bb.forward_features(clips)  # [B, N, C], window-major
        grid = bb.mask_grid(clips)
        fmap = bb.reroll(tokens, bb.stage_ends[-1], math.prod(grid), grid)  # [B, T', H', W', C]
        if self.use_norm:
            fmap = bb.norm(fmap)
        return fmap.movedim(-1, 1)

    def forward(self, clips: torch.Tensor, boxes) -> torch.Tensor:
        return self.head(self.features(clips), boxes)


def build_ava_model(
    name: str = "hiera_base_16x224",
    weights: str | None = None,
    num_classes: int = AVA_NUM_CLASSES,
    dropout: float = 0.5,
    drop_path_rate: float = 0.4,
    resolution: int = 7,
    use_norm: bool = True,
    **overrides,
) -> AvaDetector:
    """AVA detector on a zoo backbone (``hiera_video.create_model``), optionally initialised
    from ``weights`` (e.g. ``"mae_k400_ft_k400"``: the paper initialises AVA from Kinetics
    finetuned weights). The backbone's classification head is dropped (its weights, if any,
    are reported as unused); ``notes`` on the returned model list what happened.
    ``drop_path_rate`` 0.4 and ``dropout`` 0.5 are the paper's AVA recipe; ``overrides`` go
    to the backbone constructor (e.g. ``input_size``)."""
    from hiera_video.models.factory import create_model_and_report

    backbone, report = create_model_and_report(name, weights, drop_path_rate=drop_path_rate, **overrides)
    if getattr(backbone, "decoder_embed", None) is not None or not hasattr(backbone, "feature_info"):
        raise HieraVideoError(f"'{name}' is not an encoder with feature maps; use a classifier architecture such as hiera_base_16x224")
    if not getattr(backbone, "is_video", False):
        raise HieraVideoError(f"AVA needs a video backbone; '{name}' is an image model")
    notes = []
    if report is not None:
        notes.append(str(report).splitlines()[0])
    head_params = [f"head.{k}" for k, _ in backbone.head.named_parameters()] if isinstance(backbone.head, nn.Module) else []
    if head_params:
        what = f"{weights}'s {backbone.num_classes}-class classifier" if weights else "the randomly initialised classifier"
        notes.append(f"dropped the backbone classification head ({', '.join(head_params)}: {what}, unused for AVA)")
    backbone.head = nn.Identity()
    info = backbone.feature_info[-1]
    head = AvaRoIHead(info["channels"], num_classes, resolution, 1.0 / info["spatial_stride"], dropout)
    model = AvaDetector(backbone, head, use_norm=use_norm)
    model.notes = notes
    model.model_name = name
    for line in notes:
        log.info("%s", line)
    return model
