"""The payment record format: its JSON Schema and a strict, fast decoder of raw records.

A runtime (the Kafka runner, a Lambda handler) gets each payment as the raw bytes of one
record. :func:`decode_payment` turns them into a payment dict, or raises
:class:`InvalidRecord` with a stable machine-readable ``reason`` (for dead-letter headers
and metrics) and a short ``detail`` for people. It runs once per record at 100k+ records per
second, so the usual record is read by msgspec (with :mod:`json` as the careful reader of
anything msgspec could read differently, see :func:`decode_payment`) and the checks are
hand-written rather than a generic JSON Schema validator; the published schema
(``fraudcep/payments/payment_schema.json``, :func:`payment_schema`) says the same thing, and
the tests hold the two to each other.

The decoder is strict on purpose: a record that two readers could read differently is
refused. That is why bytes must be UTF-8, NaN/Infinity (not JSON) and duplicate keys are
refused, and ``ts`` must be written as an integer. Fields beyond the nine required ones
(labels such as ``scenario`` and ``scenario_id``) pass through unchanged and unchecked.
The format is described in ``docs/payments.md``. Nothing here does I/O.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, get_args

import msgspec

from fraudcep.errors import FraudcepError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MAX_AMOUNT",
    "MAX_ID_LENGTH",
    "MAX_TS",
    "PAYMENT_FIELDS",
    "REASONS",
    "SCHEMA_PATH",
    "InvalidRecord",
    "Reason",
    "check_depth",
    "decode_payment",
    "json_kind",
    "payment_schema",
    "validate_payment",
]

SCHEMA_PATH: Final = Path(__file__).resolve().parent / "payment_schema.json"
"""The published JSON Schema (draft 2020-12) of one payment record."""

PAYMENT_FIELDS: Final[tuple[str, ...]] = (
    "payment_id",
    "user_id",
    "card_id",
    "merchant",
    "country",
    "amount",
    "currency",
    "status",
    "ts",
)
"""The required fields, in the order they are checked (the first bad one is reported)."""

DEFAULT_MAX_BYTES: Final = 64 * 1024
"""The default size limit of one record, in bytes."""

DEFAULT_MAX_DEPTH: Final = 32
"""The default nesting limit of one record: the payment object is level 1, an object or array
in one of its fields level 2, and so on. Deeper records are refused as ``too_deep``, so nothing
downstream (alert ids, snapshots, sinks) ever holds data nested deeper than this."""

MAX_ID_LENGTH: Final = 128
"""The longest ``payment_id``/``user_id``/``card_id``/``merchant``, in characters."""

MAX_AMOUNT: Final = 1_000_000_000_000
"""The largest ``amount`` (1e12)."""

MAX_TS: Final = 253_402_300_799_999
"""The largest ``ts``: 9999-12-31T23:59:59.999Z in epoch milliseconds."""

Reason = Literal[
    "empty",
    "too_large",
    "not_utf8",
    "bad_json",
    "too_deep",
    "duplicate_key",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "bad_value",
]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)
"""Every ``InvalidRecord.reason``; the codes are stable (dead-letter consumers match them)."""

_ECHO: Final = 80  # longest echo of a bad value in a detail
_ID_FIELDS: Final = ("payment_id", "user_id", "card_id", "merchant")
_STATUSES: Final = ("approved", "declined")
_EXPECTED: Final[Mapping[str, str]] = {
    **dict.fromkeys(_ID_FIELDS, f"a non-empty string of at most {MAX_ID_LENGTH} characters"),
    "country": 'a country code of 2 uppercase letters A-Z, like "US"',
    "amount": "a number >= 0 and <= 1e12",
    "currency": 'a currency code of 3 uppercase letters A-Z, like "USD"',
    "status": '"approved" or "declined"',
    "ts": f"an integer of epoch milliseconds from 0 to {MAX_TS} (year 9999)",
}


class InvalidRecord(FraudcepError, ValueError):
    """A record that is not a valid payment; it belongs on a dead-letter topic.

    ``reason`` is one of :data:`REASONS` (stable, for headers and metrics), ``detail`` says
    what was wrong and what was expected, in ASCII and short (echoed values are cut to about
    80 characters), and ``field`` names the payment field at fault, when there is one.
    """

    def __init__(self, reason: Reason, detail: str, field: str | None = None) -> None:
        super().__init__(reason, detail)
        self.reason: Reason = reason
        self.detail = detail
        self.field = field

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __reduce__(self) -> tuple[type[InvalidRecord], tuple[Reason, str, str | None]]:
        return type(self), (self.reason, self.detail, self.field)


# -- decoding -------------------------------------------------------------------------------


def _no_constant(name: str) -> NoReturn:
    raise InvalidRecord("bad_json", f"not valid JSON: {name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:  # pragma: no branch - a duplicate is always found
            if key in seen:
                # no ``field``: the hook cannot tell a payment field from a nested key
                raise InvalidRecord(
                    "duplicate_key", f"key {_show(key)} appears more than once in one object"
                )
            seen.add(key)
    return obj


_decode = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_unique_keys).decode
_fast_decode = msgspec.json.Decoder().decode
_FAST_ERRORS: Final = (msgspec.DecodeError, ValueError, TypeError)


def decode_payment(
    data: bytes | bytearray | memoryview | str | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> dict[str, Any]:
    """The payment in one raw record (UTF-8 JSON), checked; else :class:`InvalidRecord`.

    ``None`` (a Kafka tombstone) and zero bytes are ``"empty"``. Records over ``max_bytes``
    are refused before they are decoded, so a huge record costs nothing to refuse; a ``str``
    is measured by its UTF-8 length. Records nested deeper than ``max_depth`` levels are
    ``"too_deep"``. Any other exception from here is a bug.

    The usual record, ``bytes`` holding one flat JSON object, is read by msgspec (in C,
    about ten times faster than :mod:`json`) and checked by :func:`validate_payment`. msgspec
    reads the same values from the JSON both accept; where they could differ it is not
    trusted: anything msgspec refuses (not UTF-8, NaN, 1e400, a lone surrogate escape, ...),
    anything nested (``[``, or ``{`` more than once: depth and duplicate keys inside), and
    an object that may hold a key twice (msgspec keeps the last silently: more ``:`` bytes
    than keys, which a ``:`` inside a string also gives) go through :func:`_decode_careful`,
    the :mod:`json` reader, which gives the reason and detail.
    """
    if (
        type(data) is bytes
        and 0 < len(data) <= max_bytes
        and b"[" not in data
        and data.count(b"{") == 1
    ):
        try:
            obj = _fast_decode(data)
        except _FAST_ERRORS:
            pass
        else:
            # Nothing nested, so each ':' outside a string follows a key of this object:
            # as many ':' as keys means no key was written twice.
            if type(obj) is dict and len(obj) == data.count(b":"):
                return validate_payment(obj)
    return _decode_careful(data, max_bytes, max_depth)


def _decode_careful(
    data: bytes | bytearray | memoryview | str | None, max_bytes: int, max_depth: int
) -> dict[str, Any]:
    """:func:`decode_payment` by :mod:`json`, checking every step: the reference decoder,
    which gives every refusal its reason."""
    if data is None:
        raise InvalidRecord("empty", "no payload (a tombstone)")
    if isinstance(data, str):
        size = len(data)
        if size <= max_bytes and not data.isascii():
            size = len(data.encode("utf-8", "surrogatepass"))
        text = data
    else:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_bytes:
        raise InvalidRecord("too_large", f"{size} bytes, over the limit of {max_bytes} bytes")
    if not size:
        raise InvalidRecord("empty", "no payload (0 bytes)")
    if not isinstance(data, str):
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            bad = bytes(exc.object[exc.start : exc.start + 4]).hex(" ")
            raise InvalidRecord(
                "not_utf8", f"not UTF-8: {exc.reason} at byte {exc.start} ({bad})"
            ) from None
    try:
        obj = _decode(text)
    except InvalidRecord:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidRecord(
            "bad_json", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidRecord(
            "too_deep", f"JSON nested too deeply to read (the limit is {max_depth} levels)"
        ) from None
    except ValueError:  # an integer of over sys.get_int_max_str_digits() digits
        raise InvalidRecord("out_of_range", "a number with too many digits to read") from None
    if type(obj) is not dict:
        raise InvalidRecord("not_an_object", f"expected a JSON object, got {json_kind(obj)}")
    # only one object and no array: nothing is nested (the usual payment, checked in C)
    if "[" in text or text.count("{") > 1:
        check_depth(obj, max_depth)
    return validate_payment(obj)


def check_depth(obj: Mapping[str, Any], max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise ``too_deep`` if ``obj`` (level 1) nests objects or arrays deeper than
    ``max_depth`` levels. A loop over an explicit stack: deep input cannot recurse here."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise InvalidRecord(
                "too_deep", f"objects or arrays nested over the limit of {max_depth} levels"
            )
        for item in value.values() if isinstance(value, Mapping) else value:
            if isinstance(item, Mapping | list | tuple):
                stack.append((item, depth + 1))


# -- validation -----------------------------------------------------------------------------


def validate_payment(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as a dict if it is a valid payment (see ``payment_schema.json``), else raises.

    The same dict comes back (a copy if ``obj`` is another kind of mapping); nothing is
    converted. Fields are checked in :data:`PAYMENT_FIELDS` order and the first problem is
    raised as :class:`InvalidRecord`. Each check is a fast path for the types JSON gives;
    anything else (a ``str`` subclass, NaN) goes through :func:`_check`, which decides.
    """
    if type(obj) is dict:
        payment: dict[str, Any] = obj
    elif isinstance(obj, Mapping):
        payment = dict(obj)
    else:
        raise InvalidRecord("not_an_object", f"expected a JSON object, got {json_kind(obj)}")
    get = payment.get
    # Unrolled (not a loop over the fields): about 15% faster.
    v = get("payment_id")
    if type(v) is not str or not 0 < len(v) <= MAX_ID_LENGTH:
        _check(payment, "payment_id")
    v = get("user_id")
    if type(v) is not str or not 0 < len(v) <= MAX_ID_LENGTH:
        _check(payment, "user_id")
    v = get("card_id")
    if type(v) is not str or not 0 < len(v) <= MAX_ID_LENGTH:
        _check(payment, "card_id")
    v = get("merchant")
    if type(v) is not str or not 0 < len(v) <= MAX_ID_LENGTH:
        _check(payment, "merchant")
    v = get("country")
    if not (type(v) is str and len(v) == 2 and v.isascii() and v.isalpha() and v.isupper()):
        _check(payment, "country")
    v = get("amount")
    if not ((type(v) is float or type(v) is int) and 0 <= v <= MAX_AMOUNT):
        _check(payment, "amount")
    v = get("currency")
    if not (type(v) is str and len(v) == 3 and v.isascii() and v.isalpha() and v.isupper()):
        _check(payment, "currency")
    v = get("status")
    if v != "approved" and v != "declined":
        _check(payment, "status")
    v = get("ts")
    if not (type(v) is int and 0 <= v <= MAX_TS):
        _check(payment, "ts")
    return payment


def _check(obj: Mapping[str, Any], name: str) -> None:
    """The slow path of one field: return if it is valid after all, else raise."""
    if name not in obj:
        raise InvalidRecord(
            "missing_field", f"field {name!r}: missing; expected {_EXPECTED[name]}", name
        )
    value = obj[name]
    if name == "amount":
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail("wrong_type", name, value)
        if value != value:
            _fail("bad_value", name, value)
        if not 0 <= value <= MAX_AMOUNT:
            _fail("out_of_range", name, value)
        return
    if name == "ts":
        if isinstance(value, bool) or not isinstance(value, int):
            _fail("wrong_type", name, value)
        if not 0 <= value <= MAX_TS:
            _fail("out_of_range", name, value)
        return
    if not isinstance(value, str):
        _fail("wrong_type", name, value)
    if name == "status":
        if value not in _STATUSES:
            _fail("bad_value", name, value)
    elif name in ("country", "currency"):
        size = 2 if name == "country" else 3
        if not (len(value) == size and value.isascii() and value.isalpha() and value.isupper()):
            _fail("bad_value", name, value)
    elif not 0 < len(value) <= MAX_ID_LENGTH:
        _fail("out_of_range", name, value, f"a string of {len(value)} characters")


def _fail(reason: Reason, name: str, value: object, kind: str | None = None) -> NoReturn:
    got = f"{_show(value)} ({kind or json_kind(value)})"
    raise InvalidRecord(reason, f"field {name!r}: expected {_EXPECTED[name]}, got {got}", name)


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _ECHO


def _show(value: object) -> str:
    """``value`` for an error message: JSON-like, ASCII, at most about 80 characters."""
    if isinstance(value, str):
        text = json.dumps(value[: _ECHO + 1])
    elif value is None or isinstance(value, bool | float):
        text = json.dumps(value)
    else:
        try:
            text = _repr.repr(value)
        except ValueError:  # an int over sys.get_int_max_str_digits() digits
            text = f"a {value.bit_length()}-bit integer" if isinstance(value, int) else "?"
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= _ECHO else text[: _ECHO - 3] + "..."


def json_kind(value: object) -> str:
    """What ``value`` is, in JSON terms: "a string of 200 characters", "an array", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "not a number" if value != value else "a float"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def payment_schema() -> dict[str, Any]:
    """The published JSON Schema of one payment record, as a dict (a fresh copy each call)."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema
