"""Per-process result files: how ``eval`` (also AVA) and ``extract`` keep every finished video
when processes end at different times, die or are killed, and how ``--resume`` continues.

Layout: ``OUT/.partial/`` holds ``.lock`` (rank 0's flock), ``protocol.json`` (what the results
depend on; ``--resume`` must match it field by field) and one ``run{N}/`` per run with rank 0's
``token`` (every process must read it: OUT is shared), ``rank{R}-of-{W}.records`` (append-only
results), ``rank{R}-of-{W}.json`` (pid, host, done/total, "working" | "finished" | "failed") and
rank 0's ``outcome.json``.

Records: a 24-byte header (magic, key = dataset index, payload length, CRC-32) and a
``torch.save`` payload read back with ``weights_only=True`` (nothing unpickled); flushed per video,
fsynced every few seconds, so SIGKILL loses at most one video; a torn tail is ignored.

Waiting needs no collective timeout: processes rewrite their state file as they go; rank 0 waits
for every "finished" (saying whom it waits for every 30 s) and names a process whose file has not
changed for longer than ``run.dist_timeout`` or whose pid is gone on its host. A heartbeat thread
keeps rank 0's file fresh while it merges; the others wait for ``outcome.json``. A failure or a
SIGINT in any process is echoed through the files so every process stops with one message.
A run that ends normally removes ``.partial``; an interrupted or failed one leaves it for --resume.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import struct
import threading
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from hiera_video.engine import distributed
from hiera_video.engine.output_lock import flock
from hiera_video.engine.output_lock import read_json as _read_json
from hiera_video.errors import HieraVideoError, Interrupted
from hiera_video.report import atomic_write_text

log = logging.getLogger("hiera_video")

PARTIAL = ".partial"
PROTOCOL = "protocol.json"
OUTCOME = "outcome.json"
_MAGIC = b"HVR1"
_HEAD = struct.Struct("<4sqQI")  # magic, key, payload length, crc32 of the payload
SAY_EVERY_S = 30.0  # how often rank 0 says whom it waits for
SYNC_EVERY_S = 10.0  # how often the records are fsynced (they are flushed after every video)



def loads(payload: bytes):
    """A record's payload, read without unpickling (``torch.load(weights_only=True)``)."""
    return torch.load(io.BytesIO(payload), weights_only=True)


def read_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(key, payload)`` of every complete record, in order, up to a torn or corrupt tail."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return
    pos = 0
    while pos + _HEAD.size <= len(data):
        magic, key, n, crc = _HEAD.unpack_from(data, pos)
        start, end = pos + _HEAD.size, pos + _HEAD.size + n
        if magic != _MAGIC or end > len(data) or zlib.crc32(data[start:end]) != crc:
            return
        yield key, data[start:end]
        pos = end


class RecordWriter:
    """This process's ``.records`` file, appended to."""

    def __init__(self, path: Path):
        self.path, self._f, self._synced = Path(path), open(path, "ab"), time.monotonic()

    def append(self, key: int, obj) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        payload = buf.getvalue()
        self._f.write(_HEAD.pack(_MAGIC, int(key), len(payload), zlib.crc32(payload)) + payload)
        self._f.flush()  # in the page cache: survives the process being killed
        if time.monotonic() - self._synced > SYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's weights (names, dtypes, shapes, bytes): the same content, whatever the file."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def list_fingerprint(items) -> str:
    """sha256 of a list of JSON-able items (a dataset's videos and labels, keyframes...)."""
    return hashlib.sha256(json.dumps(list(items), default=str).encode()).hexdigest()


def protocol_differences(old: dict, new: dict) -> list[str]:
    """``"key: old -> new"`` for every field that differs (sha256 values shortened)."""

    def show(v):
        if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
            return f"sha256 {v[:12]}..."
        return json.dumps(v)

    out = []
    for k in list(old) + [k for k in new if k not in old]:
        a, b = json.loads(json.dumps(old.get(k))), json.loads(json.dumps(new.get(k)))
        if a != b:
            out.append(f"{k}: {show(a)} -> {show(b)}")
    return out


