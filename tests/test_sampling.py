"""Frame-index sampling: Kinetics dense clips, SSv2 segments, AVA keyframes, timeline windows."""

from __future__ import annotations

import pytest
import torch

from hiera_video.data.sampling import (
    clip_span,
    dense_clip_starts,
    dense_indices,
    keyframe_indices,
    segment_indices,
    window_starts,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- dense (Kinetics)


def test_dense_single_test_clip_is_centred_with_exact_stride():
    idx = dense_indices(300, 30.0, 16, 4, mode="test")
    assert idx.dtype == torch.long and idx.shape == (16,)
    assert idx.tolist() == [118 + 4 * k for k in range(16)]  # span 64, delta 236, start 118


def test_dense_five_test_clips_touch_both_ends():
    starts = dense_clip_starts(300, 30.0, 16, 4, num_clips=5)
    assert starts == [0, 59, 118, 177, 236]
    clips = [dense_indices(300, 30.0, 16, 4, mode="test", num_clips=5, clip_idx=i) for i in range(5)]
    assert clips[0][0] == 0
    assert clips[-1][0] + clip_span(30.0) == 300  # the last clip ends at the last frame
    for c, s in zip(clips, starts):
        assert c.tolist() == [s + 4 * k for k in range(16)]


def test_dense_last_start_is_not_short_of_the_end():
    # delta = 250 - 64 = 186 is not a multiple of 4: the last clip still starts at 186
    assert dense_clip_starts(250, 30.0, 16, 4, num_clips=5) == [0, 46, 93, 139, 186]


def test_dense_step_follows_the_video_frame_rate():
    assert clip_span(15.0) == 32
    assert dense_indices(200, 15.0, 16, 4).diff().tolist() == [2] * 15
    assert dense_indices(600, 60.0, 16, 4).diff().tolist() == [8] * 15
    for fps in (29.97, 25.0, 23.976, 12.0):
        idx = dense_indices(1000, fps, 16, 4, mode="test", num_clips=3, clip_idx=2)
        assert (idx.diff() >= 1).all() and idx.max() <= 999
        assert idx[-1] - idx[0] == pytest.approx(15 * 4 * fps / 30, abs=1)


def test_dense_short_video_clamps_and_never_wraps():
    for mode in ("test", "train"):
        idx = dense_indices(20, 30.0, 16, 4, mode=mode, num_clips=3, clip_idx=1, generator=gen())
        assert idx[0] == 0 and idx.max() == 19
        assert (idx.diff() >= 0).all()  # non-decreasing: the tail repeats the last frame
        assert idx.tolist()[-11:] == [19] * 11


def test_dense_one_frame_video():
    assert dense_indices(1, 30.0).tolist() == [0] * 16


def test_dense_train_start_is_uniform_and_reproducible():
    g = gen(1)
    starts = [int(dense_indices(100, 30.0, 8, 4, mode="train", generator=g)[0]) for _ in range(400)]
    assert min(starts) == 0 and max(starts) == 100 - 32  # covers [0, n - span]
    assert len(set(starts)) > 50
    a = dense_indices(500, 30.0, mode="train", generator=gen(7))
    b = dense_indices(500, 30.0, mode="train", generator=gen(7))
    assert torch.equal(a, b)
    assert a.diff().tolist() == [4] * 15


def test_dense_rejects_bad_arguments():
    with pytest.raises(ValueError):
        dense_indices(0, 30.0)
    with pytest.raises(ValueError):
        dense_indices(10, 30.0, mode="val")
    with pytest.raises(ValueError):
        dense_indices(10, 30.0, num_clips=3, clip_idx=3)
    with pytest.raises(ValueError):
        dense_indices(10, 0.0)


# ---------------------------------------------------------------- segments (SSv2)


def test_segment_test_midpoints():
    assert segment_indices(160, 16, mode="test").tolist() == [10 * k + 5 for k in range(16)]


def test_segment_two_views_are_start_and_midpoint():
    v0 = segment_indices(160, 16, mode="test", num_views=2, view_idx=0)
    v1 = segment_indices(160, 16, mode="test", num_views=2, view_idx=1)
    assert v0.tolist() == [10 * k for k in range(16)]
    assert v1.tolist() == [10 * k + 5 for k in range(16)]


def test_segment_train_picks_inside_each_segment():
    g = gen(3)
    seen = set()
    for _ in range(200):
        idx = segment_indices(50, 8, mode="train", generator=g)
        for k, i in enumerate(idx.tolist()):
            assert int(k * 50 / 8) <= i < int((k + 1) * 50 / 8) + (1 if (k + 1) * 50 % 8 else 0)
        seen.add(idx[0].item())
    assert seen == set(range(0, 6))  # first segment is frames 0..5 (50/8 = 6.25)
    a, b = (segment_indices(50, 8, "train", generator=gen(5)) for _ in range(2))
    assert torch.equal(a, b)


def test_segment_short_video_repeats_frames():
    for mode in ("test", "train"):
        idx = segment_indices(5, 16, mode=mode, generator=gen())
        assert idx.min() >= 0 and idx.max() <= 4
        assert (idx.diff() >= 0).all()
        assert set(idx.tolist()) == set(range(5))


# ---------------------------------------------------------------- AVA keyframes


def test_keyframe_clip_is_centred():
    idx = keyframe_indices(100, 1000, 16, 4)
    assert idx.tolist() == list(range(68, 132, 4))
    assert idx[8] == 100


def test_keyframe_clip_clamps_at_both_edges():
    start = keyframe_indices(10, 1000, 16, 4)
    assert start[:7].tolist() == [0, 0, 0, 0, 0, 0, 2]  # -22, -18, ..., -2 clamp to 0
    assert start[8] == 10
    end = keyframe_indices(995, 1000, 16, 4)
    assert end.max() == 999 and end[-5:].tolist() == [999] * 5


def test_ava_keyframe_frame_index():
    from hiera_video.ava.dataset import keyframe_index

    assert keyframe_index(902) == 60
    assert keyframe_index(1798) == 26940


# ---------------------------------------------------------------- timeline windows


def test_windows_cover_the_video_and_last_is_end_aligned():
    assert window_starts(10.0, 4.0, 2.0) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    assert window_starts(9.0, 4.0, 2.5) == [(0.0, 4.0), (2.5, 6.5), (5.0, 9.0)]
    assert window_starts(9.5, 4.0, 4.0) == [(0.0, 4.0), (4.0, 8.0), (5.5, 9.5)]


def test_windows_short_video_and_properties():
    assert window_starts(3.0, 4.0, 2.0) == [(0.0, 3.0)]
    for duration in (4.0, 7.3, 61.0, 3600.0):
        wins = window_starts(duration, 2.133, 1.0)
        assert wins[0][0] == 0.0 and wins[-1][1] == pytest.approx(duration)
        assert all(e - s == pytest.approx(2.133) for s, e in wins)
        assert all(b[0] <= a[1] for a, b in zip(wins, wins[1:]))  # no gaps
    with pytest.raises(ValueError):
        window_starts(10.0, 0.0, 1.0)
