"""Checkpoint stores of the Kafka runner (a local directory; S3 lives in fraudcep_aws), and
the work on checkpoints the runner does away from its loop: saves and pruning on threads,
compaction of delta chains in a worker process (see ``docs/kafka.md``)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import attrs

from fraudcep.engine.codec import compact
from fraudcep.runtime.checkpoint import (
    DELTA,
    FORMAT_VERSION,
    FULL,
    ID_PATTERN,
    MAGIC,
    MAX_PARTITION,
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    check_name,
    id_offset,
    load_chain,
    mac_key,
    new_id,
)

__all__ = [
    "DELTA",
    "FORMAT_VERSION",
    "FULL",
    "MAGIC",
    "STALE_TMP_S",
    "Checkpoint",
    "CheckpointError",
    "CheckpointStore",
    "CheckpointWork",
    "Compacted",
    "DirectoryCheckpointStore",
    "check_name",
    "compact_chain",
    "id_offset",
    "load_chain",
    "new_id",
]

log = logging.getLogger("fraudcep.runner")

STALE_TMP_S = 3600  # a temporary file this old is no save in progress


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


@attrs.define
class DirectoryCheckpointStore:
    """Checkpoints as files ``<root>/<group>/<topic>/<partition>/<id>.ckpt``.

    Each file is written to a temporary name, flushed to disk and renamed into place, so a
    crash leaves either the whole checkpoint or none.
    """

    root: Path = attrs.field(converter=Path)

    def _dir(self, group: str, topic: str, partition: int) -> Path:
        if type(partition) is not int or not 0 <= partition <= MAX_PARTITION:
            raise CheckpointError(f"partition {partition!r} is not a partition number")
        return self.root / check_name("group", group) / check_name("topic", topic) / str(partition)

    def save(self, checkpoint: Checkpoint, *, state_key: str | bytes | None = None) -> None:
        id_offset(checkpoint.checkpoint_id)  # an id, never a path
        directory = self._dir(checkpoint.group, checkpoint.topic, checkpoint.partition)
        blob = checkpoint.to_bytes(state_key=state_key)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{checkpoint.checkpoint_id}.ckpt"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".ckpt")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(
        self,
        group: str,
        topic: str,
        partition: int,
        checkpoint_id: str,
        *,
        state_key: str | bytes | None = None,
    ) -> Checkpoint:
        id_offset(checkpoint_id)  # refuses anything that is not an id (no path tricks)
        path = self._dir(group, topic, partition) / f"{checkpoint_id}.ckpt"
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path} is missing") from None
        checkpoint = Checkpoint.from_bytes(blob, source=str(path), state_key=state_key)
        found = (checkpoint.group, checkpoint.topic, checkpoint.partition)
        if found != (group, topic, partition) or checkpoint.checkpoint_id != checkpoint_id:
            raise CheckpointError(
                f"{path} holds checkpoint {checkpoint.checkpoint_id} of "
                f"{checkpoint.topic}[{checkpoint.partition}] of group {checkpoint.group!r}, "
                f"not {checkpoint_id} of {topic}[{partition}] of {group!r}"
            )
        return checkpoint

    def prune(
        self,
        group: str,
        topic: str,
        partition: int,
        before_offset: int,
        *,
        also: Collection[str] = (),
    ) -> int:
        directory = self._dir(group, topic, partition)
        for one in also:
            id_offset(one)  # ids, never paths
        doomed = set(also)
        removed = 0
        if not directory.is_dir():
            return 0
        for path in directory.iterdir():
            m = ID_PATTERN.fullmatch(path.stem)
            if (
                path.suffix == ".ckpt"
                and m is not None
                and (int(m.group(1)) < before_offset or path.stem in doomed)
            ):
                path.unlink(missing_ok=True)
                removed += 1
            elif path.name.startswith(".tmp-") and _older_than(path, STALE_TMP_S):
                path.unlink(missing_ok=True)  # left by a crash during save
        return removed

    def describe(self) -> str:
        return f"directory {self.root}"


def open_directory_store(location: str) -> DirectoryCheckpointStore:
    """The ``file`` checkpoint-store factory: a directory path, or ``file://`` + a path."""
    if location.startswith("file://"):
        location = location[len("file://") :]
    if not location:
        raise CheckpointError("checkpoint location: empty directory path")
    return DirectoryCheckpointStore(location)


# -- compaction --------------------------------------------------------------------------------


@attrs.frozen
class Compacted:
    """A full checkpoint :func:`compact_chain` made and saved."""

    checkpoint_id: str
    offset: int
    size: int
    """Of its snapshot, in bytes."""
    merged: tuple[str, ...]
    """The checkpoints it holds the state of, base first (it stands for the last one)."""
    seconds: float


