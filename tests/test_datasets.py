"""Dataset readers on tiny generated trees: Kinetics CSV/list layouts, SSv2 JSON, list and folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hiera_video.data.datasets import DATASET_KINDS, FileIndex, build_dataset, check_missing
from hiera_video.data.labels import load_labels
from hiera_video.errors import HieraVideoError

K400 = load_labels("kinetics400")
SSV2 = load_labels("ssv2")
HEADER = "label,youtube_id,time_start,time_end,split\n"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def clip(yid: str, start: int, end: int) -> str:
    return f"{yid}_{start:06d}_{end:06d}"


# Rows of a tiny Kinetics-400 val CSV: (class, youtube id, start, end).
ROWS = [
    ("abseiling", "aaaaaaaaaaa", 10, 20),
    ("air drumming", "bbbbbbbbbbb", 0, 10),
    ("zumba", "ccccccccccc", 5, 15),
    ("air drumming", "ddddddddddd", 30, 40),  # missing on disk
    ("abseiling", "eeeeeeeeeee", 1, 11),  # stored as {youtube_id}.mkv
    ("zumba", "fffffffffff", 2, 12),  # missing on disk
]


def write_csv(path: Path, rows=ROWS, split: str = "val", header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [f"{c},{y},{s},{e},{split}\n" if "," not in c else f'"{c}",{y},{s},{e},{split}\n'
                        for c, y, s, e in rows]
    path.write_text("".join(lines))
    return path


def make_kinetics(root: Path, layout: str) -> Path:
    """Write clip files for ROWS (except the missing ones) in the given layout."""
    for c, y, s, e in ROWS:
        if y in ("ddddddddddd", "fffffffffff"):
            continue
        name = f"{y}.mkv" if y == "eeeeeeeeeee" else f"{clip(y, s, e)}.mp4"
        if layout == "flat":
            touch(root / name)
        elif layout == "split_class":
            touch(root / "val" / c / name)
        else:
            touch(root / c.replace(" ", "_") / name)
    return root


@pytest.mark.parametrize("layout", ["flat", "split_class", "class"])
def test_kinetics_csv_layouts_labels_and_missing(tmp_path, layout):
    root = make_kinetics(tmp_path / "k400", layout)
    write_csv(root / "annotations" / "val.csv")  # found by default
    ds = build_dataset("k400", root, split="val")
    assert ds.classes == K400 and ds.num_classes == 400
    assert [it.id for it in ds] == [clip(y, s, e) for _, y, s, e in ROWS if y not in ("ddddddddddd", "fffffffffff")]
    assert [it.label for it in ds] == [K400.index(c) for c, y, _, _ in ROWS if y not in ("ddddddddddd", "fffffffffff")]
    assert all(it.path.is_file() for it in ds)
    assert ds[3].path.name == "eeeeeeeeeee.mkv"
    assert ds.annotations == root / "annotations" / "val.csv"
    # Missing entries are reported with the path the layout suggests, not raised.
    assert len(ds.missing) == 2
    expected, reason = ds.missing[0]
    assert expected.endswith(clip("ddddddddddd", 30, 40) + ".mp4") and "line 5" in reason
    if layout == "split_class":
        assert Path(expected).parent == root / "val" / "air drumming"
    if layout == "flat":
        assert Path(expected).parent == root
    s = ds.summary()
    assert (s["annotated"], s["found"], s["missing"], s["per_split"]) == (6, 4, 2, {"val": 6})
    assert s["per_class"] == {"abseiling": 2, "air drumming": 1, "zumba": 1}
    with pytest.raises(HieraVideoError, match="2 of 6 annotated videos"):
        check_missing(ds, strict=True)
    assert check_missing(ds, strict=False) == 2


def test_kinetics_limit_is_first_found_items(tmp_path):
    root = make_kinetics(tmp_path, "flat")
    ann = write_csv(tmp_path / "kinetics400_val.csv")
    ds = build_dataset("k400", root, annotations=ann, limit=2)
    assert [it.id for it in ds] == [clip("aaaaaaaaaaa", 10, 20), clip("bbbbbbbbbbb", 0, 10)]
    assert ds.missing == [] and ds.summary()["limit"] == 2
    assert len(build_dataset("k400", root, limit=0)) == 0  # kinetics400_val.csv is found by default too


def test_kinetics_mixed_splits_is_cc_and_test_split(tmp_path):
    root = make_kinetics(tmp_path, "flat")
    text = "label,youtube_id,time_start,time_end,split,is_cc\n"
    text += "abseiling,aaaaaaaaaaa,10,20,val,0\nzumba,ccccccccccc,5,15,train,1\nzumba,xxxxxxxxxxx,0,10,train,0\n"
    (root / "all.csv").write_text(text)
    ds = build_dataset("k400", root, annotations=root / "all.csv", split="train")
    assert [it.id for it in ds] == [clip("ccccccccccc", 5, 15)] and len(ds.missing) == 1
    assert ds.summary()["per_split"] == {"val": 1, "train": 2}
    with pytest.raises(HieraVideoError, match="no rows of split 'test'.*train, val"):
        build_dataset("k400", root, annotations=root / "all.csv", split="test")
    # "validate" in the file matches --split val.
    (root / "v.csv").write_text(HEADER + "zumba,ccccccccccc,5,15,validate\n")
    assert len(build_dataset("k400", root, annotations=root / "v.csv", split="val")) == 1
    # The official test CSV has no label column: items carry label None.
    (root / "test.csv").write_text("youtube_id,time_start,time_end,split\naaaaaaaaaaa,10,20,test\nbbbbbbbbbbb,0,10,test\n")
    ds = build_dataset("k400", root, split="test")
    assert [it.label for it in ds] == [None, None] and ds.summary()["unlabelled"] == 2


def test_kinetics_k600_k700_class_index(tmp_path):
    for kind, name in (("k600", "kinetics600"), ("k700", "kinetics700")):
        classes = load_labels(name)
        assert classes == sorted(classes)
        root = tmp_path / kind
        touch(root / f"{clip('aaaaaaaaaaa', 0, 10)}.webm")
        write_csv(root / "val.csv", rows=[(classes[-1], "aaaaaaaaaaa", 0, 10)])
        ds = build_dataset(kind, root)
        assert ds.num_classes == len(classes) and ds[0].label == len(classes) - 1


def test_kinetics_csv_errors_name_file_and_line(tmp_path):
    root = make_kinetics(tmp_path, "flat")
    bad = tmp_path / "bad_class.csv"
    bad.write_text(HEADER + "abseiling,aaaaaaaaaaa,10,20,val\nnot a kinetics class,bbbbbbbbbbb,0,10,val\n")
    with pytest.raises(HieraVideoError, match=r"bad_class\.csv, line 3: class 'not a kinetics class'"):
        build_dataset("k400", root, annotations=bad)
    bad.write_text(HEADER + "abseiling,aaaaaaaaaaa,10,20,val\nzumba,ccccccccccc,5,val\n")
    with pytest.raises(HieraVideoError, match=r"bad_class\.csv, line 3: expected 5 columns"):
        build_dataset("k400", root, annotations=bad)
    bad.write_text(HEADER + "zumba,ccccccccccc,five,15,val\n")
    with pytest.raises(HieraVideoError, match=r"line 2: time_start 'five' is not a number"):
        build_dataset("k400", root, annotations=bad)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(HieraVideoError, match=r"no Kinetics annotations for split 'val'.*tried val\.csv, kinetics400_val\.csv"):
        build_dataset("k400", tmp_path / "nothing")


def test_kinetics_list_files(tmp_path):
    root = tmp_path
    touch(root / "val" / "air drumming" / "v1.mp4")
    touch(root / "val" / "zumba" / "v2.mp4")
    touch(root / "flat" / "v3.mp4")
    # VideoMAE / SlowFast style: "path label", paths may contain spaces.
    lst = root / "val_list.txt"
    lst.write_text(
        f"val/air drumming/v1.mp4 {K400.index('air drumming')}\n"
        f"\n# a comment\nval/zumba/v2.mp4 {K400.index('zumba')}\n"
        f"elsewhere/v3.mp4 0\n"  # listed under another prefix: found by its name
        f"val/zumba/gone.mp4 5\n"
    )
    ds = build_dataset("k400", root, annotations=lst)
    assert [it.label for it in ds] == [K400.index("air drumming"), K400.index("zumba"), 0]
    assert [it.path for it in ds] == [root / "val/air drumming/v1.mp4", root / "val/zumba/v2.mp4", root / "flat/v3.mp4"]
    assert ds.missing == [(str(root / "val/zumba/gone.mp4"), "file not found (val_list.txt, line 6)")]
    # mmaction2 / comma style with a header line.
    csv = root / "val.csv"
    csv.write_text(f"path,label\nval/zumba/v2.mp4,{K400.index('zumba')}\n")
    ds = build_dataset("k400", root, annotations=csv)
    assert [(it.id, it.label) for it in ds] == [("val/zumba/v2", K400.index("zumba"))]


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("a.mp4 1\nb.mp4 x\n", r"l\.txt, line 2: label 'x' is not an integer"),
        ("a.mp4 1\n\nb.mp4\n", r"l\.txt, line 3: expected 2 columns \(path label\), found 1"),
        ("a.mp4,1\nb.mp4,1,2\n", r"l\.txt, line 2: expected 2 comma-separated columns"),
        ("a.mp4 1\nb.mp4 30 2\n", r"l\.txt, line 2: expected 2 columns.*found 3"),
        ("a.mp4 1\nb.mp4 400\n", r"l\.txt, line 2: label 400 is out of range for 400 classes"),
    ],
)
def test_list_errors_name_file_and_line(tmp_path, text, pattern):
    (tmp_path / "l.txt").write_text(text)
    with pytest.raises(HieraVideoError, match=pattern):
        build_dataset("k400", tmp_path, annotations=tmp_path / "l.txt")


def test_generic_list_with_and_without_labels(tmp_path):
    touch(tmp_path / "x" / "a.mp4")
    touch(tmp_path / "x" / "b.webm")
    (tmp_path / "val.txt").write_text("x/a.mp4 2\nx/b.webm 0\nx/c.avi 1\n")
    ds = build_dataset("list", tmp_path)  # val.txt is found by default
    assert ds.classes == ["class_0", "class_1", "class_2"] and ds.warnings
    assert [it.label for it in ds] == [2, 0] and len(ds.missing) == 1
    (tmp_path / "names.txt").write_text("cat\ndog\nemu\nfox\n")
    ds = build_dataset("list", tmp_path, annotations=tmp_path / "val.txt", labels=tmp_path / "names.txt")
    assert ds.classes == ["cat", "dog", "emu", "fox"] and ds.num_classes == 4 and not ds.warnings
    with pytest.raises(HieraVideoError, match="no list file for split 'train'"):
        build_dataset("list", tmp_path, split="train")


def test_folder_dataset_and_save_classes(tmp_path):
    root = tmp_path / "data"
    for cls, names in {"walk": ["2.mp4", "1.mkv"], "run": ["a.webm"], "Jump": ["x.avi", "y.mov", "z.m4v"]}.items():
        for n in names:
            touch(root / cls / n)
    touch(root / "run" / "nested" / "deep.mp4")
    (root / "run" / "notes.txt").write_text("not a video")
    (root / "empty_class").mkdir()
    touch(root / "stray.mp4")
    ds = build_dataset("folder", root)
    assert ds.classes == ["Jump", "run", "walk"]
    assert [(it.id, it.label) for it in ds] == [
        ("Jump/x", 0), ("Jump/y", 0), ("Jump/z", 0), ("run/a", 1), ("run/nested/deep", 1), ("walk/1", 2), ("walk/2", 2),
    ]
    assert ds.missing == [] and len(ds.warnings) == 2  # empty folder, stray video
    out = ds.save_classes(tmp_path / "classes.txt")
    assert out.read_text() == "Jump\nrun\nwalk\n"
    # The saved list fixes the order for another copy of the data.
    ds2 = build_dataset("folder", root, labels=out, limit=4)
    assert ds2.classes == ds.classes and len(ds2) == 4 and ds2.summary()["annotated"] == 7
    (tmp_path / "other.txt").write_text("walk\nrun\n")
    with pytest.raises(HieraVideoError, match="folder '.*Jump' is not a class"):
        build_dataset("folder", root, labels=tmp_path / "other.txt")
    # root/<split>/ is used when it exists.
    touch(tmp_path / "splits" / "val" / "b" / "v.mp4")
    touch(tmp_path / "splits" / "train" / "a" / "v.mp4")
    ds = build_dataset("folder", tmp_path / "splits", split="val")
    assert ds.classes == ["b"] and ds.split == "val"


def write_ssv2(root: Path, classes: list[str], entries: dict[str, list[dict]]) -> None:
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "something-something-v2-labels.json").write_text(json.dumps({c: str(i) for i, c in enumerate(classes)}, indent=1))
    for split, items in entries.items():
        (ann / f"something-something-v2-{split}.json").write_text(json.dumps(items, indent=1))


def ssv2_entry(vid: str, cls: str) -> dict:
    # Official entries: template with [something], label with the placeholders filled in.
    template = cls.replace("something", "[something]", 1)
    return {"id": vid, "label": template.replace("[something]", "a cup"), "template": template, "placeholders": ["a cup"]}


def test_ssv2_json_annotations_and_webm_videos(tmp_path):
    from videogen import write_video

    from hiera_video.data.decode import open_video

    root = tmp_path / "ssv2"
    videos = root / "20bn-something-something-v2"
    videos.mkdir(parents=True)
    write_video(videos / "101.webm", num_frames=6, height=32, width=32, fmt="vp9")
    touch(videos / "102.webm")
    touch(videos / "7.webm")
    val = [ssv2_entry("101", SSV2[5]), ssv2_entry("102", SSV2[0]), ssv2_entry("103", SSV2[173])]
    train = [ssv2_entry("7", SSV2[17])]
    write_ssv2(root, SSV2, {"validation": val, "train": train, "test": [{"id": "101"}, {"id": "7"}]})
    ds = build_dataset("ssv2", root)  # split val -> validation.json
    assert ds.classes == SSV2 and not ds.warnings
    assert [(it.id, it.label) for it in ds] == [("101", 5), ("102", 0)]
    assert ds.missing == [(str(videos / "103.webm"), "no 103.webm under the root (something-something-v2-validation.json, entry 2)")]
    with open_video(ds[0].path, "pyav") as reader:
        assert reader.num_frames == 6
    ds = build_dataset("ssv2", root, split="train")
    assert [(it.id, it.label) for it in ds] == [("7", 17)]
    ds = build_dataset("ssv2", root, split="test")
    assert [(it.id, it.label) for it in ds] == [("101", None), ("7", None)]
    # Explicit annotations file; the labels file is found next to it.
    ds = build_dataset("ssv2", root, annotations=root / "annotations" / "something-something-v2-train.json")
    assert len(ds) == 1 and ds[0].label == 17
    # A "path label" list (mmaction2 / VideoMAE style) with the SSv2 classes.
    (root / "annotations" / "val_list.txt").write_text("20bn-something-something-v2/102.webm 3\n")
    ds = build_dataset("ssv2", root, annotations=root / "annotations" / "val_list.txt")
    assert [(it.id, it.label) for it in ds] == [("20bn-something-something-v2/102", 3)] and ds.classes == SSV2


def test_ssv2_class_order_from_labels_json_and_warning(tmp_path):
    root = tmp_path
    shuffled = SSV2[:]
    random.Random(0).shuffle(shuffled)
    touch(root / "videos" / "1.webm")
    write_ssv2(root, shuffled, {"validation": [ssv2_entry("1", SSV2[3])]})
    ds = build_dataset("ssv2", root)
    assert ds.classes == shuffled and ds[0].label == shuffled.index(SSV2[3])
    assert any("differs from the built-in ssv2 order" in w for w in ds.warnings)


def test_ssv2_errors_name_file_and_entry(tmp_path):
    root = tmp_path
    write_ssv2(root, SSV2, {"validation": [ssv2_entry("1", SSV2[0]), {"id": "2", "template": "Juggling [something]"}]})
    with pytest.raises(HieraVideoError, match=r"validation\.json, entry 1 \(id 2\): template 'Juggling something'"):
        build_dataset("ssv2", root)
    (root / "annotations" / "something-something-v2-validation.json").write_text('[\n {"id": "1",\n "template": }\n]')
    with pytest.raises(HieraVideoError, match=r"validation\.json, line 3: not valid JSON"):
        build_dataset("ssv2", root)
    (root / "annotations" / "something-something-v2-validation.json").write_text('[{"id": "1"}, {"template": "x"}]')
    with pytest.raises(HieraVideoError, match=r"entry 1: expected an object with an 'id'"):
        build_dataset("ssv2", root)
    (root / "annotations" / "something-something-v2-labels.json").write_text('{"a": "0", "b": "two"}')
    with pytest.raises(HieraVideoError, match=r"labels\.json, entry 'b': index 'two' is not an integer"):
        build_dataset("ssv2", root)
    write_ssv2(root, SSV2, {})
    with pytest.raises(HieraVideoError, match="something-something-v2-train.json not found"):
        build_dataset("ssv2", root, split="train")


def test_unknown_kind_and_bad_paths(tmp_path):
    with pytest.raises(HieraVideoError, match="unknown dataset 'k300'; use one of " + ", ".join(DATASET_KINDS)):
        build_dataset("k300", tmp_path)
    with pytest.raises(HieraVideoError, match="is not a folder"):
        build_dataset("folder", tmp_path / "nope")
    with pytest.raises(HieraVideoError, match="annotations file .* not found"):
        build_dataset("k400", tmp_path, annotations=tmp_path / "nope.csv")


def test_file_index_one_walk_prefers_split_folder(tmp_path):
    touch(tmp_path / "train" / "c" / "same.mp4")
    touch(tmp_path / "val" / "c" / "same.mp4")
    touch(tmp_path / "val" / "c" / "other.webm")
    touch(tmp_path / "val" / "c" / "notes.txt")
    (tmp_path / "loop").symlink_to(tmp_path)  # a symlink loop must not hang the walk
    index = FileIndex(tmp_path)
    assert index.lookup("same", ("val",)) == tmp_path / "val" / "c" / "same.mp4"
    assert index.lookup("same", ("train",)) == tmp_path / "train" / "c" / "same.mp4"
    assert index.lookup("notes") is None and index.lookup("other") is not None


BOM = "\ufeff"  # what spreadsheet tools write at the start of a UTF-8 file


def test_annotation_files_with_a_byte_order_mark(tmp_path):
    """Every annotation reader ignores a UTF-8 byte-order mark: the rows, labels and class
    names read are the same as without it."""
    from hiera_video.ava.files import read_ava_csv, read_exclusions, read_label_map

    def with_bom(path: Path) -> Path:
        path.write_text(BOM + path.read_text(encoding="utf-8"), encoding="utf-8")
        return path

    # Kinetics CSV: the first header column is 'label'; with the BOM read as data it was not
    # found, so every video came out unlabelled.
    root = make_kinetics(tmp_path / "k400", "flat")
    plain = build_dataset("k400", root, annotations=write_csv(root / "plain.csv"))
    bommed = build_dataset("k400", root, annotations=with_bom(write_csv(root / "bom.csv")))
    assert [(it.id, it.label) for it in bommed] == [(it.id, it.label) for it in plain] and None not in bommed.labels
    # "path label" lists (the first path) and class-name files (the first name).
    touch(tmp_path / "l" / "a.mp4")
    touch(tmp_path / "l" / "b.mp4")
    (tmp_path / "l" / "val.txt").write_text(BOM + "a.mp4 1\nb.mp4 0\n", encoding="utf-8")
    (tmp_path / "l" / "names.txt").write_text(BOM + "cat\ndog\n", encoding="utf-8")
    (tmp_path / "l" / "names.json").write_text(BOM + json.dumps(["cat", "dog"]), encoding="utf-8")
    for names in ("names.txt", "names.json"):
        ds = build_dataset("list", tmp_path / "l", labels=tmp_path / "l" / names)
        assert ds.classes == ["cat", "dog"] and [(it.path.name, it.label) for it in ds] == [("a.mp4", 1), ("b.mp4", 0)]
        assert not ds.missing
    # SSv2 JSON files (json.loads refuses a BOM).
    s = tmp_path / "ssv2"
    touch(s / "videos" / "1.webm")
    write_ssv2(s, SSV2, {"validation": [ssv2_entry("1", SSV2[3])]})
    for f in (s / "annotations").glob("*.json"):
        with_bom(f)
    ds = build_dataset("ssv2", s)
    assert ds.classes == SSV2 and [(it.id, it.label) for it in ds] == [("1", 3)]
    # AVA: ground truth, exclusions, label map.
    (tmp_path / "gt.csv").write_text(BOM + "vid_a,0902,0.1,0.2,0.3,0.4,12,0\n", encoding="utf-8")
    (tmp_path / "ex.csv").write_text(BOM + "vid_a,0903\n", encoding="utf-8")
    (tmp_path / "map.pbtxt").write_text(BOM + 'item {\n  name: "stand"\n  id: 12\n}\n', encoding="utf-8")
    assert [(r.video_id, r.timestamp, r.action_id) for r in read_ava_csv(tmp_path / "gt.csv")] == [("vid_a", 902, 12)]
    assert read_exclusions(tmp_path / "ex.csv") == {("vid_a", 903)}
    assert read_label_map(tmp_path / "map.pbtxt") == {12: "stand"}


def test_duplicate_annotation_rows_count_each_video_once(tmp_path):
    root = make_kinetics(tmp_path / "k400", "flat")
    rows = ROWS + [ROWS[0], ROWS[2], ("zumba", *ROWS[1][1:])]  # two repeats, one with another label
    ds = build_dataset("k400", root, annotations=write_csv(root / "val.csv", rows))
    unique = build_dataset("k400", root, annotations=write_csv(root / "val1.csv"))
    assert [(it.path, it.label) for it in ds] == [(it.path, it.label) for it in unique]  # the first row's label wins
    assert len(ds.duplicates) == 3 and ds.summary()["duplicates"] == 3
    note = " ".join(ds.warnings)
    assert "3 annotation row(s)" in note and "counted once" in note
    assert "1 of them give another label" in note and "'zumba' vs 'air drumming'" in note
    assert len(ds.missing) == len(unique.missing)
    # A list naming the same file twice (once by another relative spelling).
    touch(tmp_path / "l" / "x" / "a.mp4")
    (tmp_path / "l" / "val.txt").write_text("x/a.mp4 0\nx/../x/a.mp4 0\n")
    ds = build_dataset("list", tmp_path / "l")
    assert len(ds) == 1 and len(ds.duplicates) == 1 and "line 2" in ds.warnings[-1]
