"""The engine-state codec: per-key records, full snapshots and deltas (format 2).

Flink keeps each key's CEP state apart and serializes it per key; so does fraudcep. One
*key record* holds a key's state for every rule of its key group (the partial and completed
matches, the key's clock and its live timer), with each matched event stored once. Runtimes
keep records where their platform keeps keyed state (Flink's ``ValueState``, a DynamoDB
item); a snapshot is the engine-wide part (clocks, the event buffer, undrained side outputs,
the rules in force) plus records:

- a **full** snapshot holds every key's record;
- a **delta** holds the records of the keys changed since the snapshot or delta before it,
  the keys removed since then, and the whole engine-wide part. Each delta names its parent,
  so a chain applied out of order or to another base is refused.

Everything is MessagePack (through msgspec, which decodes into typed structures and checks
every type in C); then indices, ranges and the rules are checked here. Events and keys are
JSON-like values, tuples, datetimes, dates, Decimals, bytes and integers of any size; what
MessagePack lacks is carried in extension types. A blob is framed by a header with a digest
over header and body: BLAKE2b, keyed with a secret when one is given (``state_key``), which
makes it a MAC: state written by anyone without the key is refused.

Layout of a snapshot: ``FCEPSNAP`` (8 bytes), format version (u16, 2), kind (u8: 1 full,
2 delta), flags (u8: 1 = keyed), body length (u64), digest (32 bytes), body. A standalone
key record: ``FCEPKEY1`` (8 bytes), flags (u8), digest (16 bytes), body.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import struct
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

import msgspec

from fraudcep.alert import ConditionFailure, LateEvent, Overflow, TimedOutMatch
from fraudcep.engine.rule import Rule
from fraudcep.engine.state import COUNTERS, SKIP, EngineState, RuleState, Timer, count_pending
from fraudcep.errors import SnapshotError
from fraudcep.nfa.matcher import NOT_STARTED, KeyState, Node, Run
from fraudcep.timeutil import MAX_TIMESTAMP, MIN_TIMESTAMP

__all__ = [
    "FORMAT_VERSION",
    "MAX_DEPTH",
    "MAX_SNAPSHOT_BYTES",
    "Blob",
    "compact",
    "decode_key_record",
    "encode_key_record",
    "read_blob",
    "rule_fingerprint",
    "write_snapshot",
]

MAGIC: Final = b"FCEPSNAP"
RECORD_MAGIC: Final = b"FCEPKEY1"
FORMAT_VERSION: Final = 2
FULL: Final = 1
DELTA: Final = 2
_KEYED: Final = 1
_HEADER: Final = struct.Struct(">8sHBBQ32s")
_RECORD_HEADER: Final = struct.Struct(">8sB16s")

MAX_DEPTH: Final = 100
"""How deeply events and keys may nest (containers in containers). Payments decoded by
:func:`~fraudcep.payments.payment.decode_payment` nest at most 32 levels; deeper data is refused
with a :class:`SnapshotError` rather than recursed on without a bound."""

MAX_SNAPSHOT_BYTES: Final = 1 << 40
"""The largest body a snapshot may declare (1 TiB): a corrupt length is refused at once."""

_INT64: Final = 1 << 63
_MAX_COUNT: Final = 1 << 62  # counters, orders and versions stay far below it
_EXT_TUPLE, _EXT_DICT, _EXT_DATETIME, _EXT_DATE, _EXT_DECIMAL, _EXT_INT, _EXT_STR = range(1, 8)
_FLAT: Final = frozenset({str, int, float, bool, type(None), bytes})
_CONTAINERS: Final[frozenset[type]] = frozenset({dict, list, tuple})


@contextlib.contextmanager
def _no_gc(long_lived: bool = False) -> Iterator[None]:
    """Pause the cyclic garbage collector while a snapshot is built or read: it makes
    millions of objects that live on (no cycles among them), and collections that walk the
    whole heap again and again would cost more than the work itself.

    ``long_lived``: what was made is the state an engine runs on from now on. It joins the
    oldest generation at once (freezing and unfreezing what the collector tracks, unless
    something else keeps objects frozen), instead of being walked by a young collection
    right away (1.4 s for a million keys), then a middle one (2.2 s), before it gets there.
    Young objects of the program's own go with it: a cycle among them is collected by the
    next full collection, not the next young one."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if long_lived and gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
    finally:
        if enabled:
            gc.enable()


# -- events and keys -------------------------------------------------------------------------


def _portable(value: Any, depth: int = 0) -> Any:
    """``value`` in MessagePack's terms: Python types it lacks become extension values."""
    cls = value.__class__
    if cls is str:
        return value if value.isascii() else _text(value)
    if cls is bool or cls is float or value is None or cls is bytes:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if -_INT64 <= value < _INT64:
            return int(value)
        return msgspec.msgpack.Ext(_EXT_INT, b"%x" % value if value >= 0 else b"-%x" % -value)
    if isinstance(value, str):
        return _text(str(value))
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if depth >= MAX_DEPTH:
        raise SnapshotError(
            f"cannot snapshot an event or key nested more than {MAX_DEPTH} levels deep"
        )
    depth += 1
    if isinstance(value, list):
        return [_portable(v, depth) for v in value]
    if isinstance(value, tuple):
        return msgspec.msgpack.Ext(_EXT_TUPLE, _ENCODE([_portable(v, depth) for v in value]))
    if isinstance(value, dict):
        if all(k.__class__ is str for k in value):
            return {k: _portable(v, depth) for k, v in value.items()}
        pairs = [[_portable(k, depth), _portable(v, depth)] for k, v in value.items()]
        return msgspec.msgpack.Ext(_EXT_DICT, _ENCODE(pairs))
    if isinstance(value, datetime):
        return msgspec.msgpack.Ext(_EXT_DATETIME, value.isoformat().encode())
    if isinstance(value, date):
        return msgspec.msgpack.Ext(_EXT_DATE, value.isoformat().encode())
    if isinstance(value, Decimal):
        return msgspec.msgpack.Ext(_EXT_DECIMAL, str(value).encode())
    raise SnapshotError(
        f"cannot snapshot a {type(value).__name__} ({_describe(value)}): events and keys must "
        "be JSON values, tuples, datetimes, dates, Decimals or bytes"
    )


