"""The one weights policy (:func:`hiera_video.models.load.load`) for every task: ``--labels``
never silently replaces the weights' own class names, every task's weights go through the same
NaN/inf and untrained-head checks, and weights without names of a built-in set's size say
which ``--labels`` would name them."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import hiera_video
from hiera_video.errors import HieraVideoError
from hiera_video.models.checkpoints import save_checkpoint
from hiera_video.models.load import TASKS, load

from helpers import NANO, nano_classifier, run_cli, save_official


pytestmark = pytest.mark.usefixtures("one_thread")

ABC = ["apple", "banana", "cherry"]


@pytest.fixture
def warnings_seen():
    """The warnings the ``hiera_video`` logger emits during the test (the CLI turns its
    propagation off, so pytest's caplog would not see them)."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage())

    log = logging.getLogger("hiera_video")
    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield seen
    log.removeHandler(handler)
    log.setLevel(level)


def _labels_file(path, names):
    path.write_text("\n".join(names) + "\n")
    return str(path)


def _ava_detector(path, edit=None, label_map=None):
    """A nano AVA detector saved as ``finetune --dataset ava`` saves one (with the classes of
    ``label_map``, a label-map file); ``edit(state_dict)`` changes the tensors first."""
    from hiera_video.ava.files import resolve_label_map

    from hiera_video.ava.model import build_ava_model

    torch.manual_seed(0)
    model = build_ava_model(NANO, drop_path_rate=0.0, dropout=0.0)
    classes = {str(k): v for k, v in resolve_label_map(label_map).items()} if label_map else {}
    meta = dict(task="ava", model=NANO, arch={}, head=dict(dropout=0.0), label_map=classes,
                preprocessing=dict(num_frames=8, stride=2, crop_size=64, mean=[0.45] * 3, std=[0.225] * 3))
    save_checkpoint(path, model, meta)
    if edit is not None:
        ckpt = torch.load(path, weights_only=True)
        edit(ckpt["model"])
        torch.save(ckpt, path)
    return str(path)


# ---------------------------------------------------------------------------- item 1: --labels vs the weights' names


def test_labels_in_another_order_keep_the_weights_classes(tmp_path, warnings_seen):
    """A labels file with the checkpoint's classes in another order used to replace the
    names (every score named by the wrong class); now every output keeps its own class."""
    _, ckpt = nano_classifier(tmp_path / "abc.pt", ABC)
    reversed_file = _labels_file(tmp_path / "reversed.txt", ABC[::-1])
    _, prov = load("classify", weights=ckpt, labels=reversed_file)
    assert prov.labels == ABC
    assert any("another order" in w and "mapped by name" in w for w in warnings_seen), warnings_seen
    # Other spelling (case, underscores), same order: the user's spelling, no note.
    warnings_seen.clear()
    respelled = _labels_file(tmp_path / "respelled.txt", ["Apple", "BANANA", "cherry"])
    assert load("classify", weights=ckpt, labels=respelled)[1].labels == ["Apple", "BANANA", "cherry"]
    assert not any("another order" in w for w in warnings_seen)


def test_labels_naming_other_classes_stop_with_the_differences(tmp_path):
    _, ckpt = nano_classifier(tmp_path / "abc.pt", ABC)
    other = _labels_file(tmp_path / "other.txt", ["apple", "banana", "durian"])
    with pytest.raises(HieraVideoError) as e:
        load("classify", weights=ckpt, labels=other)
    msg = str(e.value)
    assert "\n" not in msg and "only in --labels: 'durian'" in msg and "only in the weights: 'cherry'" in msg
    with pytest.raises(HieraVideoError, match="only in the weights: 'cherry'"):  # fewer names than classes
        load("classify", weights=ckpt, labels=_labels_file(tmp_path / "two.txt", ABC[:2]))
    with pytest.raises(HieraVideoError, match="a class name repeats"):
        load("classify", weights=ckpt, labels=_labels_file(tmp_path / "rep.txt", ["apple", "banana", "banana", "cherry"]))


def test_labels_name_weights_that_carry_no_names(tmp_path):
    """Placeholder names ("class 0", transformers' "LABEL_0") and official files name nothing:
    --labels names them (only the count is checked)."""
    _, placeholder = nano_classifier(tmp_path / "ph.pt", ["class 0", "class 1", "class 2"])
    named = _labels_file(tmp_path / "named.txt", ABC[::-1])
    assert load("classify", weights=placeholder, labels=named)[1].labels == ABC[::-1]
    net, _ = nano_classifier(tmp_path / "x.pt", ABC)
    official = save_official(tmp_path / "official.pth", net)
    assert load("classify", NANO, official, labels=named)[1].labels == ABC[::-1]


def test_predict_with_reordered_labels_names_the_same_class(tmp_path, capsys):
    """End to end: the top class of a video is the same with or without a reordered --labels."""
    from videogen import write_video

    _, ckpt = nano_classifier(tmp_path / "abc.pt", ABC, head_std=1.0)
    video = str(write_video(tmp_path / "v.mp4", num_frames=16, height=64, width=64))
    reversed_file = _labels_file(tmp_path / "reversed.txt", ABC[::-1])
    tops = []
    for extra in ([], ["--labels", reversed_file]):
        code, out, err = run_cli(["predict", video, "--weights", ckpt, "--json", "--workers", "0", "--dtype", "fp32", *extra], capsys)
        assert code == 0, err
        tops.append([(t["index"], t["label"]) for t in json.loads(out)[0]["top"]])
    assert tops[0] == tops[1]


# ---------------------------------------------------------------------------- item 2: the same checks for every task


def _nan(sd, key):
    sd[key].fill_(float("nan"))


@pytest.fixture
def nan_weights(tmp_path):
    """A checkpoint holding NaN for every task (a test case per task in TASKS)."""
    clf, _ = nano_classifier(tmp_path / "ok.pt", ABC)
    with torch.no_grad():
        clf.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    clf_path = str(save_checkpoint(tmp_path / "clf_nan.pt", clf, meta=dict(labels=ABC)))
    mae = hiera_video.create_model("mae_hiera_nano_8x64")
    with torch.no_grad():
        mae.decoder_embed.weight.fill_(float("nan"))
    mae_path = str(save_checkpoint(tmp_path / "mae_nan.pt", mae))
    ava_path = _ava_detector(tmp_path / "ava_nan.pt", lambda sd: _nan(sd, "head.projection.weight"))
    return {"classify": (NANO, clf_path), "features": (NANO, clf_path), "mae": ("mae_hiera_nano_8x64", mae_path),
            "ava": (None, ava_path)}


def test_every_task_refuses_nan_weights(nan_weights):
    """NaN weights gave NaN scores for MAE and AVA (an AVA mAP from NaN scores, exit 0);
    every task in TASKS must refuse them, even with allow_random."""
    from hiera_video.ava.model import load_ava_detector

    assert set(nan_weights) == set(TASKS)  # a new task needs a case here
    for task, (name, path) in nan_weights.items():
        with pytest.raises(HieraVideoError, match="NaN or infinite") as e:
            load(task, name, path, allow_random=True) if task != "ava" else load_ava_detector(path, allow_random_weights=True)
        assert "\n" not in str(e.value), task
    from hiera_video.models.load import HEADS

    assert set(HEADS) == set(TASKS)  # every task says which tensors are its head (none for features)


def test_ava_detector_without_trained_head_is_refused(tmp_path, warnings_seen):
    """A detector file without its head used to fail with a load_state_dict traceback; it is
    now the untrained-head refusal every task gets (allow_random: a warning)."""
    from hiera_video.ava.model import load_ava_detector

    path = _ava_detector(tmp_path / "headless.pt", lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("head.")])
    with pytest.raises(HieraVideoError, match="no trained detection head .*--allow-random-weights"):
        load_ava_detector(path)
    model, _ = load_ava_detector(path, allow_random_weights=True)
    assert any("detections are meaningless" in w for w in warnings_seen), warnings_seen
    # A file that does not fit its saved architecture elsewhere: one line, not a traceback.
    broken = _ava_detector(tmp_path / "broken.pt", lambda sd: sd.pop("backbone.patch_embed.proj.weight"))
    with pytest.raises(HieraVideoError, match="do not fit the architecture"):
        load_ava_detector(broken)


