"""Model EMA: the averaging rule, non-float buffers, devices, wrappers, state dicts."""

import io

import pytest
import torch
from torch import nn

from hiera_video.engine.ema import ModelEMA


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def _perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def test_ema_rule_and_frozen_copy():
    model = _model()
    ema = ModelEMA(model, decay=0.9)
    assert ema.module is not model and not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    _perturb(model, 1)
    model.train()(torch.randn(16, 4))  # updates BN running stats and num_batches_tracked
    ema.update(model)
    sd, msd = ema.module.state_dict(), model.state_dict()
    for k, v in sd.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * msd[k])
        else:  # integer buffers are copied, not averaged
            assert torch.equal(v, msd[k])
    assert sd["1.num_batches_tracked"].item() == 1
    assert ema.num_updates == 1
    # The model itself is untouched and still trainable.
    assert all(p.requires_grad for p in model.parameters())


def test_decay_limits():
    model = _model()
    keep = ModelEMA(model, decay=1.0)
    follow = ModelEMA(model, decay=0.0)
    start = {k: v.clone() for k, v in keep.module.state_dict().items()}
    _perturb(model, 2)
    keep.update(model)
    follow.update(model)
    for k, v in keep.module.state_dict().items():
        assert torch.equal(v, start[k])
    for k, v in follow.module.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])


def test_repeated_updates_converge_geometrically():
    model = _model()
    ema = ModelEMA(model, decay=0.5)
    w0 = ema.module[0].weight.clone()
    _perturb(model, 3)
    target = model[0].weight.detach().clone()
    for _ in range(3):
        ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, target + (w0 - target) * 0.5**3)


def test_wrapped_model_and_device():
    model = _model()
    ema = ModelEMA(nn.DataParallel(model), decay=0.9, device="cpu")
    assert isinstance(ema.module, nn.Sequential)
    assert ema.module[0].weight.device.type == "cpu"
    _perturb(model, 4)
    ema.update(nn.DataParallel(model))
    ema.update(torch.compile(model))  # compiled wrapper: unwrapped, never called
    assert ema.num_updates == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_ema_of_cuda_model():
    model = _model().cuda()
    ema = ModelEMA(model, decay=0.9, device="cpu")
    assert ema.module[0].weight.device.type == "cpu"
    before = ema.module[0].weight.clone()
    _perturb(model, 5)
    ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, 0.9 * before + 0.1 * model[0].weight.detach().cpu())


def test_state_dict_roundtrip_weights_only():
    model = _model()
    ema = ModelEMA(model, decay=0.99)
    _perturb(model, 6)
    ema.update(model)
    ema.update(model)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = ModelEMA(_model(seed=1), decay=0.99)
    other.load_state_dict(state)
    assert other.num_updates == 2
    for k, v in other.module.state_dict().items():
        assert torch.equal(v, ema.module.state_dict()[k])
    # Continuing from the restored EMA gives the same result as the uninterrupted one.
    ema.update(model)
    other.update(model)
    for k, v in other.module.state_dict().items():
        assert torch.equal(v, ema.module.state_dict()[k])
