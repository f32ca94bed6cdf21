"""Mixup / CutMix on clips [B, C, T, H, W] with label smoothing (timm semantics)."""

import pytest
import torch
import torch.nn.functional as F

from hiera_video.engine.mixup import (
    Mixup,
    MixupConfig,
    SoftTargetCrossEntropy,
    smooth_one_hot,
)

K = 10


def _batch(b=4, t=3, h=16, w=20):
    # Clip i is filled with the value i + 1 everywhere, so every pixel tells its source.
    clips = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, 3, t, h, w).contiguous()
    return clips, torch.tensor([0, 3, 7, 9][:b])


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_smoothing_values_without_mixing():
    clips, y = _batch()
    mix = Mixup(K, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.1)
    assert not mix.enabled
    out, soft = mix(clips, y)
    assert out is clips  # untouched
    off, on = 0.1 / K, 1 - 0.1 + 0.1 / K
    expected = torch.full((4, K), off)
    expected[torch.arange(4), y] = on
    torch.testing.assert_close(soft, expected)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    # Evaluation config: plain one-hot.
    ev = Mixup.from_config(MixupConfig(mixup_alpha=0.0, cutmix_alpha=0.0, prob=0.0, switch_prob=0.0, label_smoothing=0.0), K)
    _, hard = ev(clips, y)
    torch.testing.assert_close(hard, F.one_hot(y, K).float())


def test_mixup_blends_pixels_and_targets():
    clips, y = _batch()
    mix = Mixup(K, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, generator=_gen(0))
    out, soft = mix(clips, y)
    lam = mix.last["lam"]
    assert mix.last["mode"] == "mixup" and 0.0 <= lam <= 1.0
    torch.testing.assert_close(out, lam * clips + (1 - lam) * clips.flip(0))
    smooth = smooth_one_hot(y, K, 0.1)
    torch.testing.assert_close(soft, lam * smooth + (1 - lam) * smooth.flip(0))
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    assert torch.equal(clips, _batch()[0])  # the input is not modified


def test_cutmix_box_same_in_every_frame_and_lambda_corrected():
    clips, y = _batch(t=5)
    for seed in range(20):
        mix = Mixup(K, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1, generator=_gen(seed))
        out, soft = mix(clips, y)
        assert mix.last["mode"] == "cutmix"
        lam, (y0, y1, x0, x1) = mix.last["lam"], mix.last["box"]
        pasted = out != clips  # [B, C, T, H, W]; the flipped partner always differs here
        box = torch.zeros(16, 20, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        assert torch.equal(pasted, box.expand_as(pasted))  # same box in every sample, channel, frame
        assert torch.equal(out[..., y0:y1, x0:x1], clips.flip(0)[..., y0:y1, x0:x1])
        # lam is the area actually kept, after the box was clipped to the frame.
        assert lam == pytest.approx(1 - box.sum().item() / (16 * 20))
        smooth = smooth_one_hot(y, K, 0.1)
        torch.testing.assert_close(soft, lam * smooth + (1 - lam) * smooth.flip(0))
        torch.testing.assert_close(soft.sum(1), torch.ones(4))


def test_lambda_correction_on_a_clipped_box():
    # Centre drawn at the corner: only a quarter of the nominal box lies inside the frame.
    class CornerRng:
        def integers(self, low, high):
            return 0

    from hiera_video.engine.mixup import cutmix_box

    y0, y1, x0, x1 = cutmix_box(16, 16, lam=0.75, rng=CornerRng())  # nominal box 8x8
    assert (y0, y1, x0, x1) == (0, 4, 0, 4)  # clipped: 16 px pasted instead of 64
    assert 1 - (y1 - y0) * (x1 - x0) / 256 == pytest.approx(0.9375)


def test_switch_probability_and_determinism():
    clips, y = _batch()
    mix = Mixup(K, generator=_gen(123))  # paper defaults: mixup 0.8, cutmix 1.0, switch 0.5
    modes = []
    for _ in range(200):
        mix(clips, y)
        modes.append(mix.last["mode"])
    n_cut = modes.count("cutmix")
    assert modes.count("none") == 0 and 60 < n_cut < 140
    a = Mixup.from_config(MixupConfig(), K, generator=_gen(7))
    b = Mixup.from_config(MixupConfig(), K, generator=_gen(7))
    for _ in range(5):
        oa, sa = a(clips, y)
        ob, sb = b(clips, y)
        assert torch.equal(oa, ob) and torch.equal(sa, sb)
    # prob = 0: never mixes, but still smooths.
    never = Mixup(K, prob=0.0, label_smoothing=0.1, generator=_gen(0))
    out, soft = never(clips, y)
    assert out is clips and never.last["mode"] == "none"
    torch.testing.assert_close(soft, smooth_one_hot(y, K, 0.1))


def test_global_rng_is_used_without_generator():
    clips, y = _batch()
    torch.manual_seed(5)
    first = Mixup(K)(clips, y)
    torch.manual_seed(5)
    second = Mixup(K)(clips, y)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_soft_target_cross_entropy_matches_torch():
    logits = torch.randn(6, K, generator=_gen(1))
    y = torch.randint(0, K, (6,), generator=_gen(2))
    soft = smooth_one_hot(y, K, 0.1)
    loss = SoftTargetCrossEntropy()(logits, soft)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1))
    torch.testing.assert_close(SoftTargetCrossEntropy()(logits, y), F.cross_entropy(logits, y))
    # bf16 logits are promoted to float32 for the loss.
    assert SoftTargetCrossEntropy()(logits.bfloat16(), soft).dtype == torch.float32
