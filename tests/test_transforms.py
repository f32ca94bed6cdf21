"""Clip transforms: test-time resize/crops/normalise, decode-once multi-view, training augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import videogen as vg

from hiera_video.data.clip_spec import ClipSpec
from hiera_video.data.decode import VideoReader, decord_available, open_video
from hiera_video.data.decode import torchcodec_available
from hiera_video.data.sampling import dense_indices, segment_indices
from hiera_video.data.transforms import (
    RANDAUG_OPS,
    TrainTransform,
    apply_randaug_op,
    crop_boxes,
    make_views,
    normalize,
    rand_augment,
    random_erasing,
    random_resized_crop,
    random_resized_crop_params,
    resize_short_side,
    spatial_crops,
    ssv2_flip_label,
)

BACKENDS = ["pyav", pytest.param("decord", marks=pytest.mark.skipif(not decord_available(), reason="decord missing")),
            pytest.param("torchcodec", marks=pytest.mark.skipif(not torchcodec_available(), reason="torchcodec or its FFmpeg libraries missing"))]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_clip(t=4, h=40, w=56, seed=0):
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=gen(seed))


# ---------------------------------------------------------------- test time


def test_resize_short_side_shapes():
    out = resize_short_side(random_clip(2, 48, 64), 24)
    assert out.shape == (2, 24, 32, 3) and out.dtype == torch.uint8
    assert resize_short_side(random_clip(2, 96, 64), 32).shape == (2, 48, 32, 3)
    assert resize_short_side(random_clip(1, 256, 340), 224).shape == (1, 224, 297, 3)  # floor, as SlowFast
    clip = random_clip(2, 24, 30)
    assert resize_short_side(clip, 24) is clip  # already the right size
    flat = torch.full((2, 48, 64, 3), 77, dtype=torch.uint8)
    assert (resize_short_side(flat, 30) == 77).all()


def test_crop_boxes_along_the_long_side():
    assert crop_boxes(224, 298, 224, 3) == [(0, 0), (0, 37), (0, 74)]  # left / centre / right
    assert crop_boxes(298, 224, 224, 3) == [(0, 0), (37, 0), (74, 0)]  # top / centre / bottom
    assert crop_boxes(230, 300, 224, 1) == [(3, 38)]  # centre
    assert crop_boxes(230, 300, 224, 3)[1] == (3, 38)  # short side centred too
    with pytest.raises(ValueError):
        crop_boxes(100, 300, 224, 3)


def test_spatial_crops_take_the_right_pixels():
    cols = torch.arange(10, dtype=torch.uint8).view(1, 1, 10, 1).expand(2, 4, 10, 3).contiguous()
    left, centre, right = spatial_crops(cols, 4, 3)
    assert left[0, 0, :, 0].tolist() == [0, 1, 2, 3]
    assert centre[0, 0, :, 0].tolist() == [3, 4, 5, 6]
    assert right[0, 0, :, 0].tolist() == [6, 7, 8, 9]


def test_normalize_layout_and_values():
    clip = torch.zeros((2, 3, 4, 3), dtype=torch.uint8)
    clip[0, 0, 0] = torch.tensor([255, 0, 128], dtype=torch.uint8)
    out = normalize(clip)
    assert out.shape == (3, 2, 3, 4) and out.dtype == torch.float32
    assert out[:, 0, 0, 0].tolist() == pytest.approx([(1 - 0.45) / 0.225, -2.0, (128 / 255 - 0.45) / 0.225], abs=1e-5)
    assert out[:, 1].flatten().tolist() == pytest.approx([-2.0] * 36, abs=1e-5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, s = torch.tensor(mean).view(3, 1, 1, 1), torch.tensor(std).view(3, 1, 1, 1)
    ref = (clip.permute(3, 0, 1, 2).float() / 255 - m) / s
    assert torch.allclose(normalize(clip, mean, std), ref, atol=1e-5)


class FakeReader(VideoReader):
    """Frame i is uniformly i (mod 256); counts get_frames calls."""

    backend = "fake"

    def __init__(self, num_frames=300, fps=30.0, height=48, width=64):
        self.path, self.num_frames, self.fps = "fake.mp4", num_frames, fps
        self.height, self.width, self.codec = height, width, "none"
        self.duration = num_frames / fps
        self.substituted_frames, self._closed, self.calls = 0, False, []

    def _decode_sorted(self, unique):
        self.calls.append(list(unique))
        return np.stack([np.full((self.height, self.width, 3), i % 256, np.uint8) for i in unique])


def test_make_views_decodes_the_union_once_and_orders_temporal_major():
    reader = FakeReader()
    views, infos = make_views(reader, ClipSpec("dense", 8, 4, temporal_views=5, spatial_views=3, crop_size=32))
    assert views.shape == (15, 3, 8, 32, 32) and views.dtype == torch.float32
    assert len(reader.calls) == 1  # ONE decode for all 15 views
    per_clip = [dense_indices(300, 30.0, 8, 4, mode="test", num_clips=5, clip_idx=c).tolist() for c in range(5)]
    expected_union = sorted({i for clip in per_clip for i in clip})
    assert reader.calls[0] == expected_union
    for v, info in enumerate(infos):
        assert (info.temporal_index, info.spatial_index) == divmod(v, 3)
        assert info.frame_indices == per_clip[info.temporal_index]
        values = views[v, 0, :, 0, 0] * 0.225 + 0.45  # uniform frames: undo the normalisation
        assert torch.allclose(values * 255, torch.tensor(info.frame_indices, dtype=torch.float32) % 256, atol=1e-3)
    assert [i.crop_box[:2] for i in infos[:3]] == [(0, 0), (0, 5), (0, 10)]  # 32x42 after resize
    assert infos[0].resized_size == (32, 42)


def test_make_views_segment_sampling():
    reader = FakeReader(num_frames=64)
    views, infos = make_views(reader, ClipSpec("segment", 8, temporal_views=2, spatial_views=3, crop_size=32))
    assert views.shape == (6, 3, 8, 32, 32) and len(reader.calls) == 1
    assert infos[0].frame_indices == segment_indices(64, 8, "test", 2, 0).tolist() == list(range(0, 64, 8))
    assert infos[3].frame_indices == list(range(4, 64, 8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_make_views_matches_per_view_decoding(tmp_path, backend):
    """Decode-once output == open/decode/resize/crop/normalise per view."""
    path = vg.write_video(tmp_path / "v", num_frames=45, height=48, width=64)
    views, infos = make_views(path, ClipSpec("dense", 8, 2, temporal_views=3, spatial_views=3, crop_size=32, backend=backend))
    for v, info in enumerate(infos):
        with open_video(path, backend) as reader:
            clip = resize_short_side(reader.get_frames(info.frame_indices), 32)
        crop = spatial_crops(clip, 32, 3)[info.spatial_index]
        assert torch.equal(views[v], normalize(crop))


@pytest.mark.parametrize("backend", BACKENDS)
def test_make_views_frames_are_exact(tmp_path, backend):
    """Square video, crop = full frame: every view frame carries the stamp of its index."""
    path = vg.write_video(tmp_path / "sq", num_frames=50, height=64, width=64)
    spec = ClipSpec(num_frames=8, stride=4, temporal_views=5, spatial_views=1, crop_size=64, backend=backend)
    views, infos = make_views(path, spec)
    assert spec.num_views == 5 and views.shape == (5, 3, 8, 64, 64)
    for v, info in enumerate(infos):
        frames = (views[v].permute(1, 2, 3, 0) * 0.225 + 0.45).mul(255).round().clamp(0, 255).to(torch.uint8)
        assert vg.read_stamps(frames) == info.frame_indices
    # span 32 of 50 frames: starts 0, 4, 9, 13, 18 (the last clip ends at 18 + 7 * 4 = 46)
    assert [i.frame_indices[0] for i in infos] == [0, 4, 9, 13, 18] and infos[-1].frame_indices[-1] == 46


def test_make_views_spy_on_real_reader(tmp_path, monkeypatch):
    path = vg.write_video(tmp_path / "spy", num_frames=40)
    calls = []
    with open_video(path, "pyav") as reader:
        original = reader.get_frames
        monkeypatch.setattr(reader, "get_frames", lambda idx: calls.append(list(idx)) or original(idx))
        make_views(reader, ClipSpec(num_frames=4, stride=2, temporal_views=4, spatial_views=3, crop_size=32))
    assert len(calls) == 1 and calls[0] == sorted(set(calls[0]))


# ---------------------------------------------------------------- training


def test_ssv2_flip_label():
    pairs = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    for a, b in pairs.items():
        assert ssv2_flip_label(a) == b and ssv2_flip_label(ssv2_flip_label(a)) == a
    assert ssv2_flip_label(5) == 5
    t = torch.tensor([86, 87, 5, 166, 94])
    assert ssv2_flip_label(t).tolist() == [87, 86, 5, 167, 93]


def test_random_resized_crop_params_obey_scale_and_ratio():
    g = gen(0)
    for _ in range(300):
        top, left, h, w = random_resized_crop_params(120, 160, (0.08, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 160
        assert 0.08 * 0.9 <= h * w / (120 * 160) <= 1.0
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    a, b = (random_resized_crop_params(120, 160, generator=gen(4)) for _ in range(2))
    assert a == b


def test_random_resized_crop_is_the_same_for_every_frame():
    frame = random_clip(1, 60, 80, seed=1)
    clip = frame.repeat(6, 1, 1, 1)
    out, (top, left, h, w) = random_resized_crop(clip, 32, generator=gen(2))
    assert out.shape == (6, 32, 32, 3)
    assert all(torch.equal(out[0], out[t]) for t in range(6))
    single, params = random_resized_crop(frame, 32, generator=gen(2))
    assert params == (top, left, h, w) and torch.equal(single[0], out[0])


@pytest.mark.parametrize("op", RANDAUG_OPS)
def test_each_randaug_op_is_clip_consistent(op):
    x = random_clip(1, 32, 40, seed=3).permute(0, 3, 1, 2).repeat(4, 1, 1, 1)
    out = apply_randaug_op(x, op, 7.0, -1.0)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert all(torch.equal(out[0], out[t]) for t in range(4))


def test_histogram_ops_use_whole_clip_statistics():
    dark = torch.randint(0, 100, (1, 3, 16, 16), dtype=torch.uint8, generator=gen(0))
    bright = dark + 150
    x = torch.cat([dark, bright])
    out = apply_randaug_op(x, "AutoContrast", 7.0)
    # One stretch for the whole clip (per channel over all frames), not one per frame:
    # the dark frame stays dark instead of being stretched to [0, 255] on its own.
    assert out[0].max() <= 110 and out[1].min() >= 140
    lo = x.amin(dim=(0, 2, 3), keepdim=True).float()
    hi = x.amax(dim=(0, 2, 3), keepdim=True).float()
    expected = ((x.float() - lo) * 255 / (hi - lo)).clamp(0, 255)
    assert (out.float() - expected).abs().max() <= 1.0
    eq = apply_randaug_op(x, "Equalize", 7.0)
    assert eq[0].float().mean() < eq[1].float().mean()


def test_rand_augment_reproducible_and_consistent():
    clip = random_clip(1, 32, 32, seed=5).repeat(3, 1, 1, 1)
    a, ops_a = rand_augment(clip, generator=gen(11))
    b, ops_b = rand_augment(clip, generator=gen(11))
    assert ops_a == ops_b and torch.equal(a, b)
    assert all(torch.equal(a[0], a[t]) for t in range(3))
    for op, m, sign in ops_a:
        assert op in RANDAUG_OPS and 0 <= m <= 10 and sign in (-1.0, 1.0)


def test_random_erasing_same_rectangle_in_every_frame():
    x = torch.zeros((3, 5, 40, 40))
    out, box = random_erasing(x, p=1.0, generator=gen(1))
    top, left, h, w = box
    changed = out != 0
    assert changed[:, :, top : top + h, left : left + w].float().mean() > 0.99
    assert not changed[:, :, :top].any() and not changed[:, :, top + h :].any()
    assert all(torch.equal(out[:, 0], out[:, t]) for t in range(5))
    same, none = random_erasing(x, p=0.0, generator=gen(1))
    assert none is None and torch.equal(same, x)


def test_train_transform_output_reproducibility_and_consistency():
    clip = random_clip(1, 60, 80, seed=9).repeat(8, 1, 1, 1)
    for seed in range(12):
        out, label, params = TrainTransform(ClipSpec(crop_size=32), seed=seed, erase_p=0.5)(clip, 3)
        assert out.shape == (3, 8, 32, 32) and out.dtype == torch.float32 and label == 3
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(8)), params
    a = TrainTransform(ClipSpec(crop_size=32), seed=42)(clip)
    b = TrainTransform(ClipSpec(crop_size=32), seed=42)(clip)
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    g = gen(42)
    c = TrainTransform(ClipSpec(crop_size=32), generator=g)(clip)
    assert torch.equal(a[0], c[0])


def test_train_transform_flip_modes():
    clip = random_clip(2, 40, 40, seed=2)
    plain = dict(clip=ClipSpec(crop_size=40), scale=(1.0, 1.0), ratio=(1.0, 1.0), randaug=False, erase_p=0.0)
    never, label, params = TrainTransform(flip="none", flip_p=1.0, seed=0, **plain)(clip, 86)
    assert label == 86 and not params["flipped"]
    assert torch.allclose(never, normalize(clip))
    flipped, label, params = TrainTransform(flip="ssv2", flip_p=1.0, seed=0, **plain)(clip, 86)
    assert label == 87 and params["flipped"]
    assert torch.allclose(flipped, normalize(clip.flip(2)))
    _, label, _ = TrainTransform(flip="random", flip_p=1.0, seed=0, **plain)(clip, 86)
    assert label == 86  # plain flip keeps the label
    with pytest.raises(ValueError):
        TrainTransform(flip="sometimes")
