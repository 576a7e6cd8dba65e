"""Checkpoints: one input partition's engine state at an input offset, as bytes.

A checkpoint holds an engine snapshot, the rules it was taken with and the input offset it
covers (every record below ``offset`` is in the state, none at or above it). The runner
writes a checkpoint *before* the Kafka transaction that references it in the committed
offset's metadata; a checkpoint no commit references is an orphan and is pruned later.
Stores only need to put, get and delete whole objects, so a directory and an S3 prefix
fit the same :class:`CheckpointStore` protocol (the stores themselves live in the adapters:
the core does no I/O). See ``docs/kafka.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import uuid
from typing import Protocol

import attrs

from fraudcep.errors import FraudcepError
from fraudcep.plugins import load_plugin

MAGIC = b"FCEPCKPT"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sHI32s")  # magic, version, meta length, sha256 (see _digest)
ID_PATTERN = re.compile(r"^(\d{20})-([0-9a-f]{12})$")
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
    m = ID_PATTERN.match(checkpoint_id)
    if m is None:
        raise CheckpointError(f"not a checkpoint id: {checkpoint_id!r}")
    return int(m.group(1))


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


STORES_GROUP = "fraudcep.checkpoint_stores"


def open_checkpoint_store(location: str) -> CheckpointStore:
    """The store a location names: a directory path or ``file://`` path, ``s3://bucket/prefix``,
    or any scheme an installed package registered under ``fraudcep.checkpoint_stores``."""
    scheme, sep, _ = location.partition("://")
    factory = load_plugin(
        STORES_GROUP, scheme if sep else "file", what=f"checkpoint location {location!r}"
    )
    store: CheckpointStore = factory(location)
    return store
