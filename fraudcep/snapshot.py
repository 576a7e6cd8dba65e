"""Engine snapshots: the whole engine state as versioned, checksummed bytes.

Layout: ``MAGIC`` (8 bytes), format version (u16), reserved (u16), body length (u64), SHA-256
of the body (32 bytes), then the body: zlib-compressed JSON. The JSON holds the rules'
fingerprints (ids and compiled structure), the clocks, the event buffer, timers, and for every
rule and key the partial and completed matches — matched events stored once and referenced by
index, as the in-memory structure shares them. Heaps are stored in their array order, so a
restored engine continues exactly as the one that never stopped.

Events and keys must be JSON values (dicts, lists, strings, numbers, booleans, None), or
tuples, datetimes, dates, Decimals and bytes, which are stored tagged and come back as the
same types.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import math
import struct
import zlib
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fraudcep.errors import SnapshotError
from fraudcep.nfa import NOT_STARTED, KeyState, Node, Run

if TYPE_CHECKING:
    from fraudcep.engine import Engine, _RuleRuntime
    from fraudcep.rule import Rule

MAGIC = b"FCEPSNAP"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sHHQ32s")


def dump(engine: Engine) -> bytes:
    """Serialize ``engine``."""
    from fraudcep.engine import SKIP

    writer = _Writer()
    doc: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "rules": [fingerprint(rr) for rr in engine._rules],
        "disabled": [
            {**_fingerprint(rule), "version": version}
            for rule, version in engine._disabled.values()
        ],
        "time_mode": engine.time_mode.value,
        "seq": engine._seq,
        "order": engine._order,
        "max_ts": engine._max_ts,
        "watermark": engine._watermark,
        "timer_tie": engine._timer_tie,
        "counts": engine._counters(),
        "buffer": [
            [ts, seq, writer.event(event), [None if k is SKIP else [_key(k)] for k in keys]]
            for ts, seq, event, keys in engine._buffer
        ],
        # live timers only, sorted: a sorted list is a heap, and the bytes do not depend on
        # which superseded timers the heap still held
        "timers": [
            [deadline, tie, engine._rules.index(rr), _key(key)]
            for deadline, tie, rr, key in sorted(engine._timers, key=lambda t: t[:2])
            if _live_timer(rr, deadline, key)
        ],
        "keys": [
            [[_key(key), _key_state(writer, ks)] for key, ks in rr.keys.items()]
            for rr in engine._rules
        ],
        "timeouts": [
            [t.rule_id, _key(t.key), writer.mapping(t.events), t.timeout_ts, t.rule_version]
            for t in engine._timeouts
        ],
        "late": [[writer.event(x.event), x.timestamp, x.watermark] for x in engine._late],
        "overflows": [
            [o.kind, o.rule_id, None if o.key is None else [_key(o.key)], o.dropped, o.at]
            for o in engine._overflows
        ],
        "failures": [
            [f.rule_id, _key(f.key), writer.event(f.event), f.timestamp, f.error]
            for f in engine._failures
        ],
    }
    doc["events"] = writer.events
    doc["nodes"] = writer.nodes
    try:
        raw = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(
            f"cannot snapshot: events and keys must be JSON values ({exc})"
        ) from None
    body = zlib.compress(raw.encode(), 6)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(body), _digest(len(body), body)) + body


def _digest(length: int, body: bytes) -> bytes:
    """SHA-256 over the header fields before it and the body."""
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, length, b"")[: _HEADER.size - 32]
    return hashlib.sha256(prefix + body).digest()


def load(engine: Engine, blob: bytes) -> None:
    """Fill a freshly built ``engine`` (same rules) with the state in ``blob``."""
    from fraudcep.alert import ConditionFailure, LateEvent, Overflow, TimedOutMatch
    from fraudcep.engine import SKIP

    doc = read(blob)
    rule_lists = doc["rules"], doc["disabled"]
    if not all(
        isinstance(entries, list)
        and all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in entries)
        for entries in rule_lists
    ):
        raise SnapshotError("snapshot body has no valid rule list")
    try:
        _arrange_rules(engine, doc["rules"], doc["disabled"])
        if doc["time_mode"] != engine.time_mode.value:
            raise SnapshotError(
                f"snapshot was taken in {doc['time_mode']!r:.40} mode, restore asked for "
                f"{engine.time_mode.value}"
            )
        events = [_unkey(e) for e in _list(doc["events"], "events")]
        n_events = len(events)
        nodes: list[Node] = []
        for name, event_index, ts, seq, prev in _list(doc["nodes"], "nodes"):
            prev = _index(prev, len(nodes), "node", allow_none=True)
            nodes.append(
                Node(
                    _str(name, "stage name"),
                    events[_index(event_index, n_events, "event")],
                    _int(ts, "node time"),
                    _int(seq, "node order"),
                    nodes[prev] if prev >= 0 else None,
                )
            )
        engine._seq = _int(doc["seq"], "seq", 0)
        engine._order = _int(doc["order"], "order", 0)
        engine._max_ts = _int(doc["max_ts"], "max_ts")
        engine._watermark = _int(doc["watermark"], "watermark")
        engine._timer_tie = _int(doc["timer_tie"], "timer_tie", 0)
        counts = doc["counts"]
        if not isinstance(counts, dict) or counts.keys() != set(engine._counters()):
            raise SnapshotError("snapshot counters are not the engine's")
        engine._set_counters({name: _int(n, name, 0) for name, n in counts.items()})
        n_rules = len(engine._rules)
        engine._buffer = []
        for ts, seq, ev, keys in _list(doc["buffer"], "buffer"):
            if len(_list(keys, "buffered keys")) != n_rules:
                raise SnapshotError("a buffered event's keys do not match the rules")
            engine._buffer.append(
                (
                    _int(ts, "buffered time"),
                    _int(seq, "buffered order", 0),
                    events[_index(ev, n_events, "event")],
                    tuple(SKIP if k is None else _hashable(_list(k, "key")[0]) for k in keys),
                )
            )
        heapq.heapify(engine._buffer)
        for _, _, _, keys in engine._buffer:
            for rr, key in zip(engine._rules, keys, strict=True):
                if key is not SKIP:
                    rr.pending[key] = rr.pending.get(key, 0) + 1
        engine._timers = [
            (
                _int(deadline, "timer"),
                _int(tie, "timer order", 0),
                engine._rules[_index(index, n_rules, "rule")],
                _hashable(key),
            )
            for deadline, tie, index, key in _list(doc["timers"], "timers")
        ]
        heapq.heapify(engine._timers)  # written sorted; heapify keeps that guarantee explicit
        for rr, entries in zip(engine._rules, _list(doc["keys"], "keys"), strict=True):
            for key, state in _list(entries, "keys"):
                rr.keys[_hashable(key)] = _restore_key_state(rr, state, nodes)
        engine._timeouts = [
            TimedOutMatch(
                _str(rule_id, "rule id"),
                _hashable(key),
                _unmapping(mapping, events),
                _int(ts, "timeout"),
                _int(version, "rule version", 1),
            )
            for rule_id, key, mapping, ts, version in _list(doc["timeouts"], "timeouts")
        ]
        engine._late = [
            LateEvent(events[_index(ev, n_events, "event")], _int(ts, "time"), _int(wm, "time"))
            for ev, ts, wm in _list(doc["late"], "late")
        ]
        engine._overflows = [
            Overflow(
                _str(kind, "overflow kind"),
                None if rule_id is None else _str(rule_id, "rule id"),
                None if key is None else _hashable(_list(key, "key")[0]),
                _int(dropped, "dropped", 0),
                _int(wm, "time"),
            )
            for kind, rule_id, key, dropped, wm in _list(doc["overflows"], "overflows")
        ]
        engine._failures = [
            ConditionFailure(
                _str(rule_id, "rule id"),
                _hashable(key),
                events[_index(ev, n_events, "event")],
                _int(ts, "time"),
                _str(error, "error"),
            )
            for rule_id, key, ev, ts, error in _list(doc["failures"], "failures")
        ]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        raise SnapshotError(f"snapshot content is inconsistent: {exc!r:.300}") from None


def read(blob: bytes) -> dict[str, Any]:
    """Check the header and checksum of ``blob`` and return its decoded body."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise SnapshotError(f"a snapshot is bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _HEADER.size or blob[:8] != MAGIC:
        raise SnapshotError("not a fraudcep snapshot (bad magic bytes)")
    _, version, reserved, length, digest = _HEADER.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format version {version} is not supported by this fraudcep "
            f"(it reads version {FORMAT_VERSION})"
        )
    body = blob[_HEADER.size :]
    if len(body) < length:
        raise SnapshotError(f"snapshot is truncated: body has {len(body)} of {length} bytes")
    if len(body) > length:
        raise SnapshotError(
            f"snapshot has {len(body) - length} bytes after its {length}-byte body: "
            "it is not one whole snapshot"
        )
    if reserved != 0 or _digest(length, body) != digest:
        raise SnapshotError("snapshot checksum mismatch: the snapshot is corrupt")
    try:
        doc = json.loads(_inflate(body))
    except (zlib.error, ValueError) as exc:
        raise SnapshotError(f"snapshot body cannot be decoded: {exc}") from None
    except RecursionError:
        raise SnapshotError("snapshot body is nested too deeply to decode") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
        raise SnapshotError("snapshot body is not a fraudcep engine state of this format version")
    missing = _FIELDS - doc.keys()
    if missing:
        raise SnapshotError(f"snapshot body lacks {sorted(missing)}")
    return doc