def _text(value: str) -> Any:
    """A string; one that UTF-8 cannot carry (lone surrogates) as an extension value."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return msgspec.msgpack.Ext(_EXT_STR, value.encode("utf-8", "surrogatepass"))
    return value


def _value(value: Any) -> Any:
    """:func:`_portable`, with the common cases (a flat mapping of scalars) left as they are."""
    cls = value.__class__
    if cls is dict:
        for k, v in value.items():
            if k.__class__ is not str or v.__class__ not in _FLAT:
                return _portable(value)
        return value  # an int beyond 64 bits or a lone surrogate fails to encode: see _encode
    if cls in _FLAT:
        return value
    return _portable(value)


def _ext(code: int, data: memoryview) -> Any:
    try:
        if code == _EXT_TUPLE:
            return tuple(_DECODE_LIST(data))
        if code == _EXT_DICT:
            return {k: v for k, v in _DECODE_PAIRS(data)}
        if code == _EXT_STR:
            return str(data, "utf-8", "surrogatepass")
        text = str(data, "ascii")
        if code == _EXT_DATETIME:
            return datetime.fromisoformat(text)
        if code == _EXT_DATE:
            return date.fromisoformat(text)
        if code == _EXT_DECIMAL:
            return Decimal(text)
        if code == _EXT_INT and text.lstrip("-").isalnum():
            return int(text, 16)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise SnapshotError(
            f"a stored value of extension type {code} is malformed: {exc}"
        ) from None
    raise SnapshotError(f"a stored value has an unknown extension type {code}")


def _check_events(events: list[Any]) -> None:
    """Refuse a record's events nested too deeply (see :func:`_check_depth`); if they are
    flat mappings of scalars after all, records are decoded as flat first again."""
    containers = _CONTAINERS
    for event in events:
        if event.__class__ is not dict or not containers.isdisjoint(map(type, event.values())):
            _check_depth(events)  # not only flat events: check them all
            return
    scalars = _SCALARS
    if all(scalars.issuperset(map(type, event.values())) for event in events):
        _FLAT_FIRST.flat = True


def _check_depth(values: Iterable[Any]) -> None:
    """Refuse restored values nested deeper than :data:`MAX_DEPTH` (what could not have been
    written); a loop over an explicit stack, so that deep input cannot recurse here."""
    containers = _CONTAINERS
    for top in values:
        cls = top.__class__
        if cls is dict:
            if containers.isdisjoint(map(type, top.values())):  # the usual, flat event
                continue
        elif cls not in containers:
            continue
        stack: list[tuple[Any, int]] = [(top, 1)]
        while stack:
            value, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise SnapshotError(f"snapshot holds data nested more than {MAX_DEPTH} levels deep")
            items = value.values() if value.__class__ is dict else value
            stack.extend((v, depth + 1) for v in items if v.__class__ in containers)


def _describe(value: Any) -> str:
    try:
        return f"{value!r:.80}"
    except Exception:  # a repr that fails (or recurses) must not hide the real problem
        return "no repr"


_ENCODER: Final = msgspec.msgpack.Encoder()
_ENCODE: Final = _ENCODER.encode
_DECODE_LIST: Final = msgspec.msgpack.Decoder(list[Any], ext_hook=_ext).decode
_DECODE_PAIRS: Final = msgspec.msgpack.Decoder(list[tuple[Any, Any]], ext_hook=_ext).decode


# -- the typed shape of what is stored ---------------------------------------------------------


Time = Annotated[int, msgspec.Meta(ge=MIN_TIMESTAMP, le=MAX_TIMESTAMP)]
Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_COUNT)]
Index = Annotated[int, msgspec.Meta(ge=-1, le=_MAX_COUNT)]
Order = Annotated[int, msgspec.Meta(ge=0)]
"""A run's order: up to NOT_STARTED (2**63), beyond int64 bounds: the top is checked on restore."""


# A key record, decoded as tuples (unpacked in one step where they are read): the matched
# events; the nodes ``(stage, event, timestamp, order, previous node or -1)``, each after the
# node it follows; per rule ``(rule id, version, time, deadline, timer tie, partial runs,
# completed runs)``, a run being ``(state, node or -1, start timestamp, previous timestamp,
# order)``.
_Run = tuple[Count, Index, Time, Time, Order]
_Node = tuple[str, Count, Time, Count, Index]
_RuleEntry = tuple[str, Count, Time, Time | None, Count | None, list[_Run], list[_Run]]
_KeyRecord = tuple[list[Any], list[_Node], list[_RuleEntry]]


class _Stored(msgspec.Struct, array_like=True, frozen=True, gc=False):
    group: str
    key: Any
    record: _KeyRecord


