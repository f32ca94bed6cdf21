"""Boxes ``x1, y1, x2, y2``: overlap, and how they follow a frame that is resized, cropped
or flipped (continuous pixel coordinates: pixel ``i`` covers ``[i, i + 1)``)."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of ``x1, y1, x2, y2`` boxes (continuous coordinates, no ``+1``)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def boxes_to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised ``[K, 4]`` x1,y1,x2,y2 -> pixel coordinates of a ``height x width`` frame."""
    return np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([width, height, width, height], np.float64)


def resize_boxes(boxes: np.ndarray, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> np.ndarray:
    """Pixel boxes after resizing the frame from ``old_hw`` to ``new_hw`` (per-axis factors)."""
    sy, sx = new_hw[0] / old_hw[0], new_hw[1] / old_hw[1]
    return np.asarray(boxes, np.float64) * np.array([sx, sy, sx, sy])


def crop_boxes_px(boxes: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Pixel boxes after cropping ``[top:top+height, left:left+width]``, clipped to the crop."""
    return clip_boxes(np.asarray(boxes, np.float64) - np.array([left, top, left, top]), height, width)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    b = np.array(boxes, np.float64)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    return b


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Pixel boxes after a left-right flip of a frame ``width`` wide: ``x -> width - x``."""
    b = np.array(boxes, np.float64)
    b[:, [0, 2]] = width - b[:, [2, 0]]
    return b
