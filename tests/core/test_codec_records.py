"""How restore reads key records (format 2): each record is decoded when its key is taken,
the records a later delta replaced are still checked, a key stored twice and timers out of
order are refused naming the key; errors name the record they are in."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from fraudcep import Engine, Pattern, Rule, SnapshotError
from fraudcep.engine.codec import MAX_DEPTH

HEADER = struct.Struct(">8sHBBQ32s")
FULL, DELTA = 1, 2


def rule() -> Rule:
    return Rule(
        "two-big",
        Pattern.begin("a").where(lambda e: e["amount"] > 100).times(2).within(10**6),
        key="user",
    )


def pay(i: int, user: str, amount: int = 500) -> dict[str, Any]:
    return {"id": i, "user": user, "amount": amount, "ts": i}


def chain() -> tuple[bytes, bytes, bytes]:
    """A base of users a-d, a delta changing a and b, a second one changing a again."""
    engine = Engine([rule()], timestamp="ts")
    engine.process_many(pay(i, u) for i, u in enumerate("abcd", 1))
    engine.advance_watermark(5)
    base = engine.snapshot()
    engine.process_many([pay(10, "a"), pay(11, "b", 50)])
    engine.advance_watermark(15)
    first = engine.snapshot_delta()
    engine.process_many([pay(20, "a", 50)])
    engine.advance_watermark(25)
    return base, first, engine.snapshot_delta()


def body(blob: bytes) -> Any:
    return msgspec.msgpack.decode(
        blob[HEADER.size :], ext_hook=lambda code, data: msgspec.msgpack.Ext(code, bytes(data))
    )


def frame(doc: Any, kind: int) -> tuple[bytes, bytes]:
    """A blob around ``doc`` and its id (unkeyed BLAKE2b-256 over the header fields and body)."""
    data = msgspec.msgpack.encode(doc)
    prefix = HEADER.pack(b"FCEPSNAP", 2, kind, 0, len(data), bytes(32))[: HEADER.size - 32]
    digest = hashlib.blake2b(prefix + data, digest_size=32).digest()
    return prefix + digest + data, digest[:16]


def relinked(docs: list[Any]) -> list[bytes]:
    """The chain of bodies ``docs`` (base first), each delta linked to the blob before it."""
    out = []
    blob, ident = frame(docs[0], FULL)
    out.append(blob)
    for doc in docs[1:]:
        doc[0] = ident
        blob, ident = frame(doc, DELTA)
        out.append(blob)
    return out


def restore(blobs: list[bytes]) -> Engine:
    return Engine.restore(blobs[0], [rule()], deltas=blobs[1:], timestamp="ts")


def test_the_forged_chain_helper_reproduces_a_real_chain() -> None:
    real = list(chain())
    assert relinked([body(b) for b in real]) == real
    restored = restore(real)
    assert restored.stats.live_keys == 4


def record_entry(doc: Any, user: str) -> Any:
    return next(entry for entry in doc[2] if entry[1] == user)


def record_of(doc: Any, user: str) -> Any:
    return record_entry(doc, user)[2]


def test_a_record_a_later_delta_replaced_is_still_checked() -> None:
    docs = [body(b) for b in chain()]
    # the base's record of "a" is replaced by the first delta's, which the second replaces
    for doc in docs[:2]:
        record_of(doc, "a")[2][0][5][0][0] = -1  # a run's state index, below any
        with pytest.raises(SnapshotError, match="key 'a' in group 'user' cannot be decoded"):
            restore(relinked(docs))
        record_of(doc, "a")[2][0][5][0][0] = 0
    restore(relinked(docs))


def test_a_key_stored_twice_is_refused() -> None:
    docs = [body(b) for b in chain()]
    docs[0][2].append(record_entry(docs[0], "d"))
    with pytest.raises(SnapshotError, match="key 'd' in group 'user': the key is stored twice"):
        restore(relinked(docs))


def test_timers_in_an_order_the_engine_cannot_have_given_are_refused() -> None:
    docs = [body(b) for b in chain()]
    record_of(docs[0], "d")[2][0][4] = record_of(docs[0], "c")[2][0][4]  # c's timer tie
    with pytest.raises(SnapshotError, match=r"key '[cd]' in group 'user': its timer's order"):
        restore(relinked(docs))
    docs = [body(b) for b in chain()]
    record_of(docs[0], "d")[2][0][4] = docs[-1][1][6] + 1  # after the engine's last tie
    with pytest.raises(SnapshotError, match="key 'd' in group 'user': its timer's order"):
        restore(relinked(docs))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ((1, 0, 1), 7, "node 0 refers to a missing event"),
        ((1, 0, 4), 0, "node 0 refers to a missing event or node"),
        ((2, 0, 5, 0, 1), 5, "a run of rule 'two-big' is out of range"),
        ((2, 0, 5, 0, 0), 99, "a run of rule 'two-big' is out of range"),
        ((2, 0, 5, 0, 4), 2**63 + 1, "a run of rule 'two-big' is out of range"),
        ((2, 0, 5, 0, 4), -1, "cannot be decoded"),
        ((2, 0, 1), 2, "holds rule 'two-big' version 2, which is not in force"),
        ((2, 0, 4), None, "has half a timer"),
        ((2, 0, 2), "soon", "cannot be decoded"),
    ],
)
def test_a_damaged_record_is_refused_naming_its_key(
    path: tuple[int, ...], value: Any, message: str
) -> None:
    docs = [body(b) for b in chain()]
    target = record_of(docs[0], "c")
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(SnapshotError, match=f"key 'c' in group 'user'.*{message}"):
        restore(relinked(docs))


def test_a_record_of_a_group_no_rule_is_keyed_by_is_refused() -> None:
    docs = [body(b) for b in chain()]
    docs[1][2][0][0] = "card"
    with pytest.raises(SnapshotError, match="group 'card' belongs to no rule in force"):
        restore(relinked(docs))


def test_a_key_removed_and_written_again_in_later_deltas_is_the_last_one_written() -> None:
    engine = Engine([rule()], timestamp="ts")
    engine.process_many([pay(1, "a"), pay(2, "b")])
    engine.advance_watermark(2)
    base = engine.snapshot()
    engine.import_key("user", "a", None)
    gone = engine.snapshot_delta()
    engine.process_many([pay(3, "a")])
    engine.advance_watermark(3)
    back = engine.snapshot_delta()
    restored = Engine.restore(base, [rule()], deltas=[gone, back], timestamp="ts")
    assert restored.export_key("user", "a") == engine.export_key("user", "a")
    assert restored.stats == engine.stats
    restored = Engine.restore(base, [rule()], deltas=[gone], timestamp="ts")
    assert restored.export_key("user", "a") is None
    assert restored.stats.live_keys == 1


# -- events of every kind, in any order ----------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


KINDS: dict[str, dict[str, Any]] = {
    "flat": {},
    "nested": {"tags": ["a", {"b": [1, 2]}]},
    "tuple": {"tags": ("a", 1)},
    "datetime": {"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
    "bytes": {"raw": b"\x00\xff"},
    "big": {"n": 2**70},
    "decimal": {"price": Decimal("1.10")},
}


@pytest.mark.parametrize("order", [list(KINDS), list(reversed(KINDS)), ["flat", "nested"] * 3])
def test_records_of_every_kind_of_event_read_back_in_any_order(order: list[str]) -> None:
    """Records of flat events are decoded by a decoder that only reads flat events, tried
    first while records come flat; whatever comes in whichever order reads back the same."""
    engine = Engine([rule()], timestamp="ts")
    for i, kind in enumerate(KINDS):
        engine.process({**pay(i + 1, kind), **KINDS[kind]})
    engine.advance_watermark(100)
    other = Engine([rule()], timestamp="ts")
    for kind in order:
        record = engine.export_key("user", kind)
        assert record is not None
        other.import_key("user", kind, record)
        again = other.export_key("user", kind)
        assert again is not None
        assert without_tie(again) == without_tie(record)  # the tie is the importer's own
        (run,) = [r for r in other._state.rules[0].keys[kind].partial if r.node is not None]
        event = run.node.event
        assert event == {**pay(event["id"], kind), **KINDS[kind]}
        assert [type(v) for v in event.values()] == [
            type(v) for v in {**pay(event["id"], kind), **KINDS[kind]}.values()
        ]


def without_tie(record: bytes) -> Any:
    doc = msgspec.msgpack.decode(
        record[25:], ext_hook=lambda code, data: msgspec.msgpack.Ext(code, bytes(data))
    )
    doc[2][0][4] = None
    return doc


@pytest.mark.parametrize("before", ["flat", "nested"])
def test_an_event_nested_too_deeply_is_refused_whatever_came_before(before: str) -> None:
    engine = Engine([rule()], timestamp="ts")
    engine.process_many([{**pay(1, "flat")}, {**pay(2, "nested"), **KINDS["nested"]}])
    engine.advance_watermark(100)
    record = engine.export_key("user", "flat")
    assert record is not None
    doc = msgspec.msgpack.decode(record[25:])
    doc[0][0]["deep"] = nested(MAX_DEPTH + 1)
    data = msgspec.msgpack.encode(doc)
    forged = record[:9] + hashlib.blake2b(data, digest_size=16).digest() + data
    other = Engine([rule()], timestamp="ts")
    other.import_key("user", before, engine.export_key("user", before))
    with pytest.raises(SnapshotError, match=f"{MAX_DEPTH} levels"):
        other.import_key("user", "x", forged)
    doc[0][0]["deep"] = nested(MAX_DEPTH - 1)  # the deepest an event may be
    data = msgspec.msgpack.encode(doc)
    other.import_key(
        "user", "x", record[:9] + hashlib.blake2b(data, digest_size=16).digest() + data
    )
    assert other.stats.live_keys == 2
