"""Checkpoints: one input partition's engine state at an input offset, as bytes.

A checkpoint holds an engine snapshot, the rules it was taken with and the input offset it
covers (every record below ``offset`` is in the state, none at or above it). Its snapshot is
either **full** or a **delta** (``Engine.snapshot_delta()``: the keys changed since the
checkpoint before it), so a partition's checkpoints form chains: a full checkpoint (the
*base*) and the deltas after it, each delta naming its ``parent`` (the checkpoint it
follows) and its ``base``. A full checkpoint that :func:`fraudcep.engine.codec.compact` made of a
chain names as its ``parent`` the last checkpoint it merges: it holds that one's state at
that one's offset, so the deltas after that one follow it too, and a chain walked back from
a delta stops there (:func:`load_chain`).

The runner writes a checkpoint *before* the Kafka transaction that references it in the
committed offset's metadata; a checkpoint no commit references is an orphan and is pruned
later. Stores only need to put, get and delete whole objects, so a directory and an S3
prefix fit the same :class:`CheckpointStore` protocol (the stores themselves live in the
adapters: the core does no I/O). See ``docs/kafka.md``.

Layout, format 2: ``FCEPCKPT`` (8 bytes), format version (u16, 2), flags (u8: 1 = keyed),
metadata length (u32), digest (32 bytes), JSON metadata, snapshot. The digest is BLAKE2b-256
over everything else, header included; with a state key (``FRAUDCEP_STATE_KEY``) it is keyed,
a MAC: a checkpoint written without the key is refused, and so is an unkeyed one when a key
is given. Format 1 (no flags, SHA-256, no chain fields: a full checkpoint) is still read.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import uuid
from collections.abc import Collection
from typing import Any, Final, Protocol

import attrs

from fraudcep.errors import FraudcepError
from fraudcep.runtime.plugins import load_plugin

MAGIC = b"FCEPCKPT"
FORMAT_VERSION = 2
"""The format written; versions 1 and 2 are read."""
_PREFIX = struct.Struct(">8sH")  # magic, version: how every format starts
_HEADER_V1 = struct.Struct(">8sHI32s")  # magic, version, meta length, SHA-256
_HEADER = struct.Struct(">8sHBI32s")  # magic, version, flags, meta length, BLAKE2b-256
_KEYED = 1
FULL: Final = "full"
DELTA: Final = "delta"
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
MAX_CHAIN: Final = 10_000
"""Deltas :func:`load_chain` follows at most from a checkpoint to its base."""
METADATA_FIELDS_V1: Final = ("group", "topic", "partition", "offset", "checkpoint_id", "rules")
METADATA_FIELDS: Final = (*METADATA_FIELDS_V1, "kind", "parent", "base")
# Strings and the brackets outside them: enough to measure nesting without parsing.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)


class CheckpointError(FraudcepError):
    """A checkpoint is missing, unreadable or belongs to another partition."""


@attrs.frozen
class Checkpoint:
    """One partition's engine state at an input offset: a full snapshot or a delta."""

    group: str
    topic: str
    partition: int
    offset: int
    """The next input offset to process: every record below it is in the state."""
    snapshot: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    rules: str
    """The rule file (YAML) the snapshot was taken with: restore needs the same rules."""
    checkpoint_id: str = attrs.Factory(lambda self: new_id(self.offset), takes_self=True)
    kind: str = FULL
    """:data:`FULL` or :data:`DELTA` (the snapshot is ``snapshot_delta()``'s)."""
    parent: str | None = None
    """A delta: the checkpoint it follows. A full checkpoint made by compacting a chain: the
    last checkpoint it merges (whose state and offset it has). Otherwise None."""
    base: str | None = None
    """A delta: the full checkpoint its chain starts from. A full checkpoint: None."""

    @property
    def stands_for(self) -> str:
        """The checkpoint whose state this one holds: itself, or, for a compacted base, the
        last checkpoint it merges. A chain walked back from a delta ends there."""
        return self.parent if self.kind == FULL and self.parent else self.checkpoint_id

    def to_bytes(self, *, state_key: str | bytes | None = None) -> bytes:
        """The checkpoint as stored (authenticated with ``state_key`` if given);
        :class:`CheckpointError` if a field is one that :meth:`from_bytes` would refuse
        (nothing unreadable is ever written)."""
        check_metadata(self.metadata(), source="checkpoint")
        meta = json.dumps(self.metadata(), separators=(",", ":")).encode()
        return frame(meta, self.snapshot, state_key=state_key)

    def metadata(self) -> dict[str, Any]:
        """The fields stored as the checkpoint's JSON metadata."""
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "checkpoint_id": self.checkpoint_id,
            "rules": self.rules,
            "kind": self.kind,
            "parent": self.parent,
            "base": self.base,
        }

    @classmethod
    def from_bytes(
        cls, blob: bytes, *, source: str = "checkpoint", state_key: str | bytes | None = None
    ) -> Checkpoint:
        """The checkpoint in ``blob``; :class:`CheckpointError` naming ``source`` (and the
        field, for bad metadata) when it is not a whole, valid checkpoint, or not
        authenticated with ``state_key`` (when one is given; none may be given for one
        that is)."""
        view = memoryview(blob)
        if len(view) < _PREFIX.size:
            raise CheckpointError(f"{source}: truncated ({len(view)} bytes)")
        magic, version = _PREFIX.unpack_from(view)
        if magic != MAGIC:
            raise CheckpointError(f"{source}: not a fraudcep checkpoint")
        key = mac_key(state_key)
        if version == 1:
            if len(view) < _HEADER_V1.size:
                raise CheckpointError(f"{source}: truncated ({len(view)} bytes)")
            _, _, meta_len, digest = _HEADER_V1.unpack_from(view)
            body = view[_HEADER_V1.size :]
            if len(body) < meta_len or _digest_v1(meta_len, body) != digest:
                raise CheckpointError(f"{source}: checksum mismatch (corrupt or truncated)")
            if key is not None:
                raise CheckpointError(
                    f"{source}: a format-1 checkpoint is not authenticated, but a state key "
                    "was given: refused, since anyone could have written it"
                )
        elif version == FORMAT_VERSION:
            if len(view) < _HEADER.size:
                raise CheckpointError(f"{source}: truncated ({len(view)} bytes)")
            _, _, flags, meta_len, digest = _HEADER.unpack_from(view)
            if flags & ~_KEYED:
                raise CheckpointError(f"{source}: corrupt header (flags {flags})")
            if flags & _KEYED and key is None:
                raise CheckpointError(
                    f"{source}: authenticated with a state key (FRAUDCEP_STATE_KEY), none was given"
                )
            if key is not None and not flags & _KEYED:
                raise CheckpointError(
                    f"{source}: not authenticated, but a state key was given: refused, since "
                    "anyone could have written it"
                )
            body = view[_HEADER.size :]
            if len(body) < meta_len or _digest(flags, meta_len, body, key) != digest:
                raise CheckpointError(
                    f"{source}: checksum mismatch (corrupt or truncated"
                    + (", or written with another state key)" if key else ")")
                )
        else:
            raise CheckpointError(
                f"{source}: format version {version}, this fraudcep reads 1 and {FORMAT_VERSION}"
            )
        meta = read_metadata(bytes(body[:meta_len]), source=source, version=version)
        return cls(
            group=meta["group"],
            topic=meta["topic"],
            partition=meta["partition"],
            offset=meta["offset"],
            snapshot=bytes(body[meta_len:]),
            rules=meta["rules"],
            checkpoint_id=meta["checkpoint_id"],
            kind=meta.get("kind", FULL),
            parent=meta.get("parent"),
            base=meta.get("base"),
        )