class _Pending(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A key's record as restore reads it: checked as MessagePack, decoded when it is taken
    (each record is decoded and turned into engine state while its bytes are at hand)."""

    group: str
    key: Any
    record: msgspec.Raw


class _Gone(msgspec.Struct, array_like=True, frozen=True, gc=False):
    group: str
    key: Any


class _RuleInForce(msgspec.Struct, array_like=True, frozen=True, gc=False):
    rule_id: str
    version: Count
    structure: str
    enabled: bool


class _Buffered(msgspec.Struct, array_like=True, frozen=True, gc=False):
    ts: Time
    seq: Count
    event: Index
    keys: list[Any]  # per rule in force: [key] or None (skipped)


class _Timeout(msgspec.Struct, array_like=True, frozen=True, gc=False):
    rule_id: str
    key: Any
    events: list[tuple[str, list[int]]]
    ts: Time
    version: Count


class _Late(msgspec.Struct, array_like=True, frozen=True, gc=False):
    event: Index
    ts: Time
    watermark: Time


class _Overflow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    kind: str
    rule_id: str | None
    key: list[Any] | None
    dropped: Count
    at: Time


class _Failure(msgspec.Struct, array_like=True, frozen=True, gc=False):
    rule_id: str
    key: Any
    event: Index
    ts: Time
    error: str


class _EnginePart(msgspec.Struct, array_like=True, frozen=True, gc=False):
    rules: list[_RuleInForce]
    time_mode: str
    seq: Count
    order: Count
    max_ts: Time
    watermark: Time
    timer_tie: Count
    counters: list[Count]
    events: list[Any]
    buffer: list[_Buffered]
    timeouts: list[_Timeout]
    late: list[_Late]
    overflows: list[_Overflow]
    failures: list[_Failure]


class _Body(msgspec.Struct, array_like=True, frozen=True, gc=False):
    link: bytes | None  # a delta: the blob it follows; a compacted full: the last blob it holds
    engine: _EnginePart
    records: list[_Pending]
    removed: list[_Gone]


class _WholeBody(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """:class:`_Body` with every record decoded (and so checked) at once: what compaction
    accepts and the errors it raises (see :func:`_decode_for_compaction`)."""

    link: bytes | None
    engine: _EnginePart
    records: list[_Stored]
    removed: list[_Gone]


_DECODE_BODY: Final = msgspec.msgpack.Decoder(_Body, ext_hook=_ext).decode
_DECODE_RECORD: Final = msgspec.msgpack.Decoder(_KeyRecord, ext_hook=_ext).decode
# The same, for records whose events are flat mappings of strings, numbers, booleans and None
# (payments): the decoder's types check in C what _key_states would check in Python (that no
# event nests), and anything else fails them.
_FlatEvent = dict[str, str | int | float | bool | None]
_DECODE_FLAT_RECORD: Final = msgspec.msgpack.Decoder(
    tuple[list[_FlatEvent], list[_Node], list[_RuleEntry]]
).decode
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


class _FlatFirst:
    """Whether to try :data:`_DECODE_FLAT_RECORD` first: yes while records' events turn out
    flat. A stream's events are mostly of one kind, so a record that is not flat makes the
    next ones go straight to the general decoder, until one is flat again."""

    __slots__ = ("flat",)

    def __init__(self) -> None:
        self.flat = True


_FLAT_FIRST: Final = _FlatFirst()


def _read_record(data: Any) -> tuple[_KeyRecord, bool]:
    """A key record's body decoded, and whether its events are known to be flat (checked by
    the decoder's types). Raises what the decoders raise."""
    hint = _FLAT_FIRST
    if hint.flat:
        try:
            return _DECODE_FLAT_RECORD(data), True
        except msgspec.ValidationError:
            hint.flat = False
    return _DECODE_RECORD(data), False


# -- rules -------------------------------------------------------------------------------------


def rule_fingerprint(rule: Rule) -> str:
    """A digest of what makes a rule the rule it is: its compiled automaton, window and skip
    strategy, and the text of conditions written as expressions (the same digest format 1
    snapshots hold)."""
    nfa = rule.nfa
    structure = "|".join(
        f"{s.name}/{s.kind.value}/{s.window_ms}:"
        + ",".join(f"{t.action.value}>{t.target.name}" for t in s.transitions)
        for s in nfa.states
    )
    structure += f"|window={nfa.window_ms}|skip={rule.pattern.skip_strategy}"
    structure += "|" + "|".join(_condition_sources(rule))
    return hashlib.sha256(structure.encode()).hexdigest()


def _condition_sources(rule: Rule) -> list[str]:
    return [str(getattr(p.fn, "fraudcep_source", "<code>")) for p in rule.predicates()]


# -- writing -----------------------------------------------------------------------------------


class _Events:
    """Events (and the nodes that hold them) of one snapshot part, each written once."""

    __slots__ = ("by_id", "events")

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.by_id: dict[int, int] = {}

    def event(self, event: Any) -> int:
        index = self.by_id.get(id(event))
        if index is None:
            index = self.by_id[id(event)] = len(self.events)
            self.events.append(event)
        return index


def _record(
    rules: Sequence[RuleState], key: Hashable, value: Callable[[Any], Any] = _value
) -> tuple[Any, ...] | None:
    """The record of ``key`` over ``rules`` (one key group), or None if it holds nothing.

    Written as one function over local tables: it runs once per key in every snapshot."""
    events: list[Any] = []
    event_at: dict[int, int] = {}  # by id: events need not be hashable
    nodes: list[tuple[str, int, int, int, int]] = []
    node_at: dict[Node, int] = {}  # nodes are hashed by identity
    entries = []
    for rs in rules:
        ks = rs.keys.get(key)
        if ks is None:
            continue
        start_run, start_entry = rs.write_view
        written = []
        for runs in (ks.partial, ks.completed) if ks.completed else (ks.partial,):
            out = []
            for run in runs:
                if run is start_run:
                    out.append(start_entry)
                    continue
                node = run.node
                if node is None:
                    at = -1
                else:
                    at = node_at.get(node, -2)
                    if at == -2:  # a path not written yet: write it, oldest node first
                        chain = []
                        current: Node | None = node
                        while current is not None and current not in node_at:
                            chain.append(current)
                            current = current.prev
                        for n in reversed(chain):
                            event = n.event
                            ev = event_at.get(id(event))
                            if ev is None:
                                ev = event_at[id(event)] = len(events)
                                events.append(event)
                            prev = n.prev
                            node_at[n] = len(nodes)
                            nodes.append(
                                (n.name, ev, n.ts, n.seq, -1 if prev is None else node_at[prev])
                            )
                        at = node_at[node]
                out.append((run.state.index, at, run.start_ts, run.prev_ts, run.order))
            written.append(out)
        tie = rs.timers.get(key) if ks.deadline is not None else None
        entries.append(
            (
                rs.rule.id,
                rs.version,
                ks.time,
                ks.deadline,
                tie,
                written[0],
                written[1] if len(written) == 2 else [],
            )
        )
    if not entries:
        return None
    return ([value(e) for e in events], nodes, entries)


def _record_bytes(
    rules: Sequence[RuleState], key: Hashable, value: Callable[[Any], Any] = _value
) -> bytes | None:
    """:func:`_record`, encoded: at once, while what it holds is at hand in memory (a snapshot
    then copies the bytes). With :func:`_value`, a record whose events MessagePack cannot
    carry as they are (an integer beyond 64 bits, a lone surrogate) is made again with
    :func:`_portable`."""
    record = _record(rules, key, value)
    if record is None:
        return None
    try:
        return _ENCODE(record)
    except (OverflowError, UnicodeEncodeError):
        if value is _portable:
            raise
        return _ENCODE(_record(rules, key, _portable))


def encode_key_record(
    rules: Sequence[RuleState], key: Hashable, *, state_key: bytes | None = None
) -> bytes | None:
    """``key``'s state over ``rules`` (the rules of one key group) as a standalone record, or
    None when the key holds nothing (a runtime then deletes what it stored)."""
    body = _record_bytes(rules, key)
    if body is None:
        return None
    flags = _KEYED if state_key else 0
    mac = _record_mac(state_key).copy()
    mac.update(body)
    return _RECORD_HEADER.pack(RECORD_MAGIC, flags, mac.digest()) + body


_RECORD_MACS: dict[bytes | None, Any] = {}


def _record_mac(state_key: bytes | None) -> Any:
    """The BLAKE2b-128 of key records' bodies, keyed with ``state_key``, before any byte: made
    once per key and copied for each record (cheaper than making one per record)."""
    mac = _RECORD_MACS.get(state_key)
    if mac is None:
        if len(_RECORD_MACS) >= 16:
            _RECORD_MACS.clear()
        mac = _RECORD_MACS[state_key] = hashlib.blake2b(digest_size=16, key=state_key or b"")
    return mac


def _encode(build: Callable[[Callable[[Any], Any]], Any]) -> bytes:
    """Encode what ``build`` makes of the events and keys it holds, each passed through the
    function it is given: the fast one first, and if an event held what MessagePack cannot
    carry as it is (an integer beyond 64 bits, a lone surrogate), the thorough one."""
    try:
        return _ENCODE(build(_value))
    except (OverflowError, UnicodeEncodeError):
        return _ENCODE(build(_portable))


def write_snapshot(
    state: EngineState,
    time_mode: str,
    *,
    changes: Mapping[str, Iterable[Hashable]] | None = None,
    state_key: bytes | None = None,
) -> tuple[bytes, bytes]:
    """A full snapshot of ``state`` (``changes`` None) or a delta of ``changes`` after the
    snapshot ``state.last_snapshot`` names; returns ``(blob, id)``."""
    groups = state.groups()

    def build(value: Callable[[Any], Any]) -> tuple[Any, ...]:
        records: list[tuple[str, Any, Any]] = []
        removed: list[tuple[str, Any]] = []
        raw = msgspec.Raw
        if changes is None:
            for group, rules in groups.items():
                for key in state.keys_of(group):
                    record = _record_bytes(rules, key, value)
                    if record is not None:  # a key of the group holds state: it has a record
                        records.append((group, value(key), raw(record)))
        else:
            for group, keys in changes.items():
                rules = groups.get(group, [])
                for key in keys:
                    record = _record_bytes(rules, key, value) if rules else None
                    if record is None:
                        removed.append((group, value(key)))
                    else:
                        records.append((group, value(key), raw(record)))
        link = None if changes is None else state.last_snapshot
        return (link, _engine_part(state, time_mode, value), records, removed)

    with _no_gc():
        body = _encode(build)
    kind = FULL if changes is None else DELTA
    flags = _KEYED if state_key else 0
    digest = _digest(kind, flags, body, state_key)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, kind, flags, len(body), digest) + body, digest[:16]


