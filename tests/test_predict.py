"""`hiera-video predict`: outputs, bad inputs, timelines, weights download, offline errors."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import threading
from dataclasses import replace

import pytest
import torch

import hiera_video
from hiera_video.models import zoo
from hiera_video.models.checkpoints import save_checkpoint

from helpers import run_cli as run
from videogen import write_bad_inputs, write_video

LABELS = [f"action {i}" for i in range(6)]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = hiera_video.create_model("hiera_nano_8x64", num_classes=6)
    with torch.no_grad():  # make the head matter, so the probabilities are not uniform
        model.head.projection.weight.normal_(0, 1.0)
    ckpt = save_checkpoint(d / "nano.pt", model, meta=dict(labels=LABELS))
    videos = [write_video(d / "v1.mp4", num_frames=48, height=72, width=96), write_video(d / "v2.webm", num_frames=30, fmt="vp9")]
    return dict(dir=d, ckpt=str(ckpt), model=model, videos=[str(v) for v in videos])


def test_json_schema_and_scores(media, capsys):
    code, out, err = run(["predict", *media["videos"], "--weights", media["ckpt"], "--views", "2x3", "--top-k", "3", "--json", "--dtype", "fp32"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert [d["path"] for d in data] == media["videos"]
    for d in data:
        assert set(d) == {"path", "ok", "error", "top"} and d["ok"] is True and d["error"] is None
        assert len(d["top"]) == 3
        assert all(set(t) == {"index", "label", "score"} for t in d["top"])
        scores = [t["score"] for t in d["top"]]
        assert scores == sorted(scores, reverse=True)
        assert all(t["label"] == LABELS[t["index"]] for t in d["top"])
    # Scores are the probabilities averaged over the 6 views, computed here independently.
    from hiera_video.data import make_views

    views, _ = make_views(media["videos"][0], 2, 3, crop_size=64, num_sample_frames=8)
    with torch.no_grad():
        probs = media["model"].eval()(views).softmax(-1).mean(0)
    top = probs.topk(3)
    assert [t["index"] for t in data[0]["top"]] == top.indices.tolist()
    assert [t["score"] for t in data[0]["top"]] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_table_output_and_csv(media, capsys, tmp_path):
    out_csv = tmp_path / "res.csv"
    code, out, err = run(["predict", media["videos"][0], "--weights", media["ckpt"], "-o", str(out_csv)], capsys)
    assert code == 0, err
    assert "rank" in out and "probability" in out and "action" in out
    rows = list(csv.DictReader(out_csv.open()))
    assert rows[0]["path"] == media["videos"][0] and rows[0]["ok"] == "True" and rows[0]["label1"].startswith("action")


def test_directories_and_globs(media, capsys):
    d = media["dir"]
    code, out, err = run(["predict", str(d), "--weights", media["ckpt"], "--json"], capsys)
    assert code == 0, err
    assert sorted(x["path"] for x in json.loads(out)) == sorted(media["videos"])
    code, out, _ = run(["predict", str(d / "*.mp4"), "--weights", media["ckpt"], "--json"], capsys)
    assert [x["path"] for x in json.loads(out)] == [media["videos"][0]]


def test_bad_inputs_are_reported_and_skipped(media, capsys, tmp_path):
    bad = write_bad_inputs(tmp_path / "bad")
    empty_dir = tmp_path / "nothing_here"
    empty_dir.mkdir()
    kinds = ["empty", "random", "text", "truncated", "audio_only", "missing"]
    argv = ["predict", media["videos"][0], *[str(bad[k]) for k in kinds], str(empty_dir), "--weights", media["ckpt"], "--json"]
    code, out, err = run(argv, capsys)
    assert code == 1
    data = {d["path"]: d for d in json.loads(out)}
    assert data[media["videos"][0]]["ok"] is True
    for k in kinds:
        item = data[str(bad[k])]
        assert item["ok"] is False and item["top"] == [] and item["error"]
        assert "\n" not in item["error"]
    assert data[str(empty_dir)]["ok"] is False and "no video files" in data[str(empty_dir)]["error"]
    assert "Traceback" not in err
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == len(kinds) + 1
    assert "7 of 8 inputs failed" in err


def test_timeline(media, capsys, tmp_path):
    png, js = tmp_path / "tl.png", tmp_path / "tl.json"
    code, out, err = run(["predict", media["videos"][0], "--weights", media["ckpt"], "--window", "0.5", "--stride", "0.25", "--plot", str(png), "-o", str(js)], capsys)
    assert code == 0, err
    result = json.loads(js.read_text())[0]
    tl = result["timeline"]
    # 48 frames at 30 fps = 1.6 s; windows of 0.5 s every 0.25 s, the last aligned to the end.
    assert [r["start"] for r in tl] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.1]
    assert all(r["end"] - r["start"] == pytest.approx(0.5) for r in tl)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "timeline" in out


def test_stride_without_window_is_an_error(media, capsys):
    code, _, err = run(["predict", media["videos"][0], "--weights", media["ckpt"], "--stride", "1"], capsys)
    assert code == 2 and "--window" in err


def test_random_weights_need_opt_in(media, capsys):
    code, _, err = run(["predict", media["videos"][0], "--model", "hiera_nano_8x64", "--weights", "none"], capsys)
    assert code == 2 and "allow-random-weights" in err


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture
def loopback_server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _with_zoo_weights(monkeypatch, url):
    """Give hiera_nano_8x64 a default zoo entry at ``url`` (as if it had official weights)."""
    spec = zoo.MODELS["hiera_nano_8x64"]
    w = zoo.Weights("test_k6", url, "test", None, 6, None, zoo.VIDEO_MEAN, zoo.VIDEO_STD)
    monkeypatch.setitem(zoo.MODELS, "hiera_nano_8x64", replace(spec, weights={"test_k6": w}, default_weights="test_k6"))


def test_default_weights_download_into_empty_cache(media, capsys, tmp_path, monkeypatch, loopback_server):
    root, base = loopback_server
    # An official-format file: {"model_state": state_dict}.
    torch.save({"model_state": media["model"].state_dict()}, root / "hiera_nano_8x64.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_home" / "hub"))
    _with_zoo_weights(monkeypatch, f"{base}/hiera_nano_8x64.pth")
    code, out, err = run(["predict", media["videos"][0], "--model", "hiera_nano_8x64", "--json", "--dtype", "fp32"], capsys)
    assert code == 0, err
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / "hiera_nano_8x64.pth"
    assert cached.is_file()
    first = json.loads(out)[0]["top"]
    # Second run: from the cache (the server is gone).
    (root / "hiera_nano_8x64.pth").unlink()
    code, out, err = run(["predict", media["videos"][0], "--model", "hiera_nano_8x64", "--json", "--dtype", "fp32"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["top"] == first


def test_offline_weights_error(media, capsys, tmp_path, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    url = f"http://127.0.0.1:{port}/hiera_nano_8x64.pth"
    _with_zoo_weights(monkeypatch, url)
    code, out, err = run(["predict", media["videos"][0], "--model", "hiera_nano_8x64"], capsys)
    assert code == 2
    line = " ".join(err.split())
    assert url in line and str(tmp_path / "hub" / "checkpoints" / "hiera_nano_8x64.pth") in line and "--weights" in line
    assert "Traceback" not in err
