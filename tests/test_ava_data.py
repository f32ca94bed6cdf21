"""AVA dataset: official files, items of the synthetic AVA set, box transforms, layouts, errors."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from hiera_video.ava.files import (
    NUM_ACTIONS,
    convert_proposals_pickle,
    load_proposals,
    load_proposals_pickle,
    read_ava_annotations,
    read_ava_csv,
    read_exclusions,
    read_label_map,
    read_proposals_csv,
)
from hiera_video.ava.boxes import box_iou, crop_boxes_px, flip_boxes, resize_boxes
from hiera_video.ava.dataset import AvaDataset, ava_collate, clip_frame_indices, train_view
from hiera_video.data.clip_spec import ClipSpec
from hiera_video.engine.train_data import Guarded, collate_items
from hiera_video.ava.dataset import test_view as ava_test_view
from hiera_video.data.sampling import keyframe_indices
from hiera_video.ava.synthetic import ACTIONS, TIMECODE_BLOCK, make_synthetic_ava, timecode_position
from hiera_video.errors import HieraVideoError

T, STRIDE, S = 8, 4, 64
CLIP = ClipSpec(num_frames=T, stride=STRIDE, crop_size=S)


@pytest.fixture(scope="module")
def ava(tmp_path_factory):
    return make_synthetic_ava(tmp_path_factory.mktemp("ava"), seed=3, num_videos=4, val_videos=1, seconds=6, frames=True)


def _train(ava, **kw):
    kw = {"clip": CLIP, **kw}
    return AvaDataset(ava.videos, ava.train_csv, ava.label_map, "train", "train", **kw)


def _val(ava, **kw):
    kw = {"clip": CLIP, "proposals": ava.val_proposals,
          "exclusions": ava.val_exclusions, **kw}
    return AvaDataset(ava.videos, ava.val_csv, ava.label_map, "val", "val", **kw)


# --------------------------------------------------------------------------- synthetic files


def test_synthetic_files_are_official_format(ava):
    assert ava.keyframes == [902, 903, 904]
    gt = read_ava_csv(ava.train_csv)
    assert {r.action_id for r in gt} <= set(ACTIONS)
    assert all(0 <= v <= 1 for r in gt for v in r.box)
    assert {r.video_id for r in gt} == set(ava.video_ids["train"])
    assert all(len(v) == 11 for v in ava.video_ids["train"] + ava.video_ids["val"])
    assert read_exclusions(ava.val_exclusions) == set(ava.excluded) and len(ava.excluded) == 1
    assert len(read_label_map(ava.label_map)) == 60
    props = read_proposals_csv(ava.val_proposals)
    scores = [s for boxes in props.values() for _, s in boxes]
    assert min(scores) < 0.8 < max(scores)  # some boxes below the default threshold
    n = len(ava.video_ids["train"]) * 3 * 30
    frames = sorted((ava.frames / ava.video_ids["train"][0]).iterdir())
    assert frames[0].name == f"{ava.video_ids['train'][0]}_000001.jpg" and len(frames) == 180 and n > 0


# --------------------------------------------------------------------------- items


def test_train_items_hold_all_gt_boxes_with_multi_hot_labels(ava):
    ds = _train(ava)
    ds.generator = torch.Generator().manual_seed(0)
    gt = read_ava_csv(ava.train_csv)
    assert len(ds) == len({r.key for r in gt}) == len(ava.video_ids["train"]) * 3
    for i in range(len(ds)):
        clip, boxes, labels, meta = ds[i]
        assert clip.shape == (3, T, S, S) and clip.dtype == torch.float32
        rows = [r for r in gt if r.key == (meta["video_id"], meta["timestamp"])]
        persons = {r.box: set() for r in rows}
        for r in rows:
            persons[r.box].add(r.action_id)
        assert boxes.shape == (len(persons), 4) and labels.shape == (len(persons), NUM_ACTIONS)
        for b, lab in zip(meta["boxes"].tolist(), labels):
            assert set((torch.nonzero(lab).flatten() + 1).tolist()) == persons[tuple(b)]
        assert ((boxes >= 0) & (boxes <= S)).all()
        assert meta["is_gt"].all()
    # normalisation: mean 0.45 / std 0.225 maps [0, 255] to [-2, 2.44]
    assert clip.min() >= -2.0 - 1e-5 and clip.max() <= (1 - 0.45) / 0.225 + 1e-5


def test_val_items_use_proposals_above_threshold_and_skip_excluded(ava):
    ds = _val(ava)
    props = read_proposals_csv(ava.val_proposals)
    assert ds.dropped["excluded"] == 1 and ava.excluded[0] not in ds.items
    assert len(ds) == 3 - 1
    clip, boxes, labels, meta = ds[0]
    key = (meta["video_id"], meta["timestamp"])
    kept = [b for b, s in props[key] if s >= 0.8]
    assert meta["boxes"].tolist() == [list(b) for b in kept]
    assert (meta["scores"] >= 0.8).all() and not meta["is_gt"].any()
    # the false-positive proposal (score 0.82) has no GT person: all-zero labels; the others match one
    fp = int(torch.nonzero(meta["scores"] == 0.82)[0])
    assert labels[fp].sum() == 0 and all(labels[i].sum() > 0 for i in range(len(labels)) if i != fp)
    # full frame, no crop: 72x96 -> short side 64 -> 64x85
    assert clip.shape == (3, T, 64, 85) and meta["view"]["crop"] is None
    strict = _val(ava, proposal_threshold=0.9)
    assert all(len(strict.entries[k].boxes) < len(ds.entries[k].boxes) for k in strict.items)
    gt_boxes = _val(ava, proposals=None)  # evaluation on GT boxes
    assert gt_boxes.entries[gt_boxes.items[0]].is_gt.all()


def test_train_proposals_add_boxes_labelled_by_their_gt_match(ava):
    plain, with_props = _train(ava), _train(ava, proposals=ava.train_proposals)
    props = read_proposals_csv(ava.train_proposals)
    assert plain.items == with_props.items
    for key in with_props.items:
        gt, e = plain.entries[key], with_props.entries[key]
        above = [(b, s) for b, s in props[key] if s >= 0.8]
        assert len(e.boxes) == len(gt.boxes) + len(above) and e.is_gt.sum() == len(gt.boxes)
        extra = e.boxes[~e.is_gt]
        iou = box_iou(extra, gt.boxes)
        for j in range(len(extra)):
            best = iou[j].argmax()
            expect = gt.labels[best] if iou[j, best] >= 0.5 else np.zeros(NUM_ACTIONS)
            assert np.array_equal(e.labels[~e.is_gt][j], expect)
        assert (e.labels[~e.is_gt].sum(1) == 0).sum() >= 1  # the false positive is a negative


def test_clip_indices_centred_on_keyframe_and_clamped(ava):
    ds = _train(ava)
    i = ds.items.index((ava.video_ids["train"][0], 903))
    key = (903 - 900) * 30
    assert ds.frame_indices(i) == [key - 16 + 4 * k for k in range(8)]  # keyframe is sample T//2
    assert ds.frame_indices(i) == keyframe_indices(key, 180, 8, 4).tolist()
    assert clip_frame_indices(5, 100, 4, 4) == [0, 1, 5, 9]
    assert clip_frame_indices(98, 100, 4, 4) == [90, 94, 98, 99]
    assert clip_frame_indices(90, 1000, 4, 4, fps=15.0) == [86, 88, 90, 92]  # stride in 30-fps frames


# --------------------------------------------------------------------------- box transforms


def test_box_transform_helpers_hand_computed():
    b = np.array([[24.0, 36.0, 72.0, 72.0]])
    assert resize_boxes(b, (72, 96), (64, 85)).tolist() == [[21.25, 32.0, 63.75, 64.0]]
    assert crop_boxes_px(np.array([[21.25, 32.0, 63.75, 64.0]]), 0, 10, 64, 64).tolist() == [[11.25, 32.0, 53.75, 64.0]]
    assert crop_boxes_px(np.array([[-5.0, 10.0, 30.0, 90.0]]), 5, 5, 64, 64).tolist() == [[0.0, 5.0, 25.0, 64.0]]
    assert flip_boxes(np.array([[10.0, 5.0, 30.0, 60.0]]), 64).tolist() == [[34.0, 5.0, 54.0, 60.0]]


def test_test_views_hand_computed():
    frames = torch.zeros(2, 72, 96, 3, dtype=torch.uint8)
    norm = np.array([[0.25, 0.5, 0.75, 1.0]])  # pixels of 72x96: (24, 36, 72, 72)
    x, b, p = ava_test_view(frames, norm, 64, "full")
    assert x.shape == (2, 64, 85, 3) and p["resized"] == (64, 85)
    assert b.tolist() == [[24 * 85 / 96, 32.0, 72 * 85 / 96, 64.0]]  # [21.25, 32, 63.75, 64]
    x, b, p = ava_test_view(frames, norm, 64, "center")
    assert x.shape == (2, 64, 64, 3) and p["crop"] == (0, 10, 64, 64)
    assert b.tolist() == [[21.25 - 10, 32.0, 63.75 - 10, 64.0]]


def test_train_view_hand_computed():
    frames = torch.zeros(2, 72, 96, 3, dtype=torch.uint8)
    norm = np.array([[0.25, 0.5, 0.75, 1.0]])
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        # jitter fixed at 1.5: short side 96 -> frame 96x128, box pixels (32, 48, 96, 96)
        x, b, p = train_view(frames, norm, 64, jitter=(1.5, 1.5), flip_p=0.5, generator=g)
        assert x.shape == (2, 64, 64, 3) and p["resized"] == (96, 128)
        top, left, _, _ = p["crop"]
        assert 0 <= top <= 32 and 0 <= left <= 64
        x1, y1, x2, y2 = (np.clip(v, 0, 64) for v in (32 - left, 48 - top, 96 - left, 96 - top))
        expect = [64 - x2, y1, 64 - x1, y2] if p["flipped"] else [x1, y1, x2, y2]
        assert b[0].tolist() == pytest.approx(expect)


def test_boxes_follow_the_pixels_through_resize_crop_flip():
    """A white rectangle drawn at the box must be where the transformed box says."""
    H, W = 72, 96
    frames = torch.zeros(2, H, W, 3, dtype=torch.uint8)
    px = (30, 20, 70, 60)  # x1, y1, x2, y2
    frames[:, px[1] : px[3], px[0] : px[2]] = 255
    norm = np.array([[px[0] / W, px[1] / H, px[2] / W, px[3] / H]])
    views = [train_view(frames, norm, 64, flip_p=0.5, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    views += [ava_test_view(frames, norm, 64, v) for v in ("full", "center")]
    assert any(p["flipped"] for _, _, p in views) and not all(p["flipped"] for _, _, p in views)
    for x, b, p in views:
        mask = x[0, :, :, 0].float() > 127
        if not mask.any():
            assert (b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1]) < 2  # cropped away
            continue
        ys, xs = torch.nonzero(mask, as_tuple=True)
        seen = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        assert seen == pytest.approx(b[0].tolist(), abs=1.5), p


# --------------------------------------------------------------------------- layouts, collate


def test_frames_layout_gives_the_same_clip_as_the_video(ava):
    video = _val(ava)
    frames_root = AvaDataset(ava.frames, ava.val_csv, ava.label_map, "val", "val", CLIP, proposals=ava.val_proposals, exclusions=ava.val_exclusions,
                             frames_layout="frames")
    assert video.items == frames_root.items
    diffs = []
    for i in range(len(video)):
        cv, bv, lv, mv = video[i]
        cf, bf, lf, mf = frames_root[i]
        assert mv["frame_indices"] == mf["frame_indices"]
        assert torch.equal(bv, bf) and torch.equal(lv, lf)
        assert (cv - cf).abs().mean().item() < 0.05  # H.264 vs JPEG of the same rendered frames
        # the timecode strip says which frame each layout returned: frame of second t = (t - 900) * 30
        for ds in (video, frames_root):
            raw = ds._source(mv["video_id"]).get_frames(mv["frame_indices"])
            assert [_timecode(f) for f in raw] == [timecode_position(j, 96) for j in mv["frame_indices"]]
        assert mv["frame_indices"][T // 2] == (mv["timestamp"] - 900) * 30


def _timecode(frame: torch.Tensor) -> int:
    strip = frame[-TIMECODE_BLOCK:, :, 0].float().mean(0)  # [W]
    return int(torch.nonzero(strip > 127).min())


def test_frames_are_numbered_from_one(ava, tmp_path):
    vid = ava.video_ids["val"][0]
    shutil.copytree(ava.frames / vid, tmp_path / vid)
    ds = AvaDataset(tmp_path, ava.val_csv, ava.label_map, "val", "val", CLIP, frames_layout="frames")
    (tmp_path / vid / f"{vid}_000061.jpg").unlink()  # frame index 60 = keyframe 902
    i = ds.items.index((vid, 902))
    with pytest.raises(HieraVideoError, match="000061.jpg' is missing"):
        ds[i]


def test_collate_pads_full_frames_to_a_multiple_of_32(ava):
    ds = _val(ava)
    items = [ds[0], ds[1]]
    clips, boxes, labels, metas = ava_collate(items)
    assert clips.shape == (2, 3, T, 64, 96)
    assert torch.equal(clips[0, :, :, :, :85], items[0][0]) and (clips[0, :, :, :, 85:] == 0).all()
    assert [b.shape[0] for b in boxes] == [len(items[0][1]), len(items[1][1])]
    assert labels.shape == (sum(len(b) for b in boxes), NUM_ACTIONS)
    assert metas[0]["padded_size"] == (64, 96) and metas[1]["video_id"] == items[1][3]["video_id"]
    train = _train(ava)
    (clips, *_), good, bad = collate_items([(0, train[0], None), (1, None, "bad"), (2, train[1], None)], ava_collate)
    assert clips.shape == (2, 3, T, S, S) and good == [0, 2] and bad == [(1, "bad")]
    assert collate_items([(0, None, "bad")], ava_collate)[0] is None


# --------------------------------------------------------------------------- errors


def test_malformed_lines_name_file_and_line(ava, tmp_path):
    good = ava.train_csv.read_text().splitlines()[:2]
    cases = {
        "v1,0902,0.1,0.2,0.3,0.4": "expected 7 or 8",
        "v1,0902,0.1,0.2,0.3,11,12": "normalised",
        "v1,0902,0.1,0.2,0.3,0.4x,11,0": "'0.4x' is not a number",
        "v1,0902.0,0.1,0.2,0.3,0.4,11,0": "timestamp '0902.0'",
        "v1,0902,0.1,0.2,0.3,0.4,99,0": "action id 99 is outside",
        "v1,0902,0.1,0.2,0.3,0.4,11,p7": "person id 'p7'",
    }
    for line, message in cases.items():
        p = tmp_path / "ava_train_v2.2.csv"
        p.write_text("\n".join(good + [line]) + "\n")
        with pytest.raises(HieraVideoError) as e:
            AvaDataset(ava.videos, p, ava.label_map, "train", "train")
        assert f"{p}, line 3" in str(e.value) and message in str(e.value)
        with pytest.raises(HieraVideoError, match="line 3"):
            read_ava_annotations(p)
    props = tmp_path / "props.csv"
    props.write_text("v1,0902,0.1,0.2,0.3,0.4,,0.9\nv1,0902,0.1,0.2,0.3,0.4,,sure\n")
    with pytest.raises(HieraVideoError, match=r"props.csv, line 2: score 'sure'"):
        _val(ava, proposals=props)
    ex = tmp_path / "ex.csv"
    ex.write_text("v1\n")
    with pytest.raises(HieraVideoError, match=r"ex.csv, line 1"):
        _val(ava, exclusions=ex)


def test_pickle_proposals_need_explicit_opt_in(ava, tmp_path):
    vid = ava.video_ids["val"][0]
    pkl = tmp_path / "proposals.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({f"{vid},0902": np.array([[0.1, 0.2, 0.5, 0.9, 0.95], [0.6, 0.2, 0.9, 0.9, 0.5]]),
                     f"{vid},0903": np.array([[0.1, 0.2, 0.5, 0.9, 0.99]])}, f)
    for call in (lambda: _val(ava, proposals=pkl), lambda: load_proposals(pkl), lambda: load_proposals_pickle(pkl),
                 lambda: convert_proposals_pickle(pkl, tmp_path / "out.csv")):
        with pytest.raises(HieraVideoError, match="allow_pickle=True"):
            call()
    assert not (tmp_path / "out.csv").exists()
    renamed = tmp_path / "proposals.data"  # detected by content, not only by extension
    shutil.copy(pkl, renamed)
    with pytest.raises(HieraVideoError, match="can run arbitrary code"):
        load_proposals(renamed)
    with pytest.warns(UserWarning, match="arbitrary code"):
        ds = _val(ava, proposals=load_proposals(pkl, allow_pickle=True))
    assert ds.items == [(vid, 902), (vid, 903)] and len(ds.entries[(vid, 902)].boxes) == 1  # 0.5 < 0.8
    with pytest.warns(UserWarning):
        n = convert_proposals_pickle(pkl, tmp_path / "out.csv", allow_pickle=True)
    assert n == 3
    csv_props = read_proposals_csv(tmp_path / "out.csv")
    assert csv_props[(vid, 902)] == [((0.1, 0.2, 0.5, 0.9), 0.95), ((0.6, 0.2, 0.9, 0.9), 0.5)]


def test_undecodable_video_raises_and_can_be_skipped(ava, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(ava.videos, root)
    broken = ava.video_ids["train"][0]
    (root / f"{broken}.mp4").write_bytes(b"not a video at all" * 100)
    (root / f"{ava.video_ids['train'][1]}.mp4").unlink()  # missing: reported, its keyframes skipped
    ds = AvaDataset(root, ava.train_csv, ava.label_map, "train", "train", CLIP)
    assert ds.missing == [ava.video_ids["train"][1]]
    assert len(ds) == 3 * (len(ava.video_ids["train"]) - 1)
    i = ds.items.index((broken, 902))
    with pytest.raises(HieraVideoError, match=rf"{broken},0902.*cannot"):
        ds[i]
    safe = Guarded(ds)
    assert safe[i][:2] == (i, None) and f"{broken},0902" in safe[i][2]
    batch, _, bad = collate_items([safe[j] for j in range(len(ds))], ava_collate)
    assert batch[0].shape[0] == len(ds) - 3 and bad[0][0] == i


def test_bad_arguments(ava, tmp_path):
    with pytest.raises(HieraVideoError, match="mode"):
        AvaDataset(ava.videos, ava.train_csv, ava.label_map, "train", "test")
    with pytest.raises(HieraVideoError, match="frames_layout"):
        AvaDataset(ava.videos, ava.train_csv, ava.label_map, "train", "train", frames_layout="jpg")
    with pytest.raises(HieraVideoError, match="not found"):
        AvaDataset(tmp_path / "nope", ava.train_csv, ava.label_map, "train", "train")
    with pytest.raises(HieraVideoError, match="ground-truth CSV"):
        AvaDataset(ava.videos, None, ava.label_map, "train", "train")


def test_limited_evaluation_scores_only_the_evaluated_keyframes(ava):
    """With --limit / data.limit_val only the first keyframes are run; their detections are
    scored against THEIR ground truth (scoring against the whole split's would count every
    other keyframe's boxes as missed), and the metrics say that the result is on a subset."""
    from io import StringIO

    from rich.console import Console

    from hiera_video.ava.dataset import open_ava_split
    from hiera_video.ava.evaluate import evaluate_ava_model, render_ava_metrics
    from hiera_video.ava.files import resolve_label_map
    from hiera_video.ava.metrics import evaluate_ava

    class Constant(torch.nn.Module):  # the same score for every box and class
        def forward(self, clips, boxes):
            return torch.zeros(sum(len(b) for b in boxes), NUM_ACTIONS)

    kw = dict(default_proposals=True, clip=CLIP)
    full = open_ava_split(ava.root, "val", "val", **kw)
    assert len(full) >= 2 and full.subset is None
    part = open_ava_split(ava.root, "val", "val", limit=1, **kw)
    rows, metrics = evaluate_ava_model(Constant(), part, batch_size=2)
    assert metrics["subset"] == dict(keyframes=1, of=len(full)) and metrics["num_keyframes"] == 1
    gt, lm = read_ava_csv(ava.val_csv), resolve_label_map(ava.label_map)
    own = [r for r in gt if r.key in set(part.items)]
    assert metrics["mAP"] == pytest.approx(evaluate_ava(own, rows, lm, ava.val_exclusions)["mAP"])
    assert metrics["mAP"] > evaluate_ava(gt, rows, lm, ava.val_exclusions)["mAP"]  # what the whole split's GT gave
    text = StringIO()
    render_ava_metrics(metrics, Console(file=text, width=200))
    assert "subset" in text.getvalue() and f"1 of {len(full)}" in text.getvalue()
    _, metrics = evaluate_ava_model(Constant(), full, batch_size=2)
    assert metrics["subset"] is None


def test_eval_options_need_weights_and_save_as_json(tmp_path):
    import json

    from hiera_video.ava.evaluate import AvaEvalOptions

    with pytest.raises(HieraVideoError, match="needs --weights RUN_DIR/best.pt"):
        AvaEvalOptions(tmp_path)
    d = AvaEvalOptions(tmp_path, weights="best.pt", output=tmp_path / "o").to_dict()
    assert d["root"] == str(tmp_path) and d["output"] == str(tmp_path / "o") and json.loads(json.dumps(d)) == d
