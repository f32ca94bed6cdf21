"""Issue 21 (items 1, 2, 4): outputs never overwrite inputs or each other, and a full disk is one
line with no temporary file left: `extract` runs into one folder, outputs that are inputs,
unrelated existing files, `extract` on a full disk (a real small tmpfs, and ENOSPC simulated)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hiera_video.data import feature_store

from helpers import nano_classifier, run_cli as run
from videogen import write_video


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("kept")
    _, ckpt = nano_classifier(d / "nano.pt", [f"c{i}" for i in range(3)])
    clip = write_video(d / "clip.mp4", num_frames=24, height=64, width=64)
    return dict(dir=d, ckpt=str(ckpt), clip=str(clip))


# ---------------------------------------------------------------------------- item 4: full disk
@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (needs root with mount rights, as in CI's container): a real full disk."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root with CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_extract_on_a_real_full_disk_is_one_line_and_leaves_no_temp_file(media, small_tmpfs, fmt):
    """Stage-1 maps of 6 views are ~600 KB: they cannot fit. The npy writer used a memory map,
    so the full disk was a SIGBUS (exit 135, no message, a .tmp left). Run in a subprocess so
    that a crash fails this test, not the test session."""
    out = small_tmpfs / "feats"
    code = ("import sys; from hiera_video.cli.app import main; main(sys.argv[1:])")
    argv = ["extract", media["clip"], "-o", str(out), "--weights", media["ckpt"], "--level", "stage1", "--views", "2x3",
            "--format", fmt, "--batch-size", "6"]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if "No space left on device" in ln]
    assert lines and f"clip.mp4.{fmt}" in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / f"clip.mp4.{fmt}").exists()


class _FullDisk:
    """A binary file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, f, room: int):
        self._f, self.room = f, room

    def write(self, data):
        n = len(memoryview(data).cast("B"))
        if n > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_extract_with_enospc_stops_with_one_line_and_removes_the_temp_file(media, capsys, tmp_path, monkeypatch, fmt):
    """Where no tmpfs can be mounted: ENOSPC from the feature writer's file (every format) stops
    the run (every next video would fail too) with one line, exit 2, temporary file removed;
    the index rows of finished videos stay."""
    real_open = open

    def tiny_disk(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return _FullDisk(f, 256) if "b" in mode and str(path).endswith(".tmp") else f

    monkeypatch.setattr(feature_store, "open", tiny_disk, raising=False)
    out = tmp_path / "o"
    code, _, err = run(["extract", media["clip"], "-o", str(out), "--weights", media["ckpt"], "--level", "stage1",
                        "--format", fmt], capsys)
    assert code == 2, err
    assert "cannot write" in err and "No space left on device" in err and "Traceback" not in err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] and not (out / f"clip.mp4.{fmt}").exists()
    monkeypatch.undo()
    code, _, err = run(["extract", media["clip"], "-o", str(out), "--weights", media["ckpt"], "--level", "stage1",
                        "--format", fmt], capsys)
    assert code == 0, err  # space again: the rerun completes the folder
    assert feature_store.stored_shape(out / f"clip.mp4.{fmt}")[0] == 1


def test_npy_features_are_written_without_a_memory_map(tmp_path, monkeypatch):
    def no_map(*a, **k):
        raise AssertionError("a memory map: SIGBUS on a full disk")

    monkeypatch.setattr(np.lib.format, "open_memmap", no_map)
    monkeypatch.setattr(np, "memmap", no_map)
    w = feature_store.FeatureWriter(tmp_path / "x.npy", "npy", 3, np.float16)
    data = np.arange(3 * 2 * 5, dtype=np.float32).reshape(3, 2, 5)
    w.write(data[:2])
    w.write(data[2:])
    w.commit()
    got = np.load(tmp_path / "x.npy")
    assert got.dtype == np.float16 and got.shape == (3, 2, 5)
    np.testing.assert_array_equal(got, data.astype(np.float16))


# ---------------------------------------------------------------------------- item 1: extract runs into one folder
def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


