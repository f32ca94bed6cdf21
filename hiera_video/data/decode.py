"""Video decoding: one reader interface, three backends (PyAV, decord and torchcodec).

Frame indexing is the same for both backends: frame ``i`` is the ``i``-th frame in
presentation order. Opening a file always probes it with PyAV by demuxing its video packets
(no decoding), which gives the exact frame count for containers that do not store one
(webm, mkv), for variable-frame-rate files and for files whose header over-reports frames,
plus the presentation timestamp and keyframe flag of every frame. Probing reads the whole
file once, which is fast (no decoding) but proportional to the file size.

What is protected against:

* every failure (missing, empty, corrupt, truncated, audio-only, no decodable frames) raises
  :class:`~hiera_video.errors.HieraVideoError` with a one-line message; raw ``av`` or
  ``decord`` exceptions never escape;
* indices are clamped to ``[0, num_frames - 1]`` where ``num_frames`` is the verified packet
  count, so decord is never asked for frames the container only claims to have (the
  situation in which decord 0.6.0 can hang near the end of a file);
* "auto" only hands decord the codecs it decodes correctly (H.264, MPEG-4 part 2, MJPEG,
  VP9); decord 0.6.0 returns wrong frames on random access for HEVC and is known to be wrong
  for some VP8, so those go to PyAV; so do containers without a seek index (MPEG-TS/PS), in
  which decord returns other frames than asked for;
* decord is never handed a file whose header claims far more frames than the stream holds
  (it allocates from that number before reading anything: 2^31 claimed frames abort the
  whole process), see :meth:`Probe.header_problem`;
* a PyAV seek that yields no frame, or lands after its target, falls back to decoding from
  the start (MPEG-TS seeks by dts: seeks go to the keyframe's dts there);
* paths are ``stat``-ed before anything opens them: a FIFO, a device or a symlink loop is
  said as such (a FIFO is never opened: reading it would block);
* :func:`read_clip` with ``timeout=`` decodes in a child process that is killed when it runs
  past the timeout or crashes (a native hang or segfault in a decoder cannot be interrupted
  inside the calling process).

Frames come out as displayed, whatever the backend: the display rotation/mirror of the file
(display matrix or legacy ``rotate`` tag, see :mod:`hiera_video.data.orientation`) is applied
as FFmpeg's tools apply it, and ``height``/``width`` are the displayed size. decord turns
some files by itself (:func:`decord_own_orientation`); its frames are turned back first.
"""

from __future__ import annotations

import bisect
import multiprocessing
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hiera_video.data.orientation import IDENTITY, Orientation, ffmpeg_clockwise_degrees, from_clockwise
from hiera_video.data.probe import decode_error, one_line, open_container, Probe, probe_open, short
from hiera_video.errors import HieraVideoError

try:  # PyAV is required: it probes every file, whichever backend decodes it.
    import av
except ImportError:  # pragma: no cover - the package depends on av
    av = None

BACKENDS = ("auto", "pyav", "decord", "torchcodec")
# Codec names (FFmpeg spelling) that decord 0.6.0 decodes frame-exactly in our tests.
DECORD_SAFE_CODECS = frozenset({"h264", "mpeg4", "mjpeg", "vp9"})
# Containers (FFmpeg demuxer names) with a seek index, which decord's random access needs.
# In MPEG-TS/PS decord seeks by a timestamp the demuxer cannot find exactly and returns other
# frames than asked for (e.g. every read of an H.264 .ts with B-frames starts at the second
# keyframe), so those always go to PyAV.
DECORD_SAFE_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi"})
DECORD_WRONG_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo"})


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except Exception:
        return False
    return True


TORCHCODEC_INSTALL = (
    "install FFmpeg 4-8 shared libraries (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg; "
    "conda: conda install ffmpeg) and pip install 'hiera-video[torchcodec]'"
)
_torchcodec_state: tuple[str | None, str | None] | None = None


