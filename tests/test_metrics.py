"""Classification metrics against plain-Python reference computations, the predictions file
and the ``score`` command."""

from __future__ import annotations

import csv
import json
import math
import pickle
import random
from pathlib import Path

import pytest
import torch
import typer
from rich.console import Console
from typer.testing import CliRunner

from hiera_video.cli.score import score
from hiera_video.errors import HieraVideoError
from hiera_video.metrics.classification import (
    aggregate_views,
    classification_metrics,
    load_predictions,
    plot_confusion,
    render_metrics,
    save_predictions,
    write_metrics,
)

# ---------------------------------------------------------------- plain-Python references


def ref_rank_order(row: list[float]) -> list[int]:
    """Class indices by descending score, ties by lower index first."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def ref_metrics(probs: list[list[float]], labels: list[int], num_classes: int) -> dict:
    k = min(5, num_classes)
    support = [0] * num_classes
    correct = [0] * num_classes
    correct_k = [0] * num_classes
    confusion = [[0] * num_classes for _ in range(num_classes)]
    hits1 = hitsk = scored = 0
    for row, y in zip(probs, labels):
        if y < 0:
            continue
        scored += 1
        order = ref_rank_order(row)
        support[y] += 1
        confusion[y][order[0]] += 1
        if order[0] == y:
            correct[y] += 1
            hits1 += 1
        if y in order[:k]:
            correct_k[y] += 1
            hitsk += 1
    accs = [100.0 * correct[c] / support[c] for c in range(num_classes) if support[c]]
    return dict(
        top1=100.0 * hits1 / scored, top5=100.0 * hitsk / scored, mca=sum(accs) / len(accs), scored=scored,
        support=support, correct=correct, correct_k=correct_k, confusion=confusion, k=k,
    )


def ref_softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def random_example(n=60, c=9, seed=0, unsupported=(6, 8)):
    rng = random.Random(seed)
    probs = [ref_softmax([rng.gauss(0, 1.5) for _ in range(c)]) for _ in range(n)]
    allowed = [i for i in range(c) if i not in unsupported]
    labels = [rng.choice(allowed) for _ in range(n)]
    # Make the model right more often than chance, and mark a few videos as unlabelled.
    for i in range(0, n, 3):
        probs[i][labels[i]] += 1.0
    for i in (4, 17):
        labels[i] = -1
    return probs, labels


# ---------------------------------------------------------------- metrics


def test_metrics_match_reference_with_unsupported_classes():
    probs, labels = random_example()
    c = len(probs[0])
    names = [f"class {i}" for i in range(c)]
    m = classification_metrics(torch.tensor(probs), torch.tensor(labels), names)
    ref = ref_metrics(probs, labels, c)
    assert m["num_videos"] == ref["scored"] == 58 and m["num_unlabelled"] == 2
    assert m["top1"] == pytest.approx(ref["top1"]) and m["top5"] == pytest.approx(ref["top5"]) and m["top5_k"] == 5
    assert 0 < m["top1"] < m["top5"] < 100
    # Mean over the 7 classes with videos; the 2 without support are not counted as 0.
    assert m["classes_with_support"] == 7 and m["mean_class_accuracy"] == pytest.approx(ref["mca"])
    assert m["confusion"].dtype == torch.int64 and m["confusion"].tolist() == ref["confusion"]
    assert m["confusion"].sum() == 58
    for pc in m["per_class"]:
        i = pc["index"]
        assert pc["name"] == names[i] and pc["support"] == ref["support"][i] and pc["correct"] == ref["correct"][i]
        if ref["support"][i]:
            assert pc["accuracy"] == pytest.approx(100.0 * ref["correct"][i] / ref["support"][i])
            assert pc["top5"] == pytest.approx(100.0 * ref["correct_k"][i] / ref["support"][i])
        else:
            assert pc["accuracy"] is None and pc["top5"] is None and i in (6, 8)
    # mmaction2-style mean (empty classes as 0) would be lower: make sure that is not what we compute.
    assert m["mean_class_accuracy"] > sum(pc["accuracy"] or 0.0 for pc in m["per_class"]) / c


def test_top5_with_fewer_than_five_classes_and_ties():
    probs, labels = random_example(n=20, c=3, seed=1, unsupported=())
    m = classification_metrics(torch.tensor(probs), torch.tensor(labels), ["a", "b", "c"])
    assert m["top5_k"] == 3 and m["top5"] == 100.0
    assert m["top1"] == pytest.approx(ref_metrics(probs, labels, 3)["top1"])
    # All scores equal: argmax picks class 0, and top-k holds classes 0..k-1.
    flat = torch.full((7, 7), 1 / 7)
    m = classification_metrics(flat, torch.arange(7), [str(i) for i in range(7)])
    assert m["top1"] == pytest.approx(100 / 7) and m["top5"] == pytest.approx(500 / 7)
    assert m["confusion"][:, 0].tolist() == [1] * 7


def test_metrics_input_errors():
    with pytest.raises(HieraVideoError, match="3 class names for 4 score columns"):
        classification_metrics(torch.rand(2, 4), torch.tensor([0, 1]), ["a", "b", "c"])
    with pytest.raises(HieraVideoError, match="label 4 is out of range for 4 classes"):
        classification_metrics(torch.rand(2, 4), torch.tensor([0, 4]), list("abcd"))
    with pytest.raises(HieraVideoError, match=r"labels must be \[N\]"):
        classification_metrics(torch.rand(2, 4), torch.tensor([0]), list("abcd"))


def test_aggregate_views_prob_vs_logit():
    rng = random.Random(3)
    n, v, c = 4, 3, 5
    logits = [[[rng.gauss(0, 3) for _ in range(c)] for _ in range(v)] for _ in range(n)]
    t = torch.tensor(logits, dtype=torch.float64)
    prob = aggregate_views(t, "prob")
    logit = aggregate_views(t, "logit")
    for i in range(n):
        soft = [ref_softmax(view) for view in logits[i]]
        mean_prob = [sum(s[j] for s in soft) / v for j in range(c)]
        mean_logit = ref_softmax([sum(view[j] for view in logits[i]) / v for j in range(c)])
        assert prob[i].tolist() == pytest.approx(mean_prob, abs=1e-12)
        assert logit[i].tolist() == pytest.approx(mean_logit, abs=1e-12)
    assert not torch.allclose(prob, logit)  # the two rules differ on spread-out views
    assert aggregate_views(t[0], "prob").tolist() == pytest.approx(prob[0].tolist())  # [V, C] input
    assert torch.allclose(aggregate_views(t[:, :1], "prob"), aggregate_views(t[:, :1], "logit"))  # one view: same
    with pytest.raises(HieraVideoError, match="unknown view aggregation 'max'"):
        aggregate_views(t, "max")


# ---------------------------------------------------------------- files and tables


def test_metric_files_and_tables(tmp_path):
    probs, labels = random_example()
    names = [f"class {i}" for i in range(9)]
    m = classification_metrics(torch.tensor(probs), torch.tensor(labels), names)
    files = write_metrics(tmp_path / "out", m, names, extra={"model": "x", "meta": {"t": torch.tensor([1, 2])}})
    saved = json.loads(files["metrics"].read_text())
    assert saved["top1"] == pytest.approx(m["top1"]) and saved["meta"] == {"t": [1, 2]} and "confusion" not in saved
    rows = list(csv.DictReader(files["per_class"].open()))
    assert len(rows) == 9 and rows[6]["accuracy"] == "" and int(rows[0]["support"]) == m["per_class"][0]["support"]
    conf = list(csv.reader(files["confusion_csv"].open()))
    assert conf[0][1:] == names and [int(x) for x in conf[1][1:]] == m["confusion"][0].tolist()
    assert files["confusion_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    big = torch.randint(0, 5, (60, 60))
    png = plot_confusion(tmp_path / "big.png", big, [f"c{i}" for i in range(60)])
    assert png.stat().st_size > 0
    con = Console(record=True, width=200)
    render_metrics(m, con, k=2)
    text = con.export_text()
    assert "top-1 %" in text and "Worst 2 classes" in text and "Best 2 classes" in text and "class 6" not in text
    con = Console(record=True, width=200)
    render_metrics(m, con, all_classes=True)
    assert "class 6" in con.export_text()


# ---------------------------------------------------------------- predictions file


def make_predictions(tmp_path: Path, with_views: bool = True, name: str = "preds.pt"):
    rng = random.Random(5)
    n, v, c = 12, 3, 6
    logits = torch.tensor([[[rng.gauss(0, 2) for _ in range(c)] for _ in range(v)] for _ in range(n)])
    labels = torch.tensor([rng.randrange(c) for _ in range(n)])
    labels[3] = -1
    probs = aggregate_views(logits, "prob")
    classes = [f"act{i}" for i in range(c)]
    path = save_predictions(
        tmp_path / name, [f"v/{i}.mp4" for i in range(n)], labels, probs, classes,
        view_logits=logits if with_views else None,
        meta={"model": "hiera_nano_8x64", "agg": "prob", "root": tmp_path, "views": [2, 1], "nested": {"a": (1, 2.5)}},
    )
    return path, logits, labels, probs, classes


def test_predictions_round_trip(tmp_path):
    path, logits, labels, probs, classes = make_predictions(tmp_path)
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "hiera-video-predictions" and raw["version"] == 1
    preds = load_predictions(path)
    assert preds.paths == [f"v/{i}.mp4" for i in range(12)] and preds.classes == classes
    assert torch.equal(preds.labels, labels) and torch.equal(preds.probs, probs) and torch.equal(preds.view_logits, logits)
    assert preds.meta == {"model": "hiera_nano_8x64", "agg": "prob", "root": str(tmp_path), "views": [2, 1],
                          "nested": {"a": [1, 2.5]}}
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file
    path2, *_ = make_predictions(tmp_path, with_views=False, name="p2.pt")
    assert load_predictions(path2).view_logits is None


class NotData:
    pass


def test_load_predictions_errors_are_one_line(tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "none.pt"
    (tmp_path / "random.pt").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(3000)))
    cases["random"] = tmp_path / "random.pt"
    torch.save({"x": NotData()}, tmp_path / "object.pt")  # needs unpickling of arbitrary classes: refused
    cases["object"] = tmp_path / "object.pt"
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"format": "hiera-video-predictions"}))
    cases["pickle"] = tmp_path / "plain.pkl"
    torch.save({"probs": torch.rand(2, 2)}, tmp_path / "other.pt")
    cases["other"] = tmp_path / "other.pt"
    torch.save({"format": "hiera-video-predictions", "version": 1, "paths": ["a"], "labels": torch.tensor([0]),
                "probs": torch.rand(1, 3), "classes": ["a", "b"], "meta": {}}, tmp_path / "shape.pt")
    cases["shape"] = tmp_path / "shape.pt"
    for kind, p in cases.items():
        with pytest.raises(HieraVideoError) as err:
            load_predictions(p)
        msg = str(err.value)
        assert "\n" not in msg and str(p) in msg, kind
    with pytest.raises(HieraVideoError, match="2 class names for 3 columns"):
        load_predictions(cases["shape"])


# ---------------------------------------------------------------- score command


def score_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(score)
    return app


def test_score_cli(tmp_path):
    path, logits, labels, probs, classes = make_predictions(tmp_path)
    runner = CliRunner()
    res = runner.invoke(score_app(), [str(path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    ref = ref_metrics(probs.tolist(), labels.tolist(), 6)
    assert out["top1"] == pytest.approx(ref["top1"]) and out["num_videos"] == 11 and out["agg"] == "prob"
    assert out["views"] == 3 and out["meta"]["model"] == "hiera_nano_8x64"
    # Logit aggregation from the stored per-view logits.
    res = runner.invoke(score_app(), [str(path), "--agg", "logit", "--output", str(tmp_path / "m"), "--all-classes"])
    assert res.exit_code == 0, res.output
    mean_logit = [ref_softmax([sum(view[j] for view in video) / 3 for j in range(6)]) for video in logits.tolist()]
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["agg"] == "logit" and saved["top1"] == pytest.approx(ref_metrics(mean_logit, labels.tolist(), 6)["top1"])
    for name in ("per_class.csv", "confusion.csv", "confusion.png"):
        assert (tmp_path / "m" / name).is_file()
    assert "top-1 %" in res.stdout and "act0" in res.stdout
    # Without per-view logits, logit aggregation is impossible: a clear error.
    path2, *_ = make_predictions(tmp_path, with_views=False, name="p2.pt")
    res = runner.invoke(score_app(), [str(path2), "--agg", "logit"])
    assert isinstance(res.exception, HieraVideoError) and "no per-view logits" in str(res.exception)
    res = runner.invoke(score_app(), [str(path2), "--agg", "prob", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["top1"] == pytest.approx(ref["top1"])


def _raw_predictions(path: Path, probs, view_logits, labels, classes) -> Path:
    """A predictions file written without save_predictions' checks (as a buggy or older run could)."""
    torch.save({"format": "hiera-video-predictions", "version": 1, "paths": [f"v/{i}.mp4" for i in range(len(labels))],
                "labels": labels, "probs": probs, "classes": classes, "view_logits": view_logits,
                "meta": {"agg": "prob"}}, path)
    return path


