"""GPU decisions tested on the CPU: which device a torchrun process takes and when the
process group starts (CUDA faked), the precision rules by compute capability, the chunked
attention batch, fused AdamW and the collective timeout setting."""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.nn as nn

from hiera_video import create_model
from hiera_video.engine import distributed
from hiera_video.errors import HieraVideoError

from helpers import nano_classifier, run_cli
from videogen import write_video


class Placed(Exception):
    """Raised when the model first goes to a CUDA device: the test has seen enough."""


@pytest.fixture
def fake_gpus(monkeypatch):
    """4 fake GPUs of compute capability 8.0, torchrun rank 1 with LOCAL_RANK 3. Records
    set_device, init_process_group and the first placement of a module on CUDA (then stops)."""
    events: list[tuple] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: events.append(("set_device", str(torch.device(d)))))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)

    def init_process_group(**kw):
        events.append(("init_process_group", kw["backend"], str(kw.get("device_id")), kw["timeout"]))

    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    real_to = nn.Module.to

    def to(self, *args, **kwargs):
        dev = next((a for a in list(args) + [kwargs.get("device")] if isinstance(a, (str, torch.device))), None)
        if dev is not None and torch.device(dev).type == "cuda":
            events.append(("model.to", str(torch.device(dev))))
            raise Placed()
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", to)
    return events


def expect_order(events):
    assert events[:3] == [
        ("set_device", "cuda:3"),
        ("init_process_group", "nccl", "cuda:3", datetime.timedelta(seconds=distributed.DEFAULT_TIMEOUT_S)),
        ("model.to", "cuda:3"),
    ], events


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    for k in range(2):
        write_video(root / f"v{k}.mp4", num_frames=16, height=64, width=64)
    (root / "list.txt").write_text("v0.mp4 0\nv1.mp4 1\n")
    (root / "labels.txt").write_text("a\nb\n")
    nano_classifier(root / "clf.pt", ["a", "b"])
    from hiera_video.models.checkpoints import save_checkpoint
    from hiera_video.ava.model import build_ava_model

    ava = build_ava_model("hiera_nano_8x64", drop_path_rate=0.0, dropout=0.0)
    save_checkpoint(root / "ava.pt", ava, dict(task="ava", model="hiera_nano_8x64", arch={}, head=dict(dropout=0.0),
                                              label_map={}, preprocessing=dict(num_frames=8, stride=2, crop_size=64,
                                                                               mean=[0.45] * 3, std=[0.225] * 3)))
    return root


def test_eval_takes_local_rank_gpu_after_the_process_group(fake_gpus, media):
    run_cli(["eval", "--dataset", "list", "--root", str(media), "--annotations", str(media / "list.txt"), "--labels",
             str(media / "labels.txt"), "--weights", str(media / "clf.pt")])
    expect_order(fake_gpus)


def test_extract_takes_local_rank_gpu_after_the_process_group(fake_gpus, media, tmp_path):
    run_cli(["extract", str(media / "v0.mp4"), "-o", str(tmp_path / "f"), "--weights", str(media / "clf.pt")])
    expect_order(fake_gpus)


def test_ava_eval_takes_local_rank_gpu_after_the_process_group(fake_gpus, media):
    run_cli(["eval", "--dataset", "ava", "--root", str(media), "--weights", str(media / "ava.pt")])
    expect_order(fake_gpus)


@pytest.mark.parametrize("command", ["finetune", "pretrain", "finetune-ava"])
def test_training_takes_local_rank_gpu_after_the_process_group(fake_gpus, media, tmp_path, command):
    sets = ["data.dataset=list", f"data.root={media}", "data.annotations=list.txt", "data.labels=labels.txt",
            "model.name=hiera_nano_8x64", f"run.output={tmp_path / 'run'}"]
    if command == "pretrain":
        sets = ["data.dataset=list", f"data.root={media}", "data.annotations=list.txt", "model.name=mae_hiera_nano_8x64",
                f"run.output={tmp_path / 'run'}"]
    if command == "finetune-ava":
        sets = ["data.dataset=ava", f"data.root={media}", "model.name=hiera_nano_8x64", f"run.output={tmp_path / 'run'}"]
    argv = [command.removesuffix("-ava")]
    for s in sets:
        argv += ["--set", s]
    run_cli(argv)
    expect_order(fake_gpus)


