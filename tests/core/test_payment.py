"""The payment record format: the JSON Schema, the decoder, and the record strategies.

The hand-written validator (:func:`fraudcep.payments.payment.validate_payment`) is held to the
published JSON Schema by ``jsonschema`` itself, on generated payments and on mutations of
them; the decoder is held to "a payment or an ``InvalidRecord``, nothing else" on every
kind of malformed record the strategies draw.
"""

from __future__ import annotations

import json
import pickle
from collections import UserDict
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudcep.errors import FraudcepError
from fraudcep.payments.payment import (
    DEFAULT_MAX_BYTES,
    MAX_TS,
    PAYMENT_FIELDS,
    REASONS,
    InvalidRecord,
    decode_payment,
    payment_schema,
    validate_payment,
)
from fraudcep.payments.synthetic import Payment, PaymentGenerator
from fraudcep.testing import malformed_payment_records, valid_payment_records

FAST = settings(max_examples=300, derandomize=True, database=None, deadline=None)

VALIDATOR = jsonschema.Draft202012Validator(payment_schema())

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


def raises(data: Any, **kwargs: Any) -> InvalidRecord:
    """The InvalidRecord that decoding ``data`` raises (fails the test if none)."""
    with pytest.raises(InvalidRecord) as info:
        decode_payment(data, **kwargs)
    return info.value


def record(**changes: Any) -> bytes:
    """GOOD with ``changes`` (a value of ``...`` drops the field), as JSON bytes."""
    payment = {**GOOD, **changes}
    return json.dumps({k: v for k, v in payment.items() if v is not ...}).encode()


# -- the schema itself ----------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = payment_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert tuple(schema["required"]) == PAYMENT_FIELDS
    assert set(schema["properties"]) == set(PAYMENT_FIELDS)
    assert schema["additionalProperties"] is True


def test_required_fields_are_those_of_the_payment_typeddict() -> None:
    # (synthetic.py's annotations are strings, so __required_keys__ cannot see NotRequired)
    annotations = {name: str(hint) for name, hint in Payment.__annotations__.items()}
    optional = {name for name, hint in annotations.items() if "NotRequired" in hint}
    assert optional == {"scenario", "scenario_id"}
    assert tuple(name for name in annotations if name not in optional) == PAYMENT_FIELDS


# -- the synthetic generator's payments -----------------------------------------------------


def test_every_generated_payment_round_trips_unchanged() -> None:
    payments, scenarios = PaymentGenerator(
        seed=11, users=300, scenarios_per_10k=200, jitter_ms=2_000
    ).generate(2000)
    assert scenarios and any("scenario" in p for p in payments)  # labels are exercised
    for payment in payments:
        raw = json.dumps(payment).encode()
        decoded = decode_payment(raw)
        assert decoded == payment
        assert {k: type(v) for k, v in decoded.items()} == {k: type(v) for k, v in payment.items()}
        assert VALIDATOR.is_valid(payment)


# -- valid records --------------------------------------------------------------------------


@FAST
@given(valid_payment_records())
def test_valid_records_decode_to_what_json_reads(raw: bytes) -> None:
    assert len(raw) <= DEFAULT_MAX_BYTES
    expected = json.loads(raw)
    assert VALIDATOR.is_valid(expected)
    assert decode_payment(raw) == expected
    assert decode_payment(bytearray(raw)) == expected
    assert decode_payment(memoryview(raw)) == expected
    assert decode_payment(raw.decode()) == expected


def test_accepted_edges() -> None:
    edges: list[dict[str, Any]] = [
        {"amount": 0},
        {"amount": 0.0},
        {"amount": 10**12},
        {"amount": 1e12},
        {"ts": 0},
        {"ts": MAX_TS},
        {"payment_id": "x" * 128},
        {"merchant": "Café Zürich 東京 🙂"},
        {"scenario": "geo-hop", "scenario_id": "s1", "extra": {"nested": [1, None, "x"]}},
        {"scenario": 5},  # labels are not checked
    ]
    for changes in edges:
        raw = record(**changes)
        assert decode_payment(raw) == json.loads(raw), changes


def test_size_limit_is_exact_and_checked_first() -> None:
    raw = record()
    assert decode_payment(raw, max_bytes=len(raw)) == GOOD
    assert raises(raw, max_bytes=len(raw) - 1).reason == "too_large"
    assert raises(b"\xff" * 100, max_bytes=99).reason == "too_large"  # before UTF-8
    # a str is measured in UTF-8 bytes, not characters
    text = record(merchant="é" * 100).decode()
    size = len(text.encode())
    assert decode_payment(text, max_bytes=size)["merchant"] == "é" * 100
    assert raises(text, max_bytes=size - 1).reason == "too_large"


# -- malformed records ----------------------------------------------------------------------