MAX_INFLATION = 256
"""A snapshot body may decompress to at most this many times its compressed size (plus
16 MiB): far above what engine state compresses by, and a bound on decompression bombs."""


def _inflate(body: bytes) -> bytes:
    limit = 16 * 1024 * 1024 + MAX_INFLATION * len(body)
    inflater = zlib.decompressobj()
    raw = inflater.decompress(body, limit)
    if inflater.unconsumed_tail:
        raise SnapshotError(
            f"snapshot body decompresses to more than {limit} bytes ({MAX_INFLATION} times its "
            "size): refused as corrupt or hostile"
        )
    if not inflater.eof:
        raise SnapshotError("snapshot body cannot be decoded: the compressed data is incomplete")
    return raw


_FIELDS = frozenset(
    {
        "format", "rules", "disabled", "time_mode", "seq", "order", "max_ts", "watermark",
        "timer_tie", "counts", "buffer", "timers", "keys", "timeouts", "late", "overflows",
        "failures", "events", "nodes",
    }
)  # fmt: skip


def fingerprint(rr: _RuleRuntime) -> dict[str, Any]:
    """What identifies a rule in force: its id, version and compiled automaton."""
    return {**_fingerprint(rr.rule), "version": rr.version}


def _fingerprint(rule: Rule) -> dict[str, Any]:
    nfa = rule.nfa
    structure = "|".join(
        f"{s.name}/{s.kind.value}/{s.window_ms}:"
        + ",".join(f"{t.action.value}>{t.target.name}" for t in s.transitions)
        for s in nfa.states
    )
    structure += f"|window={nfa.window_ms}|skip={rule.pattern.skip_strategy}"
    # conditions written as expressions (rules as data) carry their text: it is part of the rule
    structure += "|" + "|".join(_condition_sources(rule))
    return {"id": rule.id, "structure": hashlib.sha256(structure.encode()).hexdigest()}


