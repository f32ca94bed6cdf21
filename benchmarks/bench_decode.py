"""Decode-once multi-view testing vs re-opening the video for every view.

Generates a 10 s, 340x256, 30 fps H.264 clip (libx264 defaults: keyframe every 250 frames,
B-frames) and times 5 temporal x 3 spatial views of 16x4 frames at 224 px:

* decode-once: ``make_views`` (one open, one decode of the union of frames, resize once);
* per-view: for each of the 15 views, open the file, decode that view's clip, resize, crop,
  normalise, close (what SlowFast and VideoMAE do), with this package's reader and, for
  PyAV, also with plain PyAV calls (seek to the clip start, decode to its end) as SlowFast.

Usage: ``python benchmarks/bench_decode.py [--repeats 3] [--backend pyav|decord|torchcodec|auto|all]``

``--exactness`` instead checks the decord library itself (whichever package provides the
``decord`` module: decord 0.6.0 or decord2) on the test corpus (``tests/videogen.py``, one
stamped 60-frame video per format): random-access ``get_batch`` of scattered frames against
PyAV decoding from the start of the file, frame by frame (stamp read back and mean absolute
pixel difference), and times the decord reads. Run it once per decord package, e.g.
``PYTHONPATH=/tmp/d2 python benchmarks/bench_decode.py --exactness`` after
``pip install --target /tmp/d2 decord2 --no-deps``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hiera_video.data.clip_spec import ClipSpec  # noqa: E402
from hiera_video.data.decode import decord_available, open_video, torchcodec_available  # noqa: E402
from hiera_video.data.transforms import (  # noqa: E402
    make_views,
    normalize,
    resize_short_side,
    spatial_crops,
    temporal_view_indices,
)

T_VIEWS, S_VIEWS, FRAMES, STRIDE, CROP = 5, 3, 16, 4, 224


def write_clip(path: Path, seconds: int = 10, fps: int = 30, width: int = 340, height: int = 256) -> Path:
    """Textured, moving content so the encoder produces realistic P/B frames."""
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            dy, dx = (i * 2) % height, (i * 3) % width
            img = texture[dy : dy + height, dx : dx + width].copy()
            img[..., 0] = ((xx + yy + i * 4) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_once(path: Path, backend: str) -> torch.Tensor:
    views, _ = make_views(path, ClipSpec("dense", FRAMES, STRIDE, temporal_views=T_VIEWS, spatial_views=S_VIEWS, crop_size=CROP, backend=backend))
    return views


def per_view(path: Path, backend: str) -> torch.Tensor:
    with open_video(path, backend) as reader:  # metadata only, as a dataset index would hold
        per_t = temporal_view_indices(reader.num_frames, reader.fps, T_VIEWS, "dense", FRAMES, STRIDE)
    views = []
    for t in range(T_VIEWS):
        for s in range(S_VIEWS):
            with open_video(path, backend) as reader:
                clip = resize_short_side(reader.get_frames(per_t[t].tolist()), CROP)
            crop = spatial_crops(clip, CROP, S_VIEWS)[s]
            views.append(normalize(crop))
    return torch.stack(views)


def per_view_raw_pyav(path: Path) -> torch.Tensor:
    """SlowFast-style per view with plain PyAV (no probing): open, seek to the clip start,
    decode until the clip end, keep the sampled frames. Constant frame rate assumed."""
    import av

    with open_video(path, "pyav") as reader:
        per_t = temporal_view_indices(reader.num_frames, reader.fps, T_VIEWS, "dense", FRAMES, STRIDE)
    views = []
    for t in range(T_VIEWS):
        wanted = per_t[t].tolist()
        for s in range(S_VIEWS):
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.codec_context.thread_type = "AUTO"
                tb, fps = stream.time_base, float(stream.average_rate)
                container.seek(int(wanted[0] / fps / tb), stream=stream, backward=True, any_frame=False)
                got = {}
                for frame in container.decode(stream):
                    index = round(float(frame.pts * tb) * fps)
                    if index in wanted:
                        got[index] = frame.to_ndarray(format="rgb24")
                    if index >= wanted[-1]:
                        break
            clip = torch.from_numpy(np.stack([got[i] for i in wanted]))
            views.append(normalize(spatial_crops(resize_short_side(clip, CROP), CROP, S_VIEWS)[s]))
    return torch.stack(views)


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def exactness(repeats: int) -> None:
    """decord ``get_batch`` vs PyAV from the start, per corpus format (see the module doc)."""
    import av
    import decord

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from videogen import FORMATS, has_encoder, read_stamps, write_video

    version = getattr(decord, "__version__", "?")
    print(f"decord module {version} from {Path(decord.__file__).parent}")
    wanted = [0, 7, 3, 31, 32, 58, 59, 15, 44, 44, 1]  # scattered, out of order, repeats
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, (_ext, encoder, _pix, _opts) in FORMATS.items():
            if not has_encoder(encoder):
                continue
            path = write_video(Path(tmp) / fmt, num_frames=60, height=96, width=128, fmt=fmt)
            with av.open(str(path)) as c:
                ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
            try:
                vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
                n = len(vr)
                idx = [i for i in wanted if i < min(n, len(ref))]
                got = vr.get_batch(idx).asnumpy()
                start = time.perf_counter()
                for _ in range(repeats):
                    vr.get_batch(idx).asnumpy()
                ms = (time.perf_counter() - start) / repeats * 1000
                stamps_ok = read_stamps(got) == idx
                mad = float(np.abs(got.astype(np.int16) - ref[idx].astype(np.int16)).mean())
                print(f"{fmt:>14}: frames {n:3d}/{len(ref):3d} | stamps {'exact' if stamps_ok else 'WRONG'}"
                      f" | mean |diff| vs PyAV {mad:6.3f} | get_batch({len(idx)}) {ms:6.1f} ms")
            except Exception as e:  # a failure is a result here
                print(f"{fmt:>14}: FAILED ({type(e).__name__}: {str(e).splitlines()[0][:80]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="all", choices=["all", "auto", "pyav", "decord", "torchcodec"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1, as in DataLoader workers)")
    parser.add_argument("--exactness", action="store_true", help="decord get_batch vs PyAV from the start, on the test corpus")
    args = parser.parse_args()
    if args.exactness:
        return exactness(args.repeats)
    backends = ["pyav", "decord", "torchcodec"] if args.backend == "all" else [args.backend]
    backends = [b for b in backends if b != "decord" or decord_available()]
    backends = [b for b in backends if b != "torchcodec" or torchcodec_available()]
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_clip(Path(tmp) / "clip.mp4")
        with open_video(path, "pyav") as r:
            size_kib = path.stat().st_size // 1024
            print(f"clip: {r.width}x{r.height}, {r.num_frames} frames, {r.fps:g} fps, {size_kib} KiB")
        print(f"views: {T_VIEWS} temporal x {S_VIEWS} spatial, {FRAMES}x{STRIDE} frames, crop {CROP}; best of {args.repeats}")
        for backend in backends:
            a, b = decode_once(path, backend), per_view(path, backend)
            assert torch.allclose(a, b), "decode-once and per-view results differ"
            t_once = timeit(lambda: decode_once(path, backend), args.repeats)
            t_view = timeit(lambda: per_view(path, backend), args.repeats)
            print(
                f"{backend:>10}: decode-once {t_once * 1000:7.1f} ms | per-view re-open {t_view * 1000:7.1f} ms"
                f" | speed-up x{t_view / t_once:.2f}"
            )
            if backend == "pyav":
                assert torch.allclose(a, per_view_raw_pyav(path))
                t_raw = timeit(lambda: per_view_raw_pyav(path), args.repeats)
                print(
                    f"{'':>6}  per-view plain PyAV, SlowFast-style (no probe) {t_raw * 1000:7.1f} ms"
                    f" | speed-up x{t_raw / t_once:.2f}"
                )


if __name__ == "__main__":
    main()
