"""Encode small test videos in-process with PyAV, each frame stamped with its index.

Stamp layout: the frame is split into a 4x4 grid of cells, read row-major. Cells 0-11 hold
the frame index (12 bits, most significant first), cells 12-15 a 4-bit check nibble, so a
misread (or a blank frame) is detected instead of silently giving a wrong index. A cell is
white (255) for a 1 bit and black (0) for a 0 bit; this survives lossy codecs, chroma
subsampling and grayscale. ``read_stamp`` looks only at the centre of each cell.

Also writes bad inputs (empty file, random bytes, text named .mp4, truncated file,
audio-only file) for the error tests.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


GRID = 4
INDEX_BITS = 12
MAX_INDEX = (1 << INDEX_BITS) - 1

# format name -> (container extension, encoder, pixel format, encoder options)
FORMATS = {
    "h264": ("mp4", "libx264", "yuv420p", {"crf": "12", "preset": "ultrafast", "bf": "2", "g": "15"}),
    "h264_bframes": ("mp4", "libx264", "yuv420p", {"crf": "12", "preset": "veryfast", "bf": "3", "g": "12"}),
    "h264_gop20": ("mp4", "libx264", "yuv420p", {"crf": "12", "preset": "ultrafast", "bf": "2", "g": "20"}),
    "h264_raw": ("h264", "libx264", "yuv420p", {"crf": "12", "preset": "ultrafast", "bf": "2", "g": "10"}),  # no timestamps
    # MPEG-TS (no seek index): the encoder's defaults (B-frames, GOP 250 + scene cuts) and a short GOP
    "h264_ts": ("ts", "libx264", "yuv420p", {"crf": "12"}),
    "h264_ts_gop10": ("ts", "libx264", "yuv420p", {"crf": "12", "preset": "ultrafast", "bf": "2", "g": "10"}),
    "vp9": ("webm", "libvpx-vp9", "yuv420p", {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8", "g": "10"}),
    "mjpeg": ("avi", "mjpeg", "yuvj420p", {"q:v": "2"}),
    "hevc": ("mkv", "libx265", "yuv420p", {"crf": "12", "preset": "ultrafast", "x265-params": "log-level=none:keyint=15"}),
}


def has_encoder(name: str) -> bool:
    """True when the bundled FFmpeg can encode with ``name`` (e.g. ``libx265``)."""
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def _check_nibble(index: int) -> int:
    return ((index & 0xF) + ((index >> 4) & 0xF) + ((index >> 8) & 0xF)) % 16 ^ 0b1010


def stamp_bits(index: int) -> list[int]:
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"stamp index {index} out of range 0..{MAX_INDEX}")
    bits = [(index >> (INDEX_BITS - 1 - b)) & 1 for b in range(INDEX_BITS)]
    check = _check_nibble(index)
    bits += [(check >> (3 - b)) & 1 for b in range(4)]
    return bits


def _cell_bounds(size: int, k: int) -> tuple[int, int]:
    return (size * k) // GRID, (size * (k + 1)) // GRID


def make_frame(index: int, height: int, width: int, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] frame carrying the stamp of ``index`` (or a solid ``color``)."""
    if color is not None:
        return np.broadcast_to(np.array(color, np.uint8), (height, width, 3)).copy()
    frame = np.zeros((height, width, 3), np.uint8)
    for cell, bit in enumerate(stamp_bits(index)):
        r, c = divmod(cell, GRID)
        y0, y1 = _cell_bounds(height, r)
        x0, x1 = _cell_bounds(width, c)
        if bit:
            frame[y0:y1, x0:x1] = 255
    return frame


