"""Video input: decoding (PyAV / decord), frame sampling and clip transforms."""

from hiera_video.data.decode import VideoReader, open_video, read_clip
from hiera_video.data.sampling import (
    dense_clip_starts,
    dense_indices,
    keyframe_indices,
    segment_indices,
    window_starts,
)
from hiera_video.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIDEO_MEAN,
    VIDEO_STD,
    TrainTransform,
    ViewInfo,
    make_views,
    normalize,
    resize_short_side,
    spatial_crops,
    ssv2_flip_label,
)
from hiera_video.data.clip_spec import DATASET_PRESETS, ClipSpec

__all__ = [
    "ClipSpec", "DATASET_PRESETS",
    "VideoReader", "open_video", "read_clip",
    "dense_clip_starts", "dense_indices", "keyframe_indices", "segment_indices", "window_starts",
    "IMAGENET_MEAN", "IMAGENET_STD", "VIDEO_MEAN", "VIDEO_STD", "TrainTransform",
    "ViewInfo", "make_views", "normalize", "resize_short_side", "spatial_crops", "ssv2_flip_label",
]