def _engine_part(
    state: EngineState, time_mode: str, value: Callable[[Any], Any]
) -> tuple[Any, ...]:
    events = _Events()
    event = events.event
    rules = [(rs.rule.id, rs.version, rule_fingerprint(rs.rule), True) for rs in state.rules]
    rules += [
        (rule_id, version, rule_fingerprint(rule), False)
        for rule_id, (rule, version) in state.disabled.items()
    ]
    buffer = [
        (ts, seq, event(ev), [None if k is SKIP else [value(k)] for k in keys])
        for ts, seq, ev, keys in state.buffer
    ]
    timeouts = [
        (
            t.rule_id,
            value(t.key),
            [(name, [event(e) for e in evs]) for name, evs in t.events.items()],
            t.timeout_ts,
            t.rule_version,
        )
        for t in state.timeouts
    ]
    late = [(event(x.event), x.timestamp, x.watermark) for x in state.late]
    overflows = [
        (o.kind, o.rule_id, None if o.key is None else [value(o.key)], o.dropped, o.at)
        for o in state.overflows
    ]
    failures = [
        (f.rule_id, value(f.key), event(f.event), f.timestamp, f.error) for f in state.failures
    ]
    return (
        rules,
        time_mode,
        state.seq,
        state.order,
        state.max_ts,
        state.watermark,
        state.timer_tie,
        [state.counters[name] for name in COUNTERS],
        [value(e) for e in events.events],
        buffer,
        timeouts,
        late,
        overflows,
        failures,
    )


