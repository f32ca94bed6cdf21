"""Issue 21, items 3, 5 and 7: eval's output folder is locked and never takes over another
command's files; names that are not UTF-8 are written losslessly by every writer; CSV cells
that a spreadsheet would run are neutralised, and check-videos' list is real TSV."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from pathlib import Path

import pytest
import random

from hiera_video.ava.files import write_detections_csv
from hiera_video.data.check import write_bad_list
from hiera_video.report import atomic_write_text, write_csv, write_json

from helpers import nano_classifier, run_cli as run
from videogen import write_video


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 2-class folder dataset (one good video per class) and a classifier for it."""
    d = tmp_path_factory.mktemp("own")
    _, ckpt = nano_classifier(d / "nano2.pt", ["left", "right"])
    root = d / "folder"
    for c, cls in enumerate(["left", "right"]):
        (root / cls).mkdir(parents=True)
        write_video(root / cls / f"{cls}0.mp4", num_frames=16, height=48, width=64, color=(200 * c, 30, 30))
    return dict(dir=d, root=root, ckpt=ckpt)


def _eval(setup, capsys, out, *args, root=None):
    return run(["eval", "--dataset", "folder", "--root", str(root or setup["root"]), "--weights", setup["ckpt"],
                "--views", "1x1", "--workers", "0", "--dtype", "fp32", "-o", str(out), *args], capsys)


def _held(path: Path):
    """Another process's flock on ``path`` (a second open file description is enough)."""
    f = open(path, "a+")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def _is_locked(path: Path) -> bool:
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


# ---------------------------------------------------------------------------- item 3: eval --output


def test_eval_refuses_a_training_run_folder_and_touches_nothing(setup, capsys, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, text in [("last.pt", "ckpt"), ("metrics.jsonl", "{}\n"), ("config.json", "{}"), ("metrics.json", '{"train": 1}')]:
        (run_dir / name).write_text(text)
    code, _, err = _eval(setup, capsys, run_dir)
    line = " ".join(err.split())
    assert code == 2 and "a training run's files" in line and "last.pt" in line and "metrics.jsonl" in line, err
    assert len(err.strip().splitlines()) == 1
    assert (run_dir / "metrics.json").read_text() == '{"train": 1}'
    assert not (run_dir / "predictions.pt").exists()


def test_eval_refuses_metrics_written_by_another_command_but_reruns_into_its_own_folder(setup, capsys, tmp_path):
    other = tmp_path / "scored"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps({"predictions": "p.pt", "agg": "prob", "top1": 50.0}))  # score --output
    code, _, err = _eval(setup, capsys, other)
    assert code == 2 and "metrics.json written by another command" in " ".join(err.split())
    out = tmp_path / "mine"
    assert _eval(setup, capsys, out)[0] == 0
    first = (out / "metrics.json").read_text()
    code, _, err = _eval(setup, capsys, out)  # the same eval again: allowed, its files replaced
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["protocol"] == json.loads(first)["protocol"]
    # an AVA eval may not take over a classification eval's folder (refused before the weights are read)
    code, _, err = run(["eval", "--dataset", "ava", "--root", str(tmp_path), "--weights", str(tmp_path / "none.pt"),
                        "-o", str(out)], capsys)
    line = " ".join(err.split())
    assert code == 2 and "outputs of 'hiera-video eval'" in line and "predictions.pt" in line, err