def test_extract_runs_into_one_folder_never_replace_each_other(media, capsys, tmp_path):
    """`extract data/train -o F` then `extract data/val -o F`: names were relative to each run's
    folder, so val's c.mp4 replaced train's c.mp4 and its index rows. Names are now relative to
    the folder the first run recorded; a video outside it is refused, one inside it (a subfolder,
    a single file) gets the name the first run would have given it."""
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
        shutil.copy(media["clip"], data / split / "c.mp4")
    shutil.copy(media["clip"], data / "train" / "d.mp4")
    out = tmp_path / "F"
    base = ["-o", str(out), "--weights", media["ckpt"]]
    code, _, err = run(["extract", str(data / "train" / "c.mp4"), *base], capsys)
    assert code == 0, err
    before = (out / "c.mp4.npy").read_bytes(), (out / "index.jsonl").read_text()
    for other in (data / "val", data / "val" / "c.mp4"):
        code, _, err = run(["extract", str(other), *base], capsys)
        assert code == 2 and "outside" in err and "another --output" in err, err
        assert ((out / "c.mp4.npy").read_bytes(), (out / "index.jsonl").read_text()) == before
    # Inside the first run's folder: the same names as one run would give.
    code, _, err = run(["extract", str(data / "train" / "d.mp4"), str(data / "train" / "c.mp4"), *base], capsys)
    assert code == 0, err
    assert sorted(r["output"] for r in _rows(out)) == ["c.mp4.npy", "d.mp4.npy"]
    assert (out / "c.mp4.npy").read_bytes() == before[0]
    assert json.loads((out / "extract.json").read_text())["names_relative_to"] == str(data / "train")

    # A run given the folder above both names every video; later runs into it keep those names.
    top = tmp_path / "G"
    for args in ([str(data)], [str(data / "val" / "c.mp4")], [str(data / "train")]):
        code, _, err = run(["extract", *args, "-o", str(top), "--weights", media["ckpt"]], capsys)
        assert code == 0, err
    assert sorted(r["output"] for r in _rows(top)) == ["train/c.mp4.npy", "train/d.mp4.npy", "val/c.mp4.npy"]
    assert {r["output"]: r["path"] for r in _rows(top)}["val/c.mp4.npy"] == str(data / "val" / "c.mp4")


def test_extract_same_name_in_other_folders_and_unrelated_files(media, capsys, tmp_path):
    """`col/x/c.mp4` then `col/y/c.mp4` were both written to c.mp4.npy. In a folder without the
    recorded base (written by an older version) a name that the index gives to another video is
    refused; a file under a feature name that the index does not list is not replaced."""
    for sub in ("x", "y"):
        (tmp_path / "col" / sub).mkdir(parents=True)
        shutil.copy(media["clip"], tmp_path / "col" / sub / "c.mp4")
    out = tmp_path / "F"
    base = ["-o", str(out), "--weights", media["ckpt"]]
    assert run(["extract", str(tmp_path / "col" / "x" / "c.mp4"), *base], capsys)[0] == 0
    code, _, err = run(["extract", str(tmp_path / "col" / "y" / "c.mp4"), *base], capsys)
    assert code == 2 and "outside" in err, err
    settings = json.loads((out / "extract.json").read_text())
    del settings["names_relative_to"]  # as an older version wrote it
    (out / "extract.json").write_text(json.dumps(settings))
    code, _, err = run(["extract", str(tmp_path / "col" / "y" / "c.mp4"), *base], capsys)
    assert code == 2 and "holds the features of" in err, err
    assert [r["path"] for r in _rows(out)] == [str(tmp_path / "col" / "x" / "c.mp4")]

    mine = tmp_path / "H"
    mine.mkdir()
    (mine / "c.mp4.npy").write_bytes(b"my own file")
    code, _, err = run(["extract", str(tmp_path / "col" / "x" / "c.mp4"), "-o", str(mine), "--weights", media["ckpt"]], capsys)
    assert code == 2 and "does not list it" in err, err
    assert (mine / "c.mp4.npy").read_bytes() == b"my own file"