def _digest(kind: int, flags: int, body: bytes | memoryview, state_key: bytes | None) -> bytes:
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, kind, flags, len(body), b"")[:-32]
    mac = hashlib.blake2b(prefix, digest_size=32, key=state_key or b"")
    mac.update(body)
    return mac.digest()


# -- reading -----------------------------------------------------------------------------------


def _where(where: Any) -> str:
    """Names a stored record in an error message: ``where`` is a text, or the record as
    restore read it (the text is made only when an error is raised)."""
    if isinstance(where, str):
        return where
    return f"the record of key {_describe(where.key)} in group {where.group!r:.80}"


class Blob(msgspec.Struct, frozen=True):
    """A snapshot or delta as read: its id, its kind, its parent (deltas) and its body.

    The id of a blob the engine wrote is the start of its digest; a full snapshot made by
    :func:`compact` takes the id of the last blob it holds, so that the deltas after that
    blob follow it as well."""

    id: bytes
    full: bool
    parent: bytes | None
    body: Any


def read_blob(
    blob: bytes, *, state_key: bytes | None = None, decoder: Callable[[Any], Any] | None = None
) -> Blob:
    """Check the header and digest of a format-2 ``blob`` and decode its body (typed)."""
    view = memoryview(blob)
    if len(view) < _HEADER.size or bytes(view[:8]) != MAGIC:
        raise SnapshotError("not a fraudcep snapshot (bad magic bytes)")
    _, version, kind, flags, length, digest = _HEADER.unpack_from(view)
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format version {version} is not supported by this fraudcep "
            f"(it reads versions 1 and {FORMAT_VERSION})"
        )
    if kind not in (FULL, DELTA) or flags & ~_KEYED:
        raise SnapshotError(f"snapshot header is corrupt (kind {kind}, flags {flags})")
    body = view[_HEADER.size :]
    if length > MAX_SNAPSHOT_BYTES or len(body) < length:
        raise SnapshotError(f"snapshot is truncated: body has {len(body)} of {length} bytes")
    if len(body) > length:
        raise SnapshotError(
            f"snapshot has {len(body) - length} bytes after its {length}-byte body: "
            "it is not one whole snapshot"
        )
    _check_key(bool(flags & _KEYED), state_key, "snapshot")
    if _digest(kind, flags, body, state_key) != digest:
        raise SnapshotError(
            "snapshot digest mismatch: the snapshot is corrupt"
            + (", or was written with another state key" if state_key else "")
        )
    with _no_gc():
        decoded = _decode(decoder or _DECODE_BODY, body, "snapshot")
    if kind == FULL:
        if decoded.removed:
            raise SnapshotError("a full snapshot names removed keys")
        return Blob(decoded.link or digest[:16], True, None, decoded)
    if decoded.link is None:
        raise SnapshotError("a delta names no snapshot it follows")
    return Blob(digest[:16], False, decoded.link, decoded)


def _check_key(keyed: bool, state_key: bytes | None, what: str) -> None:
    if keyed and not state_key:
        raise SnapshotError(
            f"{what} is authenticated with a state key (FRAUDCEP_STATE_KEY), none was given"
        )
    if state_key and not keyed:
        raise SnapshotError(
            f"{what} is not authenticated, but a state key was given: refused, since anyone "
            "could have written it"
        )


def _decode(decoder: Any, data: Any, what: str) -> Any:
    try:
        return decoder(data)
    except SnapshotError:
        raise
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise SnapshotError(f"{what} body cannot be decoded: {_describe(str(exc))}") from None


KeyStates = dict[RuleState, tuple[KeyState, int | None, int]]
"""A key's state as read from its record: per rule, ``(state, its timer's tie or None, its live
matches)``."""


def decode_key_record(
    data: bytes | bytearray | memoryview,
    rules: Mapping[str, RuleState],
    state_key: bytes | None = None,
) -> tuple[KeyStates, int]:
    """A standalone record (:func:`encode_key_record`) of a key of one key group, whose rules
    in force ``rules`` maps by id: the key's state per rule (:data:`KeyStates`), and the
    highest processing order in it (an engine taking the key over must be past it)."""
    if data.__class__ is not bytes:
        data = bytes(data)
    if not data.startswith(RECORD_MAGIC) or len(data) < _RECORD_HEADER.size:
        raise SnapshotError("not a fraudcep key record (bad magic bytes)")
    flags = data[8]
    if flags != (_KEYED if state_key else 0):
        if flags & ~_KEYED:
            raise SnapshotError(f"key record header is corrupt (flags {flags})")
        _check_key(bool(flags), state_key, "key record")
    body = memoryview(data)[_RECORD_HEADER.size :]
    mac = (_RECORD_MACS.get(state_key) or _record_mac(state_key)).copy()
    mac.update(body)
    if mac.digest() != data[9:25]:
        raise SnapshotError("key record digest mismatch: the record is corrupt")
    try:
        record, flat = _read_record(body)
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"key record body cannot be decoded: {_describe(str(exc))}") from None
    return _key_states(record, rules, "the record", flat)


