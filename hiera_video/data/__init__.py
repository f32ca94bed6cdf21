"""Video input: decoding, frame sampling and clip transforms. The names below load on first use
(PEP 562), so ``clip_spec`` (which the model zoo needs) loads without the decoders and torchvision."""

import importlib

_MODULE_OF = {name: module for module, names in {
    "clip_spec": "ClipSpec DATASET_PRESETS IMAGENET_MEAN IMAGENET_STD VIDEO_MEAN VIDEO_STD",
    "decode": "VideoReader open_video read_clip",
    "sampling": "dense_clip_starts dense_indices keyframe_indices segment_indices window_starts",
    "transforms": "TrainTransform ViewInfo make_views decode_views normalize resize_short_side spatial_crops ssv2_flip_label",
}.items() for name in names.split()}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
