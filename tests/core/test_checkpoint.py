"""Checkpoint metadata is checked field by field: whatever a checkpoint's JSON metadata holds
(wrong types, booleans for integers, ``1e400``, nesting, unknown fields, broken UTF-8), reading
it gives a valid :class:`Checkpoint` or a :class:`CheckpointError` naming the problem, never
another exception. The checksum is recomputed for every mutation, so each one reaches the
metadata checks (a store's content can be written by anyone who can write the store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudcep.runtime.checkpoint import (
    MAX_OFFSET,
    MAX_PARTITION,
    METADATA_FIELDS,
    Checkpoint,
    CheckpointError,
    frame,
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
        "kind": "full",
        "parent": None,
        "base": None,
    }


def delta_meta(offset: int = 42) -> dict[str, Any]:
    return {**valid_meta(offset), "kind": "delta", "parent": new_id(40), "base": new_id(30)}


def blob_of(meta: bytes, snapshot: bytes = SNAPSHOT) -> bytes:
    """A checkpoint file around ``meta`` with a valid header and checksum."""
    return frame(meta, snapshot)


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
    assert checkpoint.kind in ("full", "delta")
    for link in (checkpoint.parent, checkpoint.base):
        assert link is None or id_offset(link) <= checkpoint.offset
    if checkpoint.kind == "delta":
        assert checkpoint.parent is not None and checkpoint.base is not None
        assert id_offset(checkpoint.base) <= id_offset(checkpoint.parent)
    else:
        assert checkpoint.base is None
    assert checkpoint.snapshot == SNAPSHOT
    # what was read can be written and read back as it was
    assert Checkpoint.from_bytes(checkpoint.to_bytes()) == checkpoint


@pytest.mark.parametrize("meta", [valid_meta(), delta_meta(),
                                  {**valid_meta(), "parent": new_id(42)}])  # fmt: skip
def test_valid_metadata_reads_back(meta: dict[str, Any]) -> None:
    checkpoint = Checkpoint.from_bytes(blob_of(json_bytes(meta)))
    assert_valid(checkpoint)
    assert checkpoint.metadata() == meta


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "incremental"}, "'kind' is 'incremental': expected 'full' or 'delta'"),
        ({"kind": 2}, "'kind' is an integer: expected"),
        ({"kind": None}, "'kind' is null: expected"),
        ({"parent": None}, "'parent' is null, but a delta follows"),
        ({"base": None}, "'base' is null, but a delta follows"),
        ({"parent": 7}, "'parent' is an integer, not a string or null"),
        ({"base": "../x"}, "'base' is '../x', not a checkpoint id"),
        ({"parent": new_id(43)}, "made for offset 43, after 42"),
        ({"base": new_id(41)}, "'base' is made for offset 41, after its parent's"),
    ],
)
def test_bad_chain_fields_of_a_delta_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckpointError, match=r"^c\.ckpt: bad metadata") as info:
        Checkpoint.from_bytes(blob_of(json_bytes({**delta_meta(), **changes})), source="c.ckpt")
    assert message in str(info.value)


def test_a_checkpoint_naming_itself_is_refused() -> None:
    meta = delta_meta()
    meta["parent"] = meta["checkpoint_id"]
    with pytest.raises(CheckpointError, match="'parent' names the checkpoint itself"):
        Checkpoint.from_bytes(blob_of(json_bytes(meta)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"base": new_id(10)}, "'base' is set, but a full checkpoint starts its own chain"),
        ({"parent": new_id(40)}, "a compacted checkpoint has its parent's offset"),
    ],
)
def test_bad_chain_fields_of_a_full_checkpoint_are_named(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(CheckpointError, match="bad metadata") as info:
        Checkpoint.from_bytes(blob_of(json_bytes({**valid_meta(), **changes})))
    assert message in str(info.value)


def test_format_1_metadata_has_no_chain_fields() -> None:
    v1 = {k: v for k, v in valid_meta().items() if k not in ("kind", "parent", "base")}
    checkpoint = Checkpoint.from_bytes(frame(json_bytes(v1), SNAPSHOT, version=1))
    assert (checkpoint.kind, checkpoint.parent, checkpoint.base) == ("full", None, None)
    with pytest.raises(CheckpointError, match="unknown field"):
        Checkpoint.from_bytes(frame(json_bytes(valid_meta()), SNAPSHOT, version=1))
    with pytest.raises(CheckpointError, match="field 'kind' is missing"):
        Checkpoint.from_bytes(blob_of(json_bytes(v1)))


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
        {"kind": "delta"},
        {"base": new_id(1)},
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
