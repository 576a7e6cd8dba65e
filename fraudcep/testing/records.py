"""Hypothesis strategies of raw payment records: valid ones, and ones a decoder must refuse.

A runtime that reads payments from Kafka (or S3, or a Lambda event) must turn every record
into a payment or a rejection, and never crash on what a producer sends. These strategies
draw the raw bytes: :func:`valid_payment_records` those that
:func:`fraudcep.payments.payment.decode_payment` accepts (unicode text, extra label fields, varied
JSON formatting), and :func:`malformed_payment_records` those it refuses with an
:class:`~fraudcep.payments.payment.InvalidRecord` (broken or truncated JSON, bytes that are not
UTF-8, missing fields, wrong types, out-of-range and bad values, NaN, duplicate keys,
oversize and empty records). Point them at your own record handler::

    from hypothesis import given

    from fraudcep.payments.payment import InvalidRecord, decode_payment
    from fraudcep.testing import malformed_payment_records

    @given(malformed_payment_records())
    def test_bad_records_go_to_the_dead_letter_topic(record):
        handler = MyHandler()
        handler.handle(record)  # must not raise
        assert handler.dead_letters == [record]
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from typing import Any, Final

from hypothesis import strategies as st

from fraudcep.payments.payment import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    MAX_AMOUNT,
    MAX_ID_LENGTH,
    MAX_TS,
    PAYMENT_FIELDS,
)
from fraudcep.payments.synthetic import SCENARIO_KINDS

__all__ = ["malformed_payment_records", "valid_payment_records"]

_ID_FIELDS: Final = ("payment_id", "user_id", "card_id", "merchant")

# -- valid ----------------------------------------------------------------------------------

_ids = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,19}", fullmatch=True),
    st.text(min_size=1, max_size=MAX_ID_LENGTH),
    st.text(min_size=MAX_ID_LENGTH, max_size=MAX_ID_LENGTH),
)
_amounts = st.one_of(
    st.integers(0, 1_000_000).map(lambda cents: cents / 100),
    st.integers(0, MAX_AMOUNT),
    st.floats(0, MAX_AMOUNT),
    st.sampled_from((0, 0.0, MAX_AMOUNT, float(MAX_AMOUNT))),
)
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=6,
)
_labels = st.fixed_dictionaries(
    {},
    optional={
        "scenario": st.sampled_from(SCENARIO_KINDS),
        "scenario_id": st.from_regex(r"s[0-9]{1,6}", fullmatch=True),
    },
)
_extra = st.dictionaries(
    st.text(max_size=20).filter(lambda key: key not in PAYMENT_FIELDS), _json_values, max_size=3
)


def _payments() -> st.SearchStrategy[dict[str, Any]]:
    """Valid payment dicts: the nine fields, then maybe labels and other extra fields."""

    def build(parts: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
        required, labels, extra = parts
        return {**required, **labels, **{k: v for k, v in extra.items() if k not in labels}}

    required = st.fixed_dictionaries(
        {
            "payment_id": _ids,
            "user_id": _ids,
            "card_id": _ids,
            "merchant": _ids,
            "country": st.text(string.ascii_uppercase, min_size=2, max_size=2),
            "amount": _amounts,
            "currency": st.text(string.ascii_uppercase, min_size=3, max_size=3),
            "status": st.sampled_from(("approved", "declined")),
            "ts": st.integers(0, MAX_TS),
        }
    )
    return st.tuples(required, _labels, _extra).map(build)


def _compact(payment: dict[str, Any]) -> bytes:
    return json.dumps(payment, ensure_ascii=False).encode("utf-8")


def valid_payment_records() -> st.SearchStrategy[bytes]:
    """UTF-8 JSON records of valid payments, that ``decode_payment`` returns as ``json.loads``
    reads them.

    Ids are any unicode text of 1 to 128 characters, amounts integers or floats from 0 to
    1e12, timestamps from 0 to year 9999; up to five extra fields (``scenario``,
    ``scenario_id`` and arbitrary JSON) ride along. Formatting varies: ``\\u`` escapes or
    raw UTF-8, indentation, key order, surrounding whitespace. A record stays well under
    :data:`~fraudcep.payments.payment.DEFAULT_MAX_BYTES` (64 KiB).
    """

    def encode(parts: tuple[dict[str, Any], bool, int | None, bool, str]) -> bytes:
        payment, ascii_only, indent, sort_keys, space = parts
        text = json.dumps(payment, ensure_ascii=ascii_only, indent=indent, sort_keys=sort_keys)
        return f"{space}{text}{space}".encode()

    return st.tuples(
        _payments(),
        st.booleans(),
        st.sampled_from((None, 2)),
        st.booleans(),
        st.sampled_from(("", " ", "\n", "\r\n\t ")),
    ).map(encode)


# -- malformed ------------------------------------------------------------------------------


def _replaced(field: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A valid payment with ``field`` set to a drawn value (JSON-encoded normally)."""
    return st.tuples(_payments(), value).map(lambda pv: _compact({**pv[0], field: pv[1]}))


