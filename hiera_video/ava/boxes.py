"""Boxes ``x1, y1, x2, y2`` in continuous coordinates (pixel ``i`` covers ``[i, i + 1)``, no ``+1``): IoU
``[N, M]`` (0 for an empty union), and how pixel boxes follow a frame that is resized, cropped (then clipped to
the crop) or flipped (``x -> width - x``)."""

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    (aw, ah), (bw, bh) = (a[:, 2:] - a[:, :2]).T, (b[:, 2:] - b[:, :2]).T
    union = (aw * ah)[:, None] + (bw * bh)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def boxes_to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([width, height, width, height], np.float64)


def resize_boxes(boxes: np.ndarray, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> np.ndarray:
    sy, sx = new_hw[0] / old_hw[0], new_hw[1] / old_hw[1]
    return np.asarray(boxes, np.float64) * np.array([sx, sy, sx, sy])


def crop_boxes_px(boxes: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    return clip_boxes(np.asarray(boxes, np.float64) - np.array([left, top, left, top]), height, width)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(boxes, np.float64).clip(0, [width, height, width, height])


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    b = np.array(boxes, np.float64)
    b[:, [0, 2]] = width - b[:, [2, 0]]
    return b
