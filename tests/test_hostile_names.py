"""Issue 21, items 6, 9, 10 and the --plot names of item 2: names are text (never Rich
markup, never raw control characters), every JSON is strict (null, not NaN/Infinity), and
--plot is validated before any work and never writes two videos' plots to one file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from hiera_video.jobs.predict import plot_paths
from hiera_video.report import json_text, print_json, safe, write_json

from helpers import nano_classifier, run_cli
from videogen import write_video

LABELS = ["up[/i]", "[bold]loud", "esc\x1b[31mred"]


def named_video(path: Path, **kw) -> str:
    """A generated video at ``path`` (written under a plain name, then renamed: the encoder
    reads some characters of a file name as its own syntax)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = write_video(path.with_name("plain" + path.suffix), **kw)
    Path(plain).rename(path)
    return str(path)


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity, as every strict parser (JavaScript, jq, Go) does."""
    def refuse(name):
        raise ValueError(f"invalid JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("names")
    return nano_classifier(d / "w.pt", LABELS, head_std=1.0)[1]


# ---------------------------------------------------------------------------- item 6: names are text


def test_safe_shows_names_as_written():
    text = "a[/b] [red]x.mp4 \x1b[2J\n\tz\udcff.mp4"
    buf = io.StringIO()
    Console(file=buf, width=200).print(safe(text), highlight=False)
    shown = buf.getvalue().rstrip("\n")
    assert shown == "a[/b] [red]x.mp4 \\x1b[2J\\n\\tz\\xff.mp4"
    assert "\x1b" not in shown


def test_predict_prints_paths_and_classes_as_text(tmp_path, weights, capsys):
    """It raised MarkupError at the first such video (nothing written to -o), showed
    '[red]x.mp4' as 'x.mp4' and sent ESC sequences in names to the terminal."""
    names = ["a[/b]c.mp4", "[red]x.mp4", "e\x1b[2Jz.mp4"]  # the first: a folder "a[" and a file "b]c.mp4"
    videos = [named_video(tmp_path / n, num_frames=16, height=64, width=64) for n in names]
    out_json = tmp_path / "out.json"
    code, out, err = run_cli(["predict", *videos, "--weights", weights, "--top-k", "3", "--dtype", "fp32", "-o", str(out_json)], capsys)
    assert code == 0, err
    data = strict_loads(out_json.read_text())
    assert [d["path"] for d in data] == videos and all(d["ok"] for d in data)
    assert "\x1b" not in out + err
    for shown in ("a[/b]c.mp4", "[red]x.mp4", "e\\x1b[2Jz.mp4", "up[/i]", "[bold]loud", "esc\\x1b[31mred"):
        assert shown in out, shown


def test_error_messages_show_control_characters(tmp_path, weights, capsys):
    code, out, err = run_cli(["predict", str(tmp_path / "no\x1b[2Jsuch[/b].mp4"), "--weights", weights], capsys)
    assert code == 1 and "\x1b" not in err and "no\\x1b[2Jsuch[/b].mp4" in err, err


def test_check_videos_table_shows_bad_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # a long temporary path must not be wrapped inside its table cell
    root = tmp_path / "data"
    (root / "bad[").mkdir(parents=True)  # class folder "bad[", file "b]\x1b[31m.mp4"
    (root / "bad[/b]\x1b[31m.mp4").write_bytes(b"not a video")
    named_video(root / "[red]cls" / "good.mp4", num_frames=8, height=32, width=32)
    code, out, err = run_cli(["check-videos", "--dataset", "folder", "--root", str(root), "--workers", "1"], capsys)
    assert code == 1, (out, err)
    assert "b]\\x1b[31m.mp4" in out and "\x1b" not in out + err, out


def test_score_shows_class_names_from_predictions_as_text(tmp_path, capsys):
    """A class named 'up[/i]' in predictions.pt raised MarkupError in the per-class table."""
    from hiera_video.metrics.classification import save_predictions

    probs = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    preds = save_predictions(tmp_path / "predictions.pt", ["a.mp4", "b.mp4", "c.mp4"], torch.tensor([0, 1, 2]), probs, LABELS)
    code, out, err = run_cli(["score", str(preds), "--all-classes"], capsys)
    assert code == 0, err
    assert "up[/i]" in out and "[bold]loud" in out and "esc\\x1b[31mred" in out and "\x1b" not in out + err, out


# ---------------------------------------------------------------------------- item 9: strict JSON


def test_json_writers_write_null_for_non_finite(tmp_path, capsys):
    obj = dict(mAP=float("nan"), groups=dict(pose=float("nan"), object=0.5), psnr=float("inf"), low=[float("-inf"), 1])
    write_json(tmp_path / "m.json", obj)
    print_json(obj)
    for text in (json_text(obj), (tmp_path / "m.json").read_text(), capsys.readouterr().out):
        assert strict_loads(text) == dict(mAP=None, groups=dict(pose=None, object=0.5), psnr=None, low=[None, 1])


def test_score_ava_groups_without_ground_truth_are_null(tmp_path, capsys):
    """A class named 'up[/i]' in the .pbtxt raised MarkupError in the table; the JSON (already
    null here, by metrics_to_json) stays strict."""
    g, d, lm = tmp_path / "gt.csv", tmp_path / "det.csv", tmp_path / "lm.pbtxt"
    g.write_text("v,0902,0.0,0.0,0.5,1.0,11,0\nv,0902,0.5,0.0,1.0,1.0,79,1\n")
    d.write_text("v,0902,0.0,0.0,0.5,1.0,11,0.9\nv,0902,0.5,0.0,1.0,1.0,79,0.8\n")
    lm.write_text('item {\n  name: "up[/i]"\n  id: 11\n}\nitem {\n  name: "talk[/b] to"\n  id: 79\n}\n')
    code, out, err = run_cli(["score-ava", "-g", str(g), "-d", str(d), "--label-map", str(lm), "--json",
                              "--output", str(tmp_path / "out")], capsys)
    assert code == 0, err
    for text in (out, (tmp_path / "out" / "metrics.json").read_text()):
        m = strict_loads(text)
        assert m["mAP"] == 1.0 and m["groups"]["object"] is None and m["groups"]["pose"] == 1.0
    code, out, err = run_cli(["score-ava", "-g", str(g), "-d", str(d), "--label-map", str(lm)], capsys)
    assert code == 0 and "up[/i]" in out and "talk[/b] to" in out, err


def test_eval_ava_json_groups_without_ground_truth_are_null(capsys):
    """eval --dataset ava --json printed "pose": NaN for a group without ground truth."""
    from hiera_video.ava.evaluate import AvaEvalOptions
    from hiera_video.cli.eval import _report_ava

    nan = float("nan")
    metrics = dict(mAP=0.5, groups=dict(pose=nan, object=0.5, interaction=nan), num_keyframes=3, per_class={})
    code = _report_ava([], metrics, _Empty(), AvaEvalOptions(".", weights="w.pt", as_json=True), Console(file=io.StringIO()))
    assert code == 0
    printed = strict_loads(capsys.readouterr().out)
    assert printed["mAP"] == 0.5 and printed["groups"] == dict(pose=None, object=0.5, interaction=None)


class _Empty:
    """A dataset stand-in: no keyframes, nothing missing."""
    missing: list = []

    def __len__(self):
        return 0


def test_reconstruct_mask_ratio_0_json_is_strict(tmp_path, capsys):
    """It printed "masked_psnr_db": Infinity (nothing masked: no PSNR)."""
    import hiera_video
    from hiera_video.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    mae = save_checkpoint(tmp_path / "mae.pt", hiera_video.create_model("mae_hiera_nano_8x64"))
    video = write_video(tmp_path / "v.mp4", num_frames=16, height=64, width=64)
    code, out, err = run_cli(["reconstruct", str(video), "--weights", str(mae), "-o", str(tmp_path / "r.png"),
                              "--mask-ratio", "0", "--json"], capsys)
    assert code == 0, err
    assert strict_loads(out)["masked_psnr_db"] is None


# ---------------------------------------------------------------------------- item 10 and 2: --plot


@pytest.mark.parametrize("args, words", [
    (["--window", "0.5", "--plot", "{tmp}/tl.gif"], "--plot must end in .png, .svg or .pdf"),
    (["--window", "0.5", "--plot", "{tmp}/tl"], "--plot must end in .png, .svg or .pdf"),
    (["--plot", "{tmp}/tl.png"], "--plot draws the timeline of --window"),
])
def test_plot_refused_before_any_work(tmp_path, capsys, monkeypatch, args, words):
    """An unsupported extension failed after the first video (-o lost); --plot without
    --window wrote nothing, silently."""
    def no_work(*a, **k):
        raise AssertionError("work started before --plot was checked")
    monkeypatch.setattr("hiera_video.engine.inference.load_classifier", no_work)
    video = write_video(tmp_path / "v.mp4", num_frames=8, height=32, width=32)
    code, _, err = run_cli(["predict", str(video), "--weights", "w.pt", *[a.format(tmp=tmp_path) for a in args]], capsys)
    assert code == 2 and words in err, err
    assert not list(tmp_path.glob("tl*"))


def test_plot_names_are_unique_and_stable():
    p = Path("out/tl.png")
    assert plot_paths(p, ["v/a.mp4"]) == [p]
    # videos of one folder: NAME_<stem> as before
    assert plot_paths(p, ["v/a.mp4", "v/b.mp4"]) == [Path("out/tl_a.png"), Path("out/tl_b.png")]
    assert plot_paths(p, ["x/c.mp4", "y/c.mp4"]) == [Path("out/tl_x_c.png"), Path("out/tl_y_c.png")]
    assert plot_paths(p, ["d/x/c.mp4", "d/c.mp4"]) == [Path("out/tl_x_c.png"), Path("out/tl_c.png")]
    names = plot_paths(p, ["v/c.mp4", "v/c.webm", "v/C.mp4", "v/c-2.mp4"])
    assert names == [Path("out/tl_c.png"), Path("out/tl_c-2.png"), Path("out/tl_C-3.png"), Path("out/tl_c-2-2.png")]


def test_plots_of_same_named_videos_are_all_written(tmp_path, weights, capsys):
    """x/c.mp4 and y/c.mp4 both wrote tl_c.png: the first plot was lost."""
    for sub, colour in (("x", (200, 20, 20)), ("y", (20, 20, 200))):
        (tmp_path / sub).mkdir()
        write_video(tmp_path / sub / "c.mp4", num_frames=30, height=64, width=64, color=colour)
    plot = tmp_path / "plots" / "tl.svg"
    code, _, err = run_cli(["predict", str(tmp_path / "x" / "c.mp4"), str(tmp_path / "y" / "c.mp4"), "--weights", weights,
                            "--window", "0.5", "--plot", str(plot), "--json"], capsys)
    assert code == 0, err
    assert sorted(f.name for f in plot.parent.iterdir()) == ["tl_x_c.svg", "tl_y_c.svg"]
    assert all(b"<svg" in f.read_bytes()[:500] for f in plot.parent.iterdir())
