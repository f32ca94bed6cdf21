"""benchmarks/gpu_check.py without a GPU: its flash-vs-math comparison (run on CPU, math kernel
against CPU flash or a broken stand-in), its summary rows and exit code, its backend choice,
and that it imports and answers --help without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NANO = "hiera_nano_8x64"
REAL_SDPA = F.scaled_dot_product_attention


def sdpa_replaced_by(fn):
    """A candidate context: every attention call the model makes goes to ``fn``."""
    return lambda: mock.patch.object(F, "scaled_dot_product_attention", fn)


def zeroed(q, k, v, **kw):
    return torch.zeros_like(REAL_SDPA(q, k, v, **kw))


def keys_mispaired(q, k, v, **kw):
    """Each value paired with its neighbour's key: invisible to uniform attention."""
    return REAL_SDPA(q, k.roll(1, dims=2), v, **kw)


@pytest.fixture(scope="module")
def nano():
    model = gpu_check.prepare_model(NANO)
    return model, gpu_check.make_input(model)


@pytest.fixture(autouse=True)
def fresh_results(monkeypatch):
    monkeypatch.setattr(gpu_check, "RESULTS", [])


# ---------------------------------------------------------------------------- the comparison


def test_zeroed_attention_fails_the_check(nano):
    model, x = nano
    result = gpu_check.compare_attention(model, x, sdpa_replaced_by(zeroed))
    assert not result.ok
    assert result.worst[1] > 3 * gpu_check.REL_TOL, result
    with pytest.raises(RuntimeError, match="flash differs from math"):
        gpu_check.check_attention(model, x, sdpa_replaced_by(zeroed))


def test_old_metric_could_not_see_zeroed_attention(nano):
    """What the check used to compare: softmax probabilities of the logits, against 2e-2. The
    same broken kernel moves them by far less, so that check passed whatever flash did."""
    model, x = nano
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(x).float().softmax(-1)
        with sdpa_replaced_by(zeroed)():
            broken = model(x).float().softmax(-1)
    assert (broken - ref).abs().max().item() < 2e-2


def test_flash_kernel_passes(nano):
    """The unmodified path: the CPU flash kernel against the math kernel, bf16 autocast, as the
    GPU run does; well inside the tolerance."""
    model, x = nano
    result = gpu_check.compare_attention(model, x, gpu_check.kernel(SDPBackend.FLASH_ATTENTION))
    assert result.ok, result
    assert result.worst[1] < gpu_check.REL_TOL / 2, result
    assert set(result.errors) == {"stage 1", "stage 2", "stage 3", "stage 4", "logits"}
    assert "max rel err" in gpu_check.check_attention(model, x, gpu_check.kernel(SDPBackend.FLASH_ATTENTION))


def test_same_kernel_twice_is_exact(nano):
    model, x = nano
    result = gpu_check.compare_attention(model, x, gpu_check.math_kernel)
    assert result.ok and result.worst[1] == 0.0, result


def test_sharpening_makes_a_key_value_mixup_visible(nano):
    """Random init: attention is nearly uniform, so pairing keys with the wrong values barely
    changes anything and passes. With the check's sharpened attention it fails."""
    import hiera_video

    sharp, x = nano
    torch.manual_seed(0)
    plain = hiera_video.create_model(NANO).eval()
    assert gpu_check.compare_attention(plain, x, sdpa_replaced_by(keys_mispaired)).ok
    assert not gpu_check.compare_attention(sharp, x, sdpa_replaced_by(keys_mispaired)).ok


def test_sharpening_changes_only_query_and_key_weights():
    import hiera_video

    torch.manual_seed(0)
    plain = hiera_video.create_model(NANO)
    sharp = gpu_check.prepare_model(NANO)
    for (name, a), (_, b) in zip(plain.state_dict().items(), sharp.state_dict().items()):
        if name.endswith("attn.qkv.weight"):
            d = a.shape[0] // 3
            assert not torch.equal(a[: 2 * d], b[: 2 * d]), name
            assert torch.equal(a[2 * d:], b[2 * d:]), name  # values untouched
        else:
            assert torch.equal(a, b), name
    again = gpu_check.prepare_model(NANO)  # fixed seed: the same weights every time
    assert all(torch.equal(a, b) for a, b in zip(sharp.state_dict().values(), again.state_dict().values()))


def test_image_and_mae_models_are_compared_too():
    """Image models take [B, 3, H, W]; MAE models are compared on encoder latents and decoder
    predictions under one fixed mask."""
    image = gpu_check.prepare_model("hiera_tiny_224")
    x = gpu_check.make_input(image, batch=1)
    assert x.shape == (1, 3, 224, 224)
    assert not gpu_check.compare_attention(image, x, sdpa_replaced_by(zeroed), dtype=None).ok
    mae = gpu_check.prepare_model("mae_hiera_nano_8x64")
    x = gpu_check.make_input(mae)
    assert x.shape == (2, 3, 8, 64, 64)
    ok = gpu_check.compare_attention(mae, x, gpu_check.kernel(SDPBackend.FLASH_ATTENTION))
    assert ok.ok and set(ok.errors) == {"encoder latents", "decoder predictions"}, ok
    assert not gpu_check.compare_attention(mae, x, sdpa_replaced_by(zeroed)).ok