def test_features_need_no_head(tmp_path):
    net, _ = nano_classifier(tmp_path / "x.pt", ABC)
    headless = save_official(tmp_path / "backbone.pth", {k: v for k, v in net.state_dict().items() if not k.startswith("head.")})
    with pytest.raises(HieraVideoError, match="no trained classifier head"):
        load("classify", NANO, headless)
    load("features", NANO, headless)  # no refusal


def test_eval_ava_refuses_nan_weights(ava_set, tmp_path, capsys):
    """It used to score NaN detections: an mAP, exit 0, 'nan' scores in detections.csv."""
    ava_path = _ava_detector(tmp_path / "ava_nan.pt", lambda sd: _nan(sd, "head.projection.weight"), ava_set.label_map)
    code, out, err = run_cli(["eval", "--dataset", "ava", "--root", str(ava_set.root), "--weights", ava_path, "--limit", "2",
                              "--workers", "0", "--dtype", "fp32", "--output", str(tmp_path / "ev"), "--json"], capsys)
    assert code == 2 and "NaN or infinite" in err and "Traceback" not in err, (code, out, err)
    assert not (tmp_path / "ev" / "detections.csv").exists()


# ---------------------------------------------------------------------------- item 7: nameless weights of a built-in size


def test_nameless_weights_of_a_builtin_size_say_which_labels(tmp_path, warnings_seen):
    """An official file given by path (no names) with a 400-class head: the classes are
    'class N' and a warning names --labels kinetics400 (never assumed); with it, they are named."""
    from hiera_video.data.labels import load_labels

    torch.manual_seed(0)
    official = save_official(tmp_path / "k400.pth", hiera_video.create_model(NANO, num_classes=400))
    _, prov = load("classify", NANO, official)
    assert prov.labels[310] == "class 310"
    assert any("--labels kinetics400" in w and "400 classes" in w for w in warnings_seen), warnings_seen
    warnings_seen.clear()
    _, prov = load("classify", NANO, official, labels="kinetics400")
    assert prov.labels == load_labels("kinetics400") and not warnings_seen
    small = save_official(tmp_path / "k5.pth", hiera_video.create_model(NANO, num_classes=5))
    load("classify", NANO, small)
    assert not any("--labels" in w for w in warnings_seen)  # no built-in set has 5 classes: nothing to suggest


