"""Output paths are checked before any work (issue 14, item 4): an output that cannot be
written (a path under a file, a folder where a file is expected, a file where a folder is
expected, no permission) is a one-line error (exit 2) of every command that writes files,
before the model is loaded or a video decoded, so no results are computed and then lost."""

from __future__ import annotations

import errno
import importlib
import os
import tempfile
from pathlib import Path

import pytest

from hiera_video.errors import HieraVideoError
from hiera_video.report import check_output

from helpers import run_cli as run

# command -> (argv with {out} for the output path, kind of the output, the function whose call
# means that the work started, the option the error names)
COMMANDS = {
    "predict -o": (["predict", "{dir}", "--weights", "w.pt", "-o", "{out}.json"], "file",
                   "hiera_video.engine.inference.load_classifier", "--output"),
    "predict --plot": (["predict", "{dir}", "--weights", "w.pt", "--window", "1", "--plot", "{out}.png"], "file",
                       "hiera_video.engine.inference.load_classifier", "--plot"),
    "eval": (["eval", "--dataset", "folder", "--root", "{dir}", "--weights", "w.pt", "-o", "{out}"], "dir",
             "hiera_video.jobs.evaluate.load_classifier", "--output"),
    "extract": (["extract", "{dir}", "--weights", "w.pt", "-o", "{out}"], "dir",
                "hiera_video.jobs.extract.load_feature_model", "--output"),
    "score": (["score", "preds.pt", "--output", "{out}"], "dir", "hiera_video.metrics.classification.load_predictions", "--output"),
    "score-ava": (["score-ava", "-g", "gt.csv", "-d", "det.csv", "--output", "{out}"], "dir",
                  "hiera_video.ava.files.resolve_label_map", "--output"),
    "check-videos": (["check-videos", "--dataset", "folder", "--root", "{dir}", "--output", "{out}.txt"], "file",
                     "hiera_video.cli.check_videos.build_dataset", "--output"),
    "export": (["export", "--format", "onnx", "--weights", "w.pt", "-o", "{out}.onnx"], "file",
               "hiera_video.jobs.export.load_for_export", "--output"),
    "reconstruct": (["reconstruct", "{video}", "-o", "{out}.png"], "file", "hiera_video.jobs.reconstruct.load_mae", "--output"),
    "ava-proposals": (["ava-proposals", "in.pkl", "{out}.csv", "--allow-pickle"], "file",
                      "hiera_video.ava.files.convert_proposals_pickle", "OUT_CSV"),
    "synth": (["synth", "{out}"], "dir", "hiera_video.data.synthetic.make_synthetic_dataset", "OUT_DIR"),
    "demo": (["demo", "-o", "{out}"], "dir", "hiera_video.data.synthetic.make_synthetic_dataset", "--output"),
    "finetune": (["finetune", "--config", "demo", "--root", "{dir}", "-o", "{out}"], "dir",
                 "hiera_video.jobs.finetune.build_data", "--output"),
    "pretrain": (["pretrain", "--config", "pretrain_demo", "--root", "{dir}", "-o", "{out}"], "dir",
                 "hiera_video.jobs.pretrain.build_unlabeled", "--output"),
}


def _bad_output(tmp_path: Path, kind: str, how: str, suffix: str) -> str:
    """An output path that cannot be written: under a regular file, or an existing path of the
    other kind (a folder named like the file to write, a file where a folder is to be)."""
    if how in ("in /proc", "in /sys"):  # folders where not even root can create a file
        return f"{how[3:]}/hiera-video-test-output"
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    if how == "under a file":
        return str(blocker / "sub" / "out")
    if kind == "file":  # a folder already has the file's name
        (tmp_path / f"taken{suffix}").mkdir()
        return str(tmp_path / "taken")
    return str(blocker)


