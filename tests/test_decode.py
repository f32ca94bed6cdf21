"""Decoding: frame-exact reads for every container/codec, both backends, and clean errors."""

from __future__ import annotations

import contextlib
import os
import re
import time
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import videogen as vg

from hiera_video.data import decode
from hiera_video.data.decode import PyAVReader, decord_available, open_video, read_clip
from hiera_video.data.clip_spec import ClipSpec
from hiera_video.data.decode import torchcodec_available
from hiera_video.data.sampling import dense_indices, segment_indices
from hiera_video.data.pool import decode_in_order
from hiera_video.errors import HieraVideoError

BACKENDS = ["pyav", pytest.param("decord", marks=pytest.mark.skipif(not decord_available(), reason="decord missing")),
            pytest.param("torchcodec", marks=pytest.mark.skipif(not torchcodec_available(), reason="torchcodec or its FFmpeg libraries missing"))]
HEVC = pytest.mark.skipif(not vg.has_encoder("libx265"), reason="bundled FFmpeg has no libx265 encoder")

# name -> write_video kwargs; every file is frame-stamped
SPECS = {
    "h264": dict(num_frames=60, fmt="h264", audio=True),
    "h264_bframes": dict(num_frames=60, fmt="h264_bframes"),
    "vp9": dict(num_frames=45, fmt="vp9", audio=True),
    "mjpeg": dict(num_frames=40, fmt="mjpeg"),
    "hevc": dict(num_frames=40, fmt="hevc"),
    "vfr_h264": dict(num_frames=50, fmt="h264_bframes", vfr=True),
    "vfr_vp9": dict(num_frames=40, fmt="vp9", vfr=True),
    "vfr_avi": dict(num_frames=40, fmt="mjpeg", vfr=True),  # AVI header over-reports frames
    "gray": dict(num_frames=30, fmt="h264", gray=True),
    "small": dict(num_frames=20, height=32, width=32),
    "portrait": dict(num_frames=20, height=96, width=64),
    "one_frame": dict(num_frames=1),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for name, kwargs in SPECS.items():
        if kwargs.get("fmt") == "hevc" and not vg.has_encoder("libx265"):
            continue
        out[name] = vg.write_video(root / name, **kwargs)
    return out


NO_DECORD = pytest.mark.skipif(not decord_available(), reason="decord missing")


def _cases():
    """(video, backend) pairs; HEVC is read with PyAV only (see the auto/warning test)."""
    for name in SPECS:
        for backend in ("pyav", "decord"):
            if name == "hevc" and backend == "decord":
                continue
            marks = ([HEVC] if name == "hevc" else []) + ([NO_DECORD] if backend == "decord" else [])
            yield pytest.param(name, backend, marks=marks, id=f"{name}-{backend}")


def _expected_size(name):
    spec = SPECS[name]
    return spec.get("height", 48), spec.get("width", 64)


@pytest.mark.parametrize("name,backend", list(_cases()))
def test_probe_and_frame_exact_reads(videos, name, backend):
    """Exact frame count, size, and every request returns exactly the stamped frames."""
    path = videos[name]
    n = SPECS[name]["num_frames"]
    with open_video(path, backend=backend) as reader:
        assert reader.backend == backend
        assert reader.num_frames == n
        assert (reader.height, reader.width) == _expected_size(name)
        assert reader.fps > 0 and reader.duration > 0
        if not SPECS[name].get("vfr"):
            assert reader.fps == pytest.approx(30, rel=0.02)
            assert reader.duration == pytest.approx(n / 30, rel=0.05, abs=0.04)
        rng = np.random.default_rng(len(name))
        requests = [
            list(range(n)),  # everything, in order
            rng.integers(0, n, 12).tolist(),  # unsorted with repeats
            [n - 1, 0, n - 1, n // 2],
            [-5, n + 3, n * 10],  # out of range: clamped
        ]
        for idx in requests:
            frames = reader.get_frames(idx)
            assert frames.dtype == torch.uint8
            assert frames.shape == (len(idx), *_expected_size(name), 3)
            assert vg.read_stamps(frames) == np.clip(idx, 0, n - 1).tolist()
        assert reader.substituted_frames == 0


def test_backends_agree_on_h264(videos):
    """PyAV index i == decord index i (presentation order), pixel-for-pixel close."""
    if not decord_available():
        pytest.skip("decord missing")
    idx = [0, 7, 3, 59, 30, 31, 30, 12]
    for name in ("h264", "h264_bframes", "vfr_h264"):
        with open_video(videos[name], "pyav") as a, open_video(videos[name], "decord") as b:
            assert (a.num_frames, a.fps, a.duration) == (b.num_frames, b.fps, b.duration)
            fa, fb = a.get_frames(idx), b.get_frames(idx)
        assert vg.read_stamps(fa) == vg.read_stamps(fb) == np.clip(idx, 0, SPECS[name]["num_frames"] - 1).tolist()
        assert (fa.int() - fb.int()).abs().float().mean() < 2.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_plus_decoding_is_frame_exact(videos, backend):
    with open_video(videos["h264"], backend) as reader:
        for clip in range(3):
            idx = dense_indices(reader.num_frames, reader.fps, 8, 2, mode="test", num_clips=3, clip_idx=clip)
            assert vg.read_stamps(reader.get_frames(idx)) == idx.tolist()
        idx = segment_indices(reader.num_frames, 8, mode="train", generator=torch.Generator().manual_seed(0))
        assert vg.read_stamps(reader.get_frames(idx)) == idx.tolist()


def test_vfr_index_is_presentation_order(videos):
    """Irregular timestamps: frame i is the i-th shown; fps is the measured average."""
    with open_video(videos["vfr_h264"], "pyav") as reader:
        times = sorted(reader._pts)
        gaps = np.diff(times)
        assert len(set(gaps.tolist())) > 1  # really variable
        span = float((times[-1] - times[0]) * reader._stream.time_base)
        assert reader.fps == pytest.approx((reader.num_frames - 1) / span)


@pytest.mark.parametrize("backend", ["pyav", "auto"])
def test_raw_stream_without_timestamps(tmp_path, backend):
    """Annex-B .h264 has no container timestamps: frames are numbered in decode order."""
    path = vg.write_video(tmp_path / "raw", num_frames=30, fmt="h264_raw")
    with open_video(path, backend) as reader:
        assert reader.num_frames == 30 and reader.backend == "pyav"  # decord cannot open raw streams
        assert vg.read_stamps(reader.get_frames([29, 3, 3, 0, 15])) == [29, 3, 3, 0, 15]
        assert vg.read_stamps(reader.get_frames([1])) == [1]


def test_avi_over_reported_count_is_corrected(videos):
    with av.open(str(videos["vfr_avi"])) as c:
        assert c.streams.video[0].frames > SPECS["vfr_avi"]["num_frames"]  # the header lies
    with open_video(videos["vfr_avi"], "pyav") as reader:
        assert reader.num_frames == SPECS["vfr_avi"]["num_frames"]
        assert vg.read_stamps(reader.get_frames([39, 0, 20])) == [39, 0, 20]


@pytest.mark.parametrize("backend", BACKENDS)
def test_grayscale_source_gives_rgb(videos, backend):
    with open_video(videos["gray"], backend) as reader:
        frames = reader.get_frames([0, 5])
    assert frames.shape[-1] == 3
    assert torch.equal(frames[..., 0], frames[..., 1]) and torch.equal(frames[..., 1], frames[..., 2])
    assert vg.read_stamps(frames) == [0, 5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_channel_order_is_rgb(tmp_path, backend):
    path = vg.write_video(tmp_path / "red", num_frames=3, color=(230, 20, 20))
    with open_video(path, backend) as reader:
        mean = reader.get_frames([1]).float().mean(dim=(0, 1, 2))
    assert mean[0] > 180 and mean[1] < 60 and mean[2] < 60


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_video(videos, backend):
    with open_video(videos["one_frame"], backend) as reader:
        assert reader.num_frames == 1
        assert vg.read_stamps(reader.get_frames([0, 3, -1])) == [0, 0, 0]


def test_4k_single_frame(tmp_path):
    path = vg.write_video(tmp_path / "uhd", num_frames=1, height=2160, width=3840)
    with open_video(path, "pyav") as reader:
        frames = reader.get_frames([0])
    assert frames.shape == (1, 2160, 3840, 3)
    assert vg.read_stamp(frames[0]) == 0


def test_hevc_auto_uses_pyav_and_decord_warns(videos):
    if "hevc" not in videos:
        pytest.skip("bundled FFmpeg has no libx265 encoder")
    with open_video(videos["hevc"], "auto") as reader:
        # decord 0.6.0 returns wrong frames for HEVC; torchcodec (exact seek mode) does not
        assert reader.backend == ("torchcodec" if torchcodec_available() else "pyav")
        assert vg.read_stamps(reader.get_frames([7, 0, 3])) == [7, 0, 3]
    if decord_available():
        with pytest.warns(UserWarning, match="hevc"):
            open_video(videos["hevc"], "decord").close()


def test_auto_falls_back_to_pyav_when_decord_fails(tmp_path):
    """decord 0.6.0 fails on some frame widths (e.g. 48 px: row padding bug)."""
    path = vg.write_video(tmp_path / "w48", num_frames=6, height=96, width=48)
    with open_video(path, "auto") as reader:
        assert vg.read_stamps(reader.get_frames([5, 1])) == [5, 1]
        assert reader.backend == "pyav"
    if decord_available():
        with pytest.raises(HieraVideoError, match="try backend='pyav'"):
            with open_video(path, "decord") as reader:
                reader.get_frames([0])


def test_auto_prefers_decord_for_h264(videos):
    with open_video(videos["h264"]) as reader:
        assert reader.backend == ("decord" if decord_available() else "pyav")


def _count_decoded(monkeypatch):
    counter = {"frames": 0, "seeks": 0}
    original = PyAVReader._seek

    def counting_seek(self, index):
        counter["seeks"] += 1
        for frame in original(self, index):
            counter["frames"] += 1
            yield frame

    monkeypatch.setattr(PyAVReader, "_seek", counting_seek)
    return counter


def test_pyav_decodes_only_what_is_needed(tmp_path, monkeypatch):
    """Seek to the keyframe before the clip, stop after its last frame, skip gaps by seeking."""
    path = vg.write_video(tmp_path / "long", num_frames=200, fmt="h264_gop20")
    counter = _count_decoded(monkeypatch)
    with open_video(path, "pyav") as reader:
        assert vg.read_stamps(reader.get_frames([185, 190])) == [185, 190]
        assert counter["frames"] <= 20 + 4 and counter["seeks"] == 1
        counter.update(frames=0, seeks=0)
        assert vg.read_stamps(reader.get_frames([3, 150, 5])) == [3, 150, 5]
        assert counter["seeks"] == 2 and counter["frames"] <= 2 * 20 + 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_tail_is_read_without_hanging(tmp_path, backend):
    """A webm cut at 60%: header intact, frames missing at the end."""
    full = vg.write_video(tmp_path / "full", num_frames=60, fmt="vp9")
    data = full.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    start = time.monotonic()
    with open_video(cut, backend) as reader:
        n = reader.num_frames
        assert 5 < n < 60
        idx = [0, n // 2, n - 1, n + 10]
        assert vg.read_stamps(reader.get_frames(idx)) == [0, n // 2, n - 1, n - 1]
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return vg.write_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("backend", ["auto", "pyav", "decord", "torchcodec"])
@pytest.mark.parametrize("kind", ["missing", "empty", "random", "text", "truncated", "audio_only"])
def test_bad_inputs_raise_one_line_error(bad_files, kind, backend):
    if backend == "decord" and not decord_available():
        pytest.skip("decord missing")
    if backend == "torchcodec" and not torchcodec_available():
        pytest.skip("torchcodec or its FFmpeg libraries missing")
    start = time.monotonic()
    with pytest.raises(HieraVideoError) as info:
        with open_video(bad_files[kind], backend) as reader:
            reader.get_frames([0])
    message = str(info.value)
    assert "\n" not in message and bad_files[kind].name in message
    assert time.monotonic() - start < 2
    if kind == "audio_only":
        assert "no video stream" in message
    if kind == "missing":
        assert "not found" in message
    if kind == "empty":
        assert "empty" in message


def _write_garbage_mjpeg(path):
    """A container whose video packets hold random bytes: zero decodable frames."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        stream = c.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        stream.time_base = Fraction(1, 30)
        for i in range(10):
            packet = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 30)
            packet.stream = stream
            packet.is_keyframe = True
            c.mux(packet)
    return path


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_zero_decodable_frames(tmp_path, backend):
    path = _write_garbage_mjpeg(tmp_path / "garbage.mkv")
    with pytest.raises(HieraVideoError, match="no frame could be decoded"):
        with open_video(path, backend) as reader:
            reader.get_frames([0, 5])


def test_unknown_backend_and_closed_reader(videos):
    with pytest.raises(HieraVideoError, match="unknown video backend"):
        open_video(videos["h264"], backend="ffmpeg")
    reader = open_video(videos["h264"], "pyav")
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(HieraVideoError, match="closed"):
        reader.get_frames([0])


def test_directory_is_rejected(tmp_path):
    with pytest.raises(HieraVideoError, match="directory"):
        open_video(tmp_path)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_leaked_file_handles(videos, bad_files, backend):
    open_video(videos["h264"], backend).close()  # warm-up: libraries' one-time handles
    before = _open_fds()
    for _ in range(60):
        with open_video(videos["h264"], backend) as reader:
            reader.get_frames([1, 40])
        reader = open_video(videos["vp9"], backend)
        reader.get_frames([2])
        del reader  # not closed explicitly: released on garbage collection
        with pytest.raises(HieraVideoError):
            open_video(bad_files["random"], backend)
    assert _open_fds() <= before + 2


# ---------------------------------------------------------------- read_clip, in worker processes with a time limit


def read_in_workers(paths, idx, backend="auto", timeout=20.0, workers=1) -> list:
    """``(frames or None, error or None)`` of :func:`read_clip` for each path, in the workers
    of :func:`decode_in_order` (they are forked: monkeypatches are inherited)."""
    fn = partial(read_clip, indices=idx, backend=backend)
    return [(v, e) for _, v, e in decode_in_order(paths, fn, workers=workers, timeout=timeout)]


def test_read_clip_in_process_and_in_a_worker(videos):
    idx = [9, 2, 2, 50]
    assert vg.read_stamps(read_clip(videos["h264"], idx)) == idx
    [(frames, error)] = read_in_workers([videos["h264"]], torch.tensor(idx), backend="pyav")
    assert error is None and vg.read_stamps(frames) == idx


def test_corrupt_file_in_a_worker_fails_fast(bad_files):
    start = time.monotonic()
    [(frames, error)] = read_in_workers([bad_files["random"]], [0], timeout=10)
    assert frames is None and "not a readable video" in error
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_stops_each_backends_hanging_decode_and_costs_one_video(videos, monkeypatch, tmp_path, backend):
    """The hang is inside the backend's own frame decoding (its reader class), in the worker."""
    reader = {"pyav": decode.PyAVReader, "decord": decode.DecordReader, "torchcodec": decode.TorchCodecReader}[backend]
    real = reader._decode_sorted
    monkeypatch.setattr(reader, "_decode_sorted",
                        lambda self, unique: time.sleep(60) if "hang" in str(self.path) else real(self, unique))
    (tmp_path / "hang.mp4").symlink_to(videos["h264"])
    start = time.monotonic()
    (hung, error), (frames, none) = read_in_workers([tmp_path / "hang.mp4", videos["h264"]], [4, 1], backend, timeout=1)
    assert time.monotonic() - start < 5
    assert hung is None and "longer than 1 s" in error
    assert none is None and vg.read_stamps(frames) == [4, 1]


def test_torchcodec_without_ffmpeg_explicit_error_and_quiet_auto(videos, monkeypatch):
    """No loadable FFmpeg: --backend torchcodec is one line with the install command; auto
    says nothing and decodes with decord or PyAV."""
    monkeypatch.setattr(decode, "_torchcodec_state", (None, "torchcodec could not load FFmpeg (libavutil.so: not found)"))
    with pytest.raises(HieraVideoError) as info:
        open_video(videos["h264"], "torchcodec")
    message = str(info.value)
    assert "\n" not in message and "apt-get install ffmpeg" in message and "libavutil" in message
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error")
        for name in ("h264", "hevc"):
            if name in videos:
                with open_video(videos[name], "auto") as reader:
                    assert reader.backend in ("decord", "pyav")
                    assert vg.read_stamps(reader.get_frames([3, 0])) == [3, 0]


@pytest.mark.skipif(not torchcodec_available(), reason="torchcodec or its FFmpeg libraries missing")
def test_torchcodec_matches_pyav_frames_and_skips_mpegts(videos, tmp_path):
    with open_video(videos["h264_bframes"], "pyav") as a, open_video(videos["h264_bframes"], "torchcodec") as b:
        idx = [0, 13, 7, 40, 59, 13]
        assert b.backend == "torchcodec" and a.num_frames == b.num_frames
        assert torch.equal(a.get_frames(idx), b.get_frames(idx))
    ts = vg.write_video(tmp_path / "clip", num_frames=30, fmt="h264_ts_gop10")
    with pytest.warns(UserWarning, match="torchcodec returns wrong frames"):
        with open_video(ts, "torchcodec") as reader:
            assert reader.backend == "pyav" and vg.read_stamps(reader.get_frames([0, 3, 5])) == [0, 3, 5]


def test_a_crashing_decoder_costs_one_video(videos, monkeypatch, tmp_path):
    real = decode.open_video
    monkeypatch.setattr(decode, "open_video", lambda p, b: os._exit(3) if "crash" in str(p) else real(p, b))
    (tmp_path / "crash.mp4").symlink_to(videos["h264"])
    out = read_in_workers([videos["h264"], tmp_path / "crash.mp4", videos["h264"]], [2], workers=2, timeout=60)  # a loaded machine: only the crash may fail
    assert [error is None for _, error in out] == [True, False, True]
    assert "crashed (exit code 3)" in out[1][1] and vg.read_stamps(out[2][0]) == [2]


# ---------------------------------------------------------------- hostile headers, MPEG-TS, odd paths


@pytest.mark.parametrize("fmt", ["h264", "mjpeg", "vp9"])
def test_header_claiming_2_31_frames_costs_nothing(tmp_path, fmt):
    """A header claiming 2^31 frames (mp4 stts, AVI strh; a webm's duration, from which decord
    estimates the count) made decord abort the whole process (std::bad_alloc, exit 134). Read in
    this process: a regression aborts the test session, which fails CI loudly. (In a forked
    child, the mjpeg AVI read hung in 2 of 3 CI runs after other test files
    had run in the parent, and never when this file ran alone: a lock inherited through fork.)"""
    good = vg.write_video(tmp_path / "good", num_frames=30, fmt=fmt)
    huge = vg.patch_claimed_frames(good, tmp_path / f"huge{good.suffix}")
    with av.open(str(huge)) as c:  # the header lies
        claimed = c.streams.video[0].frames or float(c.streams.video[0].average_rate) * c.duration / 1e6
        assert claimed == pytest.approx(0x7FFFFFFF, rel=1e-3)
    idx = [0, 29, 15]
    assert vg.read_stamps(read_clip(huge, idx, backend="auto")) == idx
    assert vg.read_stamps(read_clip(huge, idx, backend="pyav")) == idx
    if decord_available():
        with pytest.raises(HieraVideoError, match=r"claims 214748\d{4} frames but the stream holds 30.*backend='pyav'") as info:
            read_clip(huge, idx, backend="decord")
        assert "\n" not in str(info.value)
    with open_video(huge, "auto") as reader:
        assert reader.num_frames == 30 and reader.backend == "pyav"


def test_plausible_header_over_report_keeps_decord(videos):
    """An AVI with dropped-frame chunks over-reports (about 2x here): still plausible, decord is kept."""
    if not decord_available():
        pytest.skip("decord missing")
    with open_video(videos["vfr_avi"], "decord") as reader:
        assert reader.backend == "decord"


TS_SPECS = {"h264_ts": 90, "h264_ts_gop10": 60}


@pytest.fixture(scope="module")
def ts_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    return {fmt: vg.write_video(root / fmt, num_frames=n, fmt=fmt) for fmt, n in TS_SPECS.items()}


def warnings_allowed(expect_warning: bool):
    return pytest.warns(UserWarning, match="mpegts") if expect_warning else contextlib.nullcontext()


@pytest.mark.parametrize("fmt", list(TS_SPECS))
@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
def test_mpegts_frame_exact(ts_videos, fmt, backend):
    """H.264 in MPEG-TS (the encoder's default GOP with B-frames, and a short GOP): seeking to a
    keyframe's pts landed after it, so reads gave other frames or none (rejected as corrupt);
    decord returned frames from the second keyframe on."""
    if backend == "decord" and not decord_available():
        pytest.skip("decord missing")
    n = TS_SPECS[fmt]
    with av.open(str(ts_videos[fmt])) as c:
        assert c.format.name == "mpegts"
        keys = [i for i, p in enumerate(q for q in c.demux(c.streams.video[0]) if q.size) if p.is_keyframe]
    assert len(keys) > 1  # really several GOPs
    with warnings_allowed(backend == "decord"):
        reader = open_video(ts_videos[fmt], backend)
    with reader:
        assert reader.num_frames == n and reader.backend == "pyav"  # decord cannot seek in MPEG-TS
        for idx in ([0, 5, n // 2, n - 1], [n - 1, 3, keys[-1], keys[-1] - 1], list(range(n))):
            assert vg.read_stamps(reader.get_frames(idx)) == idx
        assert reader.substituted_frames == 0


def test_mpegts_falls_back_to_sequential_when_a_seek_loses_frames(ts_videos):
    """Without the dts seek target, seeks into MPEG-TS land on frames that need an earlier keyframe
    (nothing decodes, or later frames come out): frame access decodes from the start instead."""
    with open_video(ts_videos["h264_ts"], "pyav") as reader:
        reader._seek_ts = {}  # seek by pts, as before: lands after the keyframe
        idx = [0, 5, 45, 89]
        assert vg.read_stamps(reader.get_frames(idx)) == idx
        assert reader.substituted_frames == 0 and not reader._seekable
        assert vg.read_stamps(reader.get_frames([89, 2])) == [89, 2]


def test_seek_yielding_nothing_falls_back_to_sequential(videos, monkeypatch):
    monkeypatch.setattr(PyAVReader, "_seek", lambda self, index: iter(()))
    with open_video(videos["h264"], "pyav") as reader:
        assert vg.read_stamps(reader.get_frames([40, 3])) == [40, 3]
        assert reader.substituted_frames == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_device_and_symlinks_are_named(tmp_path):
    """A FIFO was reported as "empty (0 bytes)" (and is never opened: reading it blocks), a
    symlink loop as "not found"."""
    from hiera_video.data.check import check_file
    from hiera_video.jobs.predict import expand_inputs

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    broken = tmp_path / "broken.mp4"
    broken.symlink_to(tmp_path / "gone.mp4")
    cases = {fifo: ("not a file", "named pipe (FIFO)"), loop: ("not a file", "symbolic link loop"),
             broken: ("missing", "broken symbolic link")}
    if os.path.exists("/dev/null"):
        cases[Path("/dev/null")] = ("not a file", "character device")
    for path, (category, words) in cases.items():
        with pytest.raises(HieraVideoError, match=re.escape(words)) as info:
            open_video(path)
        assert "empty" not in str(info.value) and "\n" not in str(info.value)
        result = check_file(str(path))
        assert (result.status, words in result.reason) == (category, True)
    paths, bad = expand_inputs([str(loop), str(broken), str(tmp_path / "nothing.mp4")])
    assert paths == []
    assert "symbolic link loop" in bad[0].error and "broken symbolic link" in bad[1].error
    assert "no such file or directory" in bad[2].error


# ---------------------------------------------------------------- what decoded a video; NVDEC (--decode-device cuda)


def test_readers_say_what_decoded_them_fallback_included(videos, monkeypatch):
    with open_video(videos["h264"], "pyav") as reader:
        assert reader.decoder == decode.decoder_name("pyav") and reader.decoder.startswith("pyav ") and "(FFmpeg " in reader.decoder
    if not torchcodec_available():
        return
    with open_video(videos["h264"], "torchcodec") as reader:
        assert reader.decoder.startswith("torchcodec ") and "(FFmpeg " in reader.decoder and "+" not in reader.decoder
    monkeypatch.setattr(decode.TorchCodecReader, "_read", lambda self, unique: 1 / 0)
    reader = decode.TorchCodecReader(Path(videos["h264"]), decode.probe_open(videos["h264"])[2], fallback=True)
    assert vg.read_stamps(reader.get_frames([3, 1])) == [3, 1]  # switched to PyAV mid-video
    assert reader.backend == "pyav" and reader.decoder == decode.decoder_name("pyav")
    reader.close()


@pytest.mark.skipif(not torchcodec_available(), reason="torchcodec or its FFmpeg libraries missing")
def test_decode_device_cuda_falls_back_to_the_cpu_per_video(videos, monkeypatch):
    """NVDEC refusing the codec (a stand-in decoder raising for device='cuda'): the video is
    reopened on the CPU, gives the CPU's frames, and says so."""
    import torchcodec.decoders

    real, asked = torchcodec.decoders.VideoDecoder, []

    def fake(path, **kw):
        asked.append(kw["device"])
        if kw["device"] == "cuda":
            raise RuntimeError("Unsupported codec for NVDEC")
        return real(path, **kw)

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with open_video(videos["h264"], "torchcodec", "cuda") as gpu, open_video(videos["h264"], "torchcodec") as cpu:
        assert asked[:2] == ["cuda", "cpu"] and gpu.decoder.endswith(", cpu fallback)")
        assert torch.equal(gpu.get_frames([5, 0]), cpu.get_frames([5, 0]))
    spec = ClipSpec(num_frames=4, crop_size=32, backend="auto", decode_device="cuda")
    assert "decode_device" not in spec.to_dict()  # not a protocol field: the decoders record it


def test_decode_device_cuda_needs_torchcodec_and_a_gpu(monkeypatch):
    from hiera_video.data.clip_spec import check_choices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for backend in ("pyav", "decord"):
        with pytest.raises(HieraVideoError, match="--backend torchcodec") as info:
            check_choices(backend=backend, decode_device="cuda")
        assert "\n" not in str(info.value)
    with pytest.raises(HieraVideoError, match="use cpu or cuda"):
        check_choices(backend="torchcodec", decode_device="cuda:1")
    monkeypatch.setattr(decode, "_torchcodec_state", (None, "torchcodec is not installed"))
    with pytest.raises(HieraVideoError, match="needs torchcodec: torchcodec is not installed.*drop --decode-device"):
        ClipSpec(backend="auto", decode_device="cuda")
    monkeypatch.setattr(decode, "_torchcodec_state", ("5.1", None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HieraVideoError, match="needs a CUDA GPU") as info:
        check_choices(backend="torchcodec", decode_device="cuda")
    assert "\n" not in str(info.value)
    check_choices(backend="pyav", decode_device="cpu")  # the default: nothing to check