def _host() -> str:
    """Host name and boot id (a pid means something only on its host)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _start_ticks(pid: int) -> str | None:
    """When ``pid`` started (``/proc``; None where unknown): tells a reused id apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    """Whether ``pid`` (on this host) still runs: not gone, not a zombie, not reused."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and (started is None or fields[19] == started)


def _runs(root: Path) -> list[Path]:
    runs = [p for p in root.glob("run*") if p.is_dir() and p.name[3:].isdigit()]
    return sorted(runs, key=lambda p: int(p.name[3:]))


def _earlier_keys(root: Path) -> list[int]:
    """Keys (dataset indices) with a complete record in any earlier run, in first-seen order."""
    return list(dict.fromkeys(key for run in _runs(root) for path in sorted(run.glob("*.records"))
                              for key, _ in read_records(path)))


def _error(text: str, interrupted: bool) -> distributed.Agreed:
    """The error every process raises for ``text`` (already agreed: no collective follows)."""
    return (distributed.AgreedInterrupt if interrupted else distributed.Agreed)(text)


def _described(e: BaseException, rank: int) -> tuple[str, bool] | None:
    """``e`` as ``("rank R: reason", interrupted)`` to share, or None when it needs no sharing."""
    if isinstance(e, distributed.Agreed) or rank < 0:
        return None
    text, interrupted = distributed._describe(e)
    return (text if text.startswith("rank ") else f"rank {rank}: {text}"), interrupted


def _raise(failure: BaseException, e: BaseException):
    if failure is e:
        raise e
    raise failure from e


class ShardFiles:
    """This process's side of a run's result files (made by :func:`open_shard_files`);
    ``earlier``: the keys done by earlier runs (taken as they are)."""

    def __init__(self, root: Path, world: distributed.World, run: int, earlier: list[int], timeout: float,
                 say: Callable[[str], None], what: str, resume_hint: str):
        self.root, self.world, self.dir = root, world, root / f"run{run}"
        self.earlier, self._earlier_set = earlier, set(earlier)
        self.timeout, self.say, self.what, self.resume_hint = timeout, say, what, resume_hint
        self.poll = min(1.0, max(0.05, timeout / 30))  # seconds between two looks at the files
        self.check_every = min(2.0, max(self.poll, timeout / 4))  # between two looks while working
        self.write_every = min(1.0, timeout / 6)  # between two state writes while working
        self.name = f"rank{world.rank}-of-{world.world_size}"
        self.lock, self.writer, self._beating = None, None, None
        self._state_lock = threading.Lock()
        self._state = dict(rank=world.rank, pid=os.getpid(), host=_host(), started=_start_ticks(os.getpid()),
                           state="working", done=0, total=0, beat=0, interrupted=False)
        self._written, self._checked = 0.0, time.monotonic()

    def _state_path(self, rank: int) -> Path:
        return self.dir / f"rank{rank}-of-{self.world.world_size}.json"

    def _write_state(self, **changes) -> None:
        with self._state_lock:
            self._state.update(changes)
            atomic_write_text(self._state_path(self.world.rank), json.dumps(self._state) + "\n")
            self._written = time.monotonic()

    def mine(self, n: int) -> list[int]:
        """This process's share (every world_size-th) of the keys ``0..n-1`` no earlier run did."""
        todo = [i for i in range(n) if i not in self._earlier_set]
        mine = todo[self.world.rank :: self.world.world_size]
        self.start(len(mine))
        return mine

    def start(self, total: int) -> None:
        """This process has ``total`` videos to do."""
        self._write_state(total=int(total))

    def add(self, key: int, obj) -> None:
        """Keep one video's result (a record, flushed at once)."""
        self.writer.append(key, obj)
        self._state["done"] += 1
        if time.monotonic() - self._written >= self.write_every:
            self._write_state()

    def should_stop(self) -> bool:
        """Every few seconds while working: True when a SIGINT stopped another process; raises
        the error of a process that failed. The others watch rank 0, which repeats what it sees."""
        now = time.monotonic()
        if now - self._checked < self.check_every:
            return False
        self._checked = now
        ranks = range(1, self.world.world_size) if self.world.is_main else [0]
        for r in ranks:
            _, s = _read_json(self._state_path(r))
            if s and s.get("state") == "failed":
                self._echo_failure(s)
            if s and s.get("interrupted"):
                return True
        return False

    def _echo_failure(self, s: dict):
        text, interrupted = s.get("error") or f"rank {s.get('rank')} failed", bool(s.get("interrupted"))
        if self.world.is_main:  # the others watch rank 0 only
            self._write_state(state="failed", error=text, interrupted=interrupted)
        raise _error(text, interrupted)

    def finish(self, **totals) -> None:
        """This process's share is done (or interrupted): records synced, state "finished" with ``totals``."""
        with guard(self):
            self.writer.sync()
            if self.world.is_main:
                self._start_heartbeat()
            self._write_state(state="finished", **totals)

    def fail(self, e: BaseException) -> BaseException:
        """The exception to raise for ``e`` ending this process's share, recorded as "failed" so that
        every process stops with the same message (``e`` itself for one process or an agreed error)."""
        described = _described(e, self.world.rank if self.world.distributed else -1)
        if described is None:
            return e
        text, interrupted = described
        try:
            self._write_state(state="failed", error=text, interrupted=interrupted)
        except OSError:
            pass
        return _error(text, interrupted)

    def _start_heartbeat(self) -> None:
        """Rank 0, from the end of its share to its outcome: rewrite its state every few seconds."""
        stop = self._beating = threading.Event()
        every = max(0.05, min(30.0, self.timeout / 6))

        def beat():
            while not stop.wait(every):
                try:
                    self._write_state(beat=self._state["beat"] + 1)
                except OSError:
                    pass

        threading.Thread(target=beat, name="hiera-video-heartbeat", daemon=True).start()

    def _stop_heartbeat(self) -> None:
        if self._beating is not None:
            self._beating.set()
            self._beating = None

    def _check_alive(self, rank: int, text: str | None, s: dict | None, seen: dict, now: float) -> None:
        """Raise (after recording it) when ``rank`` died or stopped making progress."""
        last = seen.get(rank)
        if last is None or last[0] != text:
            seen[rank] = (text, now)
            last = seen[rank]
        same_host = s is not None and s.get("host") == self._state["host"]
        dead = same_host and not _alive(int(s["pid"]), s.get("started"))
        if not dead and now - last[1] <= self.timeout:
            return
        left = f"{int(s.get('total', 0)) - int(s.get('done', 0))} {self.what} left" if s else "never started"
        why = "died" if dead else (
            f"stopped making progress: nothing for {now - last[1]:.0f} s, longer than the collective timeout "
            f"(run.dist_timeout / {distributed.TIMEOUT_ENV})"
        )
        where = f"rank {rank}" + (f" (pid {s.get('pid')} on {str(s.get('host', '?')).split('/')[0]})" if s else "")
        text = f"{where} {why} ({left}); the finished results are kept in {self.root}: {self.resume_hint}"
        if self.world.is_main:
            self._write_state(state="failed", error=text, interrupted=False)
        raise _error(text, False)

    def collect(self) -> tuple[dict[int, object], list[dict]]:
        """Rank 0: wait until every process finished, then read this run's records and the earlier
        runs' of :attr:`earlier`: ``({key: payload object}, [every process's final state])``."""
        with guard(self):
            return self._collect()

    def _collect(self) -> tuple[dict[int, object], list[dict]]:
        seen: dict[int, tuple] = {}
        said, interrupts = -SAY_EVERY_S, 0
        while True:
            try:
                now = time.monotonic()
                states = [_read_json(self._state_path(r)) for r in range(self.world.world_size)]
                pending = []
                for r, (text, s) in enumerate(states):
                    if r == 0:
                        continue
                    if s and s.get("state") == "failed":
                        self._echo_failure(s)
                    if s and s.get("interrupted") and not self._state["interrupted"]:
                        self._write_state(interrupted=True)  # a SIGINT there: the others stop too
                    if not s or s.get("state") != "finished":
                        pending.append((r, text, s))
                if not pending:
                    break
                for r, text, s in pending:
                    self._check_alive(r, text, s, seen, now)
                if now - said >= SAY_EVERY_S:
                    said = now
                    self.say(f"waiting for {len(pending)} of {self.world.world_size} processes: " + ", ".join(
                        f"rank {r}: {int(s.get('total', 0)) - int(s.get('done', 0))} {self.what} left" if s else f"rank {r}: not started"
                        for r, _, s in pending))
                time.sleep(self.poll)
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts > 1:
                    raise self.fail(Interrupted(
                        f"interrupted twice while waiting for the other processes; the finished results are kept in "
                        f"{self.root}: {self.resume_hint}")) from None
                self.say("SIGINT: asking every process to stop after its current video (again to stop waiting)")
                self._write_state(interrupted=True)
        results: dict[int, object] = {}
        for key, payload in self._records():
            results.setdefault(key, loads(payload))
        return results, [dict(self._state)] + [s for _, s in states[1:]]

    def _records(self) -> Iterator[tuple[int, bytes]]:
        for r in range(self.world.world_size):
            yield from read_records(self.dir / f"rank{r}-of-{self.world.world_size}.records")
        for run in _runs(self.root):
            if run != self.dir:
                for path in sorted(run.glob("*.records")):
                    yield from ((k, p) for k, p in read_records(path) if k in self._earlier_set)

    def wait_for_main(self) -> int | None:
        """The other processes, after :meth:`finish`: rank 0's exit code, or its error."""
        seen: dict[int, tuple] = {}
        interrupts = 0
        while True:
            try:
                _, outcome = _read_json(self.dir / OUTCOME)
                if outcome is not None:
                    if outcome.get("error"):
                        raise _error(outcome["error"], bool(outcome.get("interrupted")))
                    return outcome.get("code")
                text, s = _read_json(self._state_path(0))
                if s and s.get("state") == "failed":
                    self._echo_failure(s)
                self._check_alive(0, text, s, seen, time.monotonic())
                time.sleep(self.poll)
            except KeyboardInterrupt:  # rank 0 hears it too and decides
                interrupts += 1
                if interrupts > 1:
                    raise

    def release(self, code: int | None) -> None:
        """Rank 0, outputs written: the others may end now with ``code``."""
        self._stop_heartbeat()
        atomic_write_text(self.dir / OUTCOME, json.dumps(dict(code=code)) + "\n")

    def release_error(self, e: BaseException) -> BaseException:
        """Rank 0's report ended with ``e``: every process ends with its message (returned to raise)."""
        self._stop_heartbeat()
        described = _described(e, 0 if self.world.distributed else -1)
        if described is None:
            return e
        text, interrupted = described
        atomic_write_text(self.dir / OUTCOME, json.dumps(dict(error=text, interrupted=interrupted)) + "\n")
        return _error(text, interrupted)

    def remove(self) -> None:
        """Rank 0, after a run that ended normally (the results are in the outputs)."""
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def close(self) -> None:
        self._stop_heartbeat()
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                pass
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def open_shard_files(out_dir: str | Path, world: distributed.World, task: str, protocol: dict | None = None,
                     resume: bool = False, reuse: bool = True, what: str = "videos",
                     resume_hint: str = "rerun the same command with --resume to continue",
                     say: Callable[[str], None] | None = None) -> ShardFiles:
    """Start a run's result files in ``out_dir/.partial`` (every process, in step: it agrees twice).
    Rank 0 locks and decides: with ``reuse`` (eval) earlier results need ``resume`` and the same
    ``protocol``, and their keys become :attr:`ShardFiles.earlier`; without (extract) earlier runs
    are ignored. Every process must then see rank 0's token (``out_dir`` shared by every node)."""
    root = Path(out_dir) / PARTIAL
    lock, decision = None, None
    with distributed.together(world):
        if world.is_main:
            root.mkdir(parents=True, exist_ok=True)
            lock = flock(root / ".lock", f"{root.parent} is in use by another run")
            try:
                decision = _decide(root, task, protocol, resume, reuse, what)
            except BaseException:
                if lock is not None:
                    lock.close()
                raise
    decision = distributed.from_main(decision, world)
    files = ShardFiles(root, world, decision["run"], decision["earlier"], distributed.timeout_seconds(),
                       say or log.info, what, resume_hint)
    files.lock = lock
    try:
        with distributed.together(world):
            token = files.dir / "token"
            seen = token.read_text() if token.is_file() else None
            if seen != decision["token"]:
                raise HieraVideoError(
                    f"the output folder {Path(out_dir).resolve()} is not shared: this process on {socket.gethostname()} "
                    "does not see the file rank 0 wrote there. Put --output on storage every node mounts at the same path"
                )
            files.writer = RecordWriter(files.dir / f"{files.name}.records")
            files._write_state()
    except BaseException:
        files.close()
        raise
    return files