def frame(
    meta: bytes,
    snapshot: bytes,
    *,
    state_key: str | bytes | None = None,
    version: int = FORMAT_VERSION,
) -> bytes:
    """A checkpoint's bytes: header and digest around the JSON ``meta`` and ``snapshot``,
    checked by nobody (:meth:`Checkpoint.to_bytes` checks the metadata first). ``version``
    1 writes the old format (no state key), for tests of reading it."""
    if version == 1:
        if state_key:
            raise CheckpointError("format 1 has no state key")
        header = _HEADER_V1.pack(MAGIC, 1, len(meta), _digest_v1(len(meta), meta + snapshot))
        return header + meta + snapshot
    key = mac_key(state_key)
    flags = _KEYED if key is not None else 0
    mac = _mac(flags, len(meta), key)
    mac.update(meta)
    mac.update(snapshot)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, flags, len(meta), mac.digest()) + meta + snapshot


def mac_key(state_key: str | bytes | None) -> bytes | None:
    """The BLAKE2b key of a state key, as the engine takes it: text as UTF-8, and a key of
    more than 64 bytes hashed to 64 (None or empty: no key)."""
    if state_key is None or state_key in (b"", ""):
        return None
    value = state_key.encode() if isinstance(state_key, str) else bytes(state_key)
    return value if len(value) <= 64 else hashlib.sha512(value).digest()


