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
from typing import Any, Final, Protocol

import attrs

from fraudcep.errors import FraudcepError
from fraudcep.plugins import load_plugin

MAGIC = b"FCEPCKPT"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sHI32s")  # magic, version, meta length, sha256 (see _digest)
ID_PATTERN = re.compile(r"([0-9]{20})-([0-9a-f]{12})")
"""A checkpoint id (use ``fullmatch``): the offset it was made for, 20 digits, and a random
part."""
# Only what checkpoint ids and topic/group names can hold reaches a file name.
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

MAX_NAME_CHARS: Final = 249
"""Of a group or topic name (Kafka's limit for topic names)."""
MAX_PARTITION: Final = 2**31 - 1
"""Kafka partition numbers are 32-bit signed integers."""
MAX_OFFSET: Final = 2**63 - 1
"""Kafka offsets are 64-bit signed integers (a checkpoint id holds them in 20 digits)."""
MAX_RULES_CHARS: Final = 16 * 1024 * 1024
"""Of the rule file a checkpoint carries."""
MAX_METADATA_BYTES: Final = 12 * MAX_RULES_CHARS + 4096
"""Of the JSON metadata: the rule file is most of it, and JSON escapes a character outside
ASCII in up to 12 bytes."""
METADATA_FIELDS: Final = ("group", "topic", "partition", "offset", "checkpoint_id", "rules")
# Strings and the brackets outside them: enough to measure nesting without parsing.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)


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
        """The checkpoint as stored; :class:`CheckpointError` if a field is one that
        :meth:`from_bytes` would refuse (nothing unreadable is ever written)."""
        check_metadata(self.metadata(), source="checkpoint")
        meta = json.dumps(self.metadata(), separators=(",", ":")).encode()
        digest = _digest(len(meta), meta + self.snapshot)
        return _HEADER.pack(MAGIC, FORMAT_VERSION, len(meta), digest) + meta + self.snapshot

    def metadata(self) -> dict[str, Any]:
        """The fields stored as the checkpoint's JSON metadata."""
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "checkpoint_id": self.checkpoint_id,
            "rules": self.rules,
        }

    @classmethod
    def from_bytes(cls, blob: bytes, *, source: str = "checkpoint") -> Checkpoint:
        """The checkpoint in ``blob``; :class:`CheckpointError` naming ``source`` (and the
        field, for bad metadata) when it is not a whole, valid checkpoint."""
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
        meta = read_metadata(bytes(body[:meta_len]), source=source)
        return cls(
            group=meta["group"],
            topic=meta["topic"],
            partition=meta["partition"],
            offset=meta["offset"],
            snapshot=bytes(body[meta_len:]),
            rules=meta["rules"],
            checkpoint_id=meta["checkpoint_id"],
        )


def read_metadata(meta: bytes, *, source: str = "checkpoint") -> dict[str, Any]:
    """The checkpoint metadata in ``meta`` (UTF-8 JSON), checked by :func:`check_metadata`.

    Anything else is a :class:`CheckpointError` naming ``source``: bytes that are not UTF-8
    or not JSON, nesting (the metadata is one flat object; nesting is measured before
    parsing, so deep input never reaches a recursive parser), ``NaN``/``Infinity``, numbers
    too large."""
    if len(meta) > MAX_METADATA_BYTES:
        raise CheckpointError(
            f"{source}: bad metadata: {len(meta)} bytes, more than {MAX_METADATA_BYTES}"
        )
    try:
        text = meta.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{source}: bad metadata: not UTF-8 ({exc.reason})") from None
    depth = _nesting(text)
    if depth == 0:
        raise CheckpointError(f"{source}: bad metadata: no JSON object")
    if depth > 2:  # one level below the object is parsed, so that the field is named
        raise CheckpointError(f"{source}: bad metadata: nested {depth} deep, not one flat object")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{source}: bad metadata: not JSON ({exc})") from None
    check_metadata(data, source=source)
    return dict(data)


def check_metadata(meta: Any, *, source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the first field of ``meta`` that is missing,
    unknown, of the wrong type (a boolean is no integer, a float no partition) or out of
    range; see the ``MAX_*`` limits of this module."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: bad metadata: {_kind(meta)}, not an object")
    for name in METADATA_FIELDS:
        if name not in meta:
            raise CheckpointError(f"{source}: bad metadata: field {name!r} is missing")
    unknown = sorted(str(k) for k in meta if k not in METADATA_FIELDS)
    if unknown:
        raise CheckpointError(f"{source}: bad metadata: unknown field(s) {', '.join(unknown)}")

    def bad(name: str, why: str) -> CheckpointError:
        return CheckpointError(f"{source}: bad metadata: field {name!r} {why}")

    for name in ("group", "topic"):
        value = meta[name]
        if not isinstance(value, str):
            raise bad(name, f"is {_kind(value)}, not a string")
        if not _SAFE_NAME.fullmatch(value) or value in {".", ".."}:
            raise bad(
                name,
                f"is {value[:80]!r}: expected 1 to {MAX_NAME_CHARS} of A-Z a-z 0-9 . _ - "
                "(not '.' or '..')",
            )
    for name, limit in (("partition", MAX_PARTITION), ("offset", MAX_OFFSET)):
        value = meta[name]
        if type(value) is not int:
            raise bad(name, f"is {_kind(value)}, not an integer")
        if not 0 <= value <= limit:
            raise bad(name, f"is {value}: expected 0 to {limit}")
    checkpoint_id = meta["checkpoint_id"]
    if not isinstance(checkpoint_id, str):
        raise bad("checkpoint_id", f"is {_kind(checkpoint_id)}, not a string")
    m = ID_PATTERN.fullmatch(checkpoint_id)
    if m is None:
        raise bad("checkpoint_id", f"is {checkpoint_id[:80]!r}, not a checkpoint id")
    if int(m.group(1)) != meta["offset"]:
        raise bad(
            "checkpoint_id",
            f"is {checkpoint_id!r}, made for offset {int(m.group(1))}, not {meta['offset']}",
        )
    rules = meta["rules"]
    if not isinstance(rules, str):
        raise bad("rules", f"is {_kind(rules)}, not a string")
    if len(rules) > MAX_RULES_CHARS:
        raise bad("rules", f"has {len(rules)} characters, more than {MAX_RULES_CHARS}")
    try:
        rules.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("rules", "holds an unpaired surrogate (not text)") from None


def _kind(value: Any) -> str:
    """The JSON kind of a parsed value, for messages ("an integer")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _nesting(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (0: none), without recursion."""
    depth = deepest = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _digest(meta_len: int, body: bytes) -> bytes:
    """SHA-256 over the header fields before it (the metadata length included) and the body."""
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, meta_len, b"")[: _HEADER.size - 32]
    return hashlib.sha256(prefix + body).digest()


def new_id(offset: int) -> str:
    """A unique checkpoint id that sorts by offset (several may share one offset)."""
    return f"{offset:020d}-{uuid.uuid4().hex[:12]}"


def id_offset(checkpoint_id: str) -> int:
    """The input offset a checkpoint id was made for."""
    m = ID_PATTERN.fullmatch(checkpoint_id) if isinstance(checkpoint_id, str) else None
    if m is None:
        raise CheckpointError(f"not a checkpoint id: {checkpoint_id!r}")
    return int(m.group(1))


def check_name(kind: str, name: str) -> str:
    """Group and topic names become path segments: refuse anything else."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in {".", ".."}:
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
