"""Video input: decoding (PyAV / decord), frame sampling and clip transforms.

The names below are imported from their modules on first use (PEP 562), so a light module
such as ``clip_spec`` (which the model zoo needs) loads without the decoders and torchvision.
"""

import importlib

_MODULE_OF = {
    "ClipSpec": "clip_spec", "DATASET_PRESETS": "clip_spec",
    "IMAGENET_MEAN": "clip_spec", "IMAGENET_STD": "clip_spec", "VIDEO_MEAN": "clip_spec", "VIDEO_STD": "clip_spec",
    "VideoReader": "decode", "open_video": "decode", "read_clip": "decode",
    "dense_clip_starts": "sampling", "dense_indices": "sampling", "keyframe_indices": "sampling",
    "segment_indices": "sampling", "window_starts": "sampling",
    "TrainTransform": "transforms", "ViewInfo": "transforms", "make_views": "transforms", "normalize": "transforms",
    "resize_short_side": "transforms", "spatial_crops": "transforms", "ssv2_flip_label": "transforms",
}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
