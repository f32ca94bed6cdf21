"""AVA frame-mAP@0.5: hand-computed cases of the official protocol, the file readers and
the ``score-ava`` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hiera_video.errors import HieraVideoError
from hiera_video.ava.files import AvaRow, read_ava_csv, read_exclusions, read_label_map, write_detections_csv
from hiera_video.ava.boxes import box_iou
from hiera_video.ava.metrics import average_precision, evaluate_ava

A = (0.0, 0.0, 0.5, 1.0)
B = (0.5, 0.0, 1.0, 1.0)
LM = {11: "sit", 12: "stand", 17: "carry/hold (an object)", 79: "talk to", 80: "watch (a person)"}


def gt(vid, ts, box, action):
    return AvaRow(vid, ts, *box, action, 1.0)


def det(vid, ts, box, action, score):
    return AvaRow(vid, ts, *box, action, score)


def ap_of(metrics, c):
    return metrics["per_class"][c]["ap"]


# --------------------------------------------------------------------------- AP and IoU


def test_voc_all_point_ap_hand_computed():
    # 3 GT; ranked TP FP TP FP TP -> precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1.
    # Monotone from the right: 1, 2/3, 2/3, 3/5, 3/5 -> AP = 1/3 * (1 + 2/3 + 3/5) = 34/45.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    tp = np.array([True, False, True, False, True])
    assert average_precision(scores, tp, 3) == pytest.approx(34 / 45)
    # the same detections in another row order give the same AP (sorted by score inside)
    perm = [3, 0, 4, 2, 1]
    assert average_precision(scores[perm], tp[perm], 3) == pytest.approx(34 / 45)
    # no GT -> NaN (ignored by the mean); GT but no detection -> 0
    assert math.isnan(average_precision(scores, tp, 0))
    assert average_precision(np.zeros(0), np.zeros(0, bool), 2) == 0.0


def test_iou_is_continuous_without_plus_one():
    a = np.array([[0.0, 0.0, 0.5, 0.5]])
    b = np.array([[0.25, 0.25, 0.75, 0.75]])
    # intersection 0.25^2 = 1/16, union 2 * 1/4 - 1/16 = 7/16 -> 1/7 (a "+1" convention would give ~0.53)
    assert box_iou(a, b)[0, 0] == pytest.approx(1 / 7)
    assert box_iou(a, a)[0, 0] == 1.0
    assert box_iou(a, np.array([[0.5, 0.5, 1.0, 1.0]]))[0, 0] == 0.0  # touching corners
    assert box_iou(np.array([[0.2, 0.2, 0.2, 0.2]]), np.array([[0.2, 0.2, 0.2, 0.2]]))[0, 0] == 0.0  # empty boxes


# --------------------------------------------------------------------------- protocol


def test_perfect_detection():
    m = evaluate_ava([gt("v", 902, A, 11)], [det("v", 902, A, 11, 0.9)], LM)
    assert ap_of(m, 11) == 1.0 and m["mAP"] == 1.0


def test_duplicate_detection_is_a_false_positive():
    gts = [gt("v", 902, A, 11), gt("v", 903, B, 11)]
    dets = [det("v", 902, A, 11, 0.9),  # TP
            det("v", 902, (0.01, 0.0, 0.5, 1.0), 11, 0.8),  # same person again: FP
            det("v", 903, B, 11, 0.7)]  # TP
    # ranked TP FP TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    assert ap_of(evaluate_ava(gts, dets, LM), 11) == pytest.approx(5 / 6)


def test_detection_never_falls_back_to_its_second_best_gt_box():
    # Two overlapping GT persons P and Q. d1 = P (TP). d2 overlaps P best (IoU 0.923) and Q
    # enough (0.724), but P is taken: the official VOC rule makes d2 a FP instead of matching Q.
    P, Q = (0.0, 0.0, 0.5, 1.0), (0.1, 0.0, 0.6, 1.0)
    d2 = (0.02, 0.0, 0.52, 1.0)
    assert box_iou(np.array([d2]), np.array([P, Q]))[0] == pytest.approx([0.48 / 0.52, 0.42 / 0.58])
    m = evaluate_ava([gt("v", 902, P, 11), gt("v", 902, Q, 11)],
                     [det("v", 902, P, 11, 0.9), det("v", 902, d2, 11, 0.8)], LM)
    # TP, FP over 2 GT: precision 1 at recall 1/2 -> AP 1/2
    assert ap_of(m, 11) == pytest.approx(0.5)


def test_excluded_keyframes_are_removed_from_gt_and_detections():
    gts = [gt("v", 902, A, 11), gt("v", 903, A, 11)]
    dets = [det("v", 903, B, 11, 0.95),  # wrong box on 903: FP
            det("v", 902, A, 11, 0.9)]  # TP
    # without exclusion: FP then TP over 2 GT -> precision 1/2 at recall 1/2 -> AP 1/4
    m = evaluate_ava(gts, dets, LM)
    assert ap_of(m, 11) == pytest.approx(0.25)
    assert m["per_class"][11]["num_gt"] == 2
    m = evaluate_ava(gts, dets, LM, exclusions={("v", 903)})
    assert ap_of(m, 11) == 1.0
    assert m["per_class"][11]["num_gt"] == 1 and m["num_excluded_keyframes"] == 1


def test_detections_on_keyframes_without_gt_are_false_positives():
    m = evaluate_ava([gt("v", 902, A, 11)], [det("w", 902, A, 11, 0.95), det("v", 902, A, 11, 0.9)], LM)
    # FP then TP: precision 1/2 at recall 1 -> AP 1/2
    assert ap_of(m, 11) == pytest.approx(0.5)
    assert m["num_detections_without_gt_keyframe"] == 1


def test_classes_without_gt_are_ignored_and_classes_outside_the_label_map_dropped():
    gts = [gt("v", 902, A, 11), gt("v", 902, A, 12), gt("v", 902, B, 2)]  # 2 is not an evaluated class
    dets = [det("v", 902, A, 11, 0.9),  # class 11: AP 1
            det("v", 902, B, 17, 0.8),  # class 17 has no GT: NaN, ignored
            det("v", 902, B, 2, 0.99)]  # class 2 not in the label map: ignored
    m = evaluate_ava(gts, dets, LM)
    assert ap_of(m, 11) == 1.0
    assert ap_of(m, 12) == 0.0  # GT without detections counts as 0
    assert math.isnan(ap_of(m, 17)) and math.isnan(ap_of(m, 80))
    assert 2 not in m["per_class"]
    assert m["mAP"] == pytest.approx(0.5)  # nanmean(1, 0)
    assert m["num_classes_with_gt"] == 2
    # no GT at all: mAP is NaN, not an error
    assert math.isnan(evaluate_ava([], dets, LM)["mAP"])


def test_fifty_detections_per_keyframe_cap():
    gts = [gt("v", 902, A, 11)]
    noise = [det("v", 902, B, 12, 0.9 - i * 0.001) for i in range(50)]  # 50 higher-scored rows
    hit = det("v", 902, A, 11, 0.5)
    # the TP is the 51st row by score: cut by the cap -> AP 0
    assert ap_of(evaluate_ava(gts, noise + [hit], LM), 11) == 0.0
    assert ap_of(evaluate_ava(gts, noise + [hit], LM, max_detections=51), 11) == 1.0
    # the cap is per keyframe: the same rows on another keyframe do not count
    other = [r._replace(video_id="w") for r in noise]
    assert ap_of(evaluate_ava(gts, other + [hit], LM), 11) == 1.0
    # classes outside the label map are filtered before the cap (as the official reader)
    outside = [r._replace(action_id=2) for r in noise]
    assert ap_of(evaluate_ava(gts, outside + [hit], LM), 11) == 1.0


def test_cap_ties_keep_earlier_rows():
    gts = [gt("v", 902, A, 11)]
    tied = [det("v", 902, B, 12, 0.5) for _ in range(50)]
    hit = det("v", 902, A, 11, 0.5)
    assert ap_of(evaluate_ava(gts, tied + [hit], LM), 11) == 0.0  # 51st of equal scores: dropped
    assert ap_of(evaluate_ava(gts, [hit] + tied, LM), 11) == 1.0  # first of equal scores: kept


def test_tied_scores_enter_the_curve_together():
    gts = [gt("v", 902, A, 11)]
    tp, fp = det("v", 902, A, 11, 0.5), det("w", 902, A, 11, 0.5)
    # one point after the tie group: precision 1/2 at recall 1 -> AP 1/2, whatever the row order
    assert ap_of(evaluate_ava(gts, [tp, fp], LM), 11) == pytest.approx(0.5)
    assert ap_of(evaluate_ava(gts, [fp, tp], LM), 11) == pytest.approx(0.5)


def test_iou_threshold_boundary():
    G = (0.0, 0.0, 0.5, 1.0)
    exactly_half = (0.0, 0.0, 0.25, 1.0)  # IoU = 0.25 / 0.5 = 0.5 exactly (binary fractions)
    just_below = (0.0, 0.0, 0.25, 0.96875)  # IoU = 0.2421875 / 0.5 < 0.5
    assert box_iou(np.array([exactly_half]), np.array([G]))[0, 0] == 0.5
    assert ap_of(evaluate_ava([gt("v", 902, G, 11)], [det("v", 902, exactly_half, 11, 0.9)], LM), 11) == 1.0
    assert ap_of(evaluate_ava([gt("v", 902, G, 11)], [det("v", 902, just_below, 11, 0.9)], LM), 11) == 0.0


def test_multi_label_boxes():
    # one person with two actions (and a repeated row) = one box in each class
    gts = [gt("v", 902, A, 11), gt("v", 902, A, 79), gt("v", 902, A, 79)]
    m = evaluate_ava(gts, [det("v", 902, A, 11, 0.9), det("v", 902, A, 79, 0.8), det("v", 902, A, 17, 0.7)], LM)
    assert m["per_class"][11]["num_gt"] == 1 and m["per_class"][79]["num_gt"] == 1
    assert ap_of(m, 11) == 1.0 and ap_of(m, 79) == 1.0
    assert math.isnan(ap_of(m, 17))
    # a detection of the box's other class does not match in this class: class 79 GT, class 11 detection
    m = evaluate_ava([gt("v", 902, A, 79)], [det("v", 902, A, 11, 0.9)], LM)
    assert ap_of(m, 79) == 0.0


def test_invalid_detection_boxes_are_dropped_not_false_positives():
    m = evaluate_ava([gt("v", 902, A, 11)], [det("v", 902, (0.5, 0.0, 0.4, 1.0), 11, 0.99), det("v", 902, A, 11, 0.9)], LM)
    assert ap_of(m, 11) == 1.0


def test_group_means():
    gts = [gt("v", 902, A, 11), gt("v", 902, A, 17), gt("v", 902, A, 79), gt("v", 902, B, 80)]
    dets = [det("v", 902, A, 11, 0.9), det("v", 902, A, 79, 0.9), det("v", 902, B, 80, 0.9)]
    m = evaluate_ava(gts, dets, LM)
    assert m["groups"] == {"pose": 1.0, "object": 0.0, "interaction": 1.0}
    assert m["mAP"] == pytest.approx(0.75)
    assert m["per_class"][17]["group"] == "object"


def test_builtin_label_map_is_the_60_classes():
    m = evaluate_ava([gt("v", 902, A, 14)], [det("v", 902, A, 14, 1.0)])
    assert m["num_classes"] == 60 and m["mAP"] == 1.0


# --------------------------------------------------------------------------- files


def test_read_csv_and_strict_errors(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("v1,0902,0.1,0.2,0.3,0.4,11,0\n\nv1,0902,0.1,0.2,0.3,0.4,12,0\nv2,1798,0.5,0.5,0.9,0.9,79,3\n")
    rows = read_ava_csv(p)
    assert len(rows) == 3
    assert rows[0] == AvaRow("v1", 902, 0.1, 0.2, 0.3, 0.4, 11, 1.0, 0)
    assert rows[2].person_id == 3 and rows[2].key == ("v2", 1798)
    bad = {
        "v1,0902,0.1,0.2,0.3,0.4\n": "columns",
        "v1,0902,0.1,0.2,0.3,0.4,11,0,7\n": "columns",
        "v1,0902,0.1,0.2x,0.3,0.4,11,0\n": "y1 '0.2x' is not a number",
        "v1,09a2,0.1,0.2,0.3,0.4,11,0\n": "timestamp '09a2' is not an integer",
        "v1,902.5,0.1,0.2,0.3,0.4,11,0\n": "timestamp",
        "v1,0902,0.1,0.2,0.3,0.4,sit,0\n": "action id 'sit'",
        "v1,0902,0.1,0.2,0.3,nan,11,0\n": "finite",
        "video_id,timestamp,x1,y1,x2,y2,action_id,person_id\n": "timestamp 'timestamp'",
    }
    for line, message in bad.items():
        f = tmp_path / "bad.csv"
        f.write_text("v1,0902,0.1,0.2,0.3,0.4,11,0\n\n" + line)
        with pytest.raises(HieraVideoError) as e:
            read_ava_csv(f)
        assert f"{f}, line 3" in str(e.value) and message in str(e.value)
    d = tmp_path / "det.csv"
    d.write_text("v1,0902,0.1,0.2,0.3,0.4,11,0.25\nv1,0902,0.1,0.2,0.3,0.4,12\n")
    rows = read_ava_csv(d, kind="detections")
    assert rows[0].score == 0.25 and rows[1].score == 1.0  # no score column: 1.0, as the official reader
    d.write_text("v1,0902,0.1,0.2,0.3,0.4,11,high\n")
    with pytest.raises(HieraVideoError, match="line 1: score 'high'"):
        read_ava_csv(d, kind="detections")
    with pytest.raises(HieraVideoError, match="not found"):
        read_ava_csv(tmp_path / "nope.csv")


def test_read_exclusions(tmp_path):
    p = tmp_path / "ex.csv"
    p.write_text("v1,0902\nv2,1000\n")
    assert read_exclusions(p) == {("v1", 902), ("v2", 1000)}
    p.write_text("v1,0902\nv2,1000,3\n")
    with pytest.raises(HieraVideoError, match=r"ex.csv, line 2: expected 2 columns"):
        read_exclusions(p)
    assert read_exclusions(None) == set()


def test_read_label_map_formats(tmp_path):
    v22 = tmp_path / "v22.pbtxt"
    v22.write_text('item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\n# comment\nitem {\n  name: "sit"\n  id: 11\n}\n')
    assert read_label_map(v22) == {1: "bend/bow (at the waist)", 11: "sit"}
    v21 = tmp_path / "v21.pbtxt"
    v21.write_text('label {\n  name: "stand"\n  label_id: 12\n  label_type: PERSON_MOVEMENT\n}\n'
                   'label { name: "talk to (e.g., self, a person, a group)" label_id: 79 label_type: PERSON_INTERACTION }\n')
    assert read_label_map(v21) == {12: "stand", 79: "talk to (e.g., self, a person, a group)"}
    bad = tmp_path / "bad.pbtxt"
    bad.write_text('item {\n  name: "sit"\n  id: 11\n}\nitem {\n  name: "stand"\n}\n')
    with pytest.raises(HieraVideoError, match=r"bad.pbtxt, line 5: 'item' block needs a name and an id"):
        read_label_map(bad)
    bad.write_text('item {\n  name: "sit"\n  id: eleven\n}\n')
    with pytest.raises(HieraVideoError, match=r"line 3: id 'eleven' is not an integer"):
        read_label_map(bad)
    bad.write_text('item {\n  name: "sit"\n  id: 11\n')
    with pytest.raises(HieraVideoError, match="unexpected end of file"):
        read_label_map(bad)


def test_official_label_map_round_trip(tmp_path):
    from hiera_video.data.labels import load_label_map
    from hiera_video.ava.synthetic import label_map_pbtxt

    p = tmp_path / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
    p.write_text(label_map_pbtxt(load_label_map("ava")))
    lm = read_label_map(p)
    assert lm == load_label_map("ava") and len(lm) == 60


def test_write_detections_csv_official_format(tmp_path):
    rows = [det("v1", 902, (0.1, 0.2, 0.3, 0.4), 11, 0.123456789), ("v2", 1798, 0.5, 0.5, 0.9, 0.9, 79, 0.5)]
    p = write_detections_csv(tmp_path / "d.csv", rows)
    lines = p.read_text().splitlines()
    assert lines[0] == "v1,0902,0.1000,0.2000,0.3000,0.4000,11,0.123457"
    back = read_ava_csv(p, kind="detections")
    assert back[1] == AvaRow("v2", 1798, 0.5, 0.5, 0.9, 0.9, 79, 0.5)


# --------------------------------------------------------------------------- CLI


def _cli_app():
    from hiera_video.cli.score_ava import score_ava

    app = typer.Typer()
    app.command("score-ava")(score_ava)

    @app.callback()
    def _root():  # a callback keeps "score-ava" a subcommand, as in the real app
        pass

    return app


def test_score_ava_cli(tmp_path):
    g, d, e = tmp_path / "gt.csv", tmp_path / "det.csv", tmp_path / "ex.csv"
    g.write_text("v,0902,0.0,0.0,0.5,1.0,11,0\nv,0903,0.0,0.0,0.5,1.0,11,0\nv,0902,0.5,0.0,1.0,1.0,79,1\n")
    d.write_text("v,0903,0.5,0.0,1.0,1.0,11,0.95\nv,0902,0.0,0.0,0.5,1.0,11,0.9\nv,0902,0.5,0.0,1.0,1.0,79,0.8\n")
    e.write_text("v,0903\n")
    runner = CliRunner()
    app = _cli_app()
    r = runner.invoke(app, ["score-ava", "--groundtruth", str(g), "--detections", str(d), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # stdout alone: the log (report.html written) goes to stderr
    assert out["per_class"]["11"]["ap"] == pytest.approx(0.25)  # FP then TP over 2 GT
    assert out["mAP"] == pytest.approx((0.25 + 1.0) / 2)
    assert out["per_class"]["12"]["ap"] is None  # no GT: null in JSON
    assert set(out["groups"]) == {"pose", "object", "interaction"}
    lm = tmp_path / "lm.pbtxt"
    lm.write_text('item {\n  name: "sit"\n  id: 11\n}\nitem {\n  name: "talk to"\n  id: 79\n}\n')
    r = runner.invoke(app, ["score-ava", "-g", str(g), "-d", str(d), "--label-map", str(lm), "--exclusions", str(e),
                            "--json", "--output", str(tmp_path / "out")])
    out = json.loads(r.stdout)
    assert out["mAP"] == 1.0 and set(out["per_class"]) == {"11", "79"}
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["mAP"] == 1.0 and (tmp_path / "out" / "per_class.csv").is_file()
    r = runner.invoke(app, ["score-ava", "-g", str(g), "-d", str(d)])  # tables
    assert r.exit_code == 0 and "mAP %" in r.output and "62.50" in r.output and "talk to" in r.output
    d.write_text("v,0902,0.0,0.0,0.5,1.0,11\nv,0902,0.0,0.0,0.5,1.0\n")
    r = runner.invoke(app, ["score-ava", "-g", str(g), "-d", str(d)])
    assert isinstance(r.exception, HieraVideoError) and "det.csv, line 2" in str(r.exception)
    # Nothing to score (no GT box of the label map's classes): an error (exit 2), not a NaN mAP with exit 0.
    d.write_text("v,0902,0.0,0.0,0.5,1.0,11,0.9\n")
    lm.write_text('item {\n  name: "stand"\n  id: 12\n}\n')
    r = runner.invoke(app, ["score-ava", "-g", str(g), "-d", str(d), "--label-map", str(lm), "--json"])
    assert isinstance(r.exception, HieraVideoError) and "nothing to score" in str(r.exception)
