"""`predict` and `extract` --decode-timeout (issue 14, item 2): a decoder that hangs in one
video costs that video only, as in `eval`; the others are done and the command goes on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from hiera_video.data import transforms

from helpers import nano_classifier, patch_everywhere, run_cli as run
from videogen import write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("hang")
    _, ckpt = nano_classifier(d / "nano.pt", ["a", "b", "c"])
    videos = [str(write_video(d / f"{name}.mp4", num_frames=48, height=48, width=64)) for name in ("first", "hang", "last")]
    return dict(dir=d, ckpt=str(ckpt), videos=videos)


@pytest.fixture
def hanging_decoder(monkeypatch, tmp_path):
    """Decoding 'hang.mp4' never returns (simulated: the views of that video sleep, inside the
    forked worker that the timeout terminates). Every attempt is logged to a file, so a test
    can count how often the hanging video was tried."""
    attempts = tmp_path / "attempts.txt"
    real = transforms.make_views

    def views(source, spec):
        path = str(getattr(source, "path", source))
        if path.endswith("hang.mp4"):
            with open(attempts, "a") as f:
                f.write(path + "\n")
            time.sleep(600)
        return real(source, spec)

    patch_everywhere(monkeypatch, "make_views", views)
    return attempts


def _tries(attempts: Path) -> int:
    return len(attempts.read_text().splitlines()) if attempts.exists() else 0


@pytest.mark.parametrize("timeline", [False, True], ids=["whole-video", "windows"])
def test_predict_stops_a_hanging_decode_and_goes_on(media, hanging_decoder, capsys, timeline):
    args = ["--window", "0.5", "--stride", "0.25"] if timeline else []
    t0 = time.perf_counter()
    code, out, err = run(["predict", *media["videos"], "--weights", media["ckpt"], "--dtype", "fp32", "--json",
                          "--workers", "1", "--decode-timeout", "2", *args], capsys)
    assert time.perf_counter() - t0 < 120
    assert code == 1, err  # results written, one input failed
    first, hung, last = json.loads(out)
    assert first["ok"] and last["ok"] and not hung["ok"]
    assert "took longer than 2 s" in hung["error"] and hung["path"].endswith("hang.mp4")
    assert "took longer than 2 s" in err
    if timeline:  # 6 windows; the video was given up after its first stuck window, not tried 6 times
        assert len(first["timeline"]) == len(last["timeline"]) == 6
    assert _tries(hanging_decoder) == 1


def test_extract_stops_a_hanging_decode_and_goes_on(media, hanging_decoder, capsys, tmp_path):
    out_dir = tmp_path / "features"
    code, out, err = run(["extract", *media["videos"], "-o", str(out_dir), "--weights", media["ckpt"], "--dtype", "fp32",
                          "--json", "--workers", "1", "--decode-timeout", "2", "--views", "1x2"], capsys)
    assert code == 1, err
    results = {Path(r["path"]).name: r for r in json.loads(out)}
    assert results["first.mp4"]["ok"] and results["last.mp4"]["ok"]
    assert not results["hang.mp4"]["ok"] and "took longer than 2 s" in results["hang.mp4"]["error"]
    assert sorted(p.name for p in out_dir.glob("*.npy")) == ["first.mp4.npy", "last.mp4.npy"]
    rows = [json.loads(line) for line in (out_dir / "index.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == ["first.mp4", "first.mp4", "last.mp4", "last.mp4"]
    assert np.load(out_dir / "last.mp4.npy").shape[0] == 2
    assert _tries(hanging_decoder) == 1