def read_stamp(frame) -> int:
    """Index stamped on a decoded frame (``[H, W, 3]`` or ``[H, W]``, numpy or torch).

    Raises ``ValueError`` when the check nibble does not match (not a stamped frame).
    """
    arr = np.asarray(frame.numpy() if hasattr(frame, "numpy") else frame, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr.mean(axis=2)
    h, w = arr.shape
    bits = []
    for cell in range(GRID * GRID):
        r, c = divmod(cell, GRID)
        y0, y1 = _cell_bounds(h, r)
        x0, x1 = _cell_bounds(w, c)
        # Centre half of the cell, away from ringing at the block edges.
        qy, qx = max((y1 - y0) // 4, 0), max((x1 - x0) // 4, 0)
        patch = arr[y0 + qy : y1 - qy, x0 + qx : x1 - qx]
        bits.append(int(patch.mean() > 127.5))
    index = 0
    for b in bits[:INDEX_BITS]:
        index = (index << 1) | b
    check = 0
    for b in bits[INDEX_BITS:]:
        check = (check << 1) | b
    if check != _check_nibble(index):
        raise ValueError(f"frame carries no valid stamp (bits {bits})")
    return index


def read_stamps(frames) -> list[int]:
    """Stamps of every frame of a ``[T, H, W, 3]`` clip."""
    return [read_stamp(f) for f in frames]


def write_video(
    path,
    num_frames: int = 30,
    height: int = 48,
    width: int = 64,
    fps: int = 30,
    fmt: str = "h264",
    audio: bool = False,
    gray: bool = False,
    vfr: bool = False,
    color: tuple[int, int, int] | None = None,
    content=None,
    display_rotation: float | None = None,
    display_hflip: bool = False,
    stream_metadata: dict | None = None,
) -> Path:
    """Encode a stamped video; frame ``i`` shows stamp ``i``.

    ``fmt`` is a key of ``FORMATS``. ``vfr=True`` gives irregular frame durations (1-3 ticks of
    a 1/(2*fps) clock), so presentation times are uneven while frame order is unchanged.
    ``gray=True`` encodes a single-channel (luma only) stream where the encoder allows it,
    otherwise gray content in a colour format. ``audio=True`` adds a mono AAC/Opus track.

    Orientation (for the rotation tests): ``content`` is applied to every ``height x width``
    RGB frame before encoding (e.g. ``np.rot90``: the picture physically rotated, the stream
    then has the turned size); ``display_rotation`` (counter-clockwise degrees, PyAV's
    ``set_display_rotation``) and ``display_hflip`` write a display matrix into the container
    (mp4 ``tkhd``, Matroska projection); ``stream_metadata`` sets stream tags, e.g.
    ``{"rotate": "90"}``, the legacy tag (kept by Matroska, dropped by the mp4 muxer).
    """
    ext, codec, pix_fmt, options = FORMATS[fmt]
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix("." + ext)
    if gray and codec in ("libx264", "libx265"):
        pix_fmt = "gray"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=dict(options))
        coded_h, coded_w = content(make_frame(0, height, width)).shape[:2] if content is not None else (height, width)
        stream.width, stream.height, stream.pix_fmt = coded_w, coded_h, pix_fmt
        if display_rotation is not None or display_hflip:
            stream.set_display_rotation(display_rotation or 0, hflip=display_hflip)
        if stream_metadata:
            stream.metadata.update(stream_metadata)
        if vfr:
            stream.codec_context.time_base = Fraction(1, 2 * fps)
        astream = None
        if audio:
            acodec = "libopus" if ext == "webm" else "aac"
            astream = container.add_stream(acodec, rate=48000)
            astream.layout = "mono"
        pts = 0
        rng = np.random.default_rng(0)
        for i in range(num_frames):
            img = make_frame(i, height, width, color)
            if content is not None:
                img = np.ascontiguousarray(content(img))
            if gray:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:, :, 0]), format="gray")
            else:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if vfr:
                frame.pts = pts
                frame.time_base = Fraction(1, 2 * fps)
                pts += int(rng.integers(1, 4))
            else:
                frame.pts = i
                frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None:
            _encode_tone(container, astream, seconds=num_frames / fps)
    return path