def _key_states(
    record: _KeyRecord, rules: Mapping[str, RuleState], where: Any, flat: bool
) -> tuple[KeyStates, int]:
    """The key states a record holds, each checked (indices, rules in force, timers), and
    the highest processing order its runs and matched events carry. ``flat``: the decoder's
    types found the events flat (nothing to check of their depth).

    Written as one function over local variables: it runs once per key on every restore."""
    events, stored_nodes, entries = record
    if not flat:
        _check_events(events)
    n_events = len(events)
    nodes: list[Node] = []
    latest = 0
    for name, event, ts, seq, prev in stored_nodes:
        if event >= n_events or prev >= len(nodes):  # the lower bounds are the types
            raise SnapshotError(
                f"{_where(where)}: node {len(nodes)} refers to a missing event or node"
            )
        if seq > latest:
            latest = seq
        nodes.append(Node(name, events[event], ts, seq, nodes[prev] if prev >= 0 else None))
    n_nodes = len(nodes)
    out: KeyStates = {}
    for rule_id, version, time, deadline, tie, stored_partial, stored_completed in entries:
        rs = rules.get(rule_id)
        if rs is None or rs.version != version:
            raise SnapshotError(
                f"{_where(where)} holds rule {rule_id!r:.80} version {version}, which is not "
                "in force in its key group"
            )
        if rs in out:
            raise SnapshotError(f"{_where(where)} holds rule {rule_id!r:.80} twice")
        nfa_states, start_run, start = rs.restore_view
        n_states = len(nfa_states)
        live = 0  # the partial runs that have started, and the completed ones
        partial: list[Run] = []
        for index, node, start_ts, prev_ts, order in stored_partial:
            if index >= n_states or node >= n_nodes or order > NOT_STARTED:  # lower: the types
                raise SnapshotError(
                    f"{_where(where)}: a run of rule {rule_id!r:.80} is out of range"
                )
            state = nfa_states[index]
            if order == NOT_STARTED:
                if node < 0 and state is start:
                    partial.append(start_run)
                    continue
            else:
                live += 1
                if order > latest:
                    latest = order
            partial.append(Run(state, nodes[node] if node >= 0 else None, start_ts, prev_ts, order))
        completed: list[Run] = []
        if stored_completed:
            for index, node, start_ts, prev_ts, order in stored_completed:
                if index >= n_states or node >= n_nodes or order > NOT_STARTED:
                    raise SnapshotError(
                        f"{_where(where)}: a run of rule {rule_id!r:.80} is out of range"
                    )
                state = nfa_states[index]
                if order != NOT_STARTED and order > latest:
                    latest = order
                completed.append(
                    start_run
                    if order == NOT_STARTED and node < 0 and state is start
                    else Run(state, nodes[node] if node >= 0 else None, start_ts, prev_ts, order)
                )
            live += len(completed)
        if (deadline is None) != (tie is None):
            raise SnapshotError(f"{_where(where)}: rule {rule_id!r:.80} has half a timer")
        if len(partial) == 1 and not completed:
            raise SnapshotError(f"{_where(where)}: rule {rule_id!r:.80} holds an empty state")
        ks = KeyState(start_run)
        ks.partial = partial
        ks.completed = completed
        ks.time = time
        ks.deadline = deadline
        out[rs] = (ks, tie, live)
    if not out:
        raise SnapshotError(f"{_where(where)} holds no rule's state")
    return out, latest


# -- compaction --------------------------------------------------------------------------------


def compact(base: bytes, deltas: Sequence[bytes], *, state_key: bytes | None = None) -> bytes:
    """One full snapshot holding what ``base`` and ``deltas`` (a chain, in order) hold: the
    state an engine restored from them would snapshot, made from the bytes alone (no rules,
    no engine), so that a runtime can do it away from its loop. Deltas taken after the last
    of ``deltas`` follow the result as they followed that delta.

    The blobs are read one after the other, each record checked as it is read and then left
    as its bytes: what is held at once is the chain (the caller's), the newest bytes of each
    key (views into the chain, unless a record's encoding had to be made anew) and the
    result, not the chain's records as objects. The result is the same bytes as decoding every
    record and encoding the merge: each record is encoded from what it decodes to, and kept as
    the bytes it was read from when they are the same (as in every blob this codec writes)."""
    read: list[Blob] = []
    engine: _EnginePart | None = None
    # a key's record by (group, key) encoded: extension values stay as they were written
    stored: dict[bytes, Any] = {}
    with _no_gc():
        for blob in (base, *deltas):
            whole = read_blob(blob, state_key=state_key, decoder=_decode_for_compaction)
            body: _MergeBody = whole.body
            read.append(Blob(whole.id, whole.full, whole.parent, None))
            engine = body.engine
            for ident in body.removed:
                stored.pop(ident, None)
            stored.update(zip(body.keys, body.records, strict=True))
            del whole, body
        _check_chain(read)
        head = _ENCODE(read[-1].id), _ENCODE(engine)
        pieces: list[Any] = [b"\x94", *head, _array_header(len(stored)), *stored.values()]
        pieces.append(b"\x90")  # no removed keys
        stored.clear()
    flags = _KEYED if state_key else 0
    length = sum(map(len, pieces))
    mac = hashlib.blake2b(
        _HEADER.pack(MAGIC, FORMAT_VERSION, FULL, flags, length, b"")[:-32],
        digest_size=32,
        key=state_key or b"",
    )
    for piece in pieces:
        mac.update(piece)
    pieces.insert(0, _HEADER.pack(MAGIC, FORMAT_VERSION, FULL, flags, length, mac.digest()))
    return b"".join(pieces)