def _raw(field: str, token: bytes) -> Callable[[dict[str, Any]], bytes]:
    """Put ``field`` last, with ``token`` as its raw JSON text (NaN, 1e400, ...)."""

    def build(payment: dict[str, Any]) -> bytes:
        rest = _compact({k: v for k, v in payment.items() if k != field})
        return rest[:-1] + b", " + json.dumps(field).encode() + b": " + token + b"}"

    return build


def _raw_field(fields: tuple[str, ...], tokens: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    return st.tuples(_payments(), st.sampled_from(fields), st.sampled_from(tokens)).map(
        lambda pft: _raw(pft[1], pft[2])(pft[0])
    )


def _not_code(size: int) -> st.SearchStrategy[str]:
    """Strings that are not ``size`` uppercase ASCII letters."""
    code = re.compile(f"[A-Z]{{{size}}}")
    near = ("", "U", "us", "Us", "USA", "USDX", "U1", "\u00dcS", "U S", "US\n", " US", "US$")
    return st.one_of(
        st.sampled_from(tuple(s for s in near if not code.fullmatch(s))),
        st.text(string.ascii_lowercase + string.digits, min_size=size, max_size=size),
        st.text(max_size=6).filter(lambda s: not code.fullmatch(s)),
    )


_not_strings = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(_json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), _json_scalars, max_size=3),
)
_not_numbers = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=20),
    st.floats(0, MAX_AMOUNT).map(repr),  # "12.5": a number in a string
    st.lists(st.integers(0, 10), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
_not_timestamps = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(0, MAX_TS).map(str),
    st.integers(0, MAX_TS).map(float),  # integral, but a float: refused (see payment.py)
    st.floats(0, MAX_TS).filter(lambda f: not f.is_integer()),
    st.lists(st.integers(0, 10), max_size=2),
)

_BROKEN_JSON: Final = (
    b"{",
    b"}",
    b"{]",
    b"nul",
    b"{'payment_id': 'p1'}",
    b'{"payment_id" "p1"}',
    b'{"payment_id": "p1",}',
    b'{"payment_id": p1}',
    b"{/* comment */}",
    b'{"a": "unterminated}',
    b'{"a": "\\x41"}',
    b'{"a": 01}',
    b'{"a": .5}',
    b'{"a": +1}',
    b'{"a": "tab\there"}',
    b" ",
    b"\n\t",
    b"\xef\xbb\xbf{}",  # a byte-order mark
    b"\x00",
)
_NOT_UTF8: Final = (
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xbf",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xed\xa0\x80",  # an encoded surrogate (CESU-8)
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf8\x88\x80\x80\x80",
)


