"""``check-videos``: good, corrupt, empty, missing, hanging and crashing files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from videogen import write_video
from hiera_video.cli.check_videos import check_videos as check_videos_command
from hiera_video.data.check import FileResult, check_dataset, check_file, check_videos, write_bad_list
from hiera_video.data.datasets import build_dataset


def slow_or_crashing_check(path: str, backend: str, decode: bool) -> FileResult:
    """Runs in the worker processes (imported there by name)."""
    name = Path(path).name
    if name.startswith("hang"):
        time.sleep(60)
    if name.startswith("crash"):
        os._exit(3)
    return check_file(path, backend, decode)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check") / "data"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    write_video(root / "a" / "good1.mp4", num_frames=8, height=32, width=32)
    write_video(root / "b" / "good2.avi", num_frames=6, height=32, width=32, fmt="mjpeg")
    (root / "a" / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    (root / "b" / "empty.mp4").write_bytes(b"")
    (root / "b" / "missing.mp4").symlink_to(root / "nowhere.mp4")  # listed in the folder, not on disk
    return root


def app() -> typer.Typer:
    a = typer.Typer()
    a.command()(check_videos_command)
    return a


def test_check_videos_cli_writes_bad_list(tree, tmp_path):
    bad_txt = tmp_path / "bad.txt"
    res = CliRunner().invoke(app(), ["--dataset", "folder", "--root", str(tree), "--workers", "2", "--output", str(bad_txt)])
    assert res.exit_code == 1, res.output
    lines = [ln.split("\t") for ln in bad_txt.read_text().splitlines()]
    assert all(len(parts) == 2 and parts[1] for parts in lines)
    bad = {Path(p).name: reason for p, reason in lines}
    assert set(bad) == {"corrupt.mp4", "empty.mp4", "missing.mp4"}
    assert "empty" in bad["empty.mp4"] and "not found" in bad["missing.mp4"]
    assert "corrupt" in bad["corrupt.mp4"] or "not a readable video" in bad["corrupt.mp4"]
    for word in ("ok", "empty", "missing", "unreadable", "total"):
        assert word in res.stdout


def test_check_videos_json_no_decode_and_all_good(tree, tmp_path):
    res = CliRunner().invoke(app(), ["--dataset", "folder", "--root", str(tree), "--no-decode", "--json", "--workers", "1"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["checked"] == 5 and out["ok"] == 2 and out["by_reason"] == {"ok": 2, "empty": 1, "missing": 1, "unreadable": 1}
    good = tmp_path / "good"
    (good / "x").mkdir(parents=True)
    os.link(tree / "a" / "good1.mp4", good / "x" / "v.mp4")
    res = CliRunner().invoke(app(), ["--dataset", "folder", "--root", str(good), "--output", str(tmp_path / "none.txt")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "none.txt").read_text() == ""


def test_check_dataset_reports_missing_annotation_entries(tree, tmp_path):
    lst = tmp_path / "val.txt"
    lst.write_text(f"{tree}/a/good1.mp4 0\n{tree}/a/gone.mp4 1\n")
    ds = build_dataset("list", tree, annotations=lst)
    report = check_dataset(ds, workers=1, decode=True)
    assert [(Path(r.path).name, r.status) for r in report.results] == [("gone.mp4", "missing"), ("good1.mp4", "ok")]
    assert report.results[1].frames == 8
    out = write_bad_list(tmp_path / "bad.txt", report.bad)
    assert out.read_text().startswith(f"{tree}/a/gone.mp4\tfile not found")


def test_hanging_and_crashing_files_do_not_block_the_scan(tree, tmp_path):
    for name in ("hang.mp4", "crash.mp4"):
        os.link(tree / "a" / "good1.mp4", tmp_path / name)
    paths = [tmp_path / "hang.mp4", tree / "a" / "good1.mp4", tmp_path / "crash.mp4", tree / "b" / "good2.avi"]
    seen = []
    t0 = time.monotonic()
    report = check_videos(paths, workers=2, timeout=1.5, check_fn=slow_or_crashing_check, progress=seen.append)
    assert time.monotonic() - t0 < 30
    assert [r.status for r in report.results] == ["timeout", "ok", "crashed", "ok"]
    assert [r.path for r in report.results] == [str(p) for p in paths]
    assert "1.5 s" in report.results[0].reason and "exit code 3" in report.results[2].reason
    assert len(seen) == 4 and report.summary()["bad"] == 2
