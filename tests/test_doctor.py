"""`hiera-video doctor`: runs here, JSON shape, statuses and fixes of problem rows."""

from __future__ import annotations

import json
import sys

import torch

from hiera_video.jobs import doctor as doc

from helpers import run_cli as run


EXPECTED = {"hiera-video", "python", "torch", "torchvision", "cuda", "bf16 (CPU)", "PyAV", "decord", "cpu threads",
            "fused CPU kernels", "shared memory", "weights cache disk", "default weights", "onnx", "onnxruntime"}


def test_json_on_this_machine(capsys):
    code, out, err = run(["doctor", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"ok", "summary", "checks"} and data["ok"] is True
    assert set(data["summary"]) == {"ok", "warn", "fail"} and sum(data["summary"].values()) == len(data["checks"])
    names = {c["name"] for c in data["checks"]}
    assert EXPECTED <= names
    for c in data["checks"]:
        assert set(c) == {"name", "value", "status", "fix", "essential"}
        assert c["status"] in doc.STATUSES and c["value"]
        if c["status"] != "ok":
            assert c["fix"], c
    by = {c["name"]: c for c in data["checks"]}
    assert torch.__version__ in by["torch"]["value"] and by["python"]["status"] == "ok"
    assert by["cpu threads"]["value"].startswith(f"torch {torch.get_num_threads()} threads")
    import av

    assert by["PyAV"]["value"].startswith(av.__version__)
    if torch.cuda.is_available():
        assert "bf16 (GPU)" in names


def test_table_output(capsys):
    code, out, err = run(["doctor"], capsys)
    assert code == 0
    assert "hiera-video doctor" in out and "PyAV" in out and "shared memory" in out


def test_problem_rows_have_fixes(tmp_path, monkeypatch):
    shm = doc.check_shm(str(tmp_path), min_size=1 << 62)  # smaller than asked: like docker's 64 MB default
    assert shm.status == "warn" and "--workers 0" in shm.fix and "--shm-size" in shm.fix
    assert doc.check_shm(str(tmp_path / "none")).status == "ok"
    assert doc.check_cache_disk(str(tmp_path / "hub"), min_free=1 << 62).status == "warn"

    monkeypatch.setitem(sys.modules, "decord", None)  # import decord -> ImportError
    rows = {r.name: r for r in doc.check_decoders()}
    assert rows["decord"].status == "warn" and "pip install decord" in rows["decord"].fix and "pyav" in rows["decord"].fix
    assert rows["PyAV"].status == "ok"

    from hiera_video.data import decode

    monkeypatch.setattr(decode, "_torchcodec_state", (None, "torchcodec could not load FFmpeg (libavutil.so.59: not found)"))
    monkeypatch.setattr("importlib.metadata.version", lambda name: "0.17.0")
    tc = doc.check_torchcodec()
    assert tc.status == "warn" and "libavutil.so.59" in tc.value and "apt-get install ffmpeg" in tc.fix
    monkeypatch.setattr(decode, "_torchcodec_state", ("5.1.9-0+deb12u1", None))
    tc = doc.check_torchcodec()
    assert tc.status == "ok" and "FFmpeg 5.1.9-0+deb12u1" in tc.value
    monkeypatch.undo()

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    missing = doc.check_default_weights()
    assert missing.status == "warn" and "--weights" in missing.fix and "hiera_base_16x224.pth" in missing.fix
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "hiera_base_16x224.pth").write_bytes(b"x" * 10)
    assert doc.check_default_weights().status == "ok"

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    ort = {r.name: r for r in doc.check_onnx()}["onnxruntime"]
    assert ort.status == "warn" and "pip install onnxruntime" in ort.fix


def test_exit_code_only_for_essential_failures(capsys, monkeypatch):
    def crashing():
        raise RuntimeError("boom")

    rows = doc.run_checks([doc.check_python, crashing, lambda: doc.Check("x", "bad", "fail", "fix it")])
    assert [r.status for r in rows] == ["ok", "warn", "fail"] and "boom" in rows[1].value
    assert doc.healthy(rows)  # a non-essential failure is reported, not fatal
    monkeypatch.setattr(doc, "CHECKS", [lambda: doc.Check("PyAV", "not installed", "fail", "pip install av", essential=True)])
    code, out, _ = run(["doctor", "--json"], capsys)
    assert code == 1 and json.loads(out)["ok"] is False