def torchcodec_status() -> tuple[str | None, str | None]:
    """``(ffmpeg_version, problem)`` for torchcodec, computed once per process.

    torchcodec loads the system's FFmpeg shared libraries when its decoders are imported;
    without them (or without torchcodec) ``problem`` says why in one line and the version is
    None. Loading is attempted only when asked (``import hiera_video`` never loads it).
    """
    global _torchcodec_state
    if _torchcodec_state is None:
        try:
            import torchcodec._core as core
            from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads the FFmpeg libraries)

            versions = core.get_ffmpeg_library_versions()
            _torchcodec_state = (str(versions.get("ffmpeg_version", "?")), None)
        except ImportError as e:
            first = one_line(e)
            why = "torchcodec is not installed" if "torchcodec" in first and "No module" in first else f"torchcodec could not load: {first[:200]}"
            _torchcodec_state = (None, why)
        except Exception as e:  # RuntimeError/OSError: no loadable FFmpeg 4-8 libraries
            _torchcodec_state = (None, f"torchcodec could not load FFmpeg ({one_line(e)[:200]})")
    return _torchcodec_state


def torchcodec_available() -> bool:
    return torchcodec_status()[1] is None


class _TimestampMismatch(Exception):
    """Decoded timestamps disagree with the probe: frames must be numbered by decode order."""