def read_metadata(
    meta: bytes, *, source: str = "checkpoint", version: int = FORMAT_VERSION
) -> dict[str, Any]:
    """The checkpoint metadata in ``meta`` (UTF-8 JSON), checked by :func:`check_metadata`
    (the fields of format ``version``).

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
    check_metadata(data, source=source, version=version)
    return dict(data)


def check_metadata(meta: Any, *, source: str = "checkpoint", version: int = FORMAT_VERSION) -> None:
    """Raise :class:`CheckpointError` naming the first field of ``meta`` that is missing,
    unknown, of the wrong type (a boolean is no integer, a float no partition) or out of
    range; see the ``MAX_*`` limits of this module. Format 2's chain fields: ``kind`` is
    ``"full"`` or ``"delta"``; ``parent`` and ``base`` are null or ids made for an offset no
    later than the checkpoint's own (other than its own id); a delta has both, its base no
    later than its parent; a full checkpoint has no base, and a parent (it was compacted)
    only at its own offset."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: bad metadata: {_kind(meta)}, not an object")
    names = METADATA_FIELDS_V1 if version == 1 else METADATA_FIELDS
    for name in names:
        if name not in meta:
            raise CheckpointError(f"{source}: bad metadata: field {name!r} is missing")
    unknown = sorted(str(k) for k in meta if k not in names)
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
    offset = meta["offset"]
    if int(m.group(1)) != offset:
        raise bad(
            "checkpoint_id",
            f"is {checkpoint_id!r}, made for offset {int(m.group(1))}, not {offset}",
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
    if version == 1:
        return
    kind = meta["kind"]
    if kind not in (FULL, DELTA) or not isinstance(kind, str):
        shown = repr(kind[:80]) if isinstance(kind, str) else _kind(kind)
        raise bad("kind", f"is {shown}: expected 'full' or 'delta'")
    links: dict[str, int] = {}
    for name in ("parent", "base"):
        value = meta[name]
        if value is None:
            continue
        if not isinstance(value, str):
            raise bad(name, f"is {_kind(value)}, not a string or null")
        link = ID_PATTERN.fullmatch(value)
        if link is None:
            raise bad(name, f"is {value[:80]!r}, not a checkpoint id")
        if value == checkpoint_id:
            raise bad(name, "names the checkpoint itself")
        links[name] = int(link.group(1))
        if links[name] > offset:
            raise bad(name, f"is {value!r}, made for offset {links[name]}, after {offset}")
    if kind == DELTA:
        for name in ("parent", "base"):
            if name not in links:
                raise bad(name, "is null, but a delta follows a checkpoint of its chain")
        if links["base"] > links["parent"]:
            raise bad("base", f"is made for offset {links['base']}, after its parent's")
    else:
        if "base" in links:
            raise bad("base", "is set, but a full checkpoint starts its own chain")
        if "parent" in links and links["parent"] != offset:
            raise bad(
                "parent",
                f"is made for offset {links['parent']}: a compacted checkpoint has its "
                f"parent's offset ({offset})",
            )


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


def _digest_v1(meta_len: int, body: bytes | memoryview) -> bytes:
    """Format 1: SHA-256 over the header fields before it and the body."""
    prefix = _HEADER_V1.pack(MAGIC, 1, meta_len, b"")[: _HEADER_V1.size - 32]
    digest = hashlib.sha256(prefix)
    digest.update(body)
    return digest.digest()


def _mac(flags: int, meta_len: int, key: bytes | None) -> Any:
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, flags, meta_len, b"")[: _HEADER.size - 32]
    return hashlib.blake2b(prefix, digest_size=32, key=key or b"")