# ---------------------------------------------------------------------------- precision


@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16)])
def test_auto_precision_needs_native_bf16(monkeypatch, capability, expected):
    """V100 (7.0) and T4 (7.5) report bf16 'supported' (emulated); auto must pick fp16 there."""
    from hiera_video.engine.trainer import precision
    from hiera_video.runtime import autocast_dtype

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = torch.device("cuda", 0)
    assert precision("auto", gpu) == expected and autocast_dtype(gpu) == expected


def test_low_precision_inference_casts_weights_only_on_cpu():
    """GPUs autocast (fp32 weights: norms and softmax stay fp32, fp16 cannot overflow in
    them); the CPU casts weights to bf16 (faster there)."""
    from hiera_video.engine.inference import prepare_inference, run_model
    from hiera_video.runtime import casts_weights

    assert casts_weights(torch.device("cpu"), torch.bfloat16)
    assert not casts_weights(torch.device("cuda", 0), torch.float16)
    assert not casts_weights(torch.device("cuda", 0), torch.bfloat16)
    model = create_model("hiera_nano_8x64", num_classes=3)
    x = torch.randn(1, 3, 8, 64, 64)
    cpu = torch.device("cpu")
    fp32 = prepare_inference(model, cpu, None)
    assert next(fp32.parameters()).dtype == torch.float32
    # fp32 weights with a low dtype run under autocast (as on a GPU) ...
    out = run_model(fp32, x, cpu, torch.bfloat16, fp32)
    assert out.dtype == torch.bfloat16
    # ... and cast weights get cast inputs.
    cast = prepare_inference(create_model("hiera_nano_8x64", num_classes=3), cpu, torch.bfloat16)
    assert next(cast.parameters()).dtype == torch.bfloat16
    assert run_model(cast, x, cpu, torch.bfloat16, cast).dtype == torch.bfloat16


# ---------------------------------------------------------------------------- kernels


def test_attention_batch_is_chunked_past_the_kernel_limit(monkeypatch):
    """Fused SDPA kernels launch one block row per batch entry (at most 65,535); larger
    attention batches are split. Lowering the limit must not change the outputs."""
    from hiera_video.models import hiera

    torch.manual_seed(0)
    model = create_model("hiera_nano_8x64", num_classes=5).eval()
    x = torch.randn(3, 3, 8, 64, 64)
    with torch.no_grad():
        ref = model(x)
        calls = []
        real = hiera.F.scaled_dot_product_attention
        monkeypatch.setattr(hiera, "SDPA_MAX_BATCH", 5)
        monkeypatch.setattr(hiera.F, "scaled_dot_product_attention", lambda q, k, v: calls.append(q.shape[0]) or real(q, k, v))
        out = model(x)
    assert max(calls) <= 5 and len(calls) > len(model.blocks)  # some calls were split
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_fused_adamw_matches_the_loop_implementation():
    from hiera_video.engine.optim import build_optimizer

    torch.manual_seed(0)
    a = create_model("hiera_nano_8x64", num_classes=3).eval()  # eval: no random drop path / dropout
    b = create_model("hiera_nano_8x64", num_classes=3).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 8, 64, 64)
    opts = [build_optimizer(a, "adamw", 1e-3), build_optimizer(b, "adamw", 1e-3, fused=True)]
    assert opts[1].defaults.get("fused") is True
    for model, opt in zip((a, b), opts):
        for _ in range(2):
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5, msg=k)  # updates are ~1e-3


# ---------------------------------------------------------------------------- settings


def test_collective_timeout_setting(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT_S
    # larger than the longest wait the tool itself causes (a hanging decode: --decode-timeout 300 s)
    assert distributed.DEFAULT_TIMEOUT_S > 300
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "42")
    assert distributed.timeout_seconds() == 42.0
    assert distributed.timeout_seconds(7) == 7.0  # the config key wins
    for bad in ("soon", "0", "-3", "inf", "nan"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(HieraVideoError):
            distributed.timeout_seconds()


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(HieraVideoError, match="needs GPU 5 .* 4 GPU"):
        distributed.start("auto")
