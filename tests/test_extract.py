"""`hiera-video extract`: features equal the model's own outputs, windows, resuming, bad inputs, index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import hiera_video
from hiera_video.data import ClipSpec, make_views, open_video
from hiera_video.data.feature_store import read_features
from hiera_video.jobs.extract import load_feature_model, stage_map
from hiera_video.jobs.predict import FrameRange
from hiera_video.models.checkpoints import save_checkpoint

from helpers import NANO, nano_classifier, run_cli as run, save_official
from videogen import write_bad_inputs, write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("extract")
    model, ckpt = nano_classifier(d / "nano.pt", [f"c{i}" for i in range(6)])
    vids = d / "videos"
    (vids / "a").mkdir(parents=True)
    a = write_video(vids / "a" / "clip.mp4", num_frames=48, height=72, width=96)  # 1.6 s
    (vids / "b").mkdir()
    b = write_video(vids / "b" / "clip.mp4", num_frames=30, height=64, width=80)  # same basename, other folder
    return dict(dir=d, ckpt=str(ckpt), model=model, videos=[str(a), str(b)], root=vids)


def _index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


def test_pooled_equals_model_prelogits_and_index(media, capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = run(["extract", str(media["root"]), "-o", str(out), "--weights", media["ckpt"], "--views", "2x3", "--dtype", "fp32"], capsys)
    assert code == 0, err
    # Same basenames in different folders: mirrored, no collision.
    assert (out / "a" / "clip.mp4.npy").is_file() and (out / "b" / "clip.mp4.npy").is_file()
    model = media["model"]
    for video, name in zip(media["videos"], ["a/clip.mp4.npy", "b/clip.mp4.npy"]):
        feats = np.load(out / name)
        views, infos = make_views(video, ClipSpec(temporal_views=2, spatial_views=3, crop_size=64, num_frames=8))
        with torch.no_grad():
            ref = model.forward_head(model.forward_features(views), pre_logits=True)
        assert feats.shape == (6, model.num_features) and feats.dtype == np.float32
        np.testing.assert_allclose(feats, ref.numpy(), atol=1e-5, rtol=1e-5)
    rows = _index(out)
    assert len(rows) == 12
    r0 = rows[0]
    assert r0["path"] == media["videos"][0] and r0["output"] == "a/clip.mp4.npy"
    assert r0["model"] == NANO and r0["weights"] == media["ckpt"] and r0["level"] == "pooled" and r0["dtype"] == "float32"
    assert r0["shape"] == [model.num_features] and r0["feature_stride"] is None
    assert [r["view"] for r in rows[:6]] == list(range(6))
    assert [(r["temporal_view"], r["spatial_view"]) for r in rows[:6]] == [(t, s) for t in range(2) for s in range(3)]
    assert all(r["end"] > r["start"] >= 0 for r in rows)
    settings = json.loads((out / "extract.json").read_text())
    assert settings["level"] == "pooled" and settings["views"] == [2, 3] and settings["model"] == NANO
    assert not list(out.glob("index.rank*.jsonl")) and not list(out.rglob("*.tmp"))


def test_stage_maps_equal_forward_intermediates(media, capsys, tmp_path):
    model = media["model"]
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x)
        for s in range(1, 5):
            torch.testing.assert_close(stage_map(model, x, s), maps[s - 1], atol=1e-5, rtol=1e-5)
    out = tmp_path / "st"
    code, _, err = run(["extract", media["videos"][0], "-o", str(out), "--weights", media["ckpt"], "--level", "stage2",
                        "--views", "1x2", "--format", "safetensors", "--dtype", "fp32"], capsys)
    assert code == 0, err
    feats, meta = read_features(out / "clip.mp4.safetensors")
    views, _ = make_views(media["videos"][0], ClipSpec(temporal_views=1, spatial_views=2, crop_size=64, num_frames=8))
    with torch.no_grad():
        ref = model.forward_intermediates(views)[1]  # [V, T', H', W', C]
    info = model.feature_info[1]
    assert feats.shape == (2, 8 // info["temporal_stride"], 64 // info["spatial_stride"], 64 // info["spatial_stride"], info["channels"])
    np.testing.assert_allclose(feats, ref.numpy(), atol=1e-5, rtol=1e-5)
    assert meta["level"] == "stage2" and meta["model"] == NANO and meta["path"] == media["videos"][0]
    assert meta["feature_stride"] == [info["temporal_stride"], info["spatial_stride"], info["spatial_stride"]]
    assert [r["view"] for r in meta["index"]] == [0, 1]
    assert _index(out)[0]["shape"] == list(feats.shape[1:])


def test_windows_mode(media, capsys, tmp_path):
    out = tmp_path / "win"
    code, _, err = run(["extract", media["videos"][0], "-o", str(out), "--weights", media["ckpt"], "--window", "0.5",
                        "--stride", "0.25", "--dtype", "fp32", "--batch-size", "4", "--format", "safetensors"], capsys)
    assert code == 0, err
    feats, meta = read_features(out / "clip.mp4.safetensors")
    # 48 frames at 30 fps = 1.6 s: windows start every 0.25 s, the last one aligned to the end.
    starts = [0.0, 0.25, 0.5, 0.75, 1.0, 1.1]
    assert feats.shape == (6, media["model"].num_features)
    np.testing.assert_allclose(meta["windows"][:, 0], starts, atol=1e-6)
    np.testing.assert_allclose(meta["windows"][:, 1] - meta["windows"][:, 0], 0.5, atol=1e-6)
    rows = _index(out)
    assert [r["window"] for r in rows] == list(range(6)) and [r["start"] for r in rows] == starts
    # Window 2 (0.5-1.0 s = frames 15..30) equals the model on that window's centre clip; batches of 4 + 2.
    with open_video(media["videos"][0]) as reader:
        views, _ = make_views(FrameRange(reader, 15, 30), ClipSpec(temporal_views=1, spatial_views=1, crop_size=64, num_frames=8))
    with torch.no_grad():
        ref = media["model"].forward_head(media["model"].forward_features(views), pre_logits=True)
    np.testing.assert_allclose(feats[2], ref[0].numpy(), atol=1e-5, rtol=1e-5)
    code, _, err = run(["extract", media["videos"][0], "-o", str(tmp_path / "x"), "--weights", media["ckpt"], "--window", "1", "--views", "2x1"], capsys)
    assert code == 2 and "either --window" in err


def test_resume_skips_redoes_and_ignores_temp_files(media, capsys, tmp_path):
    out = tmp_path / "res"
    argv = ["extract", str(media["root"]), "-o", str(out), "--weights", media["ckpt"], "--dtype", "fp32", "--json"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    first = {r["output"]: r for r in json.loads(stdout)}
    assert not any(r["skipped"] for r in first.values())
    fa, fb = out / "a" / "clip.mp4.npy", out / "b" / "clip.mp4.npy"
    stamp = (fa.stat().st_mtime_ns, fb.stat().st_mtime_ns)
    index_before = (out / "index.jsonl").read_text()

    code, stdout, err = run(argv, capsys)  # nothing to do
    assert code == 0, err
    assert all(r["skipped"] for r in json.loads(stdout)) and "2 already done" in err
    assert (fa.stat().st_mtime_ns, fb.stat().st_mtime_ns) == stamp
    assert (out / "index.jsonl").read_text() == index_before

    # A deleted output is redone; a half-written temp file of a killed run is ignored and cleaned.
    want = np.load(fa)
    fa.unlink()
    half = fa.parent / ".clip.mp4.npy.killed123.tmp"
    half.write_bytes(b"\x93NUMPY half written")
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    res = {r["output"]: r for r in json.loads(stdout)}
    assert res["a/clip.mp4.npy"]["skipped"] is False and res["b/clip.mp4.npy"]["skipped"] is True
    np.testing.assert_array_equal(np.load(fa), want)
    assert not half.exists() and fb.stat().st_mtime_ns == stamp[1]
    assert (out / "index.jsonl").read_text() == index_before

    # A truncated final file (not written by us) is redone too.
    fb.write_bytes(fb.read_bytes()[:100])
    code, stdout, err = run(argv, capsys)
    assert code == 0 and {r["output"]: r["skipped"] for r in json.loads(stdout)} == {"a/clip.mp4.npy": True, "b/clip.mp4.npy": False}
    assert np.load(fb).shape == (1, media["model"].num_features)

    # Killed before the index merge: the rows are in the journal, the files are final -> skipped.
    os.replace(out / "index.jsonl", out / "index.rank0.jsonl")
    code, stdout, err = run(argv, capsys)
    assert code == 0 and all(r["skipped"] for r in json.loads(stdout))
    assert (out / "index.jsonl").read_text() == index_before and not (out / "index.rank0.jsonl").exists()

    # Other settings into the same folder are refused; --overwrite redoes everything.
    code, _, err = run(argv + ["--level", "stage4"], capsys)
    assert code == 2 and "other settings" in err and "--overwrite" in err
    code, stdout, err = run(argv + ["--level", "stage4", "--overwrite"], capsys)
    assert code == 0 and not any(r["skipped"] for r in json.loads(stdout))
    assert np.load(fa).ndim == 5 and {r["level"] for r in _index(out)} == {"stage4"}


def test_bad_inputs_are_reported_and_skipped(media, capsys, tmp_path):
    bad = write_bad_inputs(tmp_path / "bad")
    kinds = ["empty", "random", "text", "truncated", "audio_only", "missing"]
    out = tmp_path / "o"
    argv = ["extract", media["videos"][1], *[str(bad[k]) for k in kinds], "-o", str(out), "--weights", media["ckpt"], "--json"]
    code, stdout, err = run(argv, capsys)
    assert code == 1
    res = {r["path"]: r for r in json.loads(stdout)}
    assert res[media["videos"][1]]["ok"] is True
    for k in kinds:
        assert res[str(bad[k])]["ok"] is False and res[str(bad[k])]["error"] and "\n" not in res[str(bad[k])]["error"]
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == len(kinds)
    assert "Traceback" not in err and "6 failed" in err
    assert {r["path"] for r in _index(out)} == {media["videos"][1]}
    assert not list(out.rglob("*.tmp"))


def test_dataset_mode(media, capsys, tmp_path):
    root = tmp_path / "ds"
    for cls in ("jump", "run"):
        (root / cls).mkdir(parents=True)
        shutil.copy(media["videos"][1], root / cls / "clip.mp4")
    out = tmp_path / "dso"
    code, _, err = run(["extract", "--dataset", "folder", "--root", str(root), "-o", str(out), "--weights", media["ckpt"]], capsys)
    assert code == 0, err
    rows = _index(out)
    assert [r["output"] for r in rows] == ["jump/clip.mp4.npy", "run/clip.mp4.npy"]
    assert [(r["label"], r["label_name"]) for r in rows] == [(0, "jump"), (1, "run")]
    code, _, err = run(["extract", media["videos"][0], "--dataset", "folder", "--root", str(root), "-o", str(out)], capsys)
    assert code == 2 and "not both" in err


def test_mae_weights_and_random_weights(media, capsys, tmp_path):
    torch.manual_seed(1)
    mae = hiera_video.create_model("mae_" + NANO).eval()
    ours = save_checkpoint(tmp_path / "mae.pt", mae)  # names its model: mae_hiera_nano_8x64
    official = save_official(tmp_path / "mae_official.pth", mae)
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        want = mae.forward_intermediates(x)[0]  # stage 1 does not depend on q_pool
    for kw in (dict(weights=ours), dict(weights=official, model=NANO), dict(weights=official, model="mae_" + NANO)):
        clf = load_feature_model(device="cpu", dtype="fp32", **kw)
        assert clf.name == NANO
        with torch.no_grad():
            torch.testing.assert_close(stage_map(clf.model, x, 1), want, atol=1e-5, rtol=1e-5)
    code, _, err = run(["extract", media["videos"][1], "-o", str(tmp_path / "m"), "--weights", ours], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "m" / "clip.mp4.npy").shape == (1, mae.num_features)
    code, _, err = run(["extract", media["videos"][1], "-o", str(tmp_path / "r"), "--model", NANO, "--weights", "none"], capsys)
    assert code == 2 and "allow-random-weights" in err
    code, _, err = run(["extract", media["videos"][1], "-o", str(tmp_path / "r"), "--model", NANO, "--weights", "none",
                        "--allow-random-weights"], capsys)
    assert code == 0, err



def test_headless_backbone_gives_features_but_nan_weights_are_refused(media, capsys, tmp_path):
    """Features need no classifier head (a backbone without one is fine here, unlike in
    predict/eval), but weights holding NaN would write NaN features: refused."""
    sd = media["model"].state_dict()
    save_official(tmp_path / "backbone.pth", {k: v for k, v in sd.items() if not k.startswith("head.")})
    code, _, err = run(["extract", media["videos"][1], "-o", str(tmp_path / "f"), "--model", NANO,
                        "--weights", str(tmp_path / "backbone.pth"), "--dtype", "fp32"], capsys)
    assert code == 0, err
    feats = np.load(tmp_path / "f" / "clip.mp4.npy")
    views, _ = make_views(media["videos"][1], ClipSpec(temporal_views=1, spatial_views=1, crop_size=64, num_frames=8))
    with torch.no_grad():
        want = media["model"].forward_head(media["model"].forward_features(views), pre_logits=True)
    np.testing.assert_allclose(feats, want.numpy(), atol=1e-4, rtol=1e-4)
    bad = {k: v.clone() for k, v in sd.items()}
    bad["blocks.0.attn.qkv.weight"][0, 0] = float("inf")
    save_official(tmp_path / "inf.pth", bad)
    code, _, err = run(["extract", media["videos"][1], "-o", str(tmp_path / "g"), "--model", NANO,
                        "--weights", str(tmp_path / "inf.pth")], capsys)
    assert code == 2 and "NaN or infinite" in " ".join(err.split()) and not (tmp_path / "g" / "clip.mp4.npy").exists()


TORCHRUN_SCRIPT = textwrap.dedent("""
    import sys, typer
    from hiera_video.cli.extract import extract
    app = typer.Typer()
    app.command("extract")(extract)
    app.command("noop")(lambda: None)
    sys.exit(typer.main.get_command(app).main(args=sys.argv[1:], prog_name="hiera-video", standalone_mode=False))