def test_eval_into_a_folder_another_run_holds_is_refused(setup, capsys, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    holder = _held(out / ".lock")  # a finetune, or another eval, working in this folder
    try:
        holder.write("pid 4242 on elsewhere\n")
        holder.flush()
        code, _, err = _eval(setup, capsys, out)
        assert code == 2 and "in use by another run" in err and "4242" in err, err
        assert not (out / "metrics.json").exists()
        code, _, err = run(["eval", "--dataset", "ava", "--root", str(tmp_path), "--weights", str(tmp_path / "none.pt"),
                            "-o", str(out)], capsys)  # AVA eval too, before any work
        assert code == 2 and "in use by another run" in err, err
    finally:
        holder.close()
    assert _eval(setup, capsys, out)[0] == 0  # released: the folder is usable again


def test_extract_into_a_folder_another_extract_holds_is_refused(setup, capsys, tmp_path, monkeypatch):
    """Two extracts into one folder would interleave index.jsonl: the second is refused in one line,
    before any video is read; the lock is held while the index is written, and released after."""
    import hiera_video.jobs.extract as extract

    out, video = tmp_path / "feats", str(setup["root"] / "left" / "left0.mp4")
    extract_cli = ["extract", video, "--weights", setup["ckpt"], "--workers", "0", "--dtype", "fp32", "-o", str(out)]
    out.mkdir()
    holder = _held(out / ".lock")
    try:
        holder.write("hiera-video extract, pid 4242 on elsewhere\n")
        holder.flush()
        code, _, err = run(extract_cli, capsys)
        assert code == 2 and "in use by another run" in err and "4242" in err, err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.close()
    seen, real = [], extract.write_index
    monkeypatch.setattr(extract, "write_index", lambda *a, **k: (seen.append(_is_locked(out / ".lock")), real(*a, **k))[1])
    code, _, err = run(extract_cli, capsys)
    assert code == 0 and seen == [True] and not _is_locked(out / ".lock"), err


def test_eval_holds_the_folder_lock_until_its_outputs_are_written(setup, capsys, tmp_path, monkeypatch):
    """Single process: the lock is taken before any work and still held while the last output
    (failed.csv / missing.csv) is written, so a second eval cannot mix its files in."""
    import hiera_video.jobs.evaluate as evaluate

    out = tmp_path / "held"
    seen = []
    real = evaluate.write_failure_lists

    def spy(output, result, dataset):
        seen.append(_is_locked(out / ".lock"))
        return real(output, result, dataset)

    monkeypatch.setattr(evaluate, "write_failure_lists", spy)
    assert _eval(setup, capsys, out)[0] == 0
    assert seen == [True]
    assert not _is_locked(out / ".lock")  # released at the end


# ---------------------------------------------------------------------------- item 5: names that are not UTF-8


BAD = os.fsdecode(b"bad\xffname.mp4")  # what os.listdir gives for such a name


def test_every_writer_keeps_names_that_are_not_utf8(tmp_path):
    write_csv(tmp_path / "a.csv", ["path", "reason"], [(BAD, "corrupt")])
    assert tmp_path.joinpath("a.csv").read_bytes() == b"path,reason\r\nbad\xffname.mp4,corrupt\r\n"
    atomic_write_text(tmp_path / "a.txt", BAD + "\n")
    assert tmp_path.joinpath("a.txt").read_bytes() == b"bad\xffname.mp4\n"
    write_json(tmp_path / "a.json", {"path": BAD})
    assert os.fsencode(json.loads(tmp_path.joinpath("a.json").read_text())["path"]) == b"bad\xffname.mp4"
    write_bad_list(tmp_path / "bad.tsv", [(BAD, "corrupt")])
    assert tmp_path.joinpath("bad.tsv").read_bytes() == b"bad\xffname.mp4\tcorrupt\n"


def test_eval_check_videos_and_predict_write_a_name_that_is_not_utf8(setup, capsys, tmp_path):
    root = tmp_path / "data"
    (root / "left").mkdir(parents=True)
    write_video(root / "left" / "ok.mp4", num_frames=16, height=48, width=64, color=(200, 30, 30))
    bad = os.fsencode(root / "left") + b"/bad\xffname.mp4"
    with open(bad, "wb") as f:
        f.write(random.Random(2000).randbytes(2000))
    out = tmp_path / "out"
    code, _, err = _eval(setup, capsys, out, root=root)
    assert code == 1, err
    assert b"bad\xffname.mp4" in (out / "failed.csv").read_bytes()
    code, _, err = run(["check-videos", "--dataset", "folder", "--root", str(root), "--output", str(tmp_path / "bad.tsv"), "--workers", "1"], capsys)
    assert code == 1, err
    rows = list(csv.reader(io.StringIO((tmp_path / "bad.tsv").read_text(errors="surrogateescape")), delimiter="\t"))
    assert [os.fsencode(r[0]) for r in rows] == [bad]
    code, _, err = run(["predict", os.fsdecode(bad), str(root / "left" / "ok.mp4"), "--weights", setup["ckpt"],
                        "--dtype", "fp32", "-o", str(tmp_path / "p.csv")], capsys)
    assert code == 1, err
    assert b"bad\xffname.mp4" in (tmp_path / "p.csv").read_bytes()


# ---------------------------------------------------------------------------- item 7: CSV cells


def test_formula_cells_are_neutralised_as_owasp_recommends(tmp_path):
    cells = ["=cmd|'/c calc'!A0", "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=already", "plain", "a=b"]
    write_csv(tmp_path / "x.csv", ["name", "n"], [(c, -1) for c in cells])
    rows = list(csv.reader(io.StringIO((tmp_path / "x.csv").read_bytes().decode(), newline="")))
    assert rows[0] == ["name", "n"]
    got = [r[0] for r in rows[1:]]
    assert got == ["'=cmd|'/c calc'!A0", "'+1+2", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx", "''=already", "plain", "a=b"]
    assert [r[1] for r in rows[1:]] == ["-1"] * len(cells)  # numbers stay numbers
    assert [g[1:] if g.startswith("'") else g for g in got] == cells  # one leading quote off: the original


def test_machine_formats_stay_exact(tmp_path):
    """AVA detections.csv is read by the official scorer: ids such as '-5KQ66BBWC4' stay as they are."""
    path = write_detections_csv(tmp_path / "detections.csv", [("-5KQ66BBWC4", 902, 0.1, 0.2, 0.3, 0.4, 12, 0.5)])
    assert path.read_text() == "-5KQ66BBWC4,0902,0.1000,0.2000,0.3000,0.4000,12,0.500000\n"


def test_check_videos_list_is_quoted_tsv_for_names_with_tabs_and_newlines(tmp_path):
    pairs = [("a\tb.mp4", "corrupt"), ("c\nd.mp4", "empty file"), ("=HYPERLINK(x).mp4", "corrupt"), ("ok.mp4", "missing")]
    path = write_bad_list(tmp_path / "bad.tsv", pairs)
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode(), newline=""), delimiter="\t"))
    assert rows == [["a\tb.mp4", "corrupt"], ["c\nd.mp4", "empty file"], ["'=HYPERLINK(x).mp4", "corrupt"], ["ok.mp4", "missing"]]
    assert path.read_text().splitlines()[-1] == "ok.mp4\tmissing"  # plain names: the same lines as before