def test_score_refuses_non_finite_scores_and_zero_views(tmp_path):
    """NaN per-view logits, or zero saved views, used to score 100% top-1, top-5 and mean class
    accuracy (NaN never compares greater, so every true class ranked first). Such files are
    refused with one line naming the file and how many videos and views are affected, whichever
    scores are asked for (stored probs, --agg prob, --agg logit)."""
    _, logits, labels, probs, classes = make_predictions(tmp_path)
    n, v, _c = logits.shape
    runner = CliRunner()

    def refused(path, match, args=((), ("--agg", "prob"), ("--agg", "logit"))):
        for extra in args:
            res = runner.invoke(score_app(), [str(path), "--json", *extra])
            assert isinstance(res.exception, HieraVideoError), (extra, res.output)
            msg = str(res.exception)
            assert "\n" not in msg and str(path) in msg and match in msg, msg
            assert '"top1"' not in res.output

    all_nan = torch.full_like(logits, float("nan"))
    refused(_raw_predictions(tmp_path / "all_nan.pt", probs, all_nan, labels, classes),
            f"NaN or infinite in {n * v} of {n * v} views, of {n} of {n} videos")
    some_nan = logits.clone()
    some_nan[2, 1, 0] = float("nan")  # one view of video 2
    some_nan[7] = float("inf")  # every view of video 7
    refused(_raw_predictions(tmp_path / "some_nan.pt", probs, some_nan, labels, classes),
            f"NaN or infinite in {1 + v} of {n * v} views, of 2 of {n} videos (first: 'v/2.mp4')")
    refused(_raw_predictions(tmp_path / "no_views.pt", probs, logits[:, :0], labels, classes), f"0 views for each of the {n}")
    # the main path: the stored probabilities
    nan_probs = probs.clone()
    nan_probs[[4, 9]] = float("nan")
    refused(_raw_predictions(tmp_path / "nan_probs.pt", nan_probs, None, labels, classes),
            f"'probs' is NaN or infinite for 2 of {n} videos (first: 'v/4.mp4')", args=((), ("--agg", "prob")))
    inf_probs = probs.clone()
    inf_probs[0, 1] = float("inf")
    refused(_raw_predictions(tmp_path / "inf_probs.pt", inf_probs, None, labels, classes), f"for 1 of {n} videos",
            args=((),))
    # finite logits whose mean overflows float32: the aggregate is checked too
    huge = logits.clone()
    huge[5, :, 2] = 3e38
    path = _raw_predictions(tmp_path / "huge.pt", probs, huge, labels, classes)
    refused(path, f"gives NaN or infinite scores for 1 of {n} videos", args=(("--agg", "logit"),))
    assert runner.invoke(score_app(), [str(path), "--agg", "prob", "--json"]).exit_code == 0
    # writing such a file is refused as well, and the metrics never rank a NaN score
    with pytest.raises(HieraVideoError, match=f"NaN or infinite in {1 + v} of {n * v} views"):
        save_predictions(tmp_path / "w.pt", [f"v/{i}" for i in range(n)], labels, probs, classes, view_logits=some_nan)
    with pytest.raises(HieraVideoError, match="scores of 2 of 11 labelled videos are NaN"):
        classification_metrics(nan_probs, labels, classes)
