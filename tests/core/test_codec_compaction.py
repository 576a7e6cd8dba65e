"""``compact(base, deltas)`` merges a chain from the records' bytes, one blob after the other:
its result is the very bytes that decoding every record of the chain at once and encoding the
merge gives (the reference below, compaction as it was written first), for chains of real
engines (two key groups, keys removed and added again, rule changes, odd values, with and
without a state key, compacted bases compacted again), and it refuses what that refuses with
the same messages."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.rule_pool import OPTIONS, make_rules

from fraudcep import Engine, SnapshotError
from fraudcep.engine import codec
from fraudcep.engine.codec import compact

KEYS = "abcdefghijklmnopqrstuvwxyz"
ODD = {"tags": (1, "x"), "when": datetime(2026, 1, 1, tzinfo=UTC), "n": 10**30,
       "d": Decimal("1.5"), "s": "\ud800", "m": {1: "one"}, "b": b"\x00\xff"}  # fmt: skip


def reference_compact(
    base: bytes, deltas: Sequence[bytes], *, state_key: bytes | None = None
) -> bytes:
    """Compaction as first written: every blob decoded whole (every record into objects),
    then the merge encoded."""
    blobs = [
        codec.read_blob(b, state_key=state_key, decoder=codec._DECODE_BODY_RAW)
        for b in (base, *deltas)
    ]
    codec._check_chain(blobs)
    stored: dict[tuple[str, bytes], Any] = {}
    for blob in blobs:
        for gone in blob.body.removed:
            stored.pop((gone.group, codec._ENCODE(gone.key)), None)
        for item in blob.body.records:
            stored[(item.group, codec._ENCODE(item.key))] = item
    merged = codec._WholeBody(blobs[-1].id, blobs[-1].body.engine, list(stored.values()), [])
    out = codec._ENCODE(merged)
    flags = codec._KEYED if state_key else 0
    digest = codec._digest(codec.FULL, flags, out, state_key)
    head = codec._HEADER.pack(
        codec.MAGIC, codec.FORMAT_VERSION, codec.FULL, flags, len(out), digest
    )
    return head + out


def stream(seed: int, n: int, keys: int, odd: bool) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out, t = [], 0
    for i in range(n):
        t += rng.randint(0, 3)
        event = {"id": i, "ts": t + rng.randint(0, 2), "k": rng.choice(KEYS[:keys]),
                 "t": rng.choice("abcd")}  # fmt: skip
        out.append({**event, **ODD} if odd and i % 3 == 0 else event)
    return out


CHANGES = ["replace", "remove", "add", "disable", "enable"]


def change(engine: Engine, kind: str) -> None:
    """Rule changes on the pool's ``ab-within`` and ``any-b-c``: their keys' states go."""
    pool = {r.id: r for r in make_rules()}
    versions = engine.rule_versions()
    in_force = {r.id for r in engine.rules}
    if kind == "replace" and "ab-within" in versions:
        engine.replace_rule(pool["ab-within"])
    elif kind == "remove" and "any-b-c" in versions:
        engine.remove_rule("any-b-c")
    elif kind == "add" and "any-b-c" not in versions:
        engine.add_rule(pool["any-b-c"])
    elif kind == "disable" and "ab-within" in in_force:
        engine.disable_rule("ab-within")
    elif kind == "enable" and "ab-within" in versions and "ab-within" not in in_force:
        engine.enable_rule("ab-within")


def chain(
    events: list[dict[str, Any]],
    cuts: Sequence[int],
    changes: dict[int, str],
    state_key: bytes | None,
) -> list[bytes]:
    """A full snapshot at the first cut, a delta at each cut after it, and one at the end."""
    engine = Engine(make_rules(), **OPTIONS, state_key=state_key)
    blobs: list[bytes] = []
    at = sorted(set(cuts))
    for i, event in enumerate(events):
        if i in changes:
            change(engine, changes[i])
        if at and i == at[0]:
            at.pop(0)
            blobs.append(engine.snapshot_delta() if blobs else engine.snapshot())
        engine.process(event)
    blobs.append(engine.snapshot_delta() if blobs else engine.snapshot())
    return blobs


def removed_and_added_again(blobs: Sequence[bytes], state_key: bytes | None) -> tuple[int, int]:
    """How many keys the chain's deltas remove, and how many of them a later delta adds again."""
    removed: set[tuple[str, bytes]] = set()
    again = 0
    gone = 0
    for blob in blobs[1:]:
        body = codec.read_blob(blob, state_key=state_key, decoder=codec._DECODE_BODY_RAW).body
        for item in body.records:
            if (item.group, codec._ENCODE(item.key)) in removed:
                again += 1
        for item in body.removed:
            removed.add((item.group, codec._ENCODE(item.key)))
            gone += 1
    return gone, again


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 10_000),
    keys=st.integers(1, 26),
    cuts=st.lists(st.integers(0, 239), min_size=0, max_size=10),
    changes=st.dictionaries(st.integers(1, 239), st.sampled_from(CHANGES), max_size=4),
    keyed=st.booleans(),
    odd=st.booleans(),
    split=st.integers(0, 10),
)
def test_compaction_gives_the_bytes_the_whole_decoding_gave(
    seed: int,
    keys: int,
    cuts: list[int],
    changes: dict[int, str],
    keyed: bool,
    odd: bool,
    split: int,
) -> None:
    state_key = b"secret" if keyed else None
    blobs = chain(stream(seed, 240, keys, odd), cuts, changes, state_key)
    merged = compact(blobs[0], blobs[1:], state_key=state_key)
    assert merged == reference_compact(blobs[0], blobs[1:], state_key=state_key)
    # a compacted base is a base like any other: compacted again with the deltas after it
    split = min(split, len(blobs) - 1)
    first = compact(blobs[0], blobs[1 : 1 + split], state_key=state_key)
    assert compact(first, blobs[1 + split :], state_key=state_key) == reference_compact(
        first, blobs[1 + split :], state_key=state_key
    )


