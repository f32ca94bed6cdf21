"""Display orientation: the rotation/mirror a player applies to decoded frames, as FFmpeg's tools do,
from the display matrix (mp4 ``tkhd``, Matroska projection, H.264/HEVC SEI; attached to decoded
frames) or else the legacy clockwise ``rotate`` tag. Only right angles, optionally mirrored, are
applied; other angles are reported and ignored (the ``from_*`` functions return None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Orientation:
    """A right-angle rotation and/or mirror: the signed permutation matrix ``L = [[a, c], [b, d]]`` mapping
    source ``(x, y)`` (y down) to ``x' = a*x + c*y``, ``y' = b*x + d*y`` (plus a shift), as FFmpeg's display
    matrix (elements 0, 1, 3, 4)."""

    a: int = 1
    b: int = 0
    c: int = 0
    d: int = 1

    def __post_init__(self):
        turn = self.a == self.d == 0 and self.b in (-1, 1) and self.c in (-1, 1)
        if not (turn or (self.b == self.c == 0 and self.a in (-1, 1) and self.d in (-1, 1))):
            raise ValueError(f"not a right-angle orientation: {self!r}")

    @property
    def is_identity(self) -> bool:
        return (self.a, self.b, self.c, self.d) == (1, 0, 0, 1)

    @property
    def swaps_axes(self) -> bool:
        return self.a == 0

    @property
    def mirrored(self) -> bool:
        return self.a * self.d - self.b * self.c < 0

    @property
    def clockwise_degrees(self) -> int:
        """Clockwise turn in 0/90/180/270, after a left-right mirror when :attr:`mirrored` (L = R(t) @ diag(-1, 1))."""
        sign = -1 if self.mirrored else 1
        return int(round(math.degrees(math.atan2(sign * self.b, sign * self.a)))) % 360

    def __str__(self) -> str:
        turn = f"rotated {self.clockwise_degrees} degrees clockwise"
        return ("mirrored left-right, then " + turn) if self.mirrored else turn

    def display_size(self, height: int, width: int) -> tuple[int, int]:
        return (width, height) if self.swaps_axes else (height, width)

    def then(self, other: Orientation) -> Orientation:
        """This orientation, then ``other`` (``L_other @ L_self``)."""
        return Orientation(a=other.a * self.a + other.c * self.b, b=other.b * self.a + other.d * self.b,
                           c=other.a * self.c + other.c * self.d, d=other.b * self.c + other.d * self.d)

    def inverse(self) -> Orientation:
        """The inverse (the transpose, for a signed permutation)."""
        return Orientation(a=self.a, b=self.c, c=self.b, d=self.d)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``[..., H, W, C]`` as displayed (a contiguous copy; the input itself when identity). A turn
        (``y' = b*x``, ``x' = c*y``) swaps H and W, then reverses rows if ``b < 0``, columns if ``c < 0``;
        otherwise rows are reversed if ``d < 0``, columns if ``a < 0``."""
        if self.is_identity:
            return frames
        out = np.swapaxes(frames, -3, -2) if self.swaps_axes else frames
        rows_reversed, cols_reversed = (self.b < 0, self.c < 0) if self.swaps_axes else (self.d < 0, self.a < 0)
        if rows_reversed:
            out = out[..., ::-1, :, :]
        if cols_reversed:
            out = out[..., :, ::-1, :]
        return np.ascontiguousarray(out)


IDENTITY = Orientation()


def _unit_sign(value: float, scale: float, tolerance: float) -> int | None:
    """-1, 0 or 1 when ``value / scale`` is within ``tolerance`` of it, else None."""
    return next((s for s in (-1, 0, 1) if abs(value / scale - s) <= tolerance), None)


def from_display_matrix(matrix) -> Orientation | None:
    """The orientation of an FFmpeg display matrix (9 int32, 16.16 fixed point); None unless a right-angle
    rotation or mirror within 1 degree. Translation and scale are ignored, as FFmpeg's tools do."""
    m = [float(v) for v in matrix]
    if len(m) != 9:
        return None
    a, b, c, d = m[0], m[1], m[3], m[4]
    # normalised by the column lengths: an anamorphic (scaled) matrix keeps its orientation
    sx, sy = math.hypot(a, b), math.hypot(c, d)
    if sx == 0 or sy == 0:
        return None
    tol = math.sin(math.radians(1.0))
    signs = [_unit_sign(a, sx, tol), _unit_sign(b, sx, tol), _unit_sign(c, sy, tol), _unit_sign(d, sy, tol)]
    try:  # a None sign is refused too
        return Orientation(*signs)
    except ValueError:
        return None


def from_clockwise(degrees: float) -> Orientation | None:
    """A clockwise turn by ``degrees``; None unless within 1 degree of a multiple of 90."""
    if not math.isfinite(degrees):
        return None
    quarter = round(degrees / 90.0)
    if abs(degrees - 90.0 * quarter) > 1.0:
        return None
    cos, sin = [(1, 0), (0, 1), (-1, 0), (0, -1)][quarter % 4]
    return Orientation(a=cos, b=sin, c=-sin, d=cos)


def ffmpeg_clockwise_degrees(matrix) -> float:
    """The clockwise angle in [0, 360) FFmpeg's tools read from any display matrix (``-av_display_rotation_get``)."""
    m = [float(v) for v in matrix]
    sx, sy = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if sx == 0 or sy == 0:
        return 0.0
    return math.degrees(math.atan2(m[1] / sy, m[0] / sx)) % 360.0
