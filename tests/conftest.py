"""Fixtures several test files share. A module opts in to ``one_thread`` with
``pytestmark = pytest.mark.usefixtures("one_thread")``."""

import os
import shutil
import tempfile

import pytest
import torch


def pytest_sessionstart(session):
    """CI sets HIERA_VIDEO_TORCHCODEC_TESTS=1 (.ci/run installs FFmpeg): there the torchcodec
    tests must run, so a torchcodec that cannot load stops the run instead of skipping them."""
    if os.environ.get("HIERA_VIDEO_TORCHCODEC_TESTS") == "1":
        from hiera_video.data.decode import torchcodec_available, torchcodec_status

        if not torchcodec_available():
            raise pytest.UsageError(f"HIERA_VIDEO_TORCHCODEC_TESTS=1 but torchcodec cannot be used: {torchcodec_status()[1]}")


def _free_disk(config) -> str:
    where = getattr(config, "_tmp_path_factory", None)
    where = str(where.getbasetemp().parent) if where is not None else tempfile.gettempdir()
    return f"free disk where tests write ({where}): {shutil.disk_usage(where).free / 1e9:.1f} GB"


def pytest_report_header(config):
    """The disk is shared on CI machines: its room is printed at the start and the end of a run
    (the suite needs about 0.5 GB at its peak), so that a full disk reads as one."""
    return _free_disk(config)


def pytest_terminal_summary(terminalreporter, config):
    terminalreporter.write_line(_free_disk(config))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are dominated by per-op overhead: one intra-op thread is as fast or faster,
    and a busy machine (other test processes on the 2 cores) slows multi-threaded OpenMP
    regions down by 5x or more. Module-wide (so module fixtures that train run with it too);
    restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ava_set(tmp_path_factory):
    """The generated AVA-format set that detectors are trained on (12 videos of 8 s, 3 of them
    for validation; seed 0). Made once per session: read it, never write into it."""
    from hiera_video.ava.synthetic import make_synthetic_ava

    return make_synthetic_ava(tmp_path_factory.mktemp("ava"), seed=0, num_videos=12, val_videos=3, seconds=8)
