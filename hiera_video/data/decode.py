"""Video decoding, three backends (PyAV, decord, torchcodec): frame ``i`` is the ``i``-th in presentation order
(PyAV's :class:`~hiera_video.data.probe.Probe` counts them); indices are clamped to that count (decord 0.6.0 hangs
past the end); "auto" never gives MPEG-TS/PS to decord/torchcodec (wrong frames). Frames come out as displayed."""

from __future__ import annotations

import bisect
import contextlib
import functools
import importlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hiera_video.data.orientation import IDENTITY, Orientation, ffmpeg_clockwise_degrees, from_clockwise
from hiera_video.data.probe import decode_error, open_container, Probe, probe_open
from hiera_video.errors import HieraVideoError, short

import av

BACKENDS = ("auto", "pyav", "decord", "torchcodec")
DECORD_SAFE_CODECS = frozenset({"h264", "mpeg4", "mjpeg", "vp9"})
DECORD_SAFE_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi"})
DECORD_WRONG_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo"})


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
        return True
    except Exception:
        return False


TORCHCODEC_INSTALL = ("install FFmpeg 4-8 shared libraries (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install "
                      "ffmpeg; conda: conda install ffmpeg) and pip install 'hiera-video[torchcodec]'")
_torchcodec_state: tuple[str | None, str | None] | None = None


def torchcodec_status() -> tuple[str | None, str | None]:
    """``(ffmpeg_version, problem)``, checked once per process."""
    global _torchcodec_state
    if _torchcodec_state is None:
        try:
            import torchcodec._core as core
            from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads the FFmpeg libraries)
            versions = core.get_ffmpeg_library_versions()
            _torchcodec_state = (str(versions.get("ffmpeg_version", "?")), None)
        except ImportError as e:
            first = short(e, 1000)
            why = "torchcodec is not installed" if "torchcodec" in first and "No module" in first else f"torchcodec could not load: {first[:200]}"
            _torchcodec_state = (None, why)
        except Exception as e:  # RuntimeError/OSError: no loadable FFmpeg 4-8 libraries
            _torchcodec_state = (None, f"torchcodec could not load FFmpeg ({short(e)})")
    return _torchcodec_state


def torchcodec_available() -> bool:
    return torchcodec_status()[1] is None


@functools.cache
def decoder_name(backend: str, note: str = "") -> str:
    """E.g. "pyav 14.0.1 (FFmpeg 7.1)"; ``note``: torchcodec's device."""
    if backend == "pyav":
        return f"pyav {av.__version__} (FFmpeg {getattr(av, 'ffmpeg_version_info', '?')})"
    if backend not in ("decord", "torchcodec"):  # a reader of another kind (a test's stand-in)
        return backend
    version = importlib.import_module(backend).__version__
    if backend == "decord":
        return f"decord {version}"
    ffmpeg = (torchcodec_status()[0] or "?").split("-")[0]
    return f"torchcodec {version.split('+')[0]} (FFmpeg {ffmpeg}{note})"


class _TimestampMismatch(Exception):
    pass


class VideoReader:
    """Random access to one video's frames; ``substituted_frames``: undecodable frames replaced."""

    backend = "none"

    def __init__(self, path: Path, probe: Probe):
        self.path, self.num_frames, self.fps, self.duration = path, probe.num_frames, probe.fps, probe.duration
        self.height, self.width, self.codec, self.orientation = probe.height, probe.width, probe.codec, probe.orientation
        self.substituted_frames, self._closed = 0, False

    def __repr__(self) -> str:
        return (f"{type(self).__name__}('{self.path}', backend={self.backend}, frames={self.num_frames}, "
                f"fps={self.fps:.3f}, size={self.width}x{self.height})")

    def __len__(self) -> int:
        return self.num_frames

    @property
    def decoder(self) -> str:
        return decoder_name(self.backend)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def clamp(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices.tolist() if isinstance(indices, torch.Tensor) else list(indices), dtype=np.int64)
        return np.clip(idx.reshape(-1), 0, self.num_frames - 1)

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """RGB frames ``uint8 [T, H, W, 3]`` for ``indices`` (any order, repeats allowed)."""
        return torch.from_numpy(self.get_frames_numpy(indices))

    def get_frames_numpy(self, indices: Sequence[int]) -> np.ndarray:
        if self._closed:
            raise HieraVideoError(f"video '{self.path}' is closed; open it again")
        idx = self.clamp(indices)
        if idx.size == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        unique, inverse = np.unique(idx, return_inverse=True)
        return self._decode_sorted(unique.tolist())[inverse.reshape(-1)]

    def close(self) -> None:
        self._closed = True