def test_what_the_tool_reads_back_is_what_was_written(tmp_path):
    """The HTML report reads eval's CSVs back (report.read_csv): neutralised cells and names
    that are not UTF-8 come back as they were given."""
    from hiera_video.report import read_csv

    rows = [(BAD, "corrupt"), ("=x.mp4", "-1 frames"), ("'q.mp4", "ok")]
    write_csv(tmp_path / "failed.csv", ["path", "reason"], rows)
    assert read_csv(tmp_path / "failed.csv") == [["path", "reason"], *map(list, rows)]
    write_bad_list(tmp_path / "bad.tsv", rows)
    assert read_csv(tmp_path / "bad.tsv", delimiter="\t") == [list(r) for r in rows]


def test_score_never_writes_over_an_eval_and_reruns_into_its_own_folder(setup, capsys, tmp_path):
    """score --output into an eval's folder would replace the eval's metrics.json: refused, the
    eval's files untouched; a score folder is score's own (a rerun replaces its files) and
    an eval into it is refused."""
    ev = tmp_path / "ev"
    assert _eval(setup, capsys, ev)[0] == 0
    before = (ev / "metrics.json").read_bytes()
    code, _, err = run(["score", str(ev / "predictions.pt"), "--output", str(ev)], capsys)
    assert code == 2 and "outputs of 'hiera-video eval'" in " ".join(err.split()), err
    assert (ev / "metrics.json").read_bytes() == before
    scored = tmp_path / "scored"
    for _ in range(2):
        code, _, err = run(["score", str(ev / "predictions.pt"), "--output", str(scored)], capsys)
        assert code == 0 and (scored / "metrics.json").is_file(), err
    code, _, err = _eval(setup, capsys, scored)
    assert code == 2 and "outputs of 'hiera-video score'" in " ".join(err.split()), err
