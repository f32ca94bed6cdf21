"""Output-folder locks (a flock on ``OUT/.lock``: the OS releases it however the process ends) and
ownership: a training run folder's earlier run and sharing checks, and which command owns an eval's folder."""

import errno
import json
import logging
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from hiera_video.engine import distributed
from hiera_video.errors import HieraVideoError, short
from hiera_video.report import atomic_write_text

log = logging.getLogger("hiera_video")
OWNER = ".hiera-video-output"
TRAINING_FILES = (".hiera-video-run", "last.pt", "best.pt", "metrics.jsonl", "config.json", "config.yaml", "curves.png",
                  "bad_videos.csv")
EVAL_OUTPUTS = {  # what each command that scores writes into --output
    "eval": ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "predictions.pt", "failed.csv", "missing.csv"),
    "eval --dataset ava": ("detections.csv", "metrics.json", "per_class.csv"),
    "score": ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png"),
    "score-ava": ("metrics.json", "per_class.csv")}
OTHER_OUTPUTS = ("index.jsonl",)  # extract's
WRITTEN_BY = {"eval": ("protocol", "num_missing"), "score": ("predictions", "agg"), "score-ava": ("groundtruth", "detections")}
EARLIER_RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "metrics.json", "curves.png", "bad_videos.csv", "eval")


def read_json(path: Path) -> tuple[str | None, dict | None]:
    try:
        return (text := path.read_text()), json.loads(text)
    except (OSError, ValueError):  # absent, or being replaced (renames are atomic: rare)
        return None, None


def filesystem_type(path: Path) -> str:
    try:
        target, best, kind = str(Path(path).resolve()), "", "unknown"
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, fields[2]
        return kind
    except (OSError, IndexError):
        return "unknown"


def flock(path: Path, busy: str, who: str = "", nobody: str = "another process", unsupported: str | None = None):
    """An exclusive, non-blocking flock on ``path`` naming this process in the file (None without flock);
    with ``unsupported``, a file system without locks is named in the error, followed by that advice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.seek(0)
        holder = short(f.read(), 200) or nobody
        f.close()
        if unsupported and e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise HieraVideoError(f"cannot lock {path}: the file system there ({filesystem_type(path.parent)}) does not support "
                                  f"file locks ({e.strerror or e}); {unsupported}") from None
        raise HieraVideoError(f"{busy} ({holder}); wait for it to finish or stop it, or choose another --output") from None
    f.truncate(0)
    f.write(f"{who + ', ' if who else ''}pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f


def claim_run_folder(out: Path, ckpt_path: Path, resume: str | None, lock: bool):
    """Rank 0 of a training run: lock the folder (``lock``: run.lock), remove a killed run's temporary
    checkpoints, refuse an earlier run unless ``resume`` continues its last.pt; ``(lock file, resume path)``."""
    out.mkdir(parents=True, exist_ok=True)
    f = flock(out / ".lock", f"{out} is in use by another training run", nobody="a process that wrote no name",
              unsupported="put --output on a local or lock-capable file system, or pass --set run.lock=false "
                          "and make sure no other run writes into this folder") if lock else None
    try:
        for leftover in list(out.glob(".last.pt.*.tmp")) + list(out.glob(".best.pt.*.tmp")):
            leftover.unlink(missing_ok=True)
            log.info("removed %s, left by a run that was killed while writing a checkpoint", leftover.name)
        earlier = [name for name in EARLIER_RUN_FILES if (out / name).exists()]
        path = (ckpt_path if resume == "auto" else Path(resume)) if resume else None
        if resume and resume != "auto" and not path.is_file():
            raise HieraVideoError(f"--resume {resume}: checkpoint not found")
        continuing = path is not None and path.is_file() and path.resolve() == ckpt_path.resolve()
        # only metrics.jsonl: a run stopped before its first checkpoint; --resume auto starts over (its rows dropped)
        if earlier and not continuing and not (resume == "auto" and earlier == ["metrics.jsonl"]):
            how = "continue it with --resume auto" if ckpt_path.is_file() else "it cannot be continued (no last.pt)"
            raise HieraVideoError(f"{out} already holds an earlier training run ({', '.join(earlier)}); {how}, "
                                  "or choose another --output")
    except BaseException:
        if f is not None:
            f.close()
        raise
    return f, (str(path.resolve()) if path is not None and path.is_file() else None)


def check_shared_folder(out: Path, world: distributed.World) -> None:
    """Every rank must read back the token rank 0 writes: the run folder must be shared."""
    if not world.distributed:
        return
    marker, token = out / ".hiera-video-run", None
    with distributed.together(world):
        if world.is_main:
            marker.write_text(token := uuid.uuid4().hex)
    token = distributed.from_main(token, world)
    with distributed.together(world):
        if (marker.read_text() if marker.is_file() else None) != token:
            raise HieraVideoError(f"the run folder {out.resolve()} is not shared: this process on {socket.gethostname()} "
                                  "does not see the file rank 0 wrote there. Put --output on storage every node mounts "
                                  "at the same path")


@contextmanager
def output_claim(output: str | Path | None, world: distributed.World, command: str):
    """Rank 0 of an eval (score, score-ava) holds ``OUTPUT/.lock`` in the block; a folder with another command's
    files is refused (a rerun of this one is allowed), then marked (:data:`OWNER`)."""
    lock = out = None
    if world.is_main and output is not None:
        (out := Path(output)).mkdir(parents=True, exist_ok=True)
        lock = flock(out / ".lock", f"{out} is in use by another run", who=f"hiera-video {command}")
    try:
        if out is not None:
            if foreign := _foreign_files(out, command):
                raise HieraVideoError(f"--output {out} holds {foreign}; eval never writes over another command's "
                                      "files: choose another --output")
            atomic_write_text(out / OWNER, json.dumps(dict(command=command)) + "\n")
        yield
    finally:
        if lock is not None:
            lock.close()


def _foreign_files(out: Path, command: str) -> str | None:
    """What in ``out`` belongs to another command than ``command`` (words for the error), or None."""
    present = lambda names: [n for n in names if os.path.lexists(out / n)]  # noqa: E731
    _, owner = read_json(out / OWNER)
    if isinstance(owner, dict) and owner.get("command") != command:
        names = present(EVAL_OUTPUTS.get(str(owner.get("command")), ()))
        return f"the outputs of 'hiera-video {owner.get('command')}'" + (f" ({', '.join(names)})" if names else "")
    if training := present(TRAINING_FILES):
        return f"a training run's files ({', '.join(training)})"
    others = dict.fromkeys(n for names in EVAL_OUTPUTS.values() for n in names if n not in EVAL_OUTPUTS[command])
    if others := present(others) + present(OTHER_OUTPUTS):
        return f"another command's outputs ({', '.join(others)})"
    if owner is None and os.path.lexists(out / "metrics.json"):  # from before OWNER existed: its keys tell
        _, m = read_json(out / "metrics.json")
        keys = WRITTEN_BY.get(command, ("weights", "split"))
        if not (isinstance(m, dict) and all(k in m for k in keys)
                and (command in WRITTEN_BY or "groundtruth" not in m)):
            return "a metrics.json written by another command"
    return None