class PyAVReader(VideoReader):
    """PyAV: seek to the keyframe before each run of needed frames, decode forward, keep only those."""

    backend = "pyav"

    def __init__(self, path: Path, container, stream, probe: Probe):
        super().__init__(path, probe)
        self._container, self._stream, self._pts, self._keys = container, stream, probe.pts, probe.keys
        self._index_of_pts = None if probe.pts is None else {p: i for i, p in enumerate(probe.pts)}
        self._pts_at_pos, self._seek_ts = probe.pts_at_pos, probe.seek_ts
        self._seekable = True  # False once a seek lost frames that decoding from the start finds
        self._coded_size = (probe.coded_height, probe.coded_width)
        if not stream.codec_context.is_open:
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
        height, width = self._coded_size
        if frame.width != width or frame.height != height or frame.format.name != "rgb24":
            frame = self._reformatter.reformat(frame, width=width, height=height, format="rgb24")
        return self.orientation.apply(frame.to_ndarray())

    def _seek(self, index: int):
        """Frames from keyframe ``index``; packet stamps checked by byte position (AVI drop chunks shift them)."""
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
            got = (self._decode_runs if self._pts is not None and self._seekable else self._decode_from_start)(unique)
        except HieraVideoError:
            raise
        except Exception as e:
            raise decode_error(self.path, f"decoding failed ({short(e, 160)}); the file may be corrupt") from None
        return self._assemble(unique, got)

    def _decode_runs(self, unique: list[int]) -> dict[int, np.ndarray]:
        """Runs of one seek each; a seek yielding nothing or landing past its target decodes from the start."""
        got: dict[int, np.ndarray] = {}
        j = 0
        while j < len(unique):
            start = self._keyframe_before(unique[j])
            for _ in range(3):
                status, j = self._decode_from(start, unique, j, got)
                if status != "overshoot" or start == 0:
                    break
                start = self._keyframe_before(start - 1)
            else:
                status = "mismatch"
            if status == "mismatch":  # timestamps unusable: number frames by decode order
                self._pts = None
                return self._decode_from_start(unique)
            if status in ("overshoot", "empty"):  # the seek lost frames: decode from the start
                return self._decode_from_start(unique, got)
            if status == "eof":
                break
            if status == "error":
                j += 1  # undecodable: substituted later; try the next frame after a fresh seek
        return got

    def _decode_from(self, start: int, unique: list[int], j: int, got: dict) -> tuple[str, int]:
        """Collect ``unique[j:]`` from keyframe ``start``: ``(status, j)``; frames passed over stay missing."""
        first = True
        try:
            for frame in self._seek(start):
                idx = self._index_of_pts.get(frame.pts)
                if idx is None:
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
                    return "seek", j
        except _TimestampMismatch:
            return "mismatch", j
        except av.error.FFmpegError:
            return "error", j
        return ("empty" if first else "eof"), j

    def _decode_from_start(self, unique: list[int], got: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
        """Reopen and decode into ``got``; finding frames that seeking did not stops this reader seeking."""
        got = {} if got is None else got
        before, wanted, last = set(got), set(unique), unique[-1]
        self._container.close()
        self._container = open_container(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_type = "AUTO"
        try:
            for n, frame in enumerate(self._container.decode(self._stream)):
                idx = n if self._pts is None else self._index_of_pts.get(frame.pts)
                if idx is None:
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
        if not got:
            raise decode_error(self.path, "no frame could be decoded (corrupt or truncated video data)")
        have = sorted(got)
        out = np.empty((len(unique), self.height, self.width, 3), np.uint8)
        for k, idx in enumerate(unique):
            if idx not in got:
                self.substituted_frames += 1
            out[k] = got.get(idx, got[have[max(bisect.bisect_right(have, idx) - 1, 0)]])
        return out


class _FallbackReader(VideoReader):
    """A native decoder (``_open`` -> frame count, ``_read``); ``fallback``: failures switch to PyAV."""

    def __init__(self, path: Path, probe: Probe, fallback: bool = False):
        super().__init__(path, probe)
        self._fallback, self._pyav, self._native = fallback, None, None
        try:
            reported = self._open(probe)
        except Exception as e:
            if not fallback:
                raise decode_error(path, f"{self.backend} could not open it ({short(e, 160)}); try backend='pyav'") from None
            reported = self.num_frames
            self._switch_to_pyav()
        self.num_frames = max(1, min(self.num_frames, reported))

    def _set_turn(self, own: Orientation, probe: Probe) -> None:
        self._own_size = own.display_size(probe.coded_height, probe.coded_width)
        self._fix = own.inverse().then(probe.orientation)

    def _switch_to_pyav(self) -> None:
        container, stream, probe = probe_open(self.path)
        self._pyav = PyAVReader(self.path, container, stream, probe)
        self._native = None
        self.backend = "pyav"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._native = None
            if self._pyav is not None:
                self._pyav.close()

    def _decode_sorted(self, unique: list[int]) -> np.ndarray:
        if self._pyav is None:
            try:
                frames = self._read(unique)
                if frames.shape != (len(unique), *self._own_size, 3):
                    raise RuntimeError(f"{self.backend} returned frames of shape {tuple(frames.shape)}")
                return self._fix.apply(frames)
            except Exception as e:
                if not self._fallback:
                    raise decode_error(self.path, f"{self.backend} failed ({short(e, 160)}); try backend='pyav'") from None
                self._switch_to_pyav()
        before = self._pyav.substituted_frames
        try:
            return self._pyav._decode_sorted(unique)
        finally:
            self.substituted_frames += self._pyav.substituted_frames - before


class DecordReader(_FallbackReader):
    backend = "decord"

    def _open(self, probe: Probe) -> int:
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        theta = probe.rotate_tag  # decord's GetRotation: the tag, else the mov display matrix; int, 90/180/270 only
        if theta is None and probe.display_matrix is not None and "mov" in probe.format.split(","):
            theta = ffmpeg_clockwise_degrees(probe.display_matrix)
        turn = None if theta is None else int(theta % 360.0)
        self._set_turn(from_clockwise(turn) if turn in (90, 180, 270) else IDENTITY, probe)
        self._native = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)
        return len(self._native)

    def _read(self, unique: list[int]) -> np.ndarray:
        return self._native.get_batch(unique).asnumpy()


class TorchCodecReader(_FallbackReader):
    """torchcodec, exact seek mode; ``device="cuda"``: NVDEC, reopened on the CPU when it cannot decode frame 0."""

    backend = "torchcodec"

    def __init__(self, path: Path, probe: Probe, fallback: bool = False, device: str = "cpu"):
        self._device, self._note = device, ", cuda" if device == "cuda" else ""
        super().__init__(path, probe, fallback)

    def _open(self, probe: Probe) -> int:
        from torchcodec.decoders import VideoDecoder

        decoder = functools.partial(VideoDecoder, str(self.path), seek_mode="exact", dimension_order="NHWC",
                                    num_ffmpeg_threads=1)
        if self._device == "cuda":
            try:
                self._native = decoder(device="cuda")
                self._native.get_frame_at(0)  # NVDEC refuses some codecs only when decoding
            except Exception:
                self._native, self._note = decoder(device="cpu"), ", cpu fallback"
        else:
            self._native = decoder(device="cpu")
        ccw = getattr(self._native.metadata, "rotation", None) or 0.0  # counter-clockwise, rounded to 90 degrees
        self._set_turn(from_clockwise(-float(ccw) % 360.0) or IDENTITY, probe)
        return int(self._native.metadata.num_frames or 0) or self.num_frames

    def _read(self, unique: list[int]) -> np.ndarray:
        return self._native.get_frames_at(indices=unique).data.cpu().numpy()

    @property
    def decoder(self) -> str:
        return decoder_name(self.backend, self._note)


def open_video(path: str | os.PathLike, backend: str = "auto", device: str = "cpu") -> VideoReader:
    """"auto": decord where exact, else torchcodec in indexed containers, else PyAV; MPEG-TS/PS always PyAV."""
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
        if formats & DECORD_WRONG_FORMATS:
            warnings.warn(f"torchcodec returns wrong frames for {probe.format} files; decoding '{path}' with PyAV", stacklevel=2)
            return PyAVReader(path, container, stream, probe)
        container.close()
        return TorchCodecReader(path, probe, device=device)
    use_decord = backend == "decord" or (backend == "auto" and device == "cpu" and probe.codec in DECORD_SAFE_CODECS
                                         and bool(formats & DECORD_SAFE_FORMATS) and decord_available())
    if backend == "decord" and not decord_available():
        container.close()
        raise HieraVideoError("video backend 'decord' is not installed; pip install decord or use backend='pyav'")
    if use_decord:  # decord allocates for the header's frame count first (2^31: the process aborts)
        problem = probe.header_problem(path.stat().st_size)
        if problem is not None:
            if backend == "decord":
                container.close()
                raise decode_error(path, f"{problem}; decord would abort the process allocating for them: use backend='pyav' or 'auto'")
            use_decord = False
        elif backend == "decord" and formats & DECORD_WRONG_FORMATS:
            warnings.warn(f"decord 0.6.0 returns wrong frames for {probe.format} files (it cannot seek in them); "
                          f"decoding '{path}' with PyAV", stacklevel=2)
            use_decord = False
    if not use_decord:
        if (backend == "auto" and formats & DECORD_SAFE_FORMATS and probe.header_problem(path.stat().st_size) is None
                and torchcodec_available()):
            container.close()
            return TorchCodecReader(path, probe, fallback=True, device=device)
        return PyAVReader(path, container, stream, probe)
    container.close()
    if backend == "decord" and probe.codec not in DECORD_SAFE_CODECS:
        warnings.warn(f"decord 0.6.0 may return wrong frames for {probe.codec} video ('{path}'); prefer backend='pyav'", stacklevel=2)
    return DecordReader(path, probe, fallback=backend == "auto")


def read_clip(path: str | os.PathLike, indices: Sequence[int], backend: str = "auto") -> torch.Tensor:
    with open_video(path, backend) as reader:
        return reader.get_frames(indices)
