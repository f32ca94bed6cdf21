"""What a video file is before anything decodes it: ``stat`` checks (a FIFO or a device is
never opened), opening with PyAV with every failure turned into a one-line error, and the
:class:`Probe` that demuxes the packets (frame count, timestamps, keyframes, the header's
claims) without decoding, except the first frame, which carries the display matrix (the
rotation a phone video asks for, see :mod:`hiera_video.data.orientation`).
:mod:`hiera_video.data.decode` builds its readers on it.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import struct
from fractions import Fraction
from pathlib import Path

from hiera_video.data.orientation import (
    IDENTITY, Orientation, ffmpeg_clockwise_degrees, from_clockwise, from_display_matrix,
)
from hiera_video.errors import HieraVideoError

try:  # PyAV is required: it probes every file, whichever backend decodes it.
    import av
except ImportError:  # pragma: no cover - the package depends on av
    av = None

# Demuxers whose seeks search decoding timestamps (no index; FFmpeg's generic binary search).
DTS_SEEK_FORMATS = frozenset({"mpegts", "mpeg"})
# Packets fed to the decoder while probing, to get one frame (its side data holds the display
# matrix): frame threading delays the first output by up to 16 packets, B-frames by a few more.
ORIENTATION_PACKETS = 64


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def short(text: object, limit: int = 160) -> str:
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def decode_error(path: Path | str, what: str) -> HieraVideoError:
    return HieraVideoError(f"cannot decode video '{path}': {what}")


class Probe:
    """What demuxing the video packets tells us (no decoding).

    ``pts`` holds the presentation timestamp of every frame sorted ascending, so list
    position == frame index; ``keys`` holds the (sorted) frame indices of keyframes.
    ``pts is None`` means the container has no usable timestamps (e.g. raw streams): frames
    are then identified by decode order and reached by decoding from the start.

    ``height`` and ``width`` are the displayed size: ``coded_height`` and ``coded_width``
    turned by ``orientation`` (the display rotation/mirror, identity for most files; see
    :mod:`hiera_video.data.orientation`), which the readers apply to every frame.
    ``display_matrix`` (9 ints, from the first decoded frame) and ``rotate_tag`` (clockwise
    degrees) are the raw notes it comes from, None when absent; ``orientation_problem`` says
    why a note was ignored (an angle that is not a multiple of 90 degrees).
    """

    def __init__(self, path: Path, container, stream):
        self.codec = stream.codec_context.name
        self.format = container.format.name
        self.coded_height = int(stream.codec_context.height or 0)
        self.coded_width = int(stream.codec_context.width or 0)
        self.rotate_tag = _rotate_tag(stream.metadata)
        self.time_base = stream.time_base or Fraction(1, 1)
        # What the header claims (never trusted, see header_problem). Without a frame count
        # (webm, mkv) decord estimates it as average rate x container duration.
        self.claimed_frames = max(int(stream.frames or 0), 0)
        if self.claimed_frames < 1:
            try:
                self.claimed_frames = max(int(float(stream.average_rate or 0) * (container.duration or 0) / 1e6), 0)
            except (TypeError, ValueError, OverflowError, ZeroDivisionError):
                self.claimed_frames = 0
        stamps, keyflags, dts = [], [], []
        self.pts_at_pos = {}  # byte position -> timestamp, to check timestamps after a seek
        if not stream.codec_context.is_open:  # (cannot change once the probe below has decoded)
            stream.codec_context.thread_type = "AUTO"
        first_frame, fed = None, 0
        for packet in container.demux(stream):
            if packet.size == 0:  # end-of-stream flush
                continue
            if first_frame is None and fed < ORIENTATION_PACKETS:
                fed += 1
                first_frame = _decode_one(stream, packet)
            if packet.is_discard:  # cut by an edit list
                continue
            stamps.append(packet.pts if packet.pts is not None else packet.dts)
            dts.append(packet.dts)
            keyflags.append(bool(packet.is_keyframe))
            if packet.pos is not None and packet.pos >= 0:
                self.pts_at_pos[packet.pos] = stamps[-1]
        if fed:
            if first_frame is None:
                first_frame = _decode_one(stream, None)  # drain: short videos, undecodable starts
            stream.codec_context.flush_buffers()  # the readers start decoding from a clean state
        if not stamps:
            raise decode_error(path, "the video stream has no frames; the file is empty or truncated")
        self.display_matrix = _display_matrix(first_frame)
        self.orientation, self.orientation_problem = _orientation(self.display_matrix, self.rotate_tag)
        self.height, self.width = self.orientation.display_size(self.coded_height, self.coded_width)
        self.num_frames = len(stamps)
        # keyframe index -> timestamp to seek to, where it is not the pts: demuxers without an
        # index (MPEG-TS/PS) seek by dts, so seeking to a keyframe's pts lands after it, on
        # frames that cannot be decoded without it.
        self.seek_ts: dict[int, int] = {}
        by_dts = bool(set(self.format.split(",")) & DTS_SEEK_FORMATS)
        if any(s is None for s in stamps) or len(set(stamps)) != len(stamps):
            self.pts = None
            self.keys = [0]
        else:
            order = sorted(range(len(stamps)), key=stamps.__getitem__)
            self.pts = [stamps[i] for i in order]
            self.keys = [0] + [pos for pos, i in enumerate(order) if pos and keyflags[i]]  # decoding can start at 0
            for pos, i in enumerate(order):
                if by_dts and keyflags[i] and dts[i] is not None and dts[i] <= stamps[i]:
                    self.seek_ts[pos] = dts[i]
        # seconds from the first to the last frame (None without timestamps or with one frame)
        span = None
        if self.pts is not None and self.num_frames > 1:
            span = float((self.pts[-1] - self.pts[0]) * self.time_base)
        self.fps = self._frame_rate(stream, span)
        self.duration = self.num_frames / self.fps if span is None else span + 1.0 / self.fps

    def header_problem(self, file_size: int) -> str | None:
        """Why the header's frame count cannot be handed to a decoder that allocates from it
        (decord reserves memory per claimed frame before reading anything: a header claiming
        2^31 frames aborts the whole process with std::bad_alloc). None when it is plausible:
        at most 8x the frames the stream really holds (+1000, for AVI dropped-frame chunks
        and the like) and at most one frame per byte of the file."""
        claimed = self.claimed_frames
        if claimed <= min(8 * self.num_frames + 1000, max(file_size, 1000)):
            return None
        return (f"the header claims {claimed} frames but the stream holds {self.num_frames} "
                f"(the file has {file_size} bytes)")

    def _frame_rate(self, stream, span: float | None) -> float:
        """The stream's nominal rate when it agrees with the timestamps, else the measured one."""
        rates = (stream.average_rate, stream.guessed_rate, stream.base_rate)
        nominal = next((float(r) for r in rates if r is not None and 0 < float(r) < 1000), 0.0)
        measured = (self.num_frames - 1) / span if span is not None and span > 0 else 0.0
        if measured and (not nominal or abs(measured - nominal) > 0.02 * nominal):
            return measured
        return nominal or measured or 30.0