def malformed_payment_records(max_bytes: int = DEFAULT_MAX_BYTES) -> st.SearchStrategy[bytes]:
    """Raw records that ``decode_payment(record, max_bytes=max_bytes)`` must refuse.

    Every one is refused for one of the reasons of :data:`fraudcep.payments.payment.REASONS`:
    ``empty``, ``too_large`` (over ``max_bytes``, which must be at least 1024),
    ``not_utf8``, ``bad_json`` (broken, truncated, NaN/Infinity), ``too_deep`` (nested
    over the decoder's default limit), ``duplicate_key``, ``not_an_object``,
    ``missing_field``, ``wrong_type``, ``out_of_range``, ``bad_value``.
    """
    if max_bytes < 1024:
        raise ValueError(f"max_bytes must be at least 1024, got {max_bytes}")
    compact = _payments().map(_compact)

    def truncated(record: bytes) -> st.SearchStrategy[bytes]:
        return st.integers(1, len(record) - 1).map(lambda k: record[:k])

    def corrupted(parts: tuple[bytes, bytes, int]) -> bytes:
        record, bad, where = parts
        at = where % (len(record) + 1)
        return record[:at] + bad + record[at:]

    def oversize(parts: tuple[bytes, int, bool]) -> bytes:
        record, over, as_label = parts
        missing = max(0, max_bytes + over - len(record))
        if as_label:
            return record[:-1] + b', "pad": "' + b"x" * missing + b'"}'
        return b" " * missing + record

    def duplicated(parts: tuple[dict[str, Any], str, Any]) -> bytes:
        payment, field, value = parts
        return _compact(payment)[:-1] + b", " + json.dumps({field: value}).encode()[1:]

    def without(parts: tuple[dict[str, Any], frozenset[str]]) -> bytes:
        payment, gone = parts
        return _compact({k: v for k, v in payment.items() if k not in gone})

    def nested(parts: tuple[bytes, int, bytes, str]) -> bytes:
        record, depth, opener, field = parts
        closer = b"]" if opener == b"[" else b"}"
        inner = (b'{"k":' if opener == b"{" else opener) * depth
        value = inner + b"0" + closer * depth
        return record[:-1] + b', "' + field.encode() + b'": ' + value + b"}"

    too_deep = st.tuples(
        compact,
        st.integers(DEFAULT_MAX_DEPTH, min(2000, max_bytes // 6)),
        st.sampled_from((b"[", b"{")),
        st.sampled_from(("extra", "scenario", "x")),
    ).map(nested)

    not_objects = st.one_of(
        _json_scalars,
        st.lists(_json_values, max_size=3),
        _payments().map(lambda p: [p]),
    ).map(lambda value: json.dumps(value).encode())

    return st.one_of(
        st.just(b""),
        compact.flatmap(truncated),
        st.sampled_from(_BROKEN_JSON),
        st.tuples(compact, st.sampled_from((b"}", b",", b"x", b"{}", b"[]", b'"'))).map(
            lambda rs: rs[0] + rs[1]
        ),
        compact.map(lambda r: r.replace(b'"', b"'")),
        st.tuples(compact, st.sampled_from(_NOT_UTF8), st.integers(0, 10**6)).map(corrupted),
        _payments().map(lambda p: b"\xff\xfe" + json.dumps(p).encode("utf-16-le")),
        not_objects,
        too_deep,
        st.tuples(_payments(), st.frozensets(st.sampled_from(PAYMENT_FIELDS), min_size=1)).map(
            without
        ),
        *(_replaced(field, _not_strings) for field in (*_ID_FIELDS, "country", "currency")),
        _replaced("status", _not_strings),
        _replaced("amount", _not_numbers),
        _replaced("ts", _not_timestamps),
        *(_replaced(field, st.just("")) for field in _ID_FIELDS),
        *(
            _replaced(field, st.text(min_size=MAX_ID_LENGTH + 1, max_size=MAX_ID_LENGTH + 40))
            for field in _ID_FIELDS
        ),
        _replaced(
            "amount",
            st.one_of(
                st.integers(max_value=-1),
                st.floats(max_value=-1e-300, allow_infinity=False),
                st.integers(min_value=MAX_AMOUNT + 1),
                st.floats(min_value=MAX_AMOUNT, exclude_min=True, allow_infinity=False),
            ),
        ),
        _replaced("ts", st.integers(max_value=-1) | st.integers(min_value=MAX_TS + 1)),
        _raw_field(("amount",), (b"1e400", b"-1e400", b"1E13", b"-0.5", b"1" + b"0" * 5000)),
        _raw_field(("ts",), (b"1e400", b"-1", b"253402300800000", b"1" + b"0" * 5000)),
        _replaced("country", _not_code(2)),
        _replaced("currency", _not_code(3)),
        _replaced(
            "status",
            st.one_of(
                st.sampled_from(("", "Approved", "APPROVED", "approved ", "pending", "refunded")),
                st.text(max_size=10).filter(lambda s: s not in ("approved", "declined")),
            ),
        ),
        _raw_field((*PAYMENT_FIELDS, "scenario", "label"), (b"NaN", b"Infinity", b"-Infinity")),
        st.tuples(_payments(), st.sampled_from(PAYMENT_FIELDS), _json_scalars).map(duplicated),
        st.tuples(compact, st.integers(1, 100), st.booleans()).map(oversize),
    )
