"""The torchcodec backend through the CLI (issue 23): an explicit `--backend torchcodec` runs
the same pipeline as the other backends, and a bad file costs that input only."""

from __future__ import annotations

import json

import pytest

from hiera_video.data.decode import torchcodec_available

from helpers import nano_classifier, run_cli as run
from videogen import write_video

NEEDS_TORCHCODEC = pytest.mark.skipif(not torchcodec_available(), reason="torchcodec or its FFmpeg libraries missing")


@NEEDS_TORCHCODEC
def test_predict_torchcodec_same_scores_as_pyav_and_bad_file_costs_one_input(tmp_path, capsys):
    _, ckpt = nano_classifier(tmp_path / "nano.pt", ["a", "b", "c"], head_std=2.0)  # scores far from uniform
    good = [str(write_video(tmp_path / f"v{i}.mp4", num_frames=40, height=48, width=64, fmt="h264_bframes")) for i in range(2)]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    results = {}
    for backend in ("pyav", "torchcodec"):
        code, out, err = run(["predict", good[0], str(bad), good[1], "--weights", ckpt, "--dtype", "fp32", "--json",
                              "--workers", "0", "--backend", backend], capsys)
        assert code == 1, err  # results written, one input failed
        rows = json.loads(out)
        assert [r["ok"] for r in rows] == [True, False, True]
        results[backend] = [r for r in rows if r["ok"]]
        assert all(r["decoder"].startswith(f"{backend} ") for r in results[backend]) and rows[1]["decoder"] is None
    for a, b in zip(results["pyav"], results["torchcodec"]):
        assert json.dumps(a.get("top", a), sort_keys=True) == json.dumps(b.get("top", b), sort_keys=True)


def test_explicit_torchcodec_without_ffmpeg_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    from hiera_video.data import decode

    monkeypatch.setattr(decode, "_torchcodec_state", (None, "torchcodec could not load FFmpeg (libavutil.so.59: not found)"))
    video = write_video(tmp_path / "v.mp4", num_frames=20, height=48, width=64)
    _, ckpt = nano_classifier(tmp_path / "nano.pt", ["a", "b"])
    code, out, err = run(["predict", str(video), "--weights", ckpt, "--workers", "0", "--backend", "torchcodec"], capsys)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "apt-get install ffmpeg" in lines[0] and "libavutil.so.59" in lines[0]


def test_decode_device_cuda_without_a_gpu_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    video = write_video(tmp_path / "v.mp4", num_frames=20, height=48, width=64)
    for cmd in (["predict", str(video)], ["extract", str(video), "-o", str(tmp_path / "f")]):
        code, out, err = run([*cmd, "--weights", "nowhere.pt", "--backend", "pyav", "--decode-device", "cuda"], capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "--backend torchcodec" in lines[0], err
    if torchcodec_available():
        code, out, err = run(["predict", str(video), "--weights", "nowhere.pt", "--backend", "torchcodec",
                              "--decode-device", "cuda"], capsys)
        assert code == 2 and "needs a CUDA GPU" in err and len(err.strip().splitlines()) == 1, err