# "in /proc", "in /sys": issue 20 item 3. os.access says yes to root there, so `predict -o
# /proc/x.json` predicted everything and then died in a traceback; the check now creates a file.
@pytest.mark.parametrize("how", ["under a file", "wrong kind", "in /proc", "in /sys"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_unwritable_output_is_refused_before_any_work(command, how, tmp_path, capsys, monkeypatch):
    argv, kind, work, option = COMMANDS[command]
    if how.startswith("in /") and not os.path.isdir(how[3:]):
        pytest.skip(f"no {how[3:]} on this system")
    if command == "pretrain" and not _has_pretrain_demo():
        argv = [a if a != "pretrain_demo" else "pretrain_k400_base" for a in argv]

    def started(*args, **kwargs):
        raise AssertionError(f"{command}: the work started before the output path was checked")

    module, _, name = work.rpartition(".")
    for job in ("jobs.evaluate", "jobs.export", "jobs.extract", "jobs.predict", "ava.evaluate", "ava.metrics"):
        importlib.import_module(f"hiera_video.{job}")  # commands import them when they run: not under the patch, which they would keep
    monkeypatch.setattr(__import__(module, fromlist=[name]), name, started)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    suffix = next((Path(a).suffix for a in argv if a.startswith("{out}")), "")
    out = _bad_output(tmp_path, kind, how, suffix)
    values = dict(out=out, dir=str(tmp_path / "videos"), video=str(tmp_path / "videos" / "clip.mp4"))
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"")
    code, stdout, err = run([a.format(**values) for a in argv], capsys)
    assert code == 2, (stdout, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"cannot write {option}" in err and out in " ".join(err.split()), err


def _has_pretrain_demo() -> bool:
    from hiera_video.config import list_presets

    return "pretrain_demo" in list_presets()


def test_the_check_names_each_problem(tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "file.txt").write_text("x")
    problems = {
        str(tmp_path / "file.txt" / "out.json"): "is a file, not a folder",
        str(tmp_path / "file.txt" / "a" / "b" / "out.json"): "is a file, not a folder",
        str(folder): "is an existing folder, not a file name",
        str(tmp_path / ("x" * 300) / "out.json"): "longer than the file system allows",
    }
    for path, problem in problems.items():
        with pytest.raises(HieraVideoError, match=problem):
            check_output(path, "-o")
    with pytest.raises(HieraVideoError, match="is an existing file, not a folder"):
        check_output(tmp_path / "file.txt", "--output", "dir")
    # Write permission (tests run as root, who may write anywhere: the permission test is
    # simulated by creating a file in one folder failing as it does for a user without it).
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(dir) / "x"))
        return real_mkstemp(*args, dir=dir, **kw)

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", mkstemp)
        with pytest.raises(HieraVideoError, match=f"no permission to create files in '{folder}'"):
            check_output(folder / "new" / "out.json", "-o")
        with pytest.raises(HieraVideoError, match="no permission to write in this folder"):
            check_output(folder, "-o", "dir")
    # Writable paths pass and nothing is created by the check.
    for path, kind in ((tmp_path / "new" / "deeper" / "out.json", "file"), (tmp_path / "file.txt", "file"),
                       (tmp_path / "newdir" / "run", "dir"), (tmp_path, "dir")):
        assert check_output(path, "-o", kind) == path
    assert not (tmp_path / "new").exists() and not (tmp_path / "newdir").exists()
    assert check_output(None) is None


# ---------------------------------------------------------------------------- issue 20 item 3: failed final writes


@pytest.mark.parametrize("writer", ["write_json", "write_csv", "atomic_path"])
@pytest.mark.parametrize("err,where", [(errno.ENOSPC, "write"), (errno.EROFS, "create"), (errno.EACCES, "rename")])
def test_a_failed_write_is_one_line_naming_the_file(writer, err, where, tmp_path, monkeypatch):
    """Disk full, read-only file system, no permission: wherever the write fails (creating the
    temporary file, writing it, renaming it over the target), the error is one line naming the
    file (still an OSError with the errno, for callers that handle those); nothing is left
    behind and an existing file is untouched."""
    from hiera_video import report

    target = tmp_path / "out" / "result.json"
    target.parent.mkdir()
    target.write_text("old")
    failure = OSError(err, os.strerror(err))
    if where == "create":
        monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (_ for _ in ()).throw(failure))
    elif where == "rename":
        monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(failure))
    else:
        real_open = open

        def full_disk_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if "w" in mode and str(file).startswith(str(target.parent)):
                f.write = lambda *a: (_ for _ in ()).throw(failure)
            return f

        monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(HieraVideoError) as e:
        if writer == "write_json":
            report.write_json(target, {"a": 1})
        elif writer == "write_csv":
            report.write_csv(target, ["a"], [[1]])
        else:
            with report.atomic_path(target) as tmp, open(tmp, "w") as f:
                f.write("new")
    msg = str(e.value)
    assert msg == f"cannot write '{target}': {os.strerror(err)}", msg
    assert isinstance(e.value, OSError) and e.value.errno == err
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"] and target.read_text() == "old"


def test_other_errors_in_the_block_are_the_callers(tmp_path):
    """An OSError without a write errno raised in the block (a dropped connection while a
    download streams into the file) reaches the caller as it was."""
    from hiera_video.report import atomic_path

    with pytest.raises(ConnectionResetError):
        with atomic_path(tmp_path / "w.bin"):
            raise ConnectionResetError(errno.ECONNRESET, "reset")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_at_the_end_of_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    """`score --output` with the disk full when its results are written: one line naming the
    file, exit 2, no traceback (it used to end in an OSError traceback)."""
    from test_metrics import make_predictions

    path, *_ = make_predictions(tmp_path)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(full))
    code, out, err = run(["score", str(path), "--output", str(tmp_path / "m")], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "cannot write" in err and str(tmp_path / "m") in err and "No space left on device" in err, err
    # no temporary file left behind (the folder's lock file stays, as in every output folder)
    assert [p.name for p in (tmp_path / "m").iterdir() if p.name != ".lock"] == []
