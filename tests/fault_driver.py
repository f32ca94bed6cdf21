"""``hiera-video ARGS`` with injected faults, for the multi-process tests (hiera_video holds no
test hook): ``python tests/fault_driver.py ARGS`` patches in the faults of
``HIERA_VIDEO_FAULTS="name@rank[:step],..."`` (:func:`inject`) on the process of that rank
(``RANK``; any rank without one), at that optimizer step (every step without one).

Training: ``nan_loss`` (the loss becomes NaN), ``hang`` (the process sleeps inside that step),
``diverge`` (the weights change on that rank only), ``sigterm`` (the process sends itself
SIGTERM in that step), ``unreadable_checkpoint`` (reading the checkpoint on resume fails),
``unshared_run_folder`` (the run folder looks like another node's). ``eval`` (also
finetuning's validation): ``sigint`` (SIGINT after the N-th video, "step" = N). ``eval`` (also
AVA, and validation) and ``extract``: ``slow@R:S``, process R sleeps S seconds before each of
its videos (AVA: keyframes), so that processes finish far apart.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ENV = "HIERA_VIDEO_FAULTS"
DRIVER = [sys.executable, str(Path(__file__).resolve())]  # + the CLI's arguments


def inject(spec: str, setattr=setattr) -> None:
    """Patch the faults of ``spec`` for this process's rank in (``setattr``: e.g. pytest's
    ``monkeypatch.setattr``, to undo them after a test)."""
    import torch

    from hiera_video.ava import evaluate as ava_evaluate
    from hiera_video.engine.trainer import Trainer
    from hiera_video.errors import HieraVideoError
    from hiera_video.jobs import evaluate, extract

    rank = int(os.environ.get("RANK", "0"))
    faults = []  # (name, step or None) of this rank
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, where = item.partition("@")
        at_rank, _, step = where.partition(":")
        if not at_rank or int(at_rank) == rank:
            faults.append((name, step or None))

    def hit(name: str, step: int | None = None) -> bool:
        return any(n == name and (s is None or (step is not None and float(s) == step)) for n, s in faults)

    def nap() -> None:
        for n, s in faults:
            if n == "slow":
                time.sleep(float(s or 1))

    fit, prepare, restore, read_text = Trainer.fit, Trainer.prepare, Trainer._restore, Path.read_text

    def faulty_fit(self, items, collate, loss_fn, *args, **kwargs):
        def faulty_loss(model, batch):
            step = self.state.step + 1
            if hit("hang", step):
                time.sleep(3600)
            loss, n = loss_fn(model, batch)
            return (loss * float("nan") if hit("nan_loss", step) else loss), n

        return fit(self, items, collate, faulty_loss, *args, **kwargs)

    def faulty_prepare(self, *args, **kwargs):
        out = prepare(self, *args, **kwargs)
        scheduler_step = self.scheduler.step

        def step(*a, **k):  # after the step's backward and agreement: the step's weights and signals
            lr = scheduler_step(*a, **k)
            if hit("diverge", self.state.step + 1):
                with torch.no_grad():
                    next(self.model.parameters()).add_(1e-3)
            if hit("sigterm", self.state.step + 1):
                os.kill(os.getpid(), signal.SIGTERM)
            return lr

        self.scheduler.step = step
        return out

    def faulty_restore(self, path):
        if hit("unreadable_checkpoint"):
            raise HieraVideoError(f"cannot read checkpoint {path}: permission denied (injected fault)")
        return restore(self, path)

    def other_node_marker(self, *args, **kwargs):
        return "another node's token" if self.name == ".hiera-video-run" else read_text(self, *args, **kwargs)

    def slow_views(views_in_order):
        def views(*args, **kwargs):
            stream = views_in_order(*args, **kwargs)
            try:
                for n, item in enumerate(stream, 1):
                    nap()
                    yield item
                    if hit("sigint", n):
                        os.kill(os.getpid(), signal.SIGINT)
            finally:
                stream.close()
        return views

    def slow_jobs(process_all):
        def jobs(self, *args):
            stream = process_all(self, *args)
            try:
                while True:
                    nap()
                    yield next(stream)
            except StopIteration:
                return
            finally:
                stream.close()
        return jobs

    def slow_keyframes(*args, **kwargs):
        for batch, good, bad in torch.utils.data.DataLoader(*args, **kwargs):
            for _ in range(len(good) + len(bad)):
                nap()
            yield batch, good, bad

    setattr(Trainer, "fit", faulty_fit)
    setattr(Trainer, "prepare", faulty_prepare)
    setattr(Trainer, "_restore", faulty_restore)
    if hit("unshared_run_folder"):
        setattr(Path, "read_text", other_node_marker)
    setattr(evaluate, "_views_in_order", slow_views(evaluate._views_in_order))
    setattr(extract.Extractor, "_process_all", slow_jobs(extract.Extractor._process_all))
    setattr(ava_evaluate, "DataLoader", slow_keyframes)


if __name__ == "__main__":
    if os.environ.get(ENV):
        inject(os.environ[ENV])
    from hiera_video.cli.app import main

    main(sys.argv[1:])