def test_reference_in_slices_compares_every_sample(nano):
    """The batch-200 row runs the reference in slices: a candidate wrong on the last sample only
    must still fail."""
    model, x = nano
    x = torch.cat([x, x])  # 4 clips, reference in slices of 1
    assert gpu_check.compare_attention(model, x, gpu_check.math_kernel, ref_batch=1).ok

    def last_sample_zeroed(q, k, v, **kw):
        out = REAL_SDPA(q, k, v, **kw).clone()  # [groups, heads, tokens, dim], groups sample-major
        out[-(out.shape[0] // x.shape[0]):] = 0
        return out

    assert not gpu_check.compare_attention(model, x, sdpa_replaced_by(last_sample_zeroed), ref_batch=1).ok


def test_rel_error_edge_cases():
    a = torch.ones(3)
    assert gpu_check.rel_error(a, a) == 0.0
    assert gpu_check.rel_error(a * 1.05, a) == pytest.approx(0.05)
    assert gpu_check.rel_error(torch.tensor([1.0, float("nan")]), torch.ones(2)) == float("inf")
    assert gpu_check.rel_error(torch.ones(2), torch.ones(3)) == float("inf")
    assert gpu_check.rel_error(torch.zeros(2), torch.zeros(2)) == 0.0


# ---------------------------------------------------------------------------- rows and exit code


def test_exit_code_from_results():
    assert gpu_check.exit_code([]) == 1  # nothing checked is not a pass
    assert gpu_check.exit_code([("a", "ok", ""), ("b", "skip", "")]) == 0
    assert gpu_check.exit_code([("a", "ok", ""), ("b", "FAIL", "boom")]) == 1


def test_record_turns_every_step_into_a_row(capsys):
    assert gpu_check.record("fine", lambda: "3 things")
    assert not gpu_check.record("broken", lambda: 1 / 0)
    assert not gpu_check.record("after broken", lambda: "never", needs=["broken"])
    assert gpu_check.record("after fine", lambda: None, needs=["fine"])
    rows = {n: (s, d) for n, s, d in gpu_check.RESULTS}
    assert rows["fine"][0] == "ok" and rows["fine"][1].startswith("3 things")
    assert rows["broken"] == ("FAIL", "division by zero")
    assert rows["after broken"] == ("skip", "not run: needs broken")
    assert rows["after fine"][0] == "ok"
    table = gpu_check.format_summary(gpu_check.RESULTS)
    assert all(name in table for name in rows) and "4 rows, 1 FAIL" in table
    assert gpu_check.exit_code(gpu_check.RESULTS) == 1


def test_failed_data_generation_is_a_row_not_a_crash(monkeypatch, tmp_path):
    """Data generation used to run outside the rows: one exception ended the script with no
    summary. Now it is a FAIL row and the steps needing the data are skip rows."""
    import hiera_video.ava.synthetic as synthetic_ava

    def no_subprocess(*a, **k):
        raise RuntimeError("exit 1: synth exploded")

    def no_ava(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(gpu_check, "_run", no_subprocess)
    monkeypatch.setattr(synthetic_ava, "make_synthetic_ava", no_ava)
    gpu_check.multi_process_checks(tmp_path, gpu_count=1)
    rows = {n: (s, d) for n, s, d in gpu_check.RESULTS}
    assert rows["generate list data (hiera-video synth)"] == ("FAIL", "exit 1: synth exploded")
    assert rows["generate AVA data"] == ("FAIL", "disk full")
    assert rows["torchrun finetune [gloo]"][0] == "skip"
    assert rows["torchrun eval [gloo]"] == ("skip", "not run: needs torchrun finetune [gloo]")
    assert rows["torchrun eval --dataset ava [gloo]"][0] == "skip"
    assert rows["torchrun all_reduce [gloo]"][0] == "FAIL"
    assert len(rows) == 8 and gpu_check.exit_code(gpu_check.RESULTS) == 1


def test_failure_reason_skips_torchrun_report():
    """A failed torchrun ends its stderr with its own report (a row of '='): the row must
    show the program's error, not that."""
    stderr = "\n".join([
        "error: rank 0: weights file not found: run/nope.pt",
        "W1206 01:02:50.010000 1 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 2 closing signal",
        "E1206 01:02:50.075000 1 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 2) local_rank: 1",
        "Traceback (most recent call last):",
        '  File "run.py", line 386, in launch_agent',
        "    raise ChildFailedError(",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "=" * 60, "hiera_video.cli.app FAILED", "  exitcode  : 2 (pid: 3)", "=" * 60,
    ])
    assert gpu_check.failure_reason(stderr) == "error: rank 0: weights file not found: run/nope.pt"
    child = "[rank1]: RuntimeError: CUDA error: boom"
    assert gpu_check.failure_reason(child + "\n" + "=" * 60) == child
    assert gpu_check.failure_reason("just this\n" + "-" * 10) == "just this"
    assert gpu_check.failure_reason("") == "(no stderr)"


def test_backend_plan():
    assert gpu_check.dist_plan(1)[0] == "gloo" and "fallback" in gpu_check.dist_plan(1)[1]
    assert gpu_check.dist_plan(2)[0] == "nccl"
    assert gpu_check.dist_plan(8)[0] == "nccl"
    assert gpu_check.dist_env("nccl")[gpu_check.BACKEND_ENV] == "nccl"


def test_nccl_rows_when_two_gpus(monkeypatch, tmp_path):
    calls = []

    def fake_run(cmd, workdir, env, timeout):
        calls.append((cmd, env.get(gpu_check.BACKEND_ENV)))
        raise RuntimeError("not here")

    monkeypatch.setattr(gpu_check, "_run", fake_run)
    monkeypatch.setattr("hiera_video.ava.synthetic.make_synthetic_ava", lambda *a, **k: 1 / 0)
    gpu_check.multi_process_checks(tmp_path, gpu_count=2)
    names = [n for n, _, _ in gpu_check.RESULTS]
    assert "torchrun all_reduce [nccl]" in names and "torchrun finetune [nccl]" in names
    torchruns = [env for cmd, env in calls if "torch.distributed.run" in cmd]
    assert torchruns and all(env == "nccl" for env in torchruns)


# ---------------------------------------------------------------------------- the script


def test_help_without_cuda():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--skip" in proc.stdout and "flash" in proc.stdout


def test_main_without_cuda_prints_summary_and_fails(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 1
    out = capsys.readouterr().out
    assert "CUDA device" in out and "FAIL" in out and "1 rows, 1 FAIL" in out


def test_allreduce_check_on_cpu_gloo(tmp_path, monkeypatch):
    """The all_reduce worker under a real 2-process torchrun (gloo, CPU here): the row reports
    the backend the process group ran."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    detail = gpu_check.allreduce_check("gloo", tmp_path, timeout=120)
    assert detail.startswith("backend gloo, 2 ranks on cpu, cpu, sums right"), detail


@pytest.mark.parametrize("ratio, status", [(1.02, "ok"), (1.2, "FAIL")])
def test_ddp_row_fails_above_the_goal_and_is_a_skip_on_one_gpu(monkeypatch, tmp_path, ratio, status):
    """The DDP row reads bench_ddp.py's JSON: a trainer more than 5% slower than the bare DDP
    loop is a FAIL row; one GPU (no nccl pair) gives a skip row, not a silent pass."""
    def fake_bench(cmd, workdir, env, timeout):
        assert env[gpu_check.BACKEND_ENV] == "nccl" and "--device" in cmd
        out = Path(cmd[cmd.index("--json") + 1])
        out.write_text(json.dumps(dict(ratio=ratio, ranks=[dict(trainer_s=0.102, bare_s=0.1, no_comm_s=0.08, buckets_per_step=9,
                                                                 trainer_calls_per_step={"all_reduce": 1.0})])))
        return ""

    monkeypatch.setattr(gpu_check, "_run", fake_bench)
    monkeypatch.setattr(gpu_check, "RESULTS", [])
    gpu_check.ddp_step_checks(tmp_path, gpu_count=2)
    gpu_check.ddp_step_checks(tmp_path, gpu_count=1)
    (name, got, detail), (_, skipped, why) = gpu_check.RESULTS
    assert name == "DDP step: trainer / bare [nccl]" and got == status, detail
    assert "exposed communication 20 ms" in detail
    assert skipped == "skip" and "needs 2 GPUs" in why



def test_nvdec_row_compares_on_cpu(tmp_path, monkeypatch):
    """The NVDEC row's comparison, run CPU against CPU: every file, difference 0; a decoder
    off by more than the tolerance fails the row."""
    from hiera_video.data import decode

    if not decode.torchcodec_available():
        pytest.skip("torchcodec or its FFmpeg libraries missing")
    detail = gpu_check.nvdec_check(tmp_path, device="cpu")
    assert "max abs diff 0" in detail and "fallback" not in detail
    real = decode.open_video

    def skewed(path, backend="auto", device="cpu"):  # "skewed": frames halved
        reader = real(path, backend)
        if device == "skewed":
            frames = reader.get_frames
            reader.get_frames = lambda idx: frames(idx) // 2
        return reader

    monkeypatch.setattr(decode, "open_video", skewed)
    with pytest.raises(RuntimeError, match="differ from the CPU's by up to"):
        gpu_check.nvdec_check(tmp_path, device="skewed")