def test_the_generated_chains_remove_keys_and_add_them_again() -> None:
    """What the differential test above stands on: chains whose deltas remove keys and add
    some of them back, with more than 16 records (a 16-bit array length) in the merge."""
    blobs = chain(stream(7, 600, 26, True), range(20, 600, 40), {300: "remove", 450: "add"}, None)
    gone, again = removed_and_added_again(blobs, None)
    assert gone > 10 and again > 5
    merged = compact(blobs[0], blobs[1:])
    assert merged == reference_compact(blobs[0], blobs[1:])
    assert len(codec.read_blob(merged, decoder=codec._DECODE_BODY_RAW).body.records) > 16


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 65535, 65536, 70000])
def test_array_headers_are_msgspecs(n: int) -> None:
    assert codec._array_header(n) + codec._ENCODE(None) * n == codec._ENCODE([None] * n)


def reseal(blob: bytes, body: bytes) -> bytes:
    """``blob`` with ``body`` in place of its own, under a digest that holds (no state key)."""
    _, version, kind, flags, _, _ = codec._HEADER.unpack_from(blob)
    digest = codec._digest(kind, flags, body, None)
    return codec._HEADER.pack(codec.MAGIC, version, kind, flags, len(body), digest) + body


class _Parts(msgspec.Struct, array_like=True):
    link: Any
    engine: msgspec.Raw
    records: list[list[Any]]
    removed: list[Any]


def parts(blob: bytes) -> _Parts:
    return msgspec.msgpack.decode(
        blob[codec._HEADER.size :],
        type=_Parts,
        ext_hook=lambda c, d: msgspec.msgpack.Ext(c, bytes(d)),
    )


def a_chain() -> list[bytes]:
    return chain(stream(3, 300, 12, True), [40, 90, 150, 220], {}, None)