def compact_chain(
    store: CheckpointStore,
    group: str,
    topic: str,
    partition: int,
    ids: Sequence[str],
    state_key: str | None,
) -> Compacted:
    """Merge the chain ``ids`` — a full checkpoint, then deltas each following the one
    before — into one full checkpoint at the last one's offset with its rules, naming the
    last one as its ``parent``, and save it. Bytes to bytes (:func:`fraudcep.engine.codec.compact`):
    no engine, no rules, so it runs in a worker process. A chain that does not hold together
    is a :class:`CheckpointError` (a snapshot that does not, a ``SnapshotError``)."""
    started = time.perf_counter()
    keyed = {"state_key": state_key} if state_key is not None else {}
    chain = [store.load(group, topic, partition, one, **keyed) for one in ids]
    base, deltas = chain[0], chain[1:]
    if base.kind != FULL:
        raise CheckpointError(f"compacting: {base.checkpoint_id} is a delta, not a base")
    previous = base.stands_for
    for delta in deltas:
        if delta.kind != DELTA or delta.parent != previous:
            raise CheckpointError(
                f"compacting: {delta.checkpoint_id} does not follow {previous} in the chain"
            )
        previous = delta.checkpoint_id
    last = chain[-1]
    snapshot = compact(base.snapshot, [d.snapshot for d in deltas], state_key=mac_key(state_key))
    del chain, base, deltas
    merged = Checkpoint(
        group, topic, partition, last.offset, snapshot, last.rules, kind=FULL,
        parent=last.checkpoint_id,
    )  # fmt: skip
    store.save(merged, **keyed)
    return Compacted(
        merged.checkpoint_id, merged.offset, len(snapshot), tuple(ids),
        time.perf_counter() - started,
    )  # fmt: skip


def _worker_started(runner_pid: int) -> None:
    """In the compaction process: die with the runner (Linux: a signal when it dies, and an
    exit now if it died while this process was starting), and yield the CPU to it. Without
    this a worker outlives a runner killed with SIGKILL: it holds both ends of its own
    task pipe, so it would wait for work forever."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != runner_pid:  # the runner died before the signal was asked for
        os._exit(0)
    with contextlib.suppress(OSError):
        os.nice(10)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when it stops


def _timed_save(store: CheckpointStore, checkpoint: Checkpoint, state_key: str | None) -> float:
    started = time.perf_counter()
    if state_key is None:  # a store written for format 1 knows no state key
        store.save(checkpoint)
    else:
        store.save(checkpoint, state_key=state_key)
    return time.perf_counter() - started


def _sendable(store: CheckpointStore) -> bool:
    """Whether ``store`` survives the trip to a worker process (pickling)."""
    try:
        pickle.loads(pickle.dumps(store))
    except Exception:  # any store that cannot: compaction runs on a thread instead
        return False
    return True


class CheckpointWork:
    """Work on a store's checkpoints that must not hold up the runner's loop.

    Saves and pruning run on threads (two: I/O). Compactions (:func:`compact_chain`) run
    one at a time in a worker process started with ``spawn`` (no copy of the runner's
    threads), which gets the store pickled: CPU-bound work there takes no time from the
    loop's interpreter. The worker runs at a lower priority (nice 10) and dies with the
    runner. Like any ``spawn`` child it imports the program's main module again (as
    ``__mp_main__``): a program that embeds a runner must keep its start under
    ``if __name__ == "__main__"`` (``fraudcep run`` does). A store that cannot be pickled,
    or ``processes=False``, compacts on a thread instead, where the codec's work holds the
    interpreter lock and does pause the loop (it is then meant for small state)."""

    def __init__(
        self, store: CheckpointStore, *, state_key: str | None = None, processes: bool = True
    ) -> None:
        self.store = store
        self.state_key = state_key
        self.processes = processes and _sendable(store)
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fraudcep-checkpoints")
        self._compactor: Executor | None = None
        self._worker_pid: Future[int] | None = None
        self._lock = threading.Lock()

    def save(self, checkpoint: Checkpoint) -> Future[float]:
        """Save ``checkpoint``; the future's result is how long the save took (seconds)."""
        return self._io.submit(_timed_save, self.store, checkpoint, self.state_key)

    def prune(
        self, group: str, topic: str, partition: int, before_offset: int, also: Collection[str]
    ) -> Future[int]:
        return self._io.submit(
            lambda: self.store.prune(group, topic, partition, before_offset, also=tuple(also))
        )

    def compact(
        self, group: str, topic: str, partition: int, ids: Sequence[str]
    ) -> Future[Compacted]:
        """Compact the chain ``ids`` (see :func:`compact_chain`)."""
        args = (self.store, group, topic, partition, tuple(ids), self.state_key)
        with self._lock:
            compactor = self._compactor
            if compactor is None:
                compactor = self._compactor = self._new_compactor()
            try:
                return compactor.submit(compact_chain, *args)
            except BrokenProcessPool:  # its process died (killed, out of memory): a new one
                compactor.shutdown(wait=False)
                compactor = self._compactor = self._new_compactor()
                return compactor.submit(compact_chain, *args)

    def _new_compactor(self) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="fraudcep-compaction")
        executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_started,
            initargs=(os.getpid(),),
        )
        self._worker_pid = executor.submit(os.getpid)  # not waited for: the process starts
        return executor

    def close(self, *, wait: bool = True) -> None:
        """Stop: with ``wait``, let saves and prunes under way finish; a compaction under way
        is abandoned either way (its process is ended; what it saved is an orphan the next
        pruning removes)."""
        with self._lock:
            compactor, self._compactor = self._compactor, None
            pid, self._worker_pid = self._worker_pid, None
        if compactor is not None:
            compactor.shutdown(wait=False, cancel_futures=True)
            if pid is not None and pid.done() and not pid.cancelled() and pid.exception() is None:
                with contextlib.suppress(OSError):
                    os.kill(pid.result(), signal.SIGKILL)
        self._io.shutdown(wait=wait, cancel_futures=not wait)
