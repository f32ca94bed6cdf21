"""Fault injection for the multi-process tests (never set in normal use).

``HIERA_VIDEO_FAULTS="name@rank[:step],..."`` makes :func:`active` true for that fault on that
rank (at that optimizer step, or at every step without one). The faults the training engine
knows: ``nan_loss`` (the loss becomes NaN), ``diverge`` (the weights change on that rank only),
``unreadable_checkpoint`` (reading the checkpoint on resume fails), ``unshared_run_folder``
(the run folder looks like another node's), ``sigterm`` (the process sends itself SIGTERM after
that step), ``hang`` (the process sleeps inside that step). ``eval`` knows ``sigint`` (the
process sends itself SIGINT after its N-th video, "step" = N).
"""

from __future__ import annotations

import os

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