def _condition_sources(rule: Rule) -> list[str]:
    from fraudcep.conditions import And, Condition, Not, Or, Predicate

    out: list[str] = []

    def walk(cond: Condition | None) -> None:
        if isinstance(cond, Predicate):
            out.append(str(getattr(cond.fn, "fraudcep_source", "<code>")))
        elif isinstance(cond, And | Or):
            walk(cond.left)
            walk(cond.right)
        elif isinstance(cond, Not):
            walk(cond.inner)

    for state in rule.nfa.states:
        for t in state.transitions:
            walk(t.condition)
    return out


def _arrange_rules(engine: Engine, enabled: list[Any], disabled: list[Any]) -> None:
    """Put ``engine``'s rules in the snapshot's order, versions and enabled state, after
    checking that they are exactly the snapshot's rules."""
    from fraudcep.engine import _RuleRuntime

    given = {rule.id: rule for rule in engine.rules}
    wanted = [r["id"] for r in enabled] + [r["id"] for r in disabled]
    if sorted(given) != sorted(wanted) or len(set(wanted)) != len(wanted):
        raise SnapshotError(
            f"snapshot was taken with other rules than restore() got (rule ids {sorted(wanted)} "
            f"vs {sorted(given)}); restore with the rules the snapshot was taken with"
        )
    for entry in enabled + disabled:
        if _fingerprint(given[entry["id"]])["structure"] != entry.get("structure"):
            raise SnapshotError(
                f"rule {entry['id']!r}: the same rule ids, but the patterns differ in structure "
                "from the snapshot's; restore with the rules the snapshot was taken with"
            )
    engine._rules = [_RuleRuntime(given[r["id"]], _rule_version(r)) for r in enabled]
    engine._disabled = {r["id"]: (given[r["id"]], _rule_version(r)) for r in disabled}
    engine.rules = tuple(rr.rule for rr in engine._rules)
    engine._index_keys()