class _RawBody(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """:class:`_WholeBody` with each record left as its bytes (checked one by one)."""

    link: bytes | None
    engine: _EnginePart
    records: list[msgspec.Raw]
    removed: list[_Gone]


class _MergeBody(msgspec.Struct, frozen=True, gc=False):
    """A body as compaction merges it: its records' bytes, the group and key of each encoded
    (``keys``, in the same order), and each removed key's group and key encoded."""

    link: bytes | None
    engine: _EnginePart
    records: list[Any]
    keys: list[bytes]
    removed: list[bytes]


def _keep_ext(code: int, data: memoryview) -> msgspec.msgpack.Ext:
    return msgspec.msgpack.Ext(code, bytes(data))


_DECODE_BODY_RAW: Final = msgspec.msgpack.Decoder(_WholeBody, ext_hook=_keep_ext).decode
_DECODE_BODY_ITEMS: Final = msgspec.msgpack.Decoder(_RawBody, ext_hook=_keep_ext).decode
_DECODE_STORED: Final = msgspec.msgpack.Decoder(_Stored, ext_hook=_keep_ext).decode


def _decode_for_compaction(data: memoryview) -> _MergeBody:
    """A body decoded for :func:`compact`: it accepts what :data:`_DECODE_BODY_RAW` accepts
    (each record is decoded as that decodes it, one at a time, and dropped) and raises what
    that raises (on an error, the whole body is decoded again by it for its message)."""
    encode, decode, raw = _ENCODE, _DECODE_STORED, msgspec.Raw
    try:
        body = _DECODE_BODY_ITEMS(data)
        records: list[Any] = body.records
        keys = []
        for n, item in enumerate(records):
            stored = decode(item)
            keys.append(encode((stored.group, stored.key)))
            again = encode(stored)
            if raw(again) != item:
                records[n] = again
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError, OverflowError):
        _DECODE_BODY_RAW(data)  # the error of decoding the body at once, as it has always been
        raise
    removed = [encode((gone.group, gone.key)) for gone in body.removed]
    return _MergeBody(body.link, body.engine, records, keys, removed)


def _array_header(n: int) -> bytes:
    """The MessagePack header of an array of ``n`` items (as msgspec writes it)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _check_chain(blobs: Sequence[Blob]) -> None:
    if not blobs[0].full:
        raise SnapshotError("restore needs a full snapshot first; got a delta")
    previous = blobs[0].id
    for n, blob in enumerate(blobs[1:], 1):
        if blob.full:
            raise SnapshotError(f"deltas[{n - 1}] is a full snapshot, not a delta")
        if blob.parent != previous:
            raise SnapshotError(
                f"deltas[{n - 1}] does not follow the snapshot before it (a missing, repeated "
                "or reordered delta, or another base)"
            )
        previous = blob.id


# -- restoring an engine state -----------------------------------------------------------------


def restore_state(
    state: EngineState,
    rules: Iterable[Rule],
    time_mode: str,
    blobs: Sequence[Blob],
) -> None:
    """Fill a fresh ``state`` from a full snapshot and the deltas after it, in order."""
    with _no_gc(long_lived=True):
        _restore_state(state, rules, time_mode, blobs)


def _restore_state(
    state: EngineState,
    rules: Iterable[Rule],
    time_mode: str,
    blobs: Sequence[Blob],
) -> None:
    _check_chain(blobs)
    last: _EnginePart = blobs[-1].body.engine
    _arrange_rules(state, rules, last.rules)
    if last.time_mode != time_mode:
        raise SnapshotError(
            f"snapshot was taken in {last.time_mode!r:.40} mode, restore asked for {time_mode}"
        )
    # what the deltas say of a key, the last one first: its record, or None (removed); the
    # base's records of those keys, and the deltas' older ones, are only checked
    latest: dict[str, dict[Hashable, _Pending | None]] = {}
    superseded: list[_Pending] = []
    for blob in reversed(blobs[1:]):
        body: _Body = blob.body
        for item in body.records:
            said = latest.setdefault(item.group, {})
            key = _hashable(item.key)
            if key in said:
                superseded.append(item)
            else:
                said[key] = item
        for gone in body.removed:
            latest.setdefault(gone.group, {}).setdefault(_hashable(gone.key), None)
    by_id = {group: {rs.rule.id: rs for rs in rules_} for group, rules_ in state.groups().items()}
    timers = state.timers
    ties: list[int] = []
    taken = 0  # key states put in place: the rules' keys add up to it unless a key came twice
    newer = [item for said in latest.values() for item in said.values() if item is not None]
    for records, replaced in ((blobs[0].body.records, latest), (newer, None)):
        for item in records:
            key = item.key
            if key.__class__ is not str:
                key = _hashable(key)
            if replaced:
                told = replaced.get(item.group)
                if told is not None and key in told:
                    superseded.append(item)
                    continue
            rules_of_group = by_id.get(item.group)
            if rules_of_group is None:
                raise SnapshotError(f"{_where(item)} belongs to no rule in force")
            try:
                record, flat = _read_record(item.record)
            except (msgspec.MsgspecError, ValueError, TypeError, RecursionError) as exc:
                raise _undecodable(item, exc) from None
            states, _ = _key_states(record, rules_of_group, item, flat)
            taken += len(states)
            for rs, (ks, tie, live) in states.items():
                rs.keys[key] = ks
                rs.live += live
                deadline = ks.deadline
                if deadline is not None and tie is not None:  # both or neither (checked)
                    rs.timers[key] = tie
                    timers.append((deadline, tie, rs, key))
                    ties.append(tie)
    if sum(len(rs.keys) for rs in state.rules) != taken:
        _find_twice(blobs[0].body.records, newer, latest)
    for item in superseded:  # records no key keeps: checked as the rest (types, ranges)
        _decode_record(item)
    _check_ties(ties, last.timer_tie, timers)
    heapq.heapify(timers)
    _restore_engine_part(state, last)
    state.last_snapshot = blobs[-1].id
    state.start_tracking()


def _decode_record(item: _Pending) -> _KeyRecord:
    try:
        return _read_record(item.record)[0]
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError) as exc:
        raise _undecodable(item, exc) from None


def _undecodable(item: _Pending, exc: Exception) -> SnapshotError:
    if isinstance(exc, SnapshotError):
        return exc
    return SnapshotError(f"{_where(item)} cannot be decoded: {_describe(str(exc))}")


def _find_twice(
    base: list[_Pending], newer: list[_Pending], replaced: dict[str, dict[Hashable, Any]]
) -> None:
    """Name a key whose state two records hold (restore found fewer keys than records)."""
    seen: set[tuple[str, Hashable]] = set()
    for item in base:
        key = _hashable(item.key)
        told = replaced.get(item.group)
        if told is not None and key in told:
            continue
        if (item.group, key) in seen:
            raise SnapshotError(f"{_where(item)}: the key is stored twice")
        seen.add((item.group, key))
    for item in newer:
        if (item.group, _hashable(item.key)) in seen:
            raise SnapshotError(f"{_where(item)}: the key is stored twice")
    raise SnapshotError("snapshot holds a key twice")


def _check_ties(ties: list[int], highest: int, timers: list[Timer]) -> None:
    """Every live timer's tie is unique (the timer heap orders by them) and at most the
    engine's last one; the first timer that breaks this is named."""
    if not ties or (max(ties) <= highest and len(set(ties)) == len(ties)):
        return
    seen: set[int] = set()
    for _, tie, rs, key in timers:
        if tie in seen or tie > highest:
            raise SnapshotError(
                f"the record of key {_describe(key)} in group {rs.group!r:.80}: its timer's "
                f"order {tie} is not unique"
            )
        seen.add(tie)


