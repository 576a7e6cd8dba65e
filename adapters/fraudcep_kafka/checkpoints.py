"""Checkpoints of one input partition's engine state, and the stores that keep them.

A checkpoint holds an engine snapshot, the rules it was taken with and the input offset it
covers (every record below ``offset`` is in the state, none at or above it). The runner
writes a checkpoint *before* the Kafka transaction that references it in the committed
offset's metadata; a checkpoint no commit references is an orphan and is pruned later.
Stores only need to put, get and delete whole objects, so a directory and an S3 prefix
fit the same :class:`CheckpointStore` protocol. See ``docs/kafka.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import time
import uuid
from pathlib import Path
from typing import Protocol

import attrs

from fraudcep import FraudcepError

MAGIC = b"FCEPCKPT"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sHI32s")  # magic, version, meta length, sha256(meta + snapshot)
STALE_TMP_S = 3600  # a temporary file this old is no save in progress
_ID = re.compile(r"^(\d{20})-([0-9a-f]{12})$")
# Only what checkpoint ids and topic/group names can hold reaches a file name.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class CheckpointError(FraudcepError):
    """A checkpoint is missing, unreadable or belongs to another partition."""


@attrs.frozen
class Checkpoint:
    """One partition's engine state at an input offset."""

    group: str
    topic: str
    partition: int
    offset: int
    """The next input offset to process: every record below it is in ``snapshot``."""
    snapshot: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    rules: str
    """The rule file (YAML) the snapshot was taken with: restore needs the same rules."""
    checkpoint_id: str = attrs.Factory(lambda self: new_id(self.offset), takes_self=True)

    def to_bytes(self) -> bytes:
        meta = json.dumps(
            {
                "group": self.group,
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "checkpoint_id": self.checkpoint_id,
                "rules": self.rules,
            },
            separators=(",", ":"),
        ).encode()
        digest = _digest(len(meta), meta + self.snapshot)
        return _HEADER.pack(MAGIC, FORMAT_VERSION, len(meta), digest) + meta + self.snapshot

    @classmethod
    def from_bytes(cls, blob: bytes, *, source: str = "checkpoint") -> Checkpoint:
        if len(blob) < _HEADER.size:
            raise CheckpointError(f"{source}: truncated ({len(blob)} bytes)")
        magic, version, meta_len, digest = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise CheckpointError(f"{source}: not a fraudcep checkpoint")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: format version {version}, this fraudcep reads {FORMAT_VERSION}"
            )
        body = blob[_HEADER.size :]
        if len(body) < meta_len or _digest(meta_len, body) != digest:
            raise CheckpointError(f"{source}: checksum mismatch (corrupt or truncated)")
        try:
            meta = json.loads(body[:meta_len])
            return cls(
                group=meta["group"],
                topic=meta["topic"],
                partition=int(meta["partition"]),
                offset=int(meta["offset"]),
                snapshot=bytes(body[meta_len:]),
                rules=meta["rules"],
                checkpoint_id=meta["checkpoint_id"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{source}: bad metadata: {exc}") from None


def _digest(meta_len: int, body: bytes) -> bytes:
    """SHA-256 over the header fields before it (the metadata length included) and the body."""
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, meta_len, b"")[: _HEADER.size - 32]
    return hashlib.sha256(prefix + body).digest()


def new_id(offset: int) -> str:
    """A unique checkpoint id that sorts by offset (several may share one offset)."""
    return f"{offset:020d}-{uuid.uuid4().hex[:12]}"


def id_offset(checkpoint_id: str) -> int:
    """The input offset a checkpoint id was made for."""
    m = _ID.match(checkpoint_id)
    if m is None:
        raise CheckpointError(f"not a checkpoint id: {checkpoint_id!r}")
    return int(m.group(1))


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


def check_name(kind: str, name: str) -> str:
    """Group and topic names become path segments: refuse anything else."""
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise CheckpointError(f"{kind} {name!r} cannot name a checkpoint location")
    return name


class CheckpointStore(Protocol):
    """Where checkpoints live. Writes must be atomic: a reader sees all of one or nothing."""

    def save(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` durably before returning."""

    def load(self, group: str, topic: str, partition: int, checkpoint_id: str) -> Checkpoint:
        """The checkpoint with that id; :class:`CheckpointError` when it is missing."""

    def prune(self, group: str, topic: str, partition: int, before_offset: int) -> int:
        """Delete the partition's checkpoints made for offsets below ``before_offset``."""

    def describe(self) -> str:
        """Where the store keeps checkpoints, for logs."""


@attrs.define
class DirectoryCheckpointStore:
    """Checkpoints as files ``<root>/<group>/<topic>/<partition>/<id>.ckpt``.

    Each file is written to a temporary name, flushed to disk and renamed into place, so a
    crash leaves either the whole checkpoint or none.
    """

    root: Path = attrs.field(converter=Path)

    def _dir(self, group: str, topic: str, partition: int) -> Path:
        return self.root / check_name("group", group) / check_name("topic", topic) / str(partition)

    def save(self, checkpoint: Checkpoint) -> None:
        id_offset(checkpoint.checkpoint_id)  # an id, never a path
        directory = self._dir(checkpoint.group, checkpoint.topic, checkpoint.partition)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{checkpoint.checkpoint_id}.ckpt"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".ckpt")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(checkpoint.to_bytes())
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

    def load(self, group: str, topic: str, partition: int, checkpoint_id: str) -> Checkpoint:
        id_offset(checkpoint_id)  # refuses anything that is not an id (no path tricks)
        path = self._dir(group, topic, partition) / f"{checkpoint_id}.ckpt"
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path} is missing") from None
        checkpoint = Checkpoint.from_bytes(blob, source=str(path))
        if (checkpoint.group, checkpoint.topic, checkpoint.partition) != (group, topic, partition):
            raise CheckpointError(
                f"{path} holds {checkpoint.topic}[{checkpoint.partition}] of group "
                f"{checkpoint.group!r}, not {topic}[{partition}] of {group!r}"
            )
        return checkpoint

    def prune(self, group: str, topic: str, partition: int, before_offset: int) -> int:
        directory = self._dir(group, topic, partition)
        removed = 0
        if not directory.is_dir():
            return 0
        for path in directory.iterdir():
            m = _ID.match(path.stem)
            if path.suffix == ".ckpt" and m is not None and int(m.group(1)) < before_offset:
                path.unlink(missing_ok=True)
                removed += 1
            elif path.name.startswith(".tmp-") and _older_than(path, STALE_TMP_S):
                path.unlink(missing_ok=True)  # left by a crash during save
        return removed

    def describe(self) -> str:
        return f"directory {self.root}"
