"""Warmup + cosine lr schedule, lr_scale application, exact resume of the step counter."""

import io
import math

import pytest
import torch
from torch import nn

from hiera_video.engine.schedule import Scheduler, apply_lr, lr_at
from hiera_video.errors import HieraVideoError


def test_lr_at_key_points():
    kw = dict(total_steps=110, warmup_steps=10, base_lr=1e-3, min_lr=1e-5)
    assert lr_at(0, **kw) == 0.0
    assert lr_at(5, **kw) == pytest.approx(5e-4)  # linear warmup
    assert lr_at(10, **kw) == pytest.approx(1e-3)  # end of warmup: peak
    assert lr_at(60, **kw) == pytest.approx((1e-3 + 1e-5) / 2)  # half-way through the cosine
    q = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert lr_at(35, **kw) == pytest.approx(q)
    assert lr_at(110, **kw) == pytest.approx(1e-5)  # end
    assert lr_at(500, **kw) == pytest.approx(1e-5)  # past the end: stays at min_lr
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_lr_at_edge_cases():
    assert lr_at(0, 10, 0, 1.0) == pytest.approx(1.0)  # no warmup starts at the peak
    assert lr_at(10, 10, 0, 1.0) == pytest.approx(0.0)
    assert lr_at(3, 5, 10, 1.0) == pytest.approx(0.3)  # warmup longer than the run
    with pytest.raises(HieraVideoError):
        lr_at(0, 0, 0, 1.0)
    with pytest.raises(HieraVideoError):
        lr_at(0, 10, -1, 1.0)


def _optimizer():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [a], "lr_scale": 0.5}, {"params": [b]}], lr=1.0)


def test_apply_lr_uses_lr_scale():
    opt = _optimizer()
    apply_lr(opt, 0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1)


def test_scheduler_steps_and_resumes_exactly():
    kw = dict(total_steps=50, warmup_steps=5, base_lr=0.1, min_lr=0.001)
    opt = _optimizer()
    full = Scheduler(opt, **kw)
    reference = [full.step() for _ in range(50)]
    assert reference == [lr_at(s, **kw) for s in range(50)]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * reference[-1])

    opt1 = _optimizer()
    first = Scheduler(opt1, **kw)
    got = [first.step() for _ in range(17)]
    buf = io.BytesIO()
    torch.save({"sched": first.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)["sched"]
    assert saved["step"] == 17

    opt2 = _optimizer()
    resumed = Scheduler(opt2, **kw)
    resumed.load_state_dict(saved)
    # The optimizer already carries the last applied lr, as in the interrupted run.
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt1.param_groups])
    got += [resumed.step() for _ in range(33)]
    assert got == reference