def _restore_engine_part(state: EngineState, part: _EnginePart) -> None:
    if len(part.counters) != len(COUNTERS) or any(n < 0 for n in part.counters):
        raise SnapshotError("snapshot counters are not the engine's")
    state.counters = dict(zip(COUNTERS, part.counters, strict=True))
    state.seq, state.order = part.seq, part.order
    state.max_ts, state.watermark, state.timer_tie = part.max_ts, part.watermark, part.timer_tie
    events = part.events
    _check_depth(events)
    n_events, n_rules = len(events), len(state.rules)

    def event(index: int) -> Any:
        if not 0 <= index < n_events:
            raise SnapshotError(f"snapshot refers to event {index}, which it does not hold")
        return events[index]

    buffer = []
    for b in part.buffer:
        if len(b.keys) != n_rules:
            raise SnapshotError("a buffered event's keys do not match the rules in force")
        keys = tuple(SKIP if k is None else _hashable(_one(k)) for k in b.keys)
        buffer.append((b.ts, b.seq, event(b.event), keys))
    heapq.heapify(buffer)
    state.buffer = buffer
    count_pending(state)
    state.timeouts = [
        TimedOutMatch(
            t.rule_id,
            _hashable(t.key),
            {name: [event(i) for i in idx] for name, idx in t.events},
            t.ts,
            t.version,
        )
        for t in part.timeouts
    ]
    state.late = [LateEvent(event(x.event), x.ts, x.watermark) for x in part.late]
    state.overflows = [
        Overflow(
            o.kind, o.rule_id, None if o.key is None else _hashable(_one(o.key)), o.dropped, o.at
        )
        for o in part.overflows
    ]
    state.failures = [
        ConditionFailure(f.rule_id, _hashable(f.key), event(f.event), f.ts, f.error)
        for f in part.failures
    ]


def _one(box: list[Any]) -> Any:
    if len(box) != 1:
        raise SnapshotError("snapshot holds a malformed key")
    return box[0]


def _hashable(key: Any) -> Hashable:
    if key.__class__ is str or key.__class__ is int:
        return key
    _check_depth((key,))
    try:
        hash(key)
    except TypeError:
        raise SnapshotError(f"snapshot holds an unhashable key {_describe(key)}") from None
    return key  # type: ignore[no-any-return]


def _arrange_rules(state: EngineState, rules: Iterable[Rule], stored: list[_RuleInForce]) -> None:
    """Put ``rules`` in the snapshot's order, versions and enabled state, after checking that
    they are exactly the snapshot's rules."""
    given = {rule.id: rule for rule in rules}
    wanted = [r.rule_id for r in stored]
    if sorted(given) != sorted(wanted) or len(set(wanted)) != len(wanted):
        raise SnapshotError(
            f"snapshot was taken with other rules than restore() got (rule ids "
            f"{_describe(sorted(wanted))} vs {_describe(sorted(given))}); restore with the "
            "rules the snapshot was taken with"
        )
    for entry in stored:
        if rule_fingerprint(given[entry.rule_id]) != entry.structure:
            raise SnapshotError(
                f"rule {entry.rule_id!r}: the same rule ids, but the patterns differ in structure "
                "from the snapshot's; restore with the rules the snapshot was taken with"
            )
        if not 1 <= entry.version < _INT64:
            raise SnapshotError(f"rule {entry.rule_id!r}: version {entry.version} is not valid")
    state.rules = [RuleState(given[r.rule_id], r.version) for r in stored if r.enabled]
    state.disabled = {r.rule_id: (given[r.rule_id], r.version) for r in stored if not r.enabled}