def _decide(root: Path, task: str, protocol: dict | None, resume: bool, reuse: bool, what: str) -> dict:
    """Rank 0: the run number, its token and the earlier keys to reuse."""
    runs = _runs(root)
    earlier: list[int] = []
    if reuse:
        earlier = _earlier_keys(root)
        _, saved = _read_json(root / PROTOCOL)
        if earlier and not resume:
            raise HieraVideoError(
                f"{root.parent} holds the results of an earlier {task} run that did not finish ({len(earlier)} {what} done); "
                f"add --resume to continue it, or choose another --output (or delete {root} to start over)"
            )
        if earlier and saved is None:
            raise HieraVideoError(
                f"--resume: {root / PROTOCOL} is missing or unreadable, so the earlier results in {root.parent} cannot be "
                f"checked against this run; delete {root} to start over, or choose another --output"
            )
        if earlier and protocol is not None:
            diff = protocol_differences(saved.get("protocol") or {}, protocol)
            if diff:
                raise HieraVideoError(
                    f"--resume: the earlier run in {root.parent} used another protocol ({'; '.join(diff[:4])}"
                    f"{'; ...' if len(diff) > 4 else ''}); rerun with its settings, or choose another --output"
                )
        if not earlier:  # nothing kept: whatever an earlier start left is no result
            for run in runs:
                shutil.rmtree(run, ignore_errors=True)
            runs = []
            atomic_write_text(root / PROTOCOL, json.dumps(dict(task=task, protocol=protocol,
                                                               started=time.strftime("%Y-%m-%d %H:%M:%S")), indent=2) + "\n")
            if resume:
                log.info("--resume: %s holds no earlier results; everything is evaluated", root.parent)
    run = 1 + max((int(p.name[3:]) for p in runs), default=0)
    token = uuid.uuid4().hex
    (root / f"run{run}").mkdir()
    atomic_write_text(root / f"run{run}" / "token", token)
    return dict(run=run, token=token, earlier=earlier)


@contextmanager
def guard(files: ShardFiles | None):
    """A stretch of a process's work: an exception in it ends every process with its message."""
    try:
        yield
    except BaseException as e:
        if files is None:
            raise
        _raise(files.fail(e), e)


def finish_on_main(files: ShardFiles | None, world: distributed.World, report: Callable[[], int]) -> int:
    """Rank 0 after the merge: ``report()`` (writes the outputs, returns the exit code) and hand
    its code (or error) to the others; ``.partial`` is removed when ``report`` returned."""
    if files is None:
        return distributed.from_main(report(), world)
    try:
        code = report()
    except BaseException as e:
        _raise(files.release_error(e), e)
    files.release(code)
    code = distributed.from_main(code, world)  # the others have read the outcome: all are here
    files.remove()
    return code


def wait_on_others(files: ShardFiles | None, world: distributed.World) -> int | None:
    """A process other than rank 0 after its share: rank 0's exit code."""
    return distributed.from_main(files.wait_for_main() if files is not None else None, world)