def _rotate_tag(metadata) -> float | None:
    """The legacy ``rotate`` stream tag (clockwise degrees; any letter case, e.g. Matroska's
    ``ROTATE``), None when absent, "0" or not a number (FFmpeg 4's tools read it the same way)."""
    for key, value in (metadata or {}).items():
        if str(key).lower() == "rotate":
            try:
                degrees = float(str(value).strip())
            except ValueError:
                return None
            return degrees if degrees and math.isfinite(degrees) else None
    return None


def _decode_one(stream, packet):
    """The first frame decoding ``packet`` gives (``None``: drain the decoder), or None."""
    try:
        frames = stream.decode(packet)
    except Exception:  # a damaged first packet must not fail the probe: the readers handle it
        return None
    return frames[0] if frames else None


def _display_matrix(frame) -> tuple[int, ...] | None:
    """The display matrix side data of a decoded frame (9 int32), None when it has none.
    FFmpeg attaches the stream's matrix (mp4 ``tkhd``, Matroska projection) and the
    bitstream's (H.264/HEVC display orientation SEI) to every frame it decodes."""
    if frame is None or av is None:
        return None
    try:
        data = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        raw = bytes(data) if data is not None else b""
    except Exception:
        return None
    if len(raw) != 36:
        return None
    return struct.unpack("=9i", raw)  # native-endian int32, as FFmpeg stores it


