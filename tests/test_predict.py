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

from helpers import damaged_video, run_cli as run, save_official
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
        assert set(d) == {"path", "ok", "error", "top", "warnings", "decoder"} and d["ok"] is True and d["error"] is None
        assert d["warnings"] == [] and d["decoder"].split()[0] in ("pyav", "decord", "torchcodec") and "." in d["decoder"]
        assert len(d["top"]) == 3
        assert all(set(t) == {"index", "label", "score"} for t in d["top"])
        scores = [t["score"] for t in d["top"]]
        assert scores == sorted(scores, reverse=True)
        assert all(t["label"] == LABELS[t["index"]] for t in d["top"])
    # Scores are the probabilities averaged over the 6 views, computed here independently.
    from hiera_video.data import ClipSpec, make_views

    views, _ = make_views(media["videos"][0], ClipSpec(temporal_views=2, spatial_views=3, crop_size=64, num_frames=8))
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
    # Results come in input order, failed inputs at their places (not first).
    assert [d["path"] for d in json.loads(out)] == [media["videos"][0], *[str(bad[k]) for k in kinds], str(empty_dir)]
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


@pytest.mark.parametrize("args, words", [
    (["--window", "-1"], "--window must be a positive"),
    (["--window", "1", "--stride", "0"], "--stride must be a positive"),
    (["--backend", "ffmpeg"], "unknown --backend 'ffmpeg'"),
])
def test_usage_errors_exit_2_not_as_failed_inputs(media, capsys, args, words):
    """A bad option is a usage error (exit 2, one line), not "1 of 1 inputs failed" (exit 1)."""
    code, out, err = run(["predict", media["videos"][0], "--weights", media["ckpt"], "--json", *args], capsys)
    assert code == 2 and words in err and "inputs failed" not in err and out == ""


def test_input_order_with_globs_and_directories(media, capsys, tmp_path):
    """Output order = input order; a directory or glob expands sorted at its place."""
    d = tmp_path / "order"
    d.mkdir()
    for name in ("b.mp4", "a.mp4"):
        (d / name).write_bytes(open(media["videos"][0], "rb").read())
    missing = str(tmp_path / "gone.mp4")
    argv = ["predict", media["videos"][1], missing, str(d / "*.mp4"), str(d), "--weights", media["ckpt"], "--json"]
    csv_out = tmp_path / "res.csv"
    code, out, _ = run(argv + ["-o", str(csv_out)], capsys)
    assert code == 1
    expected = [media["videos"][1], missing, str(d / "a.mp4"), str(d / "b.mp4"), str(d / "a.mp4"), str(d / "b.mp4")]
    assert [x["path"] for x in json.loads(out)] == expected
    assert [r["path"] for r in csv.DictReader(csv_out.open())] == expected


def test_substituted_frames_are_reported_and_too_many_fail(media, capsys, tmp_path):
    few, n_few, n_sampled = damaged_video(tmp_path / "few.mkv", lambda s: s[3:4])  # 1 of 8: a warning
    many, n_many, _ = damaged_video(tmp_path / "many.mkv", lambda s: s[1:])  # 7 of 8: the video fails
    assert n_few == 1 and n_many > 0.25 * n_sampled
    code, out, err = run(["predict", media["videos"][0], few, many, "--weights", media["ckpt"], "--json"], capsys)
    assert code == 1
    good, warned, failed = json.loads(out)
    assert good["ok"] and good["warnings"] == []
    assert warned["ok"] and warned["warnings"] == [
        f"{n_few} of {n_sampled} sampled frames could not be decoded and were replaced by the nearest decodable frame"]
    assert not failed["ok"] and f"{n_many} of the {n_sampled} frames" in failed["error"] and "more than 25%" in failed["error"]
    assert f"warning: {few}" in " ".join(err.split())


def test_untrained_or_broken_weights_are_refused(media, capsys, tmp_path):
    """An MAE checkpoint or a headless backbone has no trained head, NaN weights give NaN
    scores: predict refuses them (exit 2, one line) instead of printing random numbers."""
    mae = hiera_video.create_model("mae_hiera_nano_8x64")
    save_official(tmp_path / "mae.pth", mae)
    headless = {k: v for k, v in media["model"].state_dict().items() if not k.startswith("head.")}
    save_official(tmp_path / "backbone.pth", headless)
    broken = hiera_video.create_model("hiera_nano_8x64", num_classes=6)
    broken.load_state_dict(media["model"].state_dict())
    with torch.no_grad():
        broken.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", broken, meta=dict(labels=LABELS))
    cases = [("mae.pth", "MAE checkpoint"), ("backbone.pth", "no trained classifier head"), ("nan.pt", "NaN")]
    for name, words in cases:
        argv = ["predict", media["videos"][0], "--model", "hiera_nano_8x64", "--weights", str(tmp_path / name), "--json"]
        code, out, err = run(argv, capsys)
        line = " ".join(err.split())
        assert code == 2 and words in line and out == "", (name, err)
        assert "Traceback" not in err and line.count("error:") == 1
        if name != "nan.pt":
            assert "--allow-random-weights" in line
            code, out, err = run(argv + ["--allow-random-weights"], capsys)  # the escape hatch
            assert code == 0 and json.loads(out)[0]["ok"], err
    code, _, err = run(["predict", media["videos"][0], "--model", "hiera_nano_8x64", "--weights", str(tmp_path / "nan.pt"),
                        "--allow-random-weights"], capsys)
    assert code == 2 and "NaN" in err  # never meaningful


def test_head_reinitialised_for_another_class_count_is_named():
    from hiera_video.models.load import untrained_head
    from hiera_video.models.checkpoints import apply_checkpoint, Checkpoint

    src = hiera_video.create_model("hiera_nano_8x64", num_classes=6)
    net = hiera_video.create_model("hiera_nano_8x64", num_classes=4)
    report = apply_checkpoint(net, Checkpoint(state_dict=src.state_dict(), layout="official"))
    assert untrained_head(report) == "its head has 6 classes, the model 4, so the head was re-initialised"
    report = apply_checkpoint(net, Checkpoint(state_dict=net.state_dict(), layout="official"))
    assert untrained_head(report) is None


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
    w = zoo.Weights("test_k6", url, "test", None, 6, None, zoo.KINETICS_CLIP)
    monkeypatch.setitem(zoo.MODELS, "hiera_nano_8x64", replace(spec, weights={"test_k6": w}, default_weights="test_k6"))


def test_default_weights_download_into_empty_cache(media, capsys, tmp_path, monkeypatch, loopback_server):
    root, base = loopback_server
    # An official-format file: {"model_state": state_dict}.
    save_official(root / "hiera_nano_8x64.pth", media["model"])
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