def test_records_encoded_otherwise_are_written_as_msgspec_writes_them() -> None:
    """A record whose bytes are not msgspec's own encoding of it (an array length in 16 bits)
    is written encoded anew, as the whole decoding wrote it."""
    blobs = a_chain()  # the last delta changed: no delta after it names it
    body = parts(blobs[-1])
    assert body.records
    group, key, record = body.records[0]
    raw = msgspec.msgpack.encode(record)
    body.records[0] = [group, key, msgspec.Raw(b"\xdc\x00\x03" + raw[1:])]
    blobs[-1] = reseal(blobs[-1], msgspec.msgpack.encode(body))
    merged = compact(blobs[0], blobs[1:])
    assert merged == reference_compact(blobs[0], blobs[1:])
    assert raw in merged and b"\xdc\x00\x03" + raw[1:] not in merged


def errors(base: bytes, deltas: Sequence[bytes], state_key: bytes | None = None) -> tuple[str, str]:
    with pytest.raises(SnapshotError) as new:
        compact(base, deltas, state_key=state_key)
    with pytest.raises(SnapshotError) as old:
        reference_compact(base, deltas, state_key=state_key)
    return str(new.value), str(old.value)


def test_broken_chains_are_refused_with_the_same_messages() -> None:
    base, *deltas = a_chain()
    cases = [
        (base, deltas[1:], None),  # a missing delta
        (base, [deltas[1], deltas[0], *deltas[2:]], None),  # reordered
        (base, [deltas[0], deltas[0]], None),  # repeated
        (deltas[0], deltas[1:], None),  # a delta for a base
        (base, [base], None),  # a full snapshot for a delta
        (base, deltas, b"key"),  # a state key, none written
        (base[:-1], deltas, None),  # truncated
        (base, [*deltas[:-1], deltas[-1][:-1] + b"\x00"], None),  # corrupt
        (base, [deltas[0][:8] + b"\x00\x07" + deltas[0][10:]], None),  # another version
    ]
    for base_, deltas_, state_key in cases:
        new, old = errors(base_, deltas_, state_key)
        assert new == old
    keyed = chain(stream(3, 100, 5, False), [30, 60], {}, b"k")
    new, old = errors(keyed[0], keyed[1:], None)
    assert new == old and "state key" in new
    new, old = errors(keyed[0], keyed[1:], b"other")
    assert new == old and "digest mismatch" in new


def test_a_bad_record_is_refused_as_the_whole_decoding_refused_it() -> None:
    """A record that does not decode (out of range, of the wrong type) under a digest that
    holds: the message is the whole body's decoding's, naming the record's place in it, and
    an error in an earlier blob of the chain is the one raised."""
    blobs = a_chain()
    bad_blobs = []
    for n, damage in ((2, "type"), (1, "range")):
        body = parts(blobs[n])
        group, key, record = body.records[-1]
        events, nodes, entries = msgspec.msgpack.decode(msgspec.msgpack.encode(record))
        if damage == "type":
            entries[0][2] = "not a time"
        else:
            entries[0][1] = -1
        body.records[-1] = [
            group,
            key,
            msgspec.Raw(msgspec.msgpack.encode([events, nodes, entries])),
        ]
        bad = reseal(blobs[n], msgspec.msgpack.encode(body))
        broken = [*blobs]
        broken[n] = bad
        new, old = errors(broken[0], broken[1:])
        assert new == old and "cannot be decoded" in new and "at `$[2]" in new
        bad_blobs.append((n, bad))
    both = [*blobs]
    for n, bad in bad_blobs:
        both[n] = bad
    new, old = errors(both[0], both[1:])
    assert new == old
    # a bad record in a full snapshot that names removed keys: the record's error first
    body = parts(blobs[0])
    body.removed = [body.records[0][:2]]
    group, key, _record = body.records[0]
    body.records[0] = [group, key, msgspec.Raw(msgspec.msgpack.encode([[], [], "x"]))]
    new, old = errors(reseal(blobs[0], msgspec.msgpack.encode(body)), blobs[1:])
    assert new == old and "cannot be decoded" in new