@FAST
@given(malformed_payment_records())
def test_malformed_records_are_refused_with_a_known_reason(raw: bytes) -> None:
    try:
        payment = decode_payment(raw)
    except InvalidRecord as exc:
        assert exc.reason in REASONS
        assert str(exc) == f"{exc.reason}: {exc.detail}"
        assert exc.detail.isascii() and len(exc.detail) < 300
        assert exc.field is None or exc.field in PAYMENT_FIELDS
        if exc.field is not None:
            assert repr(exc.field) in exc.detail or json.dumps(exc.field) in exc.detail
    else:
        pytest.fail(f"accepted a malformed record: {payment!r}")


@FAST
@given(malformed_payment_records(max_bytes=2048))
def test_malformed_records_are_refused_under_a_small_limit(raw: bytes) -> None:
    with pytest.raises(InvalidRecord):
        decode_payment(raw, max_bytes=2048)


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(malformed_payment_records(max_bytes=1024).filter(lambda r: len(r) > 1024))
def test_oversize_records_are_too_large(raw: bytes) -> None:
    assert raises(raw, max_bytes=1024).reason == "too_large"


@pytest.mark.parametrize(
    ("raw", "reason", "field", "words"),
    [
        (None, "empty", None, "tombstone"),
        (b"", "empty", None, "0 bytes"),
        (b"\xff" + record(), "not_utf8", None, "byte 0"),
        (record(merchant="é").replace(b"\\u00e9", b"\xe9"), "not_utf8", None, "UTF-8"),
        (b"\xed\xa0\x80", "not_utf8", None, "UTF-8"),
        (record()[:-1], "bad_json", None, "line 1"),
        (b'{"a": 1} {}', "bad_json", None, "Extra data"),
        (record()[:-1] + b', "amount": NaN}', "bad_json", None, "NaN"),
        (record()[:-1] + b', "label": -Infinity}', "bad_json", None, "-Infinity"),
        (b"[" * 20_000 + b"]" * 20_000, "too_deep", None, "deeply"),
        (record()[:-1] + b', "amount": 13}', "duplicate_key", None, '"amount"'),
        (b'{"x": {"k": 1, "k": 2}}', "duplicate_key", None, '"k"'),
        (b"[]", "not_an_object", None, "an array"),
        (b'"payment"', "not_an_object", None, "a string"),
        (b"null", "not_an_object", None, "null"),
        (record(amount=...), "missing_field", "amount", "'amount': missing"),
        (b"{}", "missing_field", "payment_id", "'payment_id'"),
        (record(amount="12.5"), "wrong_type", "amount", '"12.5" (a string)'),
        (record(amount=True), "wrong_type", "amount", "true (a boolean)"),
        (record(amount=None), "wrong_type", "amount", "null"),
        (record(ts=1.7e12), "wrong_type", "ts", "(a float)"),
        (record(ts=1.5), "wrong_type", "ts", "1.5"),
        (record(ts=False), "wrong_type", "ts", "false"),
        (record(ts="1700000000000"), "wrong_type", "ts", "a string"),
        (record(user_id=42), "wrong_type", "user_id", "42 (an integer)"),
        (record(status=["approved"]), "wrong_type", "status", "an array"),
        (record(country={"code": "DE"}), "wrong_type", "country", "an object"),
        (record(amount=-0.01), "out_of_range", "amount", "-0.01"),
        (record(amount=1e12 + 1), "out_of_range", "amount", ">= 0"),
        (record().replace(b"12.5", b"1e400"), "out_of_range", "amount", "Infinity"),
        (record(ts=-1), "out_of_range", "ts", "-1"),
        (record(ts=MAX_TS + 1), "out_of_range", "ts", "year 9999"),
        (record(merchant=""), "out_of_range", "merchant", '"" (a string of 0 characters)'),
        (record(card_id="c" * 129), "out_of_range", "card_id", "129 characters"),
        (record()[:-1] + b', "amount": 1' + b"0" * 5000 + b"}", "out_of_range", None, "digits"),
        (record(country="de"), "bad_value", "country", '"de"'),
        (record(country="DEU"), "bad_value", "country", "2 uppercase"),
        (record(country="D1"), "bad_value", "country", '"D1"'),
        (record(currency="€UR"), "bad_value", "currency", '"\\u20acUR"'),
        (record(currency="usd"), "bad_value", "currency", "3 uppercase"),
        (record(status="pending"), "bad_value", "status", '"approved" or "declined"'),
        (record(status="APPROVED"), "bad_value", "status", '"APPROVED"'),
    ],
)
def test_each_rejection_has_its_reason_and_names_its_field(
    raw: bytes | None, reason: str, field: str | None, words: str
) -> None:
    exc = raises(raw)
    assert (exc.reason, exc.field) == (reason, field), str(exc)
    assert words in exc.detail, exc.detail
    if field is not None:
        assert exc.detail.startswith(f"field {field!r}:") or f'"{field}"' in exc.detail


def test_first_bad_field_in_field_order_is_reported() -> None:
    exc = raises(record(ts="x", amount="y", payment_id=...))
    assert exc.field == "payment_id" and exc.reason == "missing_field"
    exc = raises(record(ts="x", amount="y"))
    assert exc.field == "amount"


