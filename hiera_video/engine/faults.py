"""Fault injection for the multi-process tests (never set in normal use).

``HIERA_VIDEO_FAULTS="name@rank[:step],..."`` makes :func:`active` true for that fault on that
rank (at that optimizer step, or at every step without one). The faults the training engine
knows: ``nan_loss`` (the loss becomes NaN), ``diverge`` (the weights change on that rank only),
``unreadable_checkpoint`` (reading the checkpoint on resume fails), ``unshared_run_folder``
(the run folder looks like another node's), ``sigterm`` (the process sends itself SIGTERM after
that step), ``hang`` (the process sleeps inside that step). ``eval`` knows ``sigint`` (the
process sends itself SIGINT after its N-th video, "step" = N). ``eval`` (also AVA) and
``extract`` know ``slow@R:S``: process R sleeps S seconds (a decimal number) before each of
its videos (AVA: keyframes), so that processes finish far apart (:func:`slow`).
"""

from __future__ import annotations

import os
import time

ENV = "HIERA_VIDEO_FAULTS"


def active(name: str, rank: int, step: int | None = None) -> bool:
    for item in os.environ.get(ENV, "").split(","):  # unset: one empty item, naming no fault
        fault, _, where = item.strip().partition("@")
        if fault != name:
            continue
        at_rank, _, at_step = where.partition(":")
        if at_rank and int(at_rank) != rank:
            continue
        if at_step and (step is None or int(at_step) != step):
            continue
        return True
    return False


def slow(rank: int) -> None:
    """Sleep as the ``slow@rank:seconds`` fault says (nothing without it)."""
    for item in os.environ.get(ENV, "").split(","):
        fault, _, where = item.strip().partition("@")
        at_rank, _, seconds = where.partition(":")
        if fault == "slow" and (not at_rank or int(at_rank) == rank):
            time.sleep(float(seconds or 1))