@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_help_names_the_builtin_label_sets(command, capsys):
    code, out, _ = run_cli([command, "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    for name in ("kinetics400", "kinetics600", "kinetics700", "ssv2"):
        assert name in text, (command, name)


def test_eval_ava_allows_random_weights_from_the_cli_and_refuses_empty_proposals(ava_set, tmp_path, capsys):
    """--allow-random-weights reaches the AVA loader (a headless detector is refused without it
    and evaluated with it); an empty proposals file scores nothing, which is an error (exit 2)
    as in every eval, not an mAP of 0.0 with exit 0."""
    path = _ava_detector(tmp_path / "headless.pt", lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("head.")],
                         ava_set.label_map)
    base = ["eval", "--dataset", "ava", "--root", str(ava_set.root), "--weights", path, "--limit", "2", "--workers", "0",
            "--dtype", "fp32", "--json"]
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "--allow-random-weights" in err, err
    code, out, err = run_cli(base + ["--allow-random-weights"], capsys)
    assert code == 0 and json.loads(out)["num_keyframes"] == 2, err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, out, err = run_cli(base + ["--allow-random-weights", "--proposals", str(empty), "--output", str(tmp_path / "ev")], capsys)
    assert code == 2 and "nothing to evaluate" in err and "give no person box" in err, (code, out, err)
    assert not (tmp_path / "ev" / "metrics.json").exists()