def _rule_version(entry: dict[str, Any]) -> int:
    version = entry.get("version")
    if type(version) is not int or not 1 <= version < 2**63:
        raise SnapshotError(f"rule {entry['id']!r:.80}: version {version!r:.40} is not valid")
    return version


class _Writer:
    """Assigns indices to events and nodes so each is written once."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.nodes: list[list[Any]] = []
        self._event_index: dict[int, int] = {}
        self._node_index: dict[int, int] = {}

    def event(self, event: Any) -> int:
        index = self._event_index.get(id(event))
        if index is None:
            index = self._event_index[id(event)] = len(self.events)
            self.events.append(_key(event))
        return index

    def node(self, node: Node | None) -> int:
        if node is None:
            return -1
        chain: list[Node] = []
        current: Node | None = node
        while current is not None and id(current) not in self._node_index:
            chain.append(current)
            current = current.prev
        for n in reversed(chain):
            prev = self._node_index[id(n.prev)] if n.prev is not None else -1
            self._node_index[id(n)] = len(self.nodes)
            self.nodes.append([n.name, self.event(n.event), n.ts, n.seq, prev])
        return self._node_index[id(node)]

    def mapping(self, mapping: Any) -> list[Any]:
        return [[name, [self.event(e) for e in evs]] for name, evs in mapping.items()]


def _run(writer: _Writer, run: Run) -> list[Any]:
    return [run.state.index, writer.node(run.node), run.start_ts, run.prev_ts, run.order]


def _key_state(writer: _Writer, ks: KeyState) -> dict[str, Any]:
    return {
        "partial": [_run(writer, r) for r in ks.partial],
        "completed": [_run(writer, r) for r in ks.completed],
        "time": ks.time,
        "deadline": ks.deadline,
    }


def _restore_key_state(rr: _RuleRuntime, state: dict[str, Any], nodes: list[Node]) -> KeyState:
    matcher = rr.matcher
    states = matcher.nfa.states

    def run(fields: list[Any]) -> Run:
        index, node, start_ts, prev_ts, order = _list(fields, "run")
        index = _index(index, len(states), "state")
        node = _index(node, len(nodes), "node", allow_none=True)
        order = _int(order, "run order", 0, NOT_STARTED)
        if order == NOT_STARTED and node < 0 and states[index] is matcher.nfa.start:
            return matcher.start_run
        return Run(
            states[index],
            nodes[node] if node >= 0 else None,
            _int(start_ts, "run start"),
            _int(prev_ts, "run time"),
            order,
        )

    if not isinstance(state, dict):
        raise SnapshotError("a key's state is not a record")
    ks = matcher.new_key_state()
    ks.partial = [run(f) for f in _list(state["partial"], "partial matches")]
    ks.completed = [run(f) for f in _list(state["completed"], "completed matches")]
    ks.time = _int(state["time"], "key time")
    deadline = state["deadline"]
    ks.deadline = None if deadline is None else _int(deadline, "deadline")
    return ks


def _hashable(value: Any) -> Any:
    """A key from the snapshot: decoded, and usable as a dict key."""
    key = _unkey(value)
    hash(key)  # TypeError (refused by the caller) for an unhashable key
    return key


def _int(value: Any, what: str, low: int = -(2**63), high: int = 2**63) -> int:
    if type(value) is not int or not low <= value <= high:
        raise SnapshotError(f"snapshot {what} is not an integer in [{low}, {high}]: {value!r:.40}")
    return value


def _index(value: Any, size: int, what: str, *, allow_none: bool = False) -> int:
    """An index into a list of ``size`` items (-1 for none, where allowed)."""
    if type(value) is not int or not (-1 if allow_none else 0) <= value < size:
        raise SnapshotError(f"snapshot refers to {what} {value!r:.40}, which it does not hold")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise SnapshotError(f"snapshot {what} is not a string: {value!r:.40}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        raise SnapshotError(f"snapshot {what} is not a list: {value!r:.40}")
    return value


def _live_timer(rr: _RuleRuntime, deadline: int, key: Any) -> bool:
    ks = rr.keys.get(key)
    return ks is not None and ks.deadline == deadline


_TAG = "$fcep"


MAX_DEPTH = 100
"""How deeply events and keys in a snapshot may nest (containers in containers). Payments
decoded by :func:`fraudcep.payment.decode_payment` nest far less; deeper data is refused with
a :class:`SnapshotError` rather than recursed on without a bound."""


def _key(value: Any, depth: int = 0) -> Any:
    """Encode an event or key as JSON, tagging the Python types JSON does not have."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_TAG: "float", "v": repr(value)}
    if depth >= MAX_DEPTH:
        raise SnapshotError(
            f"cannot snapshot an event or key nested more than {MAX_DEPTH} levels deep"
        )
    depth += 1
    if isinstance(value, list):
        return [_key(v, depth) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _key(v, depth) for k, v in value.items()}
        return {_TAG: "dict", "v": [[_key(k, depth), _key(v, depth)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_key(v, depth) for v in value]}
    if isinstance(value, datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, bytes):
        return {_TAG: "bytes", "v": base64.b64encode(value).decode()}
    raise SnapshotError(
        f"cannot snapshot a {type(value).__name__} ({_describe(value)}): events and keys must "
        "be JSON values, tuples, datetimes, dates, Decimals or bytes"
    )


def _describe(value: Any) -> str:
    try:
        return f"{value!r:.80}"
    except Exception:  # a repr that fails (or recurses) must not hide the real problem
        return "no repr"


_DECODERS: dict[str, Callable[[Any, int], Any]] = {
    "float": lambda v, _: float(_text(v)),
    "dict": lambda v, depth: {_unkey(k, depth): _unkey(x, depth) for k, x in v},
    "tuple": lambda v, depth: tuple(_unkey(x, depth) for x in v),
    "datetime": lambda v, _: datetime.fromisoformat(_text(v)),
    "date": lambda v, _: date.fromisoformat(_text(v)),
    "decimal": lambda v, _: Decimal(_text(v)),
    "bytes": lambda v, _: base64.b64decode(_text(v), validate=True),
}


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a tagged value holds a {type(value).__name__}, not a string")
    return value


def _unkey(value: Any, depth: int = 0) -> Any:
    if not isinstance(value, list | dict):
        return value
    if depth >= MAX_DEPTH:
        raise SnapshotError(f"snapshot holds data nested more than {MAX_DEPTH} levels deep")
    depth += 1
    if isinstance(value, list):
        return [_unkey(v, depth) for v in value]
    tag = value.get(_TAG)
    if tag is not None:
        decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
        if decoder is None or value.keys() != {_TAG, "v"}:
            raise SnapshotError(f"snapshot holds an unknown tagged value {_describe(tag)}")
        return decoder(value["v"], depth)
    return {k: _unkey(v, depth) for k, v in value.items()}


def _unmapping(mapping: list[Any], events: list[Any]) -> dict[str, list[Any]]:
    return {
        _str(name, "stage name"): [events[_index(i, len(events), "event")] for i in idxs]
        for name, idxs in _list(mapping, "matched events")
    }
