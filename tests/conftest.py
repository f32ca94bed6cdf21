"""Fixtures several test files share. A module opts in with
``pytestmark = pytest.mark.usefixtures("one_thread")``."""

import pytest
import torch


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
