"""The fast decoder (msgspec) against the careful one (:mod:`json`), record for record.

:func:`decode_payment` reads the usual record with msgspec and hands anything msgspec could
read differently to ``_decode_careful``, the :mod:`json` decoder it had before. Both must
make the same decision about every record: the same payment (same keys, in the same order,
same types: an ``int`` amount stays an ``int``, ``-0.0`` stays ``-0.0``; the engine's alert
ids hash the payment's JSON), or the same refusal (reason, field and detail). Held here on
generated valid and malformed records, on byte-level mutations of valid ones, on arbitrary
bytes, and on a list of known differences between JSON readers.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep.payments.payment import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    InvalidRecord,
    _decode_careful,
    decode_payment,
)
from fraudcep.testing import malformed_payment_records, valid_payment_records

MANY = settings(max_examples=1000, derandomize=True, database=None, deadline=None)

GOOD: dict[str, Any] = {
    "payment_id": "p0000000001",
    "user_id": "u0000042",
    "card_id": "card-0000042-0",
    "merchant": "m00017",
    "country": "DE",
    "amount": 12.5,
    "currency": "EUR",
    "status": "approved",
    "ts": 1_700_000_000_000,
}
GOOD_RAW = json.dumps(GOOD, separators=(",", ":")).encode()


def exact(value: Any) -> Any:
    """``value`` with every type made visible: 1 != 1.0, -0.0 != 0.0, NaN == NaN."""
    if isinstance(value, dict):
        return ("object", [(type(k).__name__, k, exact(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("array", [exact(v) for v in value])
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else value.hex())
    return (type(value).__name__, value)


def outcome(decode: Any, raw: Any, **limits: int) -> tuple[Any, ...]:
    try:
        payment = decode(raw, **limits)
    except InvalidRecord as exc:
        return ("refused", exc.reason, exc.field, exc.detail)
    return ("accepted", exact(payment))


def careful(
    raw: Any, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    return _decode_careful(raw, max_bytes, max_depth)


def assert_same(raw: Any, **limits: int) -> tuple[Any, ...]:
    fast = outcome(decode_payment, raw, **limits)
    reference = outcome(careful, raw, **limits)
    assert fast == reference, raw
    return fast


# -- generated records ----------------------------------------------------------------------


@MANY
@given(valid_payment_records(), st.sampled_from([None, (",", ":"), (", ", ": "), (" ,", " : ")]))
def test_valid_records_decode_the_same(raw: bytes, separators: tuple[str, str] | None) -> None:
    assert assert_same(raw)[0] == "accepted"
    if separators is not None:  # the same payment written differently
        again = json.dumps(json.loads(raw), separators=separators, ensure_ascii=False).encode()
        assert assert_same(again)[0] == "accepted"


@MANY
@given(malformed_payment_records())
def test_malformed_records_are_refused_the_same(raw: bytes) -> None:
    assert assert_same(raw)[0] == "refused"


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(malformed_payment_records(max_bytes=2048))
def test_malformed_records_under_a_small_limit_are_refused_the_same(raw: bytes) -> None:
    assert assert_same(raw, max_bytes=2048)[0] == "refused"


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", ":", '":', "{", "[", "}", "\\", '"', "\ud800", "\x00", "\ufeff"])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=5,
)
FIELD_VALUES = st.sampled_from(
    [
        None, True, False, 0, -0.0, 0.0, -1, 1, 12.5, 10**12, 10**12 + 1, 1e12, 1e300, 2**64,
        2**70, -(2**70), 1_700_000_000_000, 1.7e12, "", "x", "x" * 128, "x" * 129, "é" * 128,
        "US", "us", "USD", "US\n", "approved", "declined", "a:b", '{"k":1}', [], {}, [1], {"a": 1},
    ]
)  # fmt: skip


@st.composite
def edited_payments(draw: st.DrawFn) -> bytes:
    """A valid payment with fields changed, dropped or added, written in a drawn style."""
    payment: dict[str, Any] = json.loads(draw(valid_payment_records()))
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from([*GOOD, "scenario", "label", "x:y", ""]))
        action = draw(st.sampled_from(("edge", "any", "drop")))
        if action == "drop":
            payment.pop(field, None)
        else:
            payment[field] = draw(FIELD_VALUES if action == "edge" else JSON_VALUES)
    text = json.dumps(
        payment,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), ("\n,", "\t:\r")])),
    )
    return text.encode("utf-8", "surrogatepass")


@MANY
@given(edited_payments())
def test_edited_payments_decode_the_same(raw: bytes) -> None:
    assert_same(raw)


TOKENS = [
    b'"', b":", b",", b"{", b"}", b"[", b"]", b"\\", b" ", b"\t", b"\n", b"\r", b"\x0c", b"\x0b",
    b"\x00", b"\x01", b"\x7f", b"\xff", b"\xc3", b"\xc3\xa9", b"\xed\xa0\x80", b"\xef\xbb\xbf",
    b"\xf4\x90\x80\x80", b"NaN", b"-Infinity", b"1e400", b"-0", b"01", b"1.", b".5", b"+1",
    b"1" * 30, b"1" * 5000, b"\\ud800", b"\\udc00", b"\\u0000", b"\\x", b"true", b"null",
    b'"amount":', b'"ts":', b'"amount":1,', b'"k":1,', b"e5", b"E-400", b".0",
]  # fmt: skip


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    """A valid record with a few bytes or tokens inserted, removed or replaced."""
    raw = bytearray(draw(valid_payment_records() | st.just(GOOD_RAW)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 3))
        piece = draw(st.sampled_from(TOKENS) | st.binary(max_size=3))
        raw[at : at + cut] = piece
    return bytes(raw)


@MANY
@given(mutated_bytes())
def test_mutated_records_decode_the_same(raw: bytes) -> None:
    assert_same(raw)


@MANY
@given(
    st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_arbitrary_bytes_decode_the_same(raw: bytes) -> None:
    assert_same(raw)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(edited_payments(), st.integers(1, 400), st.integers(0, 3))
def test_limits_apply_the_same(raw: bytes, max_bytes: int, max_depth: int) -> None:
    assert_same(raw, max_bytes=max_bytes, max_depth=max_depth)


# -- known differences between JSON readers -------------------------------------------------


def _with(token: bytes, field: str = "label") -> bytes:
    """GOOD with ``field`` last, written as the raw JSON ``token``."""
    rest = {k: v for k, v in GOOD.items() if k != field}
    return (
        json.dumps(rest, separators=(",", ":")).encode()[:-1]
        + f',"{field}":'.encode()
        + token
        + b"}"
    )


HOSTILE = [
    GOOD_RAW,
    GOOD_RAW[:-1] + b',"amount":13}',  # a duplicate key: msgspec keeps the last silently
    GOOD_RAW[:-1] + b',"label":1,"label":2}',
    GOOD_RAW[:-1] + b',"x":{"k":1,"k":2}}',
    GOOD_RAW.replace(b'"m00017"', b'"m:00017"'),  # a ':' in a string
    GOOD_RAW.replace(b'"m00017"', b'"m00017","ts":1'),
    b"\xef\xbb\xbf" + GOOD_RAW,  # a BOM
    b" \t\r\n" + GOOD_RAW + b" \t\r\n",
    b"\x0c" + GOOD_RAW,
    GOOD_RAW + b"\x00",
    GOOD_RAW + b" {}",
    GOOD_RAW.replace(b":", b" : "),
    _with(b"NaN", "amount"),
    _with(b"Infinity"),
    _with(b"-Infinity"),
    _with(b"1e400", "amount"),
    _with(b"-1e400", "amount"),
    _with(b"1.7976931348623159e308"),
    _with(b"1e-400", "amount"),
    _with(b"4.9e-324"),
    _with(b"-0", "amount"),
    _with(b"-0.0", "amount"),
    _with(b"0.0", "amount"),
    _with(b"1000000000000", "amount"),
    _with(b"1000000000000.0000001", "amount"),
    _with(b"1000000000001", "amount"),
    _with(b"1" * 30),
    _with(b"1" * 30, "amount"),
    _with(b"1" * 30, "ts"),
    _with(b"1" * 5000),
    _with(b"18446744073709551616"),
    _with(b"-9223372036854775809"),
    _with(b"1700000000000.0", "ts"),
    _with(b"17e11", "ts"),
    _with(b"01", "ts"),
    _with(b"1.", "amount"),
    _with(b".5", "amount"),
    _with(b"+1", "amount"),
    _with(b'"\\ud800"'),
    _with(b'"\\udc00\\ud800"'),
    _with(b'"\\ud83d\\ude42"'),
    _with(b'"\\ud800"', "merchant"),
    _with(b'"\xed\xa0\x80"'),
    _with(b'"\xff"'),
    _with(b'"\xc0\x80"'),
    _with(b'"\xf4\x90\x80\x80"'),
    _with(b'"x\x01"'),
    _with(b'"x\x7f"'),
    _with(b'"\\u0000"', "merchant"),
    _with(b'"\\x"'),
    _with(b'"\\/"', "merchant"),
    _with(b'"caf\xc3\xa9"', "merchant"),
    _with(b'"caf\\u00e9"', "merchant"),
    _with(b'"' + "é".encode() * 128 + b'"', "merchant"),
    _with(b'"' + "é".encode() * 129 + b'"', "merchant"),
    _with(b'"\\u0055\\u0053"', "country"),
    _with(b'"US\\n"', "country"),
    _with(b"true,"),
    _with(b"[]"),
    _with(b"{}"),
    _with(b"[" * 40 + b"]" * 40),
    _with(b"[" * 20_000 + b"]" * 20_000),
    _with(b'{"k":' * 40 + b"0" + b"}" * 40),
    b"{}",
    b"[]",
    b"null",
    b'"payment"',
    b"",
    b" ",
    b"{",
    b'{"a":1,}',
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_records_decode_the_same(raw: bytes) -> None:
    assert_same(raw)
    assert_same(raw, max_bytes=len(raw))
    assert_same(raw, max_bytes=max(len(raw) - 1, 0))
    assert_same(raw, max_depth=1)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, str])
def test_every_kind_of_input_decodes_the_same(kind: type) -> None:
    for raw in HOSTILE:
        try:
            data = raw.decode() if kind is str else kind(raw)
        except UnicodeDecodeError:
            continue
        assert outcome(decode_payment, data) == outcome(careful, data)
    assert outcome(decode_payment, None) == outcome(careful, None)


def test_a_duplicate_key_is_still_refused() -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_payment(GOOD_RAW[:-1] + b',"amount":13}')
    assert info.value.reason == "duplicate_key"


def test_an_integer_amount_stays_an_integer() -> None:
    payment = decode_payment(_with(b"12", "amount"))
    assert type(payment["amount"]) is int and payment["amount"] == 12
    assert list(payment) == [*(k for k in GOOD if k != "amount"), "amount"]


def test_generated_payments_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from fraudcep.payments import payment as module
    from fraudcep.payments.synthetic import PaymentGenerator

    careful_calls: list[object] = []

    def counting(data: Any, max_bytes: int, max_depth: int) -> Any:
        careful_calls.append(data)
        return _decode_careful(data, max_bytes, max_depth)

    monkeypatch.setattr(module, "_decode_careful", counting)
    payments, _ = PaymentGenerator(seed=3, users=200, scenarios_per_10k=200).generate(2000)
    for payment in payments:
        for separators in ((",", ":"), (", ", ": ")):
            raw = json.dumps(payment, separators=separators).encode()
            assert exact(decode_payment(raw)) == exact(json.loads(raw))
    assert careful_calls == []
    assert decode_payment(GOOD_RAW[:-1] + b',"note":"a:b"}')["note"] == "a:b"
    assert len(careful_calls) == 1  # a ':' in a string: read carefully
