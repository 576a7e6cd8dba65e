"""Checkpoint metadata is checked field by field: whatever a checkpoint's JSON metadata holds
(wrong types, booleans for integers, ``1e400``, nesting, unknown fields, broken UTF-8), reading
it gives a valid :class:`Checkpoint` or a :class:`CheckpointError` naming the problem, never
another exception. The checksum is recomputed for every mutation, so each one reaches the
metadata checks (a store's content can be written by anyone who can write the store)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudcep.checkpoint import (
    FORMAT_VERSION,
    MAGIC,
    MAX_OFFSET,
    MAX_PARTITION,
    METADATA_FIELDS,
    Checkpoint,
    CheckpointError,
    id_offset,
    new_id,
)
from fraudcep_kafka.checkpoints import DirectoryCheckpointStore

SNAPSHOT = b"\x00snapshot bytes\xff"


def valid_meta(offset: int = 42, partition: int = 3) -> dict[str, Any]:
    return {
        "group": "fraud",
        "topic": "payments.raw",
        "partition": partition,
        "offset": offset,
        "checkpoint_id": new_id(offset),
        "rules": "- id: r\n  key: user_id\n",
    }


def blob_of(meta: bytes, snapshot: bytes = SNAPSHOT) -> bytes:
    """A checkpoint file around ``meta`` with a valid header and checksum."""
    prefix = struct.pack(">8sHI", MAGIC, FORMAT_VERSION, len(meta))
    digest = hashlib.sha256(prefix + meta + snapshot).digest()
    return prefix + digest + meta + snapshot


def json_bytes(meta: Any) -> bytes:
    return json.dumps(meta, separators=(",", ":")).encode()


def with_raw(meta: dict[str, Any], field: str, raw: str) -> bytes:
    """``meta`` as JSON with the value of ``field`` replaced by the JSON text ``raw``."""
    marker = "\u0000MARK\u0000"
    text = json.dumps({**meta, field: marker}, separators=(",", ":"))
    return text.replace(json.dumps(marker), raw).encode()


def assert_valid(checkpoint: Checkpoint) -> None:
    assert isinstance(checkpoint.group, str) and 1 <= len(checkpoint.group) <= 249
    assert isinstance(checkpoint.topic, str) and 1 <= len(checkpoint.topic) <= 249
    assert type(checkpoint.partition) is int and 0 <= checkpoint.partition <= MAX_PARTITION
    assert type(checkpoint.offset) is int and 0 <= checkpoint.offset <= MAX_OFFSET
    assert id_offset(checkpoint.checkpoint_id) == checkpoint.offset
    assert isinstance(checkpoint.rules, str)
    checkpoint.rules.encode("utf-8")
    assert checkpoint.snapshot == SNAPSHOT
    # what was read can be written and read back as it was
    assert Checkpoint.from_bytes(checkpoint.to_bytes()) == checkpoint


def test_valid_metadata_reads_back() -> None:
    meta = valid_meta()
    checkpoint = Checkpoint.from_bytes(blob_of(json_bytes(meta)))
    assert_valid(checkpoint)
    assert checkpoint.metadata() == meta


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("partition", "1e400", "'partition' is a number with a fraction or exponent"),
        ("partition", "1.9", "'partition' is a number with a fraction or exponent"),
        ("partition", "1.0", "'partition' is a number with a fraction or exponent"),
        ("partition", "true", "'partition' is a boolean, not an integer"),
        ("partition", "-1", "'partition' is -1: expected 0 to 2147483647"),
        ("partition", "2147483648", "'partition' is 2147483648"),
        ("partition", '"3"', "'partition' is a string, not an integer"),
        ("partition", "null", "'partition' is null, not an integer"),
        ("partition", "9" * 5000, "not JSON"),
        ("offset", "false", "'offset' is a boolean"),
        ("offset", "-5", "'offset' is -5"),
        ("offset", str(2**63), f"'offset' is {2**63}"),
        ("offset", "NaN", "not JSON"),
        ("offset", "-Infinity", "not JSON"),
        ("group", "1", "'group' is an integer, not a string"),
        ("group", '""', "'group' is ''"),
        ("group", '"a/b"', "'group' is 'a/b'"),
        ("group", '".."', "'group' is '..'"),
        ("group", json.dumps("g" * 250), "'group' is 'ggg"),
        ("group", '"fraud\\n"', "'group' is 'fraud\\n'"),
        ("topic", "[]", "'topic' is a list"),
        ("topic", "{}", "'topic' is an object"),
        ("topic", '[{"a": 1}]', "nested 3 deep"),
        ("topic", "[" * 10_000 + "]" * 10_000, "nested 10001 deep"),
        ("checkpoint_id", '"../../x"', "'checkpoint_id' is '../../x', not a checkpoint id"),
        ("checkpoint_id", json.dumps(new_id(41)), "made for offset 41, not 42"),
        ("checkpoint_id", json.dumps(new_id(42) + "\n"), "not a checkpoint id"),
        ("checkpoint_id", json.dumps("٤" * 20 + "-abcdef012345"), "not a checkpoint id"),
        ("rules", "7", "'rules' is an integer, not a string"),
        ("rules", '"\\ud800"', "'rules' holds an unpaired surrogate"),
    ],
)
def test_bad_fields_are_named(field: str, raw: str, message: str) -> None:
    blob = blob_of(with_raw(valid_meta(), field, raw))
    with pytest.raises(CheckpointError, match=r"^c\.ckpt: ") as info:
        Checkpoint.from_bytes(blob, source="c.ckpt")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (b"[]", "a list, not an object"),
        (b"[[[]]]", "nested 3 deep"),
        (b"7", "no JSON object"),
        (b"", "no JSON object"),
        (b'{"group": "g"', "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ('{"group":"\u00e9"}'.encode("utf-16"), "not UTF-8"),
    ],
)
def test_metadata_that_is_no_json_object_is_refused(meta: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match="bad metadata") as info:
        Checkpoint.from_bytes(blob_of(meta))
    assert message in str(info.value)


def test_missing_and_unknown_fields_are_named() -> None:
    meta = valid_meta()
    del meta["rules"]
    with pytest.raises(CheckpointError, match="field 'rules' is missing"):
        Checkpoint.from_bytes(blob_of(json_bytes(meta)))
    with pytest.raises(CheckpointError, match="unknown field"):
        Checkpoint.from_bytes(blob_of(json_bytes({**valid_meta(), "extra": 1})))


def test_a_checkpoint_that_could_not_be_read_back_is_not_written() -> None:
    good = Checkpoint.from_bytes(blob_of(json_bytes(valid_meta())))
    for changes in (
        {"partition": True},
        {"partition": -1},
        {"offset": 1.5},
        {"group": 1},
        {"rules": "\ud800"},
        {"checkpoint_id": new_id(1)},
    ):
        bad = Checkpoint(**{**good.metadata(), "snapshot": SNAPSHOT, **changes})
        with pytest.raises(CheckpointError, match="bad metadata"):
            bad.to_bytes()


def test_the_directory_store_refuses_partition_numbers_that_are_not_integers(
    tmp_path: Path,
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    for partition in (True, -1, 1.0, 2**31):
        with pytest.raises(CheckpointError, match="not a partition number"):
            store.load("g", "t", partition, new_id(1))  # type: ignore[arg-type]


# == fuzz ====================================================================================

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
hostile_raw = st.sampled_from(
    ["1e400", "-1e400", "1.9", "-1", "true", "false", "null", "NaN", "Infinity", "0", "1",
     str(2**31), str(2**63), "9" * 4400, '"\\ud800"', '"\\u0000"', '"."', '"..."', '""',
     "[" * 3000 + "]" * 3000, '{"a":' * 2000 + "1" + "}" * 2000, '"' + "x" * 300 + '"']
)  # fmt: skip


@st.composite
def mutated_metadata(draw: st.DrawFn) -> bytes:
    meta = valid_meta(
        offset=draw(st.integers(0, MAX_OFFSET)), partition=draw(st.integers(0, MAX_PARTITION))
    )
    kind = draw(st.sampled_from(["value", "raw", "drop", "add", "bytes", "id"]))
    field = draw(st.sampled_from(METADATA_FIELDS))
    if kind == "value":
        meta[field] = draw(json_values)
    elif kind == "raw":
        return with_raw(meta, field, draw(hostile_raw))
    elif kind == "drop":
        del meta[field]
    elif kind == "add":
        meta[draw(st.text(max_size=8))] = draw(json_values)
    elif kind == "id":
        meta["checkpoint_id"] = new_id(draw(st.integers(0, 10**20 - 1)))
    text = bytearray(json_bytes(meta))
    if kind == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(text)))
            action = draw(st.sampled_from(["flip", "insert", "delete"]))
            if action == "insert" or at == len(text):
                text[at:at] = draw(st.binary(min_size=1, max_size=3))
            elif action == "flip":
                text[at] ^= draw(st.integers(1, 255))
            else:
                del text[at]
    return bytes(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=mutated_metadata())
def test_any_metadata_gives_a_valid_checkpoint_or_the_checkpoint_error(meta: bytes) -> None:
    try:
        checkpoint = Checkpoint.from_bytes(blob_of(meta), source="fuzz.ckpt")
    except CheckpointError as exc:
        assert str(exc).startswith("fuzz.ckpt: ")
        return
    assert_valid(checkpoint)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(meta=mutated_metadata())
def test_any_metadata_in_the_directory_store_loads_or_is_the_checkpoint_error(
    tmp_path: Path, meta: bytes
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    checkpoint_id = new_id(42)
    directory = tmp_path / "fraud" / "payments.raw" / "3"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{checkpoint_id}.ckpt").write_bytes(blob_of(meta))
    try:
        checkpoint = store.load("fraud", "payments.raw", 3, checkpoint_id)
    except CheckpointError:
        return
    assert_valid(checkpoint)
