"""`predict` overhead: everything but the model forward, relative to the model forward.

Generates a 10-second 340x256 H.264 clip at 30 fps, then times, in one process:
  * the whole `predict` path for one video with 5x3 views (decode once, sampling,
    transforms, forward in chunks, aggregation), and
  * the model forward alone on the same 15 views, same batch size and precision.
Prints both and the ratio (target: overhead <= 0.10 x forward).

    python benchmarks/bench_predict.py [--model hiera_base_16x224] [--dtype auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from hiera_video.engine.inference import Classifier, prepare_inference
from hiera_video.data.transforms import make_views
from hiera_video.jobs.predict import classify_video
from hiera_video.models import create_model
from hiera_video.runtime import pick_device, resolve_dtype


def make_clip(path: Path, seconds: float = 10.0, fps: int = 30, width: int = 340, height: int = 256) -> Path:
    """A moving gradient + square, H.264, GOP 30 (about Kinetics-like keyframe spacing)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast", "g": str(fps)}
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(int(seconds * fps)):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = (xx + 3 * i) % 256
            img[..., 1] = (yy + 2 * i) % 256
            x0 = (5 * i) % (width - 40)
            img[100:140, x0 : x0 + 40] = 255
            for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hiera_base_16x224")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--views", default="5x3")
    ap.add_argument("--batch-size", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    t_views, s_views = (int(v) for v in args.views.split("x"))

    device = pick_device("cpu")
    low = resolve_dtype(args.dtype, device)
    net = prepare_inference(create_model(args.model), device, low)
    clf = Classifier(net, args.model, None, [f"c{i}" for i in range(net.num_classes)], device, low, net.spec.clip)
    protocol = clf.protocol((t_views, s_views), backend=args.backend)

    with tempfile.TemporaryDirectory() as d:
        video = make_clip(Path(d) / "clip.mp4")
        views, _ = make_views(str(video), protocol)
        clf.logits(views, args.batch_size)  # warm-up
        fwd, full = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            clf.logits(views, args.batch_size)
            fwd.append(time.perf_counter() - t)
            t = time.perf_counter()
            classify_video(clf, protocol, str(video), args.batch_size, 5)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            make_views(str(video), protocol)
            decode_t = time.perf_counter() - t
    f, p = statistics.median(fwd), statistics.median(full)
    print(f"{args.model} {args.views} views, dtype {low or torch.float32}, batch {args.batch_size}, threads {torch.get_num_threads()}")
    print(f"model forward alone: {f:.3f}s   whole predict: {p:.3f}s   decode+views alone: {decode_t:.3f}s")
    print(f"overhead (predict - forward) / forward = {(p - f) / f:.3f}   (decode+views) / forward = {decode_t / f:.3f}")


if __name__ == "__main__":
    main()
