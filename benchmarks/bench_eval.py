"""End-to-end `eval` wall time vs the pure model time for the same views, one process.

Generates N 10-second 340x256 H.264 clips as a folder dataset, then times
  * `evaluate()` (DataLoader workers decoding, transforms, forward in chunks, aggregation,
    metrics), and
  * the model forward alone over the same views (views prepared beforehand),
and prints the ratio (target: <= 1.15).

    python benchmarks/bench_eval.py [--model hiera_base_16x224] [--videos 4] [--views 5x3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench_predict import make_clip
from hiera_video.data.datasets import build_dataset
from hiera_video.jobs.evaluate import evaluate
from hiera_video.engine.inference import Classifier, parse_views, prepare_inference
from hiera_video.models import create_model
from hiera_video.runtime import pick_device, resolve_dtype


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hiera_base_16x224")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--views", default="5x3")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    device = pick_device("cpu")
    low = resolve_dtype(args.dtype, device)
    net = prepare_inference(create_model(args.model, num_classes=2), device, low)
    clf = Classifier(net, args.model, None, ["a", "b"], device, low, net.spec.clip)
    protocol = clf.protocol(parse_views(args.views))
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.videos):
            (Path(d) / ("a" if i % 2 else "b")).mkdir(exist_ok=True)
            make_clip(Path(d) / ("a" if i % 2 else "b") / f"{i}.mp4")
        ds = build_dataset("folder", d)
        views = [protocol.views(str(item.path))[0] for item in ds.items]
        clf.logits(views[0][:2], args.batch_size)  # warm-up
        # Alternate the two measurements and keep the best of each, so that load from other
        # processes on a shared machine does not land on one side only.
        model_s = eval_s = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            for v in views:
                clf.logits(v, args.batch_size).softmax(-1).mean(0)
            model_s = min(model_s, time.perf_counter() - t)
            t = time.perf_counter()
            result = evaluate(clf, protocol, ds, batch_size=args.batch_size, workers=args.workers)
            eval_s = min(eval_s, time.perf_counter() - t)
    assert result.metrics["num_videos"] == args.videos
    print(f"{args.model} {args.views} views x {args.videos} videos, dtype {low or torch.float32}, "
          f"workers {args.workers}, threads {torch.get_num_threads()}")
    print(f"pure model: {model_s:.2f}s   eval end-to-end: {eval_s:.2f}s   ratio {eval_s / model_s:.3f}")


if __name__ == "__main__":
    main()
