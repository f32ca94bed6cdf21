"""A video file before decoding: ``stat`` checks (a FIFO is never opened), ``av.open``, and :class:`Probe`, which
demuxes every packet and decodes only the first frame (it carries the display matrix)."""

from __future__ import annotations

import errno
import math
import os
import stat
import struct
from fractions import Fraction
from pathlib import Path

from hiera_video.data.orientation import (IDENTITY, Orientation, ffmpeg_clockwise_degrees, from_clockwise,
                                         from_display_matrix)
from hiera_video.errors import HieraVideoError, short

import av

DTS_SEEK_FORMATS = frozenset({"mpegts", "mpeg"})
# Packets fed to the decoder for one frame: frame threading delays output by up to 16, B-frames a few more.
ORIENTATION_PACKETS = 64


def decode_error(path: Path | str, what: str) -> HieraVideoError:
    return HieraVideoError(f"cannot decode video '{path}': {what}")


class Probe:
    """What demuxing tells: ``pts`` (sorted, position = frame index; None: frames go by decode order), ``keys``
    (keyframe indices), ``height``/``width`` as displayed."""

    def __init__(self, path: Path, container, stream):
        ctx = stream.codec_context
        self.codec, self.format = ctx.name, container.format.name
        self.coded_height, self.coded_width = int(ctx.height or 0), int(ctx.width or 0)
        self.rotate_tag = _rotate_tag(stream.metadata)
        self.time_base = stream.time_base or Fraction(1, 1)
        # never trusted (header_problem); without a count (webm, mkv) decord estimates rate x duration
        self.claimed_frames = max(int(stream.frames or 0), 0)
        if self.claimed_frames < 1:
            try:
                self.claimed_frames = max(int(float(stream.average_rate or 0) * (container.duration or 0) / 1e6), 0)
            except (TypeError, ValueError, OverflowError, ZeroDivisionError):
                self.claimed_frames = 0
        stamps, keyflags, dts = [], [], []
        self.pts_at_pos = {}  # byte position -> timestamp, to check timestamps after a seek
        if not ctx.is_open:
            ctx.thread_type = "AUTO"
        first_frame, fed = None, 0
        for packet in container.demux(stream):
            if packet.size == 0:
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
            ctx.flush_buffers()
        if not stamps:
            raise decode_error(path, "the video stream has no frames; the file is empty or truncated")
        self.display_matrix = _display_matrix(first_frame)
        self.orientation, self.orientation_problem = _orientation(self.display_matrix, self.rotate_tag)
        self.height, self.width = self.orientation.display_size(self.coded_height, self.coded_width)
        self.num_frames = len(stamps)
        by_dts = bool(set(self.format.split(",")) & DTS_SEEK_FORMATS)
        if any(s is None for s in stamps) or len(set(stamps)) != len(stamps):
            self.pts, self.keys, self.seek_ts = None, [0], {}
        else:
            order = sorted(range(len(stamps)), key=stamps.__getitem__)
            self.pts = [stamps[i] for i in order]
            self.keys = [0] + [pos for pos, i in enumerate(order) if pos and keyflags[i]]  # decoding can start at 0
            # keyframe index -> seek timestamp where not the pts: MPEG-TS/PS seek by dts
            self.seek_ts = {pos: dts[i] for pos, i in enumerate(order)
                            if by_dts and keyflags[i] and dts[i] is not None and dts[i] <= stamps[i]}
        span = None if self.pts is None or self.num_frames < 2 else float((self.pts[-1] - self.pts[0]) * self.time_base)
        self.fps = self._frame_rate(stream, span)
        self.duration = self.num_frames / self.fps if span is None else span + 1.0 / self.fps

    def header_problem(self, file_size: int) -> str | None:
        """Why the header's frame count is unsafe for decord (it allocates per claimed frame), else None."""
        if self.claimed_frames <= min(8 * self.num_frames + 1000, max(file_size, 1000)):
            return None
        return (f"the header claims {self.claimed_frames} frames but the stream holds {self.num_frames} "
                f"(the file has {file_size} bytes)")

    def _frame_rate(self, stream, span: float | None) -> float:
        rates = (stream.average_rate, stream.guessed_rate, stream.base_rate)
        nominal = next((float(r) for r in rates if r is not None and 0 < float(r) < 1000), 0.0)
        measured = (self.num_frames - 1) / span if span is not None and span > 0 else 0.0
        if measured and (not nominal or abs(measured - nominal) > 0.02 * nominal):
            return measured
        return nominal or measured or 30.0


def _rotate_tag(metadata) -> float | None:
    for key, value in (metadata or {}).items():
        if str(key).lower() == "rotate":
            try:
                degrees = float(str(value).strip())
            except ValueError:
                return None
            return degrees if degrees and math.isfinite(degrees) else None
    return None


def _decode_one(stream, packet):
    try:
        frames = stream.decode(packet)
    except Exception:  # a damaged first packet must not fail the probe
        return None
    return frames[0] if frames else None


def _display_matrix(frame) -> tuple[int, ...] | None:
    if frame is None:
        return None
    try:
        data = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        raw = bytes(data) if data is not None else b""
    except Exception:
        return None
    return struct.unpack("=9i", raw) if len(raw) == 36 else None


def _orientation(matrix, rotate_tag) -> tuple[Orientation, str | None]:
    """``(orientation, why a note is ignored)``; the matrix wins over the legacy tag."""
    ignored = "not a multiple of 90: frames are used as decoded"
    if matrix is not None:
        found = from_display_matrix(matrix)
        asks = f"its display matrix asks for a rotation of {ffmpeg_clockwise_degrees(matrix):.4g} degrees"
    elif rotate_tag is not None:
        found, asks = from_clockwise(rotate_tag), f"its rotate tag asks for {rotate_tag:g} degrees"
    else:
        return IDENTITY, None
    return (found, None) if found is not None else (IDENTITY, f"{asks}, {ignored}")


def path_problem(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(category, reason)`` when ``path`` cannot be a video file (only ``stat`` is called), else None."""
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
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError:
        raise HieraVideoError(f"cannot open video '{path}': permission denied") from None
    except (av.error.InvalidDataError, av.error.EOFError):
        raise decode_error(path, "not a readable video file (corrupt, truncated or not a video); "
                                 "check or re-download it") from None
    except Exception as e:
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
    """A RIFF/WEBP file whose ``VP8X`` header sets the animation flag."""
    try:
        with open(path, "rb") as f:
            head = f.read(21)
    except OSError:
        return False
    return len(head) == 21 and head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and bool(head[20] & 0x02)


def probe_open(path: Path):
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
