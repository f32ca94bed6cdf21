"""Display rotation (phone videos): every backend gives the frames as displayed.

Each case writes the same stamped picture twice with PyAV: once physically turned (the
pixels rotated before encoding, no metadata) and once unrotated with the turn only noted in
the container (display matrix, or the legacy ``rotate`` tag). Both must decode to the same
frames, within codec tolerance, and the probe must report the displayed size.
"""

from __future__ import annotations

import warnings

import av
import numpy as np
import pytest
import videogen as vg

from hiera_video.data.decode import decord_available, open_video
from hiera_video.data.decode import torchcodec_available
from hiera_video.data.orientation import Orientation, from_clockwise, from_display_matrix
from hiera_video.data.probe import probe_open

# Writing a display matrix needs PyAV's VideoStream.set_display_rotation (recent PyAV); reading
# it back needs an FFmpeg that attaches it to decoded frames (7 or later), as recent PyAV bundles.
pytestmark = pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                                reason="this PyAV cannot write display matrices")

H, W = 64, 128  # both sides multiples of 64 px: decord 0.6.0 mis-pads rows of other widths
FRAMES = 8
INDICES = [0, 5, 3, 7]


def _rot(k):
    return lambda img: np.rot90(img, k)


# name -> (file name, metadata-rotated write_video kwargs, the same turn done on the pixels)
CASES = {
    "mp4_ccw90": ("m.mp4", dict(display_rotation=90), _rot(1)),
    "mp4_cw90": ("m.mp4", dict(display_rotation=-90), _rot(-1)),  # what phones held upright write
    "mp4_180": ("m.mp4", dict(display_rotation=180), _rot(2)),
    "mp4_mirror": ("m.mp4", dict(display_hflip=True), np.fliplr),
    "mp4_ccw90_mirror": ("m.mp4", dict(display_rotation=90, display_hflip=True), lambda img: np.fliplr(np.rot90(img, 1))),
    "mkv_cw90": ("m.mkv", dict(display_rotation=-90), _rot(-1)),
    "mkv_180": ("m.mkv", dict(display_rotation=180), _rot(2)),
    "webm_vp9_ccw90": ("m.webm", dict(display_rotation=90, fmt="vp9"), _rot(1)),
    "mkv_rotate_tag_cw90": ("m.mkv", dict(stream_metadata={"rotate": "90"}), _rot(-1)),  # legacy tag, clockwise
}
BACKENDS = ["pyav", pytest.param("decord", marks=pytest.mark.skipif(not decord_available(), reason="decord missing")),
            pytest.param("torchcodec", marks=pytest.mark.skipif(not torchcodec_available(), reason="torchcodec or its FFmpeg libraries missing")),
            "auto"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """name -> (metadata-rotated file, physically rotated file)."""
    out = {}
    for name, (fname, kwargs, turn) in CASES.items():
        d = tmp_path_factory.mktemp(name)
        kwargs = dict(kwargs)
        fmt = kwargs.pop("fmt", "h264")
        noted = vg.write_video(d / ("noted_" + fname), num_frames=FRAMES, height=H, width=W, fmt=fmt, **kwargs)
        turned = vg.write_video(d / ("turned_" + fname), num_frames=FRAMES, height=H, width=W, fmt=fmt, content=turn)
        out[name] = (noted, turned)
    return out


def _frames(path, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "frames used as decoded" warning for right angles
        with open_video(path, backend) as reader:
            return reader.get_frames_numpy(INDICES), (reader.height, reader.width)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_rotated_video_decodes_as_the_physically_rotated_one(pairs, name, backend):
    noted, turned = pairs[name]
    got, size = _frames(noted, backend)
    want, want_size = _frames(turned, "pyav")
    assert size == want_size == want.shape[1:3]  # the displayed size
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16)).mean()
    assert diff < 4.0, f"mean abs difference {diff:.1f} to the physically rotated video"
    # and frame-exact: undoing the turn gives back the stamped indices
    turn = CASES[name][2]
    undo = [o for o in _ORIENTATIONS if np.array_equal(o.apply(turn(_PROBE)), _PROBE)][0]
    assert vg.read_stamps(undo.apply(got)) == INDICES


# all 8 right-angle orientations, and a small asymmetric array to find which one undoes a turn
_ORIENTATIONS = [from_clockwise(90 * k).then(m) for k in range(4) for m in (Orientation(), Orientation(-1, 0, 0, 1))]
_PROBE = np.arange(2 * 3 * 1).reshape(2, 3, 1)


@pytest.mark.parametrize("name", ["mp4_ccw90", "mkv_rotate_tag_cw90", "mp4_180"])
def test_probe_reports_the_displayed_size(pairs, name):
    noted, _ = pairs[name]
    container, _stream, probe = probe_open(noted)
    container.close()
    turned = name != "mp4_180"
    assert (probe.coded_height, probe.coded_width) == (H, W)
    assert (probe.height, probe.width) == ((W, H) if turned else (H, W))
    assert not probe.orientation.is_identity


def test_unrotated_video_is_untouched(tmp_path):
    path = vg.write_video(tmp_path / "plain.mp4", num_frames=4, height=H, width=W)
    container, _stream, probe = probe_open(path)
    container.close()
    assert probe.orientation.is_identity and probe.display_matrix is None and probe.rotate_tag is None
    with open_video(path, "pyav") as reader:
        assert reader.get_frames_numpy([2]).shape == (1, H, W, 3)


def test_a_non_right_angle_is_reported_and_ignored(tmp_path):
    path = vg.write_video(tmp_path / "tilted.mp4", num_frames=4, height=H, width=W, display_rotation=30)
    with pytest.warns(UserWarning, match="rotation of 330 degrees, not a multiple of 90"):
        reader = open_video(path, "pyav")
    with reader:
        frames = reader.get_frames_numpy([1, 2])
    assert frames.shape == (2, H, W, 3) and vg.read_stamps(frames) == [1, 2]


def test_orientation_algebra():
    """The display-matrix convention against numpy's rotations (y down, x right)."""
    img = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    ccw90 = from_display_matrix([0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30])  # PyAV set_display_rotation(90)
    assert np.array_equal(ccw90.apply(img), np.rot90(img, 1)) and str(ccw90) == "rotated 270 degrees clockwise"
    assert np.array_equal(from_clockwise(90).apply(img), np.rot90(img, -1))
    mirror = from_display_matrix([-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30])
    assert np.array_equal(mirror.apply(img), img[:, ::-1]) and mirror.mirrored
    assert from_display_matrix([46341, 46341, 0, -46341, 46341, 0, 0, 0, 1 << 30]) is None  # 45 degrees
    for o in _ORIENTATIONS:
        assert np.array_equal(o.inverse().apply(o.apply(img)), img)
        assert np.array_equal(ccw90.then(o).apply(img), o.apply(ccw90.apply(img)))
    assert len({o for o in _ORIENTATIONS}) == 8