""")


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(), reason="torchrun not installed")
def test_torchrun_shards_and_merged_index(media, tmp_path):
    """2 CPU processes: each writes its own files and index shard; rank 0 merges them."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    script = tmp_path / "run_extract.py"
    script.write_text(TORCHRUN_SCRIPT)
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = ["extract", str(media["root"]), "-o", str(out), "--weights", media["ckpt"], "--dtype", "fp32", "--views", "1x2"]
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _index(out)
    assert [r["output"] for r in rows] == ["a/clip.mp4.npy"] * 2 + ["b/clip.mp4.npy"] * 2
    assert not list(out.glob("index.rank*.jsonl"))
    model = media["model"]
    for video, name in zip(media["videos"], ["a/clip.mp4.npy", "b/clip.mp4.npy"]):
        views, _ = make_views(video, ClipSpec(temporal_views=1, spatial_views=2, crop_size=64, num_frames=8))
        with torch.no_grad():
            ref = model.forward_head(model.forward_features(views), pre_logits=True)
        np.testing.assert_allclose(np.load(out / name), ref.numpy(), atol=1e-5, rtol=1e-5)


def test_resume_compares_the_weights_content_and_every_setting(media, capsys, tmp_path):
    """An extract folder is resumed only with what made its features: other weights behind the
    same path, another --level or --dtype are refused with the difference named; a missing or
    corrupt extract.json leaves nothing to compare against and is refused too; random weights
    (--weights none) are seeded, so rerunning with them resumes the same model."""
    weights = tmp_path / "w.pt"
    shutil.copy(media["ckpt"], weights)
    out = tmp_path / "out"
    argv = ["extract", media["videos"][0], "-o", str(out), "--weights", str(weights), "--dtype", "fp32"]
    assert run(argv, capsys)[0] == 0
    for extra, named in ((["--level", "stage1"], "level: 'pooled' -> 'stage1'"), (["--dtype", "bf16"], "compute_dtype")):
        code, _, err = run(argv + extra, capsys)
        assert code == 2 and "other settings" in err and named in err, err
    nano_classifier(tmp_path / "other.pt", [f"c{i}" for i in range(6)], head_std=1.0)
    shutil.copy(tmp_path / "other.pt", weights)  # same path, other content
    code, _, err = run(argv, capsys)
    assert code == 2 and "weights_sha256" in err, err
    shutil.copy(media["ckpt"], weights)
    (out / "extract.json").write_text("{ torn")
    code, _, err = run(argv, capsys)
    assert code == 2 and "extract.json is unreadable" in err, err
    (out / "extract.json").unlink()
    code, _, err = run(argv, capsys)
    assert code == 2 and "extract.json is missing" in err, err

    rand = ["extract", media["videos"][0], "-o", str(tmp_path / "r"), "--model", NANO, "--weights", "none",
            "--allow-random-weights", "--dtype", "fp32"]
    assert run(rand, capsys)[0] == 0
    first = np.load(tmp_path / "r" / "clip.mp4.npy")
    code, _, err = run(rand + ["--overwrite"], capsys)
    assert code == 0, err
    again = np.load(tmp_path / "r" / "clip.mp4.npy")
    np.testing.assert_array_equal(first, again)
    assert run(rand, capsys)[0] == 0  # the same random model: resumed, not refused