def test_echoed_values_are_cut_short() -> None:
    exc = raises(record(merchant="é" * 5000))
    assert exc.reason == "out_of_range" and "5000 characters" in exc.detail
    assert len(exc.detail) < 250 and exc.detail.isascii()
    exc = raises(record(user_id=list(range(1000))))
    assert len(exc.detail) < 250 and "..." in exc.detail


def test_invalid_record_is_a_fraudcep_value_error_and_pickles() -> None:
    exc = raises(record(amount="12.5"))
    assert isinstance(exc, FraudcepError) and isinstance(exc, ValueError)
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.detail, copy.field, str(copy)) == (
        exc.reason,
        exc.detail,
        exc.field,
        str(exc),
    )


# -- validate_payment on Python objects -----------------------------------------------------


def test_validate_payment_returns_the_same_dict_and_copies_other_mappings() -> None:
    payment = dict(GOOD)
    assert validate_payment(payment) is payment
    copied = validate_payment(UserDict(GOOD))
    assert type(copied) is dict and copied == GOOD


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount": float("nan")}, "bad_value"),
        ({"amount": float("inf")}, "out_of_range"),
        ({"amount": 10**5000}, "out_of_range"),
        ({"ts": 10**5000}, "out_of_range"),
        ({"ts": 1.0}, "wrong_type"),
        ({"merchant": b"m1"}, "wrong_type"),
    ],
)
def test_validate_payment_refuses_what_json_cannot_say(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidRecord) as info:
        validate_payment({**GOOD, **changes})
    assert info.value.reason == reason
    assert info.value.detail.isascii() and len(info.value.detail) < 250


def test_validate_payment_accepts_subclasses_like_jsonschema() -> None:
    class Text(str):
        pass

    class Count(int):
        pass

    payment = {
        **GOOD,
        "status": Text("declined"),
        "country": Text("FR"),
        "amount": Count(10**12),
        "ts": Count(5),
    }
    assert VALIDATOR.is_valid(payment)
    assert validate_payment(payment) is payment
    with pytest.raises(InvalidRecord, match="not_an_object"):
        validate_payment([GOOD])  # type: ignore[arg-type]


# -- the validator agrees with the JSON Schema ----------------------------------------------

EDGE_VALUES = st.sampled_from(
    [
        None, True, False, 0, -1, 1, 0.0, -0.0, 0.5, -0.5, 1.0, 1e12, 1e12 + 1, 10**12,
        10**12 + 1, 1e300, MAX_TS, MAX_TS + 1, float(MAX_TS), 1.7e12, "", "x", "x" * 128,
        "x" * 129, "US", "us", "U", "USA", "USD", "usd", "US\n", "ÜS", "U1", "approved",
        "declined", "Approved", "12.5", "1700000000000", [], ["US"], {}, {"a": 1},
    ]
)  # fmt: skip
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=140),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=4,
)


@st.composite
def mutated_payments(draw: st.DrawFn) -> Any:
    """A valid payment (from the record strategy) with 0 to 3 fields changed or removed,
    or, rarely, not an object at all."""
    payment: dict[str, Any] = json.loads(draw(valid_payment_records()))
    if draw(st.integers(0, 30)) == 0:
        return draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(PAYMENT_FIELDS))
        action = draw(st.sampled_from(("edge", "edge", "any", "drop")))
        if action == "drop":
            payment.pop(field, None)
        else:
            payment[field] = draw(EDGE_VALUES if action == "edge" else JSON_VALUES)
    return payment


def _integral_float_ts(obj: Any) -> bool:
    ts = obj.get("ts") if isinstance(obj, dict) else None
    return isinstance(ts, float) and ts.is_integer()


@settings(max_examples=1500, derandomize=True, database=None, deadline=None)
@given(mutated_payments())
def test_validator_agrees_with_the_json_schema(obj: Any) -> None:
    errors = list(VALIDATOR.iter_errors(obj))
    try:
        validate_payment(obj)
    except InvalidRecord as exc:
        refusal: InvalidRecord | None = exc
    else:
        refusal = None
    if refusal is not None and refusal.field == "ts" and _integral_float_ts(obj):
        # The one documented difference: ts written as a float. JSON Schema calls
        # 1700000000000.0 an integer; the decoder asks for the integer form.
        assert refusal.reason == "wrong_type"
        # the schema takes its type; at most its range is wrong (e.g. 253402300800000.0)
        assert all(e.validator in ("minimum", "maximum") for e in errors if list(e.path) == ["ts"])
        return
    assert (refusal is None) == (not errors), (str(refusal), [e.message for e in errors])
    if refusal is not None:
        assert refusal.reason in REASONS
        # the field we name is one the schema also complains about
        at = {e.path[0] if e.path else _missing_field(e) for e in errors}
        assert refusal.field in at
        # and decoding the same object as bytes gives the same refusal
        again = raises(json.dumps(obj).encode())
        assert (again.reason, again.field, again.detail) == (
            refusal.reason,
            refusal.field,
            refusal.detail,
        )


def _missing_field(error: jsonschema.ValidationError) -> str | None:
    if error.validator == "required":
        return str(error.message).split("'")[1]
    return None