class VideoReader:
    """Random access to the frames of one video. Use :func:`open_video` to create one.

    Attributes: ``path``, ``backend`` ("pyav" or "decord"), ``num_frames``, ``fps``,
    ``duration`` (seconds), ``height``, ``width`` (as displayed), ``codec``, ``orientation``
    (the display rotation applied to every frame). ``substituted_frames`` counts
    frames that were listed in the container but could not be decoded and were replaced by
    the nearest decodable frame.
    """

    backend = "none"

    def __init__(self, path: Path, probe: Probe):
        self.path = path
        self.num_frames = probe.num_frames
        self.fps = probe.fps
        self.duration = probe.duration
        self.height = probe.height
        self.width = probe.width
        self.codec = probe.codec
        self.orientation = probe.orientation
        self.substituted_frames = 0
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}('{self.path}', backend={self.backend}, frames={self.num_frames}, "
            f"fps={self.fps:.3f}, size={self.width}x{self.height})"
        )

    def __len__(self) -> int:
        return self.num_frames

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def clamp(self, indices: Sequence[int]) -> np.ndarray:
        """Indices as int64, clamped to ``[0, num_frames - 1]``."""
        idx = np.asarray(indices.tolist() if isinstance(indices, torch.Tensor) else list(indices), dtype=np.int64)
        return np.clip(idx.reshape(-1), 0, self.num_frames - 1)

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """RGB frames ``uint8 [T, H, W, 3]`` for ``indices`` (any order, repeats allowed)."""
        return torch.from_numpy(self.get_frames_numpy(indices))

    def get_frames_numpy(self, indices: Sequence[int]) -> np.ndarray:
        """Same as :meth:`get_frames` as a numpy array (used in child processes, no torch)."""
        if self._closed:
            raise HieraVideoError(f"video '{self.path}' is closed; open it again")
        idx = self.clamp(indices)
        if idx.size == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)
        return self._decode_sorted(unique.tolist())[inverse.reshape(-1)]

    def _decode_sorted(self, unique: list[int]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True


class PyAVReader(VideoReader):
    """PyAV backend: seeks to the keyframe before each needed run and decodes forward.

    Only the requested frames are kept, so memory is bounded by the clip, not the video.
    When the next needed frame lies past another keyframe, it seeks again instead of
    decoding through the gap.
    """

    backend = "pyav"

    def __init__(self, path: Path, container, stream, probe: Probe):
        super().__init__(path, probe)
        self._container = container
        self._stream = stream
        self._pts = probe.pts
        self._keys = probe.keys
        self._index_of_pts = None if probe.pts is None else {p: i for i, p in enumerate(probe.pts)}
        self._pts_at_pos = probe.pts_at_pos
        self._seek_ts = probe.seek_ts
        self._seekable = True  # False once a seek was seen to lose frames decoding from the start finds
        self._coded_size = (probe.coded_height, probe.coded_width)
        if not stream.codec_context.is_open:  # (the probe sets it before decoding its first frame)
            stream.codec_context.thread_type = "AUTO"
        self._reformatter = av.video.reformatter.VideoReformatter()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            container, self._container = self._container, None
            if container is not None:
                container.close()

    def _keyframe_before(self, index: int) -> int:
        return self._keys[bisect.bisect_right(self._keys, index) - 1]

    def _frame_rgb(self, frame) -> np.ndarray:
        """RGB ``[H, W, 3]`` as displayed: the coded size, then the file's display rotation."""
        height, width = self._coded_size
        if frame.width != width or frame.height != height or frame.format.name != "rgb24":
            # one reformatter per reader keeps the swscale context between frames
            frame = self._reformatter.reformat(frame, width=width, height=height, format="rgb24")
        return self.orientation.apply(frame.to_ndarray())

    def _seek(self, index: int):
        """Seek to the keyframe of frame ``index`` and yield decoded frames from there.

        Every packet's timestamp is checked against the probe (by byte position): some
        demuxers (AVI with dropped-frame chunks) shift timestamps after a seek, which would
        silently give the wrong frames. A disagreement raises ``_TimestampMismatch``.
        """
        target = self._seek_ts.get(index, self._pts[index])  # the keyframe's dts where known
        self._container.seek(target, backward=True, any_frame=False, stream=self._stream)
        for packet in self._container.demux(self._stream):
            expected = self._pts_at_pos.get(packet.pos) if packet.size else None
            stamp = packet.pts if packet.pts is not None else packet.dts
            if expected is not None and stamp != expected:
                raise _TimestampMismatch
            yield from packet.decode()

    def _decode_sorted(self, unique: list[int]) -> np.ndarray:
        try:
            seek = self._pts is not None and self._seekable
            got = self._decode_runs(unique) if seek else self._decode_from_start(unique)
        except HieraVideoError:
            raise
        except Exception as e:
            raise decode_error(self.path, f"decoding failed ({short(e)}); the file may be corrupt") from None
        return self._assemble(unique, got)

    def _decode_runs(self, unique: list[int]) -> dict[int, np.ndarray]:
        """Decode ``unique`` (sorted) in runs, one seek per run.

        A seek that yields no frame at all, or lands after the target even from the first
        keyframe (demuxers without an index, e.g. MPEG-TS, can land on a frame that needs an
        earlier keyframe), falls back to decoding from the start of the file."""
        got: dict[int, np.ndarray] = {}
        j = 0
        while j < len(unique):
            start = self._keyframe_before(unique[j])
            for _attempt in range(3):
                status, j = self._decode_from(start, unique, j, got)
                if status != "overshoot" or start == 0:
                    break
                start = self._keyframe_before(start - 1)
            else:
                status = "mismatch"
            if status == "mismatch":  # timestamps unusable: number frames by decode order
                self._pts = None  # from now on, for this reader
                return self._decode_from_start(unique)
            if status in ("overshoot", "empty"):  # the seek lost frames: decode from the start
                return self._decode_from_start(unique, got)
            if status == "eof":
                break
            if status == "error":
                j += 1  # undecodable: substituted later; try the next frame after a fresh seek
        return got

    def _decode_from(self, start: int, unique: list[int], j: int, got: dict) -> tuple[str, int]:
        """Seek to keyframe ``start`` and decode forward, collecting ``unique[j:]``.

        Returns ``(status, j)``; status is "done", "seek" (the next needed frame lies past a
        later keyframe, so seeking is cheaper than decoding the gap), "overshoot" (the seek
        landed after the target), "eof", "empty" (the seek yielded no frame at all), "error"
        (FFmpeg error) or "mismatch" (decoded frames carry no timestamps the probe knows).
        Frames passed over without being decoded stay missing and are substituted by
        :meth:`_assemble`.
        """
        first = True
        try:
            for frame in self._seek(start):
                idx = self._index_of_pts.get(frame.pts)
                if idx is None:  # e.g. AVI after a seek: frame timestamps shifted
                    return "mismatch", j
                if first:
                    first = False
                    if idx > unique[j]:
                        return "overshoot", j
                while j < len(unique) and unique[j] < idx:
                    j += 1  # passed over: the decoder never produced it
                if j < len(unique) and unique[j] == idx:
                    got[idx] = self._frame_rgb(frame)
                    j += 1
                if j == len(unique):
                    return "done", j
                if idx >= start and self._keyframe_before(unique[j]) > idx + 1:
                    return "seek", j  # (only once past ``start``: progress even if a seek undershoots)
        except _TimestampMismatch:
            return "mismatch", j
        except av.error.FFmpegError:
            return "error", j
        return ("empty" if first else "eof"), j

    def _decode_from_start(self, unique: list[int], got: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
        """Decode from the start (reopened: some streams cannot seek back), adding ``unique``
        frames to ``got``, identified by timestamp or, once ``_pts is None``, by output order.
        When this finds frames that seeking did not, the reader stops seeking (every later
        read decodes from the start)."""
        got = {} if got is None else got
        before = set(got)
        wanted, last = set(unique), unique[-1]
        self._container.close()
        self._container = open_container(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_type = "AUTO"
        try:
            for n, frame in enumerate(self._container.decode(self._stream)):
                idx = n if self._pts is None else self._index_of_pts.get(frame.pts)
                if idx is None:  # timestamps unusable: number frames by decode order
                    self._pts = None
                    return self._decode_from_start(unique)
                if idx in wanted and idx not in got:
                    got[idx] = self._frame_rgb(frame)
                if idx >= last:
                    break
        except av.error.FFmpegError:
            pass
        if set(got) - before:
            self._seekable = False
        return got

    def _assemble(self, unique: list[int], got: dict[int, np.ndarray]) -> np.ndarray:
        """Stack frames in ``unique`` order, substituting the nearest decoded frame for gaps."""
        if not got:
            raise decode_error(self.path, "no frame could be decoded (corrupt or truncated video data)")
        have = sorted(got)
        out = np.empty((len(unique), self.height, self.width, 3), np.uint8)
        for k, idx in enumerate(unique):
            frame = got.get(idx)
            if frame is None:
                self.substituted_frames += 1
                pos = bisect.bisect_right(have, idx)
                frame = got[have[pos - 1]] if pos > 0 else got[have[0]]
            out[k] = frame
        return out


def decord_own_orientation(probe: Probe) -> Orientation:
    """The turn decord 0.6.0 applies to the frames of this file by itself (it cannot be
    switched off), mirroring its ``VideoReader::GetRotation``: the ``rotate`` tag, else the
    stream's display matrix, both as the FFmpeg 4.1 bundled with the decord wheels exports
    them, and only exact turns of 90, 180 or 270 degrees clockwise (``transpose`` filters; a
    mirrored matrix is taken for a turn). That FFmpeg exports a display matrix for mp4/mov
    only (no Matroska projection, no H.264 display-orientation SEI); the tag, in any container.
    """
    theta = probe.rotate_tag
    if theta is None and probe.display_matrix is not None and "mov" in probe.format.split(","):
        theta = ffmpeg_clockwise_degrees(probe.display_matrix)
    if theta is None:
        return IDENTITY
    turn = int(theta % 360.0)  # decord truncates to int, then switches on 90/180/270
    return from_clockwise(turn) if turn in (90, 180, 270) else IDENTITY


class DecordReader(VideoReader):
    """decord backend; metadata and the frame count come from the PyAV probe.

    Frames are always requested sorted and unique (decord is more reliable going forward)
    and never beyond the verified frame count. With ``fallback=True`` (backend "auto") any
    decord failure switches this reader to PyAV instead of raising.

    Orientation: decord turns some rotated files itself, not always as FFmpeg's tools do
    (see :func:`decord_own_orientation`). Its frames are checked to have the size that turn
    gives, then undone and replaced by the file's own orientation in one reshuffle
    (``own.inverse().then(orientation)``).
    """

    backend = "decord"

    def __init__(self, path: Path, probe: Probe, fallback: bool = False):
        super().__init__(path, probe)
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        self._fallback = fallback
        self._pyav: PyAVReader | None = None
        own = decord_own_orientation(probe)
        self._decord_size = own.display_size(probe.coded_height, probe.coded_width)
        self._fix = own.inverse().then(probe.orientation)
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            reported = len(self._vr)
        except Exception as e:
            if not fallback:
                raise decode_error(path, f"decord could not open it ({short(e)}); try backend='pyav'") from None
            reported = self.num_frames
            self._switch_to_pyav()
        # Trust the smaller count: frames past the real end are what makes decord hang.
        self.num_frames = max(1, min(self.num_frames, reported))

    def _switch_to_pyav(self) -> None:
        container, stream, probe = probe_open(self.path)
        self._pyav = PyAVReader(self.path, container, stream, probe)
        self._vr = None
        self.backend = "pyav"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._vr = None
            if self._pyav is not None:
                self._pyav.close()

    def _decode_sorted(self, unique: list[int]) -> np.ndarray:
        if self._pyav is not None:
            return self._decode_with_pyav(unique)
        try:
            frames = self._vr.get_batch(unique).asnumpy()
            if frames.shape != (len(unique), *self._decord_size, 3):
                raise RuntimeError(f"decord returned frames of shape {frames.shape}")
            frames = self._fix.apply(frames)
        except Exception as e:
            if not self._fallback:
                raise decode_error(self.path, f"decord failed ({short(e)}); try backend='pyav'") from None
            self._switch_to_pyav()
            return self._decode_with_pyav(unique)
        return frames

    def _decode_with_pyav(self, unique: list[int]) -> np.ndarray:
        """The PyAV fallback's frames; its substituted frames count as this reader's."""
        before = self._pyav.substituted_frames
        try:
            return self._pyav._decode_sorted(unique)
        finally:
            self.substituted_frames += self._pyav.substituted_frames - before


class TorchCodecReader(VideoReader):
    """torchcodec backend (CPU): ``VideoDecoder`` in exact seek mode (it scans the file once,
    so frame ``i`` is the ``i``-th frame in presentation order) and one ``get_frames_at``
    call for all the unique frames a read needs (decode-once, as the other backends).

    Metadata and the frame count come from the PyAV probe (the smaller of the two counts is
    trusted). Orientation: torchcodec turns frames by the display matrix itself
    (``metadata.rotation``, 90-degree steps, mirrors ignored); its frames are checked to have
    the size that turn gives, then the turn is undone and replaced by the file's own
    orientation in one reshuffle, as for decord. With ``fallback=True`` (backend
    "auto") any torchcodec failure switches this reader to PyAV instead of raising.
    """

    backend = "torchcodec"

    def __init__(self, path: Path, probe: Probe, fallback: bool = False):
        super().__init__(path, probe)
        self._fallback = fallback
        self._pyav: PyAVReader | None = None
        self._coded_size = (probe.coded_height, probe.coded_width)
        try:
            from torchcodec.decoders import VideoDecoder

            self._dec = VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1, device="cpu")
            reported = int(self._dec.metadata.num_frames or 0) or self.num_frames
            # torchcodec turns frames itself by the display matrix's angle, counter-clockwise,
            # rounded to 90 degrees (a mirror matrix reads as a turn): undo exactly that turn.
            ccw = getattr(self._dec.metadata, "rotation", None) or 0.0
            own = from_clockwise(-float(ccw) % 360.0) or IDENTITY
            self._fix = own.inverse().then(probe.orientation)
            self._own_size = own.display_size(*self._coded_size)
        except Exception as e:
            if not fallback:
                raise decode_error(path, f"torchcodec could not open it ({short(e)}); try backend='pyav'") from None
            reported = self.num_frames
            self._switch_to_pyav()
        self.num_frames = max(1, min(self.num_frames, reported))

    def _switch_to_pyav(self) -> None:
        container, stream, probe = probe_open(self.path)
        self._pyav = PyAVReader(self.path, container, stream, probe)
        self._dec = None
        self.backend = "pyav"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dec = None
            if self._pyav is not None:
                self._pyav.close()

    def _decode_sorted(self, unique: list[int]) -> np.ndarray:
        if self._pyav is not None:
            return DecordReader._decode_with_pyav(self, unique)
        try:
            frames = self._dec.get_frames_at(indices=unique).data.numpy()
            if frames.shape != (len(unique), *self._own_size, 3):
                raise RuntimeError(f"torchcodec returned frames of shape {tuple(frames.shape)}")
            frames = self._fix.apply(frames)
        except Exception as e:
            if not self._fallback:
                raise decode_error(self.path, f"torchcodec failed ({short(e)}); try backend='pyav'") from None
            self._switch_to_pyav()
            return DecordReader._decode_with_pyav(self, unique)
        return frames


def open_video(path: str | os.PathLike, backend: str = "auto") -> VideoReader:
    """Open a video for frame access.

    ``backend``: "pyav", "decord", "torchcodec", or "auto": decord when it is installed and
    the codec and container are ones it decodes correctly; else, in containers with a seek
    index (mp4/mov, mkv/webm, avi; HEVC included, frame-exact in our tests), torchcodec when it
    loads FFmpeg, falling back to PyAV on failure; everything else PyAV. MPEG-TS/PS always go
    to PyAV (decord and torchcodec both return wrong frames there). Raises HieraVideoError on
    any problem.
    """
    if backend not in BACKENDS:
        raise HieraVideoError(f"unknown video backend '{backend}'; use one of {', '.join(BACKENDS)}")
    path = Path(path)
    if backend == "torchcodec" and not torchcodec_available():
        raise HieraVideoError(f"video backend 'torchcodec' is unavailable: {torchcodec_status()[1]}; {TORCHCODEC_INSTALL}, or use backend='pyav'")
    container, stream, probe = probe_open(path)
    if probe.orientation_problem:
        warnings.warn(f"video '{path}': {probe.orientation_problem}", stacklevel=2)
    formats = set(probe.format.split(","))
    if backend == "torchcodec":
        if formats & DECORD_WRONG_FORMATS:  # measured: an H.264 .ts read gives frame 28 for 0, 3, 5
            warnings.warn(f"torchcodec returns wrong frames for {probe.format} files; decoding '{path}' with PyAV", stacklevel=2)
            return PyAVReader(path, container, stream, probe)
        container.close()
        return TorchCodecReader(path, probe)
    use_decord = backend == "decord" or (
        backend == "auto" and probe.codec in DECORD_SAFE_CODECS and bool(formats & DECORD_SAFE_FORMATS) and decord_available()
    )
    if backend == "decord" and not decord_available():
        container.close()
        raise HieraVideoError("video backend 'decord' is not installed; pip install decord or use backend='pyav'")
    if use_decord:
        # decord allocates from the header's frame count before reading anything (2^31 claimed
        # frames = std::bad_alloc = the whole process aborts): check it first.
        problem = probe.header_problem(path.stat().st_size)
        if problem is not None:
            if backend == "decord":
                container.close()
                raise decode_error(path, f"{problem}; decord would abort the process allocating for them: use backend='pyav' or 'auto'")
            use_decord = False
        elif backend == "decord" and formats & DECORD_WRONG_FORMATS:
            warnings.warn(
                f"decord 0.6.0 returns wrong frames for {probe.format} files (it cannot seek in them); "
                f"decoding '{path}' with PyAV",
                stacklevel=2,
            )
            use_decord = False
    if not use_decord:
        if (backend == "auto" and formats & DECORD_SAFE_FORMATS and probe.header_problem(path.stat().st_size) is None
                and torchcodec_available()):
            container.close()  # decord missing or refused: torchcodec next, PyAV if it fails
            return TorchCodecReader(path, probe, fallback=True)
        return PyAVReader(path, container, stream, probe)
    container.close()
    if backend == "decord" and probe.codec not in DECORD_SAFE_CODECS:
        warnings.warn(
            f"decord 0.6.0 may return wrong frames for {probe.codec} video ('{path}'); prefer backend='pyav'",
            stacklevel=2,
        )
    return DecordReader(path, probe, fallback=backend == "auto")


def _read_numpy(path: str, indices: list[int], backend: str) -> np.ndarray:
    with open_video(path, backend) as reader:
        return reader.get_frames_numpy(indices)


def _clip_worker(conn, path: str, indices: list[int], backend: str) -> None:
    try:
        conn.send(("ok", _read_numpy(path, indices, backend)))
    except HieraVideoError as e:
        conn.send(("error", str(e)))
    except BaseException as e:  # never let the child die silently
        conn.send(("error", f"cannot decode video '{path}': {one_line(e)}"))
    finally:
        conn.close()


def read_clip(
    path: str | os.PathLike,
    indices: Sequence[int],
    backend: str = "auto",
    timeout: float | None = None,
) -> torch.Tensor:
    """Open, decode ``indices`` and close: ``uint8 [T, H, W, 3]``.

    With ``timeout`` (seconds) the decode runs in a child process (fork where available)
    that is killed if it takes longer or crashes; either raises HieraVideoError. Use it in
    data loaders that must survive corrupt files.
    """
    idx = indices.tolist() if isinstance(indices, torch.Tensor) else [int(i) for i in indices]
    if timeout is None:
        return torch.from_numpy(_read_numpy(str(path), idx, backend))
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_clip_worker, args=(sender, str(path), idx, backend), daemon=True)
    proc.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise HieraVideoError(
                f"cannot decode video '{path}': decoding took longer than {timeout:g} s and was stopped; "
                "the file may be corrupt (try backend='pyav')"
            )
        try:
            status, payload = receiver.recv()
        except (EOFError, OSError):
            proc.join(1)
            raise HieraVideoError(
                f"cannot decode video '{path}': the decoder crashed (exit code {proc.exitcode}); "
                "the file may be corrupt (try backend='pyav')"
            ) from None
    finally:
        receiver.close()
        if proc.is_alive():
            proc.kill()
        proc.join()
    if status != "ok":
        raise HieraVideoError(payload)
    return torch.from_numpy(payload)