# ---------------------------------------------------------------------------- item 2: outputs that are inputs
def test_same_file_sees_links_and_resolves_missing_paths(tmp_path):
    from hiera_video.report import same_file

    a = tmp_path / "a.pt"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard.pt")
    os.symlink(a, tmp_path / "soft.pt")
    (tmp_path / "sub").mkdir()
    assert same_file(a, tmp_path / "hard.pt") and same_file(tmp_path / "soft.pt", a)
    assert same_file(tmp_path / "sub" / ".." / "a.pt", a)
    assert same_file(tmp_path / "sub" / ".." / "new.pt", tmp_path / "new.pt")  # neither exists: resolved paths
    b = tmp_path / "b.pt"
    b.write_bytes(b"x")
    assert not same_file(a, b) and not same_file(a, tmp_path / "new.pt")


def test_export_never_writes_over_its_weights(media, capsys, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    ckpt = exp / "model.pt"
    shutil.copy(media["ckpt"], ckpt)
    os.symlink(ckpt, exp / "link.pt")
    os.link(ckpt, exp / "hard.pt")
    before = ckpt.read_bytes()
    for out in (ckpt, exp / "link.pt", exp / "hard.pt", exp / "sub" / ".." / "model.pt"):
        code, _, err = run(["export", "--weights", str(ckpt), "--format", "torch-export", "-o", str(out)], capsys)
        assert code == 2 and "is the input --weights" in err and "Traceback" not in err, err
        assert ckpt.read_bytes() == before
    # The sidecar FILE.json is an output too: `-o labels` with `--labels labels.json` would replace the labels.
    labels = tmp_path / "x.pt2.json"
    labels.write_text("c0\nc1\nc2\n")
    code, _, err = run(["export", "--weights", str(ckpt), "--labels", str(labels), "--format", "torch-export",
                        "-o", str(tmp_path / "x.pt2")], capsys)
    assert code == 2 and "sidecar" in err and "is the input --labels" in err, err
    assert labels.read_text() == "c0\nc1\nc2\n"
    code, _, err = run(["export", "--weights", str(ckpt), "--format", "torch-export", "-o", str(tmp_path / "x.pt2")], capsys)
    assert code == 2 and "not an export sidecar" in err, err  # someone's own x.pt2.json: not replaced unasked
    assert labels.read_text() == "c0\nc1\nc2\n"


def test_ava_proposals_never_writes_over_its_pickle(capsys, tmp_path):
    import pickle

    pkl = tmp_path / "p.pkl"
    pkl.write_bytes(pickle.dumps({"vid,0902": np.array([[0.1, 0.1, 0.5, 0.5, 0.9]])}))
    before = pkl.read_bytes()
    os.symlink(pkl, tmp_path / "alias.csv")
    for out in (pkl, tmp_path / "alias.csv"):
        code, _, err = run(["ava-proposals", str(pkl), str(out), "--allow-pickle"], capsys)
        assert code == 2 and "is the input PICKLE_FILE" in err, err
        assert pkl.read_bytes() == before
    code, _, err = run(["ava-proposals", str(pkl), str(tmp_path / "p.csv"), "--allow-pickle"], capsys)
    assert code == 0, err


def test_synth_never_replaces_an_unrelated_readme(capsys, tmp_path):
    small = ["--train-per-class", "1", "--val-per-class", "0", "--frames", "4", "--size", "32"]
    (tmp_path / "README.txt").write_text("my notes")
    code, _, err = run(["synth", str(tmp_path), *small], capsys)
    assert code == 2 and "README.txt" in err and "--overwrite" in err, err
    assert (tmp_path / "README.txt").read_text() == "my notes" and not (tmp_path / "train").exists()
    own = tmp_path / "d"
    (own / "train" / "moving_up").mkdir(parents=True)
    (own / "train" / "moving_up" / "holiday.mp4").write_bytes(b"my video")  # synth deletes stale videos of its own
    code, _, err = run(["synth", str(own), *small], capsys)
    assert code == 2 and "holiday.mp4" in err, err
    assert (own / "train" / "moving_up" / "holiday.mp4").read_bytes() == b"my video"
    code, _, err = run(["synth", str(tmp_path), *small, "--overwrite"], capsys)  # asked for: replaced
    assert code == 0, err
    assert (tmp_path / "README.txt").read_text() != "my notes"