def write_damaged_video(path, num_frames: int = 48, damaged=(), height: int = 48, width: int = 64, fps: int = 30) -> Path:
    """A stamped MJPEG video (``.mkv``) whose frames ``damaged`` hold random bytes instead of
    an image: they are listed in the container but cannot be decoded (the decoders substitute
    the nearest decodable frame)."""
    from fractions import Fraction as _F

    path = Path(path)
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt, enc.time_base = width, height, "yuvj420p", _F(1, fps)
    enc.options = {"q:v": "2"}
    rng = np.random.default_rng(0)
    bad = set(damaged)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.time_base = width, height, "yuvj420p", _F(1, fps)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(make_frame(i, height, width), format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = i, _F(1, fps)
            for packet in enc.encode(frame):
                data = rng.integers(0, 256, 300, dtype=np.uint8).tobytes() if i in bad else bytes(packet)
                out = av.Packet(data)
                out.pts = out.dts = i
                out.time_base, out.stream, out.is_keyframe = _F(1, fps), stream, True
                container.mux(out)
    return path


def _encode_tone(container, astream, seconds: float) -> None:
    rate = astream.codec_context.sample_rate
    frame_size = astream.codec_context.frame_size or 1024
    total = int(math.ceil(seconds * rate))
    t = np.arange(total) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    fmt = astream.codec_context.format.name  # e.g. 'fltp'
    pts = 0
    for start in range(0, total, frame_size):
        chunk = samples[start : start + frame_size]
        if len(chunk) < frame_size:
            chunk = np.pad(chunk, (0, frame_size - len(chunk)))
        if fmt.startswith("s16"):
            chunk = (chunk * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format=fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = pts
        pts += frame_size
        for packet in astream.encode(frame):
            container.mux(packet)
    for packet in astream.encode():
        container.mux(packet)


def write_audio_only(path, seconds: float = 1.0) -> Path:
    path = Path(path)
    with av.open(str(path), "w") as container:
        astream = container.add_stream("aac", rate=48000)
        astream.layout = "mono"
        _encode_tone(container, astream, seconds)
    return path


def write_bad_inputs(directory) -> dict[str, Path]:
    """Write one file per failure kind; returns ``{kind: path}``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    out["empty"] = d / "empty.mp4"
    out["empty"].write_bytes(b"")
    out["random"] = d / "random.mp4"
    out["random"].write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    out["text"] = d / "notes.mp4"
    out["text"].write_text("this is not a video\n" * 100)
    good = write_video(d / "good.mp4", num_frames=10)
    data = good.read_bytes()
    out["truncated"] = d / "truncated.mp4"
    out["truncated"].write_bytes(data[: min(len(data) // 3, 600)])
    out["audio_only"] = write_audio_only(d / "audio_only.m4a")
    out["missing"] = d / "does_not_exist.mp4"
    if out["missing"].exists():
        os.remove(out["missing"])
    return out


def patch_claimed_frames(src, dst, count: int = 0x7FFFFFFF) -> Path:
    """Copy of ``src`` whose header claims ``count`` frames (the stream is unchanged): in an
    mp4 the first ``stts`` entry's sample count, in an AVI the video ``strh`` length (what
    FFmpeg reports as the stream's frame count) and the ``avih`` total frames, in a webm (no
    frame count) the segment duration, as ``count`` frames at 30 fps."""
    import struct

    data = bytearray(Path(src).read_bytes())
    if data[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Duration (0x4489), a float in milliseconds
        i = data.index(b"\x44\x89")
        value = count / 30 * 1000
        if data[i + 2] == 0x88:
            data[i + 3 : i + 11] = struct.pack(">d", value)
        else:
            data[i + 3 : i + 7] = struct.pack(">f", value)
    elif data[8:12] == b"AVI ":
        i = data.index(b"avih")
        data[i + 24 : i + 28] = struct.pack("<I", count)  # dwTotalFrames
        j = data.index(b"strh")
        while data[j + 8 : j + 12] != b"vids":
            j = data.index(b"strh", j + 4)
        data[j + 40 : j + 44] = struct.pack("<I", count)  # dwLength
    else:
        i = data.index(b"stts")
        data[i + 12 : i + 16] = struct.pack(">I", count)  # entries[0].sample_count
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