def _digest(flags: int, meta_len: int, body: memoryview, key: bytes | None) -> bytes:
    """Format 2: BLAKE2b-256 (keyed with the state key, if any) over the header fields before
    it and the body."""
    mac = _mac(flags, meta_len, key)
    mac.update(body)
    return bytes(mac.digest())


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
    """Where checkpoints live. Writes must be atomic: a reader sees all of one or nothing.

    A failure of the store itself (a disk, the network, permissions) is an :class:`OSError`;
    a checkpoint that is missing, damaged or not what was asked for is a
    :class:`CheckpointError`."""

    def save(self, checkpoint: Checkpoint, *, state_key: str | bytes | None = None) -> None:
        """Store ``checkpoint`` (authenticated with ``state_key``) durably before returning."""

    def load(
        self,
        group: str,
        topic: str,
        partition: int,
        checkpoint_id: str,
        *,
        state_key: str | bytes | None = None,
    ) -> Checkpoint:
        """The checkpoint with that id, checked with ``state_key``; :class:`CheckpointError`
        when it is missing or is not that partition's checkpoint of that id."""

    def prune(
        self,
        group: str,
        topic: str,
        partition: int,
        before_offset: int,
        *,
        also: Collection[str] = (),
    ) -> int:
        """Delete the partition's checkpoints made for offsets below ``before_offset`` and
        those whose ids are in ``also``; returns how many went."""

    def describe(self) -> str:
        """Where the store keeps checkpoints, for logs."""


def load_chain(
    store: CheckpointStore,
    group: str,
    topic: str,
    partition: int,
    checkpoint_id: str,
    *,
    state_key: str | bytes | None = None,
    max_length: int = MAX_CHAIN,
) -> list[Checkpoint]:
    """The checkpoints a restore of ``checkpoint_id`` takes, base first: the checkpoint
    itself if it is full; for a delta its base, then the deltas from the one after the
    checkpoint the base stands for (:attr:`Checkpoint.stands_for`) to ``checkpoint_id``,
    found by following ``parent`` back. ``Engine.restore(chain[0].snapshot, rules,
    deltas=[c.snapshot for c in chain[1:]])`` with the rules of ``chain[-1]`` rebuilds the
    state (it checks again, by the snapshots' own ids, that each delta follows the one
    before it).

    A checkpoint of the chain that is missing, unreadable or does not fit (a base that is a
    delta, a full checkpoint among the deltas, a walk that passes its base, a cycle, more
    than ``max_length`` deltas) is a :class:`CheckpointError`; a failing store an
    :class:`OSError`."""
    where = f"checkpoint {checkpoint_id}"
    # a store written for format 1 knows no state key: it is only passed one when there is one
    keyed = {"state_key": state_key} if state_key is not None else {}

    def load(one: str) -> Checkpoint:
        return store.load(group, topic, partition, one, **keyed)

    top = load(checkpoint_id)
    if top.kind == FULL:
        return [top]
    assert top.base is not None and top.parent is not None  # checked with the metadata
    base = load(top.base)
    if base.kind != FULL:
        raise CheckpointError(f"{where}: its base {top.base} is a delta, not a full checkpoint")
    stop = base.stands_for
    floor = id_offset(stop)
    deltas = [top]
    seen = {checkpoint_id}
    parent = top.parent
    while parent != stop:
        if len(deltas) >= max_length:
            raise CheckpointError(f"{where}: its chain is longer than {max_length} deltas")
        if id_offset(parent) < floor:
            raise CheckpointError(
                f"{where}: its chain passes offset {floor} without reaching {stop}, the "
                f"checkpoint its base {top.base} holds"
            )
        if parent in seen:
            raise CheckpointError(f"{where}: its chain comes back to {parent}")
        link = load(parent)
        if link.kind != DELTA:
            raise CheckpointError(
                f"{where}: {parent} in its chain is a full checkpoint, not a delta (its base "
                f"is {top.base})"
            )
        seen.add(parent)
        deltas.append(link)
        assert link.parent is not None
        parent = link.parent
    return [base, *reversed(deltas)]


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
