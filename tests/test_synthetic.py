"""The synthetic temporal-order dataset: files, lists, decodability, twins, determinism."""

from pathlib import Path

import av
import numpy as np
import pytest

from hiera_video.data.synthetic import CLASS_NAMES, make_synthetic_dataset, render_video, twin
from hiera_video.errors import HieraVideoError

FRAMES, SIZE = 16, 48


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _lines(path):
    return [line.split() for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    info = make_synthetic_dataset(root, seed=3, num_train_per_class=2, num_val_per_class=1, frames=FRAMES, size=SIZE)
    return root, info


def test_files_lists_and_labels(dataset):
    root, info = dataset
    assert info["num_train"] == 12 and info["num_val"] == 6 and info["classes"] == CLASS_NAMES
    assert (root / "labels.txt").read_text().splitlines() == CLASS_NAMES
    assert len(CLASS_NAMES) == 6
    readme = (root / "README.txt").read_text()
    assert all(name in readme for name in CLASS_NAMES)
    for split, per_class in (("train", 2), ("val", 1)):
        rows = _lines(root / f"{split}.txt")
        assert all(len(r) == 2 for r in rows)
        labels = [int(r[1]) for r in rows]
        assert sorted(labels) == sorted(list(range(6)) * per_class)
        for rel, label in rows:
            assert not Path(rel).is_absolute() and rel.startswith(f"{split}/")
            assert (root / rel).is_file()
            assert CLASS_NAMES[int(label)].replace(" ", "_") in rel


def test_videos_decode_and_match_the_renderer(dataset):
    root, _ = dataset
    rel, label = _lines(root / "train.txt")[7]
    path = root / rel
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.average_rate == 30
    frames = _decode(path)
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8
    # Video i of a class comes from rng (seed, split, label, i); the encode is close to lossless.
    i = int(Path(rel).stem.rsplit("_", 1)[1])
    ref = render_video(int(label), np.random.default_rng([3, 1, int(label), i]), FRAMES, SIZE)
    mse = np.mean((frames.astype(np.float64) - ref) ** 2)
    assert 10 * np.log10(255**2 / mse) > 28  # PSNR in dB


def test_twins_share_frames_but_not_their_order():
    for label in (0, 2, 4):
        fwd = render_video(label, 11, FRAMES, SIZE, noise=False)
        back = render_video(twin(label), 11, FRAMES, SIZE, noise=False)
        assert np.array_equal(back, fwd[::-1])  # exactly the same frames, reversed
        assert not np.array_equal(back, fwd)
        # With noise: (nearly) the same mean frame ...
        a = render_video(label, 11, FRAMES, SIZE).astype(np.float32)
        b = render_video(twin(label), 11, FRAMES, SIZE).astype(np.float32)
        assert np.abs(a.mean(0) - b.mean(0)).mean() < 1.0
        # ... but, where something moves, the noisy twin's frame t matches the clean
        # frame T-1-t, not frame t.
        moving = fwd.std(0).max(-1) > 20  # [H, W]
        assert moving.mean() > 0.02
        for noisy, clean in ((b, fwd), (a, back)):
            direct = np.abs(noisy - clean)[:, moving].mean()
            reversed_ = np.abs(noisy - clean[::-1])[:, moving].mean()
            assert reversed_ < 0.5 * direct, (label, reversed_, direct)


def test_deterministic_for_a_seed(dataset, tmp_path):
    root, _ = dataset
    again = make_synthetic_dataset(tmp_path / "a", seed=3, num_train_per_class=1, num_val_per_class=0, frames=FRAMES, size=SIZE)
    other = make_synthetic_dataset(tmp_path / "b", seed=4, num_train_per_class=1, num_val_per_class=0, frames=FRAMES, size=SIZE)
    rel = "train/receding/receding_0000.mp4"
    assert np.array_equal(_decode(root / rel), _decode(tmp_path / "a" / rel))
    assert not np.array_equal(_decode(root / rel), _decode(tmp_path / "b" / rel))
    # Asking for fewer videos keeps the ones it writes identical (per-video seeding).
    assert _lines(again["train"]) == _lines(root / "train.txt")[:6]
    assert other["seed"] == 4


def test_bad_arguments_and_existing_dataset(dataset, tmp_path):
    root, _ = dataset
    with pytest.raises(HieraVideoError, match="already holds a dataset"):
        make_synthetic_dataset(root, num_train_per_class=1, num_val_per_class=0, frames=FRAMES, size=SIZE)
    with pytest.raises(HieraVideoError, match="even"):
        make_synthetic_dataset(tmp_path / "c", size=33)
    with pytest.raises(HieraVideoError, match="at least one video"):
        make_synthetic_dataset(tmp_path / "d", num_train_per_class=0, num_val_per_class=0)


def test_objects_are_brighter_than_the_background_in_every_channel():
    # The property that makes the set learnable from scratch in minutes (see the module
    # docstring): wherever something moves, the object is bright and the background dark
    # in all three channels, not just different in hue.
    from hiera_video.data.synthetic import BG_RANGE, OBJECT_RANGE

    for label in range(len(CLASS_NAMES)):
        video = render_video(label, 5 + label, FRAMES, SIZE, noise=False).astype(np.float32)
        lo, hi = video.min(0), video.max(0)  # [H, W, 3]: background and object at that pixel
        changes = hi - lo
        moving = changes.max(-1) > 1.0  # [H, W]
        assert moving.mean() > 0.02, label
        # Every channel of a moving pixel changes (none is left flat by a hue-only contrast) ...
        assert (changes[moving].min(-1) > 0.0).all(), label
        # ... and where an object fully covers a pixel, it is bright in all channels over a
        # background that is dark in all channels (but for pixels an object already
        # partly covered in the first frame).
        covered = moving & (hi.min(-1) >= OBJECT_RANGE[0] - 1)
        assert covered.sum() > 0.3 * moving.sum(), label
        assert (lo[covered].max(-1) <= BG_RANGE[1] + 1).mean() > 0.9, label
