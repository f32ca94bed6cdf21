"""Display orientation: the rotation (and mirroring) a player applies to decoded frames.

Phones record portrait video as landscape frames plus a note saying how to turn them for
display; FFmpeg's own tools (``ffmpeg``, ``ffplay``, ``ffprobe``'s "displaymatrix" side data)
apply it. Two notes exist:

* the display matrix (FFmpeg's ``AV_PKT_DATA_DISPLAYMATRIX``: the mp4/mov ``tkhd`` matrix,
  the Matroska/WebM projection roll, H.264/HEVC display-orientation SEI). Current FFmpeg
  attaches it to every decoded frame, which is where :mod:`hiera_video.data.probe` reads it
  (PyAV offers no stream-level getter);
* the legacy ``rotate`` stream tag, in clockwise degrees (what FFmpeg before 5.0 exported
  for mp4, and what some tools still write, e.g. as a Matroska ``ROTATE`` tag). It is used
  when there is no display matrix, as FFmpeg 4's tools did.

Only right angles, optionally mirrored, are applied (what ``ffmpeg`` does with ``transpose``,
``hflip`` and ``vflip``); any other angle is reported and ignored (:func:`from_display_matrix`
and :func:`from_clockwise` return None for it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Orientation:
    """A right-angle rotation and/or mirror of the image plane.

    Stored as the integer matrix ``L = [[a, c], [b, d]]`` (entries -1, 0 or 1, one non-zero
    per row and column) that maps a source pixel position ``(x, y)`` (x to the right, y
    down) to its displayed position ``x' = a*x + c*y``, ``y' = b*x + d*y``, up to the shift
    that brings the image back to the origin. This is FFmpeg's display matrix convention
    (``a, b, c, d`` are its elements 0, 1, 3 and 4 in units of 1.0), so a matrix read from a
    file converts without any sign juggling. The identity means "show as decoded".
    """

    a: int = 1
    b: int = 0
    c: int = 0
    d: int = 1

    def __post_init__(self):
        unit = {-1, 1}
        turn = self.a == self.d == 0 and self.b in unit and self.c in unit
        if not (turn or (self.b == self.c == 0 and self.a in unit and self.d in unit)):
            raise ValueError(f"not a right-angle orientation: {self!r}")

    @property
    def is_identity(self) -> bool:
        return (self.a, self.b, self.c, self.d) == (1, 0, 0, 1)

    @property
    def swaps_axes(self) -> bool:
        """True for 90 and 270 degree turns: the displayed frame is ``W x H`` (width and height swap)."""
        return self.a == 0

    @property
    def mirrored(self) -> bool:
        return self.a * self.d - self.b * self.c < 0

    @property
    def clockwise_degrees(self) -> int:
        """The clockwise turn, in 0/90/180/270, applied after a left-right mirror when :attr:`mirrored`."""
        # A clockwise turn by t (y down) is [[cos t, -sin t], [sin t, cos t]]; with a mirror first,
        # L = R(t) @ diag(-1, 1), whose first column is (-cos t, -sin t).
        sign = -1 if self.mirrored else 1
        return int(round(math.degrees(math.atan2(sign * self.b, sign * self.a)))) % 360

    def __str__(self) -> str:
        turn = f"rotated {self.clockwise_degrees} degrees clockwise"
        return ("mirrored left-right, then " + turn) if self.mirrored else turn

    def display_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of a ``height x width`` frame once displayed."""
        return (width, height) if self.swaps_axes else (height, width)

    def then(self, other: Orientation) -> Orientation:
        """This orientation followed by ``other`` (the matrix product ``L_other @ L_self``)."""
        return Orientation(
            a=other.a * self.a + other.c * self.b, b=other.b * self.a + other.d * self.b,
            c=other.a * self.c + other.c * self.d, d=other.b * self.c + other.d * self.d,
        )

    def inverse(self) -> Orientation:
        """The orientation that undoes this one (a signed permutation matrix's inverse is its transpose)."""
        return Orientation(a=self.a, b=self.c, c=self.b, d=self.d)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``[..., H, W, C]`` as displayed (a contiguous copy; the input itself when identity).

        With ``y' = b*x`` and ``x' = c*y`` (a turn by 90 or 270 degrees), the displayed row
        index follows the source column and vice versa: swap the H and W axes, then reverse
        the new rows when ``b < 0`` and the new columns when ``c < 0``. Without a turn
        (``x' = a*x``, ``y' = d*y``) only reversals remain: rows when ``d < 0``, columns
        when ``a < 0``.
        """
        if self.is_identity:
            return frames
        out = frames
        if self.swaps_axes:
            out = np.swapaxes(out, -3, -2)
            rows_reversed, cols_reversed = self.b < 0, self.c < 0
        else:
            rows_reversed, cols_reversed = self.d < 0, self.a < 0
        if rows_reversed:
            out = out[..., ::-1, :, :]
        if cols_reversed:
            out = out[..., :, ::-1, :]
        return np.ascontiguousarray(out)


IDENTITY = Orientation()


def _unit_sign(value: float, scale: float, tolerance: float) -> int | None:
    """-1, 0 or 1 when ``value / scale`` is within ``tolerance`` of it, else None."""
    r = value / scale
    for s in (-1, 0, 1):
        if abs(r - s) <= tolerance:
            return s
    return None


def from_display_matrix(matrix) -> Orientation | None:
    """The orientation of an FFmpeg display matrix (9 int32: 16.16 fixed point, 2.30 for the
    last column; element 0, 1, 3, 4 are ``a, b, c, d``); None when it is not a right-angle
    rotation or mirror (within 1 degree). Translation and scale are ignored, as FFmpeg's tools do."""
    m = [float(v) for v in matrix]
    if len(m) != 9:
        return None
    a, b, c, d = m[0], m[1], m[3], m[4]
    # normalise by the column lengths of L: a scaled matrix (anamorphic display) keeps its orientation
    sx, sy = math.hypot(a, b), math.hypot(c, d)
    if sx == 0 or sy == 0:
        return None
    tol = math.sin(math.radians(1.0))
    signs = [_unit_sign(a, sx, tol), _unit_sign(b, sx, tol), _unit_sign(c, sy, tol), _unit_sign(d, sy, tol)]
    if None in signs:
        return None
    try:
        return Orientation(*signs)
    except ValueError:
        return None


def from_clockwise(degrees: float) -> Orientation | None:
    """A clockwise turn by ``degrees`` (the legacy ``rotate`` tag); None unless it is within
    1 degree of a multiple of 90."""
    if not math.isfinite(degrees):
        return None
    quarter = round(degrees / 90.0)
    if abs(degrees - 90.0 * quarter) > 1.0:
        return None
    cos, sin = [(1, 0), (0, 1), (-1, 0), (0, -1)][quarter % 4]
    return Orientation(a=cos, b=sin, c=-sin, d=cos)


def ffmpeg_clockwise_degrees(matrix) -> float:
    """The clockwise angle FFmpeg's tools read from a display matrix (``-av_display_rotation_get``,
    in [0, 360)); any matrix, also mirrored or non-right-angle ones."""
    m = [float(v) for v in matrix]
    sx, sy = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if sx == 0 or sy == 0:
        return 0.0
    return math.degrees(math.atan2(m[1] / sy, m[0] / sx)) % 360.0


__all__ = ["IDENTITY", "Orientation", "ffmpeg_clockwise_degrees", "from_clockwise", "from_display_matrix"]