def _orientation(matrix, rotate_tag) -> tuple[Orientation, str | None]:
    """The orientation to apply and, when a note is ignored, why. The display matrix wins over
    the legacy tag (current FFmpeg no longer reads the tag at all)."""
    if matrix is not None:
        found = from_display_matrix(matrix)
        if found is not None:
            return found, None
        return IDENTITY, (f"its display matrix asks for a rotation of {ffmpeg_clockwise_degrees(matrix):.4g} degrees, "
                          "not a multiple of 90: frames are used as decoded")
    if rotate_tag is not None:
        found = from_clockwise(rotate_tag)
        if found is not None:
            return found, None
        return IDENTITY, f"its rotate tag asks for {rotate_tag:g} degrees, not a multiple of 90: frames are used as decoded"
    return IDENTITY, None


def path_problem(path: str | os.PathLike) -> tuple[str, str] | None:
    """Why ``path`` cannot be a video file, as ``(category, reason)``; None for a regular,
    non-empty file. Only ``stat`` is called: a named pipe or a device is never opened
    (reading a FIFO blocks until someone writes to it). Categories: "missing", "not a file",
    "empty", "unreadable" (those of :mod:`hiera_video.data.check`)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "missing", "broken symbolic link: its target file not found; fix or remove the link"
        return "missing", "file not found; check the path"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "not a file", "symbolic link loop (the link resolves to itself); fix or remove the link"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "unreadable", "permission denied"
        if e.errno == errno.ENOTDIR:
            return "missing", "file not found (a parent of the path is a file, not a folder); check the path"
        return "unreadable", f"cannot access it ({e.strerror or short(e)})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return ("empty", "the file is empty (0 bytes); re-download or remove it") if st.st_size == 0 else None
    if stat.S_ISDIR(mode):
        return "not a file", "it is a directory, not a video file"
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return "not a file", f"it is {kind}, not a video file; pass a regular file"


def open_container(path: Path):
    """``av.open`` with every failure turned into a HieraVideoError."""
    if av is None:  # pragma: no cover
        raise HieraVideoError("cannot decode videos: PyAV is not installed (pip install av)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError:
        raise HieraVideoError(f"cannot open video '{path}': permission denied") from None
    except (av.error.InvalidDataError, av.error.EOFError):
        what = "not a readable video file (corrupt, truncated or not a video); check or re-download it"
        raise decode_error(path, what) from None
    except Exception as e:  # any other FFmpeg or OS error
        raise decode_error(path, f"{short(e)}; check or re-download the file") from None
    if not container.streams.video:
        what = "no video stream (audio only?)" if container.streams.audio else "no video stream"
        container.close()
        raise decode_error(path, what + "; pass a video file")
    return container


ANIMATED_WEBP = ("it is an animated WebP, which is not supported as video (this FFmpeg reads no frame size or frames from it); "
                 "convert it to a video first, e.g. ffmpeg -i x.webp x.mp4 (with an FFmpeg that decodes animated WebP) "
                 "or magick x.webp x.mp4")


def animated_webp(path) -> bool:
    """Whether ``path`` is an animated WebP: a RIFF/WEBP file with an extended (``VP8X``) header
    whose animation flag (bit 1 of the flags byte) is set. FFmpeg's WebP demuxer reads such a
    file as one image stream with no frame size, which would otherwise read as a corrupt header."""
    try:
        with open(path, "rb") as f:
            head = f.read(21)
    except OSError:
        return False
    return len(head) == 21 and head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and bool(head[20] & 0x02)


def probe_open(path: Path):
    """Open ``path`` with PyAV and demux it; returns ``(container, stream, probe)``."""
    problem = path_problem(path)
    if problem is not None:
        raise HieraVideoError(f"cannot open video '{path}': {problem[1]}")
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        probe = Probe(path, container, stream)
        if probe.coded_height <= 0 or probe.coded_width <= 0:
            if animated_webp(path):
                raise decode_error(path, ANIMATED_WEBP)
            raise decode_error(path, "the video stream has no frame size (corrupt header?)")
    except HieraVideoError:
        container.close()
        raise
    except Exception as e:
        container.close()
        raise decode_error(path, f"corrupt video data ({short(e)}); check or re-download the file") from None
    return container, stream, probe
