"""``hiera-video finetune --dataset ava`` and ``hiera-video eval --dataset ava`` end to end on
the generated AVA-format set: the detector beats chance mAP, the saved detector evaluates to
the same mAP through ``eval``, training resumes exactly, and bad input gives one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hiera_video.ava.files import read_ava_csv, resolve_label_map
from hiera_video.ava.metrics import evaluate_ava

from helpers import assert_same_weights, run_cli


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(ava, out, *extra: str) -> list[str]:
    """finetune arguments: a 4x64x64 nano Hiera (last stage at stride 16), AdamW, ~50 steps."""
    sets = [
        "data.stride=8", "data.workers=0", "model.weights=null", "model.input_size=[4, 64, 64]", "model.arch={q_pool: 2}",
        "model.drop_path=0.0", "model.head_dropout=0.0", "optim.name=adamw", "optim.lr=4e-3", "optim.base_batch=8",
        "optim.weight_decay=0.01", "optim.layer_decay=null", "optim.clip_grad=null", "optim.epochs=10",
        "optim.warmup_epochs=0", "run.batch_size=8", "run.precision=fp32", "run.val_every_epochs=5", "run.log_every=1",
        *extra,
    ]
    args = ["finetune", "--config", "ava_large", "--root", str(ava.root), "--model", "hiera_nano_8x64", "--output", str(out)]
    for s in sets:
        args += ["--set", s]
    return args


def run(args) -> int:
    return run_cli(args)[0]


def test_finetune_then_eval_beats_chance(ava_set, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny(ava_set, out)) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 50 and m["val_boxes"] == "proposals" and m["num_val_keyframes"] > 0
    assert m["best_val_mAP"] is not None and {r["kind"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())} == {"train", "epoch", "val"}
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"

    # Chance: the same detections with random scores.
    det = read_ava_csv(out / "eval" / "detections.csv", kind="detections")
    lm, gt = resolve_label_map(ava_set.label_map), read_ava_csv(ava_set.val_csv)
    rng = np.random.default_rng(0)
    chance = [evaluate_ava(gt, [r._replace(score=float(rng.random())) for r in det], lm, ava_set.val_exclusions)["mAP"]
              for _ in range(20)]
    assert m["mAP"] > max(chance) and m["mAP"] > np.mean(chance) + 0.15, (m["mAP"], chance)

    # The saved detector carries everything eval needs; same model and data -> same mAP.
    capsys.readouterr()
    assert run(["eval", "--dataset", "ava", "--root", str(ava_set.root), "--weights", str(out / "last.pt"),
                "--output", str(tmp_path / "ev"), "--workers", "0", "--dtype", "fp32", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["mAP"] == pytest.approx(m["mAP"], abs=1e-6)
    assert (tmp_path / "ev" / "detections.csv").read_text() == (out / "eval" / "detections.csv").read_text()
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    per_class = saved["per_class"]
    assert per_class and all("ap" in v and "num_gt" in v for v in per_class.values())
    assert saved["options"]["weights"] == str(out / "last.pt") and saved["options"]["proposal_threshold"] == 0.8  # AvaEvalOptions


def test_exact_resume(ava_set, tmp_path):
    extra = ("optim.epochs=2", "run.val_every_epochs=0", "data.val_annotations=missing_on_purpose.csv")
    assert run(tiny(ava_set, tmp_path / "x", *extra)) != 0  # a named file that is missing is an error
    extra = ("optim.epochs=2", "run.val_every_epochs=0", "data.limit_val=2")
    assert run(tiny(ava_set, tmp_path / "a", *extra)) == 0
    assert run(tiny(ava_set, tmp_path / "b", *extra, "run.halt_after_steps=3")) == 0
    assert run(tiny(ava_set, tmp_path / "b", *extra) + ["--resume", "auto"]) == 0
    assert_same_weights(tmp_path / "a", tmp_path / "b", steps=10)


def test_bad_input_gives_one_line_errors(ava_set, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(ava_set.train_csv.read_text().splitlines()[0] + "\n-5xQ,0902,0.1,0.1\n")
    assert run(tiny(ava_set, tmp_path / "r", f"data.annotations={bad}")) != 0
    err = capsys.readouterr().err
    assert "bad.csv" in err and "line 2" in err and "Traceback" not in err
    # A classifier checkpoint is not a detector.
    assert run(["eval", "--dataset", "ava", "--root", str(ava_set.root), "--weights", str(tmp_path / "nope.pt")]) != 0
    assert "not found" in capsys.readouterr().err


def test_ava_proposals_command_converts_a_pickle_only_on_request(tmp_path, capsys):
    import pickle

    pkl = tmp_path / "props.pkl"
    pkl.write_bytes(pickle.dumps({"vidA,0902": np.array([[0.1, 0.2, 0.5, 0.9, 0.95]]), "vidA,0903": np.zeros((0, 5))}))
    out = tmp_path / "props.csv"
    assert run(["ava-proposals", str(pkl), str(out)]) != 0
    assert "refusing to unpickle" in capsys.readouterr().err and not out.exists()
    with pytest.warns(UserWarning, match="arbitrary code"):
        assert run(["ava-proposals", str(pkl), str(out), "--allow-pickle"]) == 0
    assert out.read_text() == "vidA,0902,0.100000,0.200000,0.500000,0.900000,,0.950000\n"


def test_ddp_two_cpu_processes(ava_set, tmp_path):
    """AVA finetuning under torchrun: 2 gloo processes, each with its shard of every epoch, and
    the validation keyframes split between them and gathered once."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "ddp"
    args = tiny(ava_set, out, "optim.epochs=2", "run.batch_size=4", "run.global_batch=8", "run.val_every_epochs=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "hiera_video.cli.app", *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["processes"] == 2 and m["global_batch"] == 8 and m["accum_steps"] == 1 and m["mAP"] is not None
    # every validation keyframe scored exactly once across the two processes
    from hiera_video.ava.dataset import open_ava_split
    from hiera_video.data.clip_spec import ClipSpec

    val = open_ava_split(ava_set.root, "val", "val", default_proposals=True,
                         clip=ClipSpec(num_frames=4, stride=8, crop_size=64))
    assert m["num_val_keyframes"] == len(val) > 0
