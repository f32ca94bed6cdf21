"""`hiera-video export`: ONNX and torch.export round trips, checked numerically against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import hiera_video.jobs.export as hexport
from hiera_video.models import fused

from helpers import NANO, nano_classifier, run_cli as run

LABELS = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    model, ckpt = nano_classifier(d / "nano.pt", LABELS, head_std=1.0)  # logits of order 1: the tolerance is not trivially met
    return dict(model=model, ckpt=ckpt)


def test_fused_disabled_context():
    x = torch.randn(2, 8)
    with torch.no_grad():
        before = fused.usable(x)
        with fused.disabled():
            assert not fused.usable(x) and fused.is_disabled()
            with fused.disabled():
                assert not fused.usable(x)
            assert fused.is_disabled()
        assert fused.usable(x) == before and not fused.is_disabled()


def test_onnx_round_trip_dynamic_batch(nano, capsys, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "nano.onnx"
    code, out, err = run(["export", "--weights", nano["ckpt"], "--format", "onnx", "-o", str(path), "--dynamic-batch", "--json"], capsys)
    assert code == 0, err
    assert "PASS" in err
    res = json.loads(out)
    assert res["check"]["ran"] and res["check"]["ok"] and res["check"]["batch_sizes"] == [1, 3]
    assert res["check"]["max_abs_diff"] <= res["check"]["tolerance"] and res["opset"] == hexport.DEFAULT_OPSET
    side = json.loads((tmp_path / "nano.onnx.json").read_text())
    assert side["input"] == dict(name="clips", layout="[B, 3, T, H, W]", dtype="float32", shape=["batch", 3, 8, 64, 64], dynamic_batch=True)
    assert side["labels"] == LABELS and side["opset"] == hexport.DEFAULT_OPSET
    pre = side["preprocessing"]
    assert pre["mean"] == [0.45] * 3 and pre["std"] == [0.225] * 3 and pre["num_frames"] == 8 and pre["crop_size"] == 64 and pre["stride"] == 4
    # Independent check: onnxruntime vs the PyTorch model (default inference path) at two batch sizes.
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["clips"] and [o.name for o in sess.get_outputs()] == ["logits"]
    for b in (1, 2):
        x = torch.randn(b, 3, 8, 64, 64)
        with torch.no_grad():
            ref = nano["model"](x)
        got = sess.run(["logits"], {"clips": x.numpy()})[0]
        assert got.shape == (b, len(LABELS))
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4 * max(1.0, float(ref.abs().max())), rtol=0)
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert not any("mkldnn" in o.lower() for o in ops) and ("MatMul" in ops or "Gemm" in ops)


def test_onnx_fixed_batch(nano, capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "fixed.onnx"
    code, out, err = run(["export", "--weights", nano["ckpt"], "--format", "onnx", "-o", str(path)], capsys)
    assert code == 0, err
    side = json.loads((tmp_path / "fixed.onnx.json").read_text())
    assert side["input"]["shape"] == [1, 3, 8, 64, 64] and side["check"]["batch_sizes"] == [1]


def test_torch_export_round_trip_other_size(nano, capsys, tmp_path):
    path = tmp_path / "nano.pt2"
    code, out, err = run(["export", "--weights", nano["ckpt"], "--format", "torch-export", "-o", str(path), "--frames", "4",
                          "--size", "96", "--dynamic-batch"], capsys)
    assert code == 0, err
    program = torch.export.load(str(path))
    for b in (1, 3):
        x = torch.randn(b, 3, 4, 96, 96)
        with torch.no_grad():
            ref = nano["model"](x)  # the original model resamples its position embeddings on the fly
            got = program.module()(x)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    side = json.loads((tmp_path / "nano.pt2.json").read_text())
    assert side["format"] == "torch-export" and side["opset"] is None and side["input"]["shape"] == ["batch", 3, 4, 96, 96]
    assert side["preprocessing"]["num_frames"] == 4 and side["preprocessing"]["crop_size"] == 96 and side["check"]["ok"]


def test_mismatch_fails_and_bad_arguments(nano, capsys, tmp_path, monkeypatch):
    real = hexport.exported_runner

    def broken(fmt, path):
        fn = real(fmt, path)
        return lambda x: fn(x) + 0.5

    monkeypatch.setattr(hexport, "exported_runner", broken)
    pytest.importorskip("onnxruntime")
    code, _, err = run(["export", "--weights", nano["ckpt"], "--format", "onnx", "-o", str(tmp_path / "bad.onnx")], capsys)
    assert code == 1 and "FAIL" in err and "does not match" in err
    assert json.loads((tmp_path / "bad.onnx.json").read_text())["check"]["ok"] is False
    code, _, err = run(["export", "--weights", nano["ckpt"], "--format", "tflite", "-o", str(tmp_path / "x")], capsys)
    assert code == 2 and "onnx or torch-export" in err
    code, _, err = run(["export", "--weights", nano["ckpt"], "--format", "onnx", "-o", str(tmp_path / "x.onnx"), "--frames", "5"], capsys)
    assert code == 2 and "multiple of" in err
    code, _, err = run(["export", "--model", NANO, "--weights", "none", "--format", "onnx", "-o", str(tmp_path / "r.onnx")], capsys)
    assert code == 2 and "allow-random-weights" in err
