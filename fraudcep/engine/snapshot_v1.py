"""Reading format-1 snapshots (written by fraudcep before format 2, :mod:`fraudcep.engine.codec`).

Layout: ``FCEPSNAP`` (8 bytes), format version (u16, 1), reserved (u16), body length (u64),
SHA-256 of header and body (32 bytes), then the body: zlib-compressed JSON holding the rules'
fingerprints, the clocks, the event buffer, timers, and for every rule and key the partial and
completed matches, matched events stored once and referenced by index. Events and keys are
JSON values, or tuples, datetimes, dates, Decimals and bytes stored tagged. Every field is
checked as it is read; anything malformed is a :class:`SnapshotError`.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import struct
import zlib
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fraudcep.alert import ConditionFailure, LateEvent, Overflow, TimedOutMatch
from fraudcep.engine.codec import MAX_DEPTH, rule_fingerprint
from fraudcep.engine.rule import Rule
from fraudcep.engine.state import COUNTERS, SKIP, EngineState, RuleState, count_pending
from fraudcep.errors import SnapshotError
from fraudcep.nfa.matcher import NOT_STARTED, KeyState, Node, Run

MAGIC = b"FCEPSNAP"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sHHQ32s")


def _digest(length: int, body: bytes) -> bytes:
    """SHA-256 over the header fields before it and the body."""
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, length, b"")[: _HEADER.size - 32]
    return hashlib.sha256(prefix + body).digest()


def load(state: EngineState, rules: Iterable[Rule], time_mode: str, blob: bytes) -> bytes:
    """Fill a fresh ``state`` with the format-1 snapshot ``blob`` of an engine running
    ``rules``; returns the snapshot's id."""
    doc = read(blob)
    rule_lists = doc["rules"], doc["disabled"]
    if not all(
        isinstance(entries, list)
        and all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in entries)
        for entries in rule_lists
    ):
        raise SnapshotError("snapshot body has no valid rule list")
    try:
        _arrange_rules(state, rules, doc["rules"], doc["disabled"])
        if doc["time_mode"] != time_mode:
            raise SnapshotError(
                f"snapshot was taken in {doc['time_mode']!r:.40} mode, restore asked for "
                f"{time_mode}"
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
        state.seq = _int(doc["seq"], "seq", 0)
        state.order = _int(doc["order"], "order", 0)
        state.max_ts = _int(doc["max_ts"], "max_ts")
        state.watermark = _int(doc["watermark"], "watermark")
        state.timer_tie = _int(doc["timer_tie"], "timer_tie", 0)
        counts = doc["counts"]
        if not isinstance(counts, dict) or counts.keys() != set(COUNTERS):
            raise SnapshotError("snapshot counters are not the engine's")
        state.counters = {name: _int(counts[name], name, 0) for name in COUNTERS}
        n_rules = len(state.rules)
        state.buffer = []
        for ts, seq, ev, keys in _list(doc["buffer"], "buffer"):
            if len(_list(keys, "buffered keys")) != n_rules:
                raise SnapshotError("a buffered event's keys do not match the rules")
            state.buffer.append(
                (
                    _int(ts, "buffered time"),
                    _int(seq, "buffered order", 0),
                    events[_index(ev, n_events, "event")],
                    tuple(SKIP if k is None else _hashable(_list(k, "key")[0]) for k in keys),
                )
            )
        heapq.heapify(state.buffer)
        count_pending(state)
        timers = [
            (
                _int(deadline, "timer"),
                _int(tie, "timer order", 0),
                state.rules[_index(index, n_rules, "rule")],
                _hashable(key),
            )
            for deadline, tie, index, key in _list(doc["timers"], "timers")
        ]
        for rr, entries in zip(state.rules, _list(doc["keys"], "keys"), strict=True):
            for key, stored in _list(entries, "keys"):
                rr.keys[_hashable(key)] = _restore_key_state(rr, stored, nodes)
            rr.live = rr.live_matches()
        # The timer of a key that fires is the first written with the key's deadline (they
        # are written sorted): it is the key's live timer from now on.
        for deadline, tie, rr, key in sorted(timers, key=lambda t: t[:2], reverse=True):
            ks = rr.keys.get(key)
            if ks is not None and ks.deadline == deadline:
                rr.timers[key] = tie
        state.timers = [t for t in timers if t[2].timers.get(t[3]) == t[1]]
        heapq.heapify(state.timers)
        state.timeouts = [
            TimedOutMatch(
                _str(rule_id, "rule id"),
                _hashable(key),
                _unmapping(mapping, events),
                _int(ts, "timeout"),
                _int(version, "rule version", 1),
            )
            for rule_id, key, mapping, ts, version in _list(doc["timeouts"], "timeouts")
        ]
        state.late = [
            LateEvent(events[_index(ev, n_events, "event")], _int(ts, "time"), _int(wm, "time"))
            for ev, ts, wm in _list(doc["late"], "late")
        ]
        state.overflows = [
            Overflow(
                _str(kind, "overflow kind"),
                None if rule_id is None else _str(rule_id, "rule id"),
                None if key is None else _hashable(_list(key, "key")[0]),
                _int(dropped, "dropped", 0),
                _int(wm, "time"),
            )
            for kind, rule_id, key, dropped, wm in _list(doc["overflows"], "overflows")
        ]
        state.failures = [
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
    return bytes(blob[20:36])  # the first 16 bytes of its SHA-256


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


def _arrange_rules(
    state: EngineState, rules: Iterable[Rule], enabled: list[Any], disabled: list[Any]
) -> None:
    """Put ``rules`` in the snapshot's order, versions and enabled state, after checking that
    they are exactly the snapshot's rules."""
    given = {rule.id: rule for rule in rules}
    wanted = [r["id"] for r in enabled] + [r["id"] for r in disabled]
    if sorted(given) != sorted(wanted) or len(set(wanted)) != len(wanted):
        raise SnapshotError(
            f"snapshot was taken with other rules than restore() got (rule ids {sorted(wanted)} "
            f"vs {sorted(given)}); restore with the rules the snapshot was taken with"
        )
    for entry in enabled + disabled:
        if rule_fingerprint(given[entry["id"]]) != entry.get("structure"):
            raise SnapshotError(
                f"rule {entry['id']!r}: the same rule ids, but the patterns differ in structure "
                "from the snapshot's; restore with the rules the snapshot was taken with"
            )
    state.rules = [RuleState(given[r["id"]], _rule_version(r)) for r in enabled]
    state.disabled = {r["id"]: (given[r["id"]], _rule_version(r)) for r in disabled}


def _rule_version(entry: dict[str, Any]) -> int:
    version = entry.get("version")
    if type(version) is not int or not 1 <= version < 2**63:
        raise SnapshotError(f"rule {entry['id']!r:.80}: version {version!r:.40} is not valid")
    return version


def _restore_key_state(rr: RuleState, state: dict[str, Any], nodes: list[Node]) -> KeyState:
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


_TAG = "$fcep"


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
