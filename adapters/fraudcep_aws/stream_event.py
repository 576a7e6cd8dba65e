"""Reading the events Lambda hands a function subscribed to the alert table's DynamoDB stream.

Two levels of "bad input", because Lambda can act on only one of them per record:

* :class:`MalformedEvent` -- the invocation itself cannot be read (no ``Records`` list, a
  record that is not an object or has no ``dynamodb.SequenceNumber``). Nothing in it can be
  named in a partial-batch response, so the handler raises and Lambda retries the batch.
* :class:`MalformedRecord` -- one record has a sequence number but no usable alert (an INSERT
  without ``NewImage``, an attribute of the wrong type, JSON that does not parse or nests
  deeper than :data:`MAX_JSON_DEPTH`). Reading a record is a pure function of it, so such a
  record can never succeed: the notifier logs it and goes on (see
  :mod:`fraudcep_aws.lambda_notifier`).

Alert items are decoded strictly here (``boto3``'s ``TypeDeserializer`` after a shape check
of each attribute value) rather than with the writer's helpers, so that a notifier keeps
working -- and keeps refusing what it cannot read -- whatever else changes in the table code.
Nothing here recurses on a record's data: only scalar attribute values are deserialized, the
JSON attributes' nesting is measured by a scan before they are parsed, and values that are
not text are described by their type in messages, never by their ``repr``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sized
from decimal import Decimal
from typing import Any, Final

import attrs
from boto3.dynamodb.types import TypeDeserializer

from fraudcep.alert import LIVE, MODES, SHADOW
from fraudcep.errors import FraudcepError

__all__ = [
    "EVENT_NAMES",
    "MAX_JSON_DEPTH",
    "MalformedEvent",
    "MalformedRecord",
    "StreamAlert",
    "StreamRecord",
    "alert_from_image",
    "json_depth",
    "loads_bounded",
    "parse_event",
    "table_from_stream_arn",
]

EVENT_NAMES: Final = frozenset({"INSERT", "MODIFY", "REMOVE"})
TTL_PRINCIPAL: Final = "dynamodb.amazonaws.com"
"""``userIdentity.principalId`` of the REMOVE records that DynamoDB TTL writes."""

_SEQUENCE = re.compile(r"[0-9]{1,40}")
_STREAM_ARN = re.compile(r"arn:[a-z0-9-]+:dynamodb:[a-z0-9-]*:[0-9]*:table/([A-Za-z0-9_.-]+)/")
_DESERIALIZER: Final = TypeDeserializer()
_TYPES: Final = frozenset({"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"})
MAX_JSON_DEPTH: Final = 64
"""How deep the arrays and objects of an alert item's JSON attributes (``events``, ``key``)
may nest. The matched payments are most of it, and the payment decoder refuses deeper ones;
the bound keeps every later use of the data (``json.dumps`` for EventBridge and e-mail) far
from Python's recursion limit."""
# Strings (skipped whole, escapes included) and the brackets outside them.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)


class MalformedEvent(FraudcepError, ValueError):
    """An invocation event that is not a DynamoDB Streams batch Lambda could have sent."""


class MalformedRecord(FraudcepError, ValueError):
    """One stream record that does not carry a readable alert."""


@attrs.frozen
class StreamRecord:
    """The parts of one stream record the notifier uses."""

    sequence_number: str
    event_name: str
    """``INSERT``, ``MODIFY`` or ``REMOVE``; anything else is reported by :meth:`check`."""
    event_id: str
    event_source: str
    source_arn: str
    new_image: Mapping[str, Any] | None
    removed_by_ttl: bool
    """A REMOVE written by DynamoDB's TTL sweeper (``userIdentity.principalId``)."""

    def check(self) -> None:
        """Raise :class:`MalformedRecord` unless this is a known DynamoDB event."""
        if self.event_source != "aws:dynamodb":
            raise MalformedRecord(f"eventSource is {self.event_source!r}, not 'aws:dynamodb'")
        if self.event_name not in EVENT_NAMES:
            raise MalformedRecord(
                f"eventName is {self.event_name!r}; expected one of {sorted(EVENT_NAMES)}"
            )

    def alert(self) -> StreamAlert:
        """The alert of an INSERT record (:class:`MalformedRecord` if it has none)."""
        self.check()
        if self.event_name != "INSERT":
            raise MalformedRecord(f"a {self.event_name} record is not a new alert")
        if self.new_image is None:
            raise MalformedRecord(
                "INSERT record without dynamodb.NewImage (the stream's view type must be "
                "NEW_IMAGE or NEW_AND_OLD_IMAGES)"
            )
        return alert_from_image(self.new_image)


def parse_event(event: Any) -> list[StreamRecord]:
    """The records of a Lambda DynamoDB Streams event, in stream order.

    Raises :class:`MalformedEvent` when the event or one of its records cannot be read far
    enough to name the record in a partial-batch response."""
    if not isinstance(event, Mapping):
        raise MalformedEvent(f"event is a {type(event).__name__}, not an object with 'Records'")
    records = event.get("Records")
    if not isinstance(records, list):
        shown = "missing" if records is None else f"a {type(records).__name__}"
        raise MalformedEvent(
            f"event 'Records' is {shown}; expected the list of a DynamoDB Streams batch "
            f"(event keys: {sorted(map(str, event))[:10]})"
        )
    return [_record(i, raw) for i, raw in enumerate(records)]


def _record(index: int, raw: Any) -> StreamRecord:
    if not isinstance(raw, Mapping):
        raise MalformedEvent(f"Records[{index}] is a {type(raw).__name__}, not an object")
    ddb = raw.get("dynamodb")
    if not isinstance(ddb, Mapping):
        raise MalformedEvent(f"Records[{index}] has no 'dynamodb' object")
    sequence = ddb.get("SequenceNumber")
    if not isinstance(sequence, str) or not _SEQUENCE.fullmatch(sequence):
        raise MalformedEvent(
            f"Records[{index}].dynamodb.SequenceNumber is {_shown(sequence, 60)}; expected a "
            "string of digits (a partial-batch response has to name it)"
        )
    image = ddb.get("NewImage")
    identity = raw.get("userIdentity")
    by_ttl = (
        isinstance(identity, Mapping)
        and identity.get("type") == "Service"
        and identity.get("principalId") == TTL_PRINCIPAL
    )
    return StreamRecord(
        sequence_number=sequence,
        event_name=_text(raw.get("eventName", "")),
        event_id=_text(raw.get("eventID", "")),
        event_source=_text(raw.get("eventSource", "")),
        source_arn=_text(raw.get("eventSourceARN", "")),
        new_image=image if isinstance(image, Mapping) else None,
        removed_by_ttl=by_ttl,
    )


def _text(value: Any) -> str:
    """A field that should be text: itself, or what it is instead (checked later)."""
    return value if isinstance(value, str) else f"<{type(value).__name__}>"


def _shown(value: Any, limit: int = 80) -> str:
    """``value`` for a message: the ``repr`` of a scalar (cut at ``limit``), the type and
    size of a container (its ``repr`` would recurse into it)."""
    if value is None or isinstance(value, str | int | float | bool | Decimal):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    size = len(value) if isinstance(value, Sized) else None
    return f"a {type(value).__name__}" + (f" of {size} item(s)" if size is not None else "")


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (0: a scalar), measured with a
    scan that does not recurse: safe on any input (text that is not JSON gives a number too,
    and fails to parse later)."""
    depth = deepest = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def loads_bounded(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)`` for text nesting at most ``max_depth`` deep; ``ValueError``
    otherwise (never ``RecursionError``). ``NaN`` and ``Infinity`` are refused too."""
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"nests {depth} deep, more than {max_depth}")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # not with the depth checked; kept as a ValueError regardless
        raise ValueError("nests too deep") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def table_from_stream_arn(arn: str) -> str | None:
    """The table name in a stream ARN (``arn:aws:dynamodb:R:A:table/NAME/stream/LABEL``)."""
    match = _STREAM_ARN.match(arn)
    return match.group(1) if match else None


@attrs.frozen
class StreamAlert:
    """An alert as the detector stored it (see the item format in ``fraudcep_aws.dynamodb``)."""

    alert_id: str
    rule_id: str
    rule_version: int
    key: Any
    """The alert's key, decoded from its canonical JSON (a string for ``user_id`` rules)."""
    first_ts: int
    last_ts: int
    emitted_at: int
    events: Mapping[str, list[Any]]
    detected_at: int | None = None
    source: str = ""
    mode: str = LIVE
    """``"shadow"`` for an alert of a shadow rule (the item's ``mode``): never notified."""
    lists: Mapping[str, int] = attrs.Factory(dict)
    """The version of each named list the rule read (the item's ``lists``)."""

    @property
    def shadow(self) -> bool:
        return self.mode == SHADOW

    def to_detail(self) -> dict[str, Any]:
        """The alert as JSON-friendly data: the EventBridge ``Detail``."""
        return {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "rule_version": self.rule_version,
            "key": self.key,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "emitted_at": self.emitted_at,
            "detected_at": self.detected_at,
            "source": self.source,
            "events": {name: list(events) for name, events in self.events.items()},
            **({"lists": dict(self.lists)} if self.lists else {}),
        }

    def payments(self) -> list[Any]:
        """Every matched event, in pattern order."""
        return [event for events in self.events.values() for event in events]


def _value(image: Mapping[str, Any], name: str, kind: str, *, required: bool = True) -> Any:
    raw = image.get(name)
    if raw is None:
        if required:
            raise MalformedRecord(f"alert item has no attribute {name!r}")
        return None
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise MalformedRecord(
            f"attribute {name!r} is not a DynamoDB attribute value: {_shown(raw)}"
        )
    ((got, data),) = raw.items()
    if got not in _TYPES:
        raise MalformedRecord(f"attribute {name!r} has the unknown DynamoDB type {_shown(got, 20)}")
    if got != kind:
        raise MalformedRecord(f"attribute {name!r} is of type {got}, expected {kind}")
    if not isinstance(data, str):
        raise MalformedRecord(f"attribute {name!r} ({kind}) holds a {type(data).__name__}")
    try:
        value = _DESERIALIZER.deserialize(raw)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise MalformedRecord(f"attribute {name!r}: {exc}") from None
    if kind == "N":
        return _integer(name, value)
    return value


def _integer(name: str, value: Any) -> int:
    if not isinstance(value, Decimal) or not value.is_finite() or value != value.to_integral():
        raise MalformedRecord(f"attribute {name!r} is {value}, not an integer")
    return int(value)


def _json(name: str, text: str) -> Any:
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise MalformedRecord(f"attribute {name!r} nests {depth} deep, more than {MAX_JSON_DEPTH}")
    try:
        return loads_bounded(text)
    except ValueError as exc:
        raise MalformedRecord(f"attribute {name!r} is not JSON: {exc}") from None


MAX_LISTS: Final = 1000
"""The most list versions an alert item may carry (a rule names a handful)."""


def _lists(image: Mapping[str, Any]) -> dict[str, int]:
    """The item's ``lists`` (M: list name -> N), checked one level deep; {} when absent."""
    raw = image.get("lists")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) != 1 or "M" not in raw:
        raise MalformedRecord(f"attribute 'lists' is not an M attribute value: {_shown(raw)}")
    members = raw["M"]
    if not isinstance(members, Mapping) or len(members) > MAX_LISTS:
        raise MalformedRecord(f"attribute 'lists' holds {_shown(members)}")
    out = {}
    for name in members:
        if not isinstance(name, str) or not name:
            raise MalformedRecord(f"attribute 'lists' has the list name {_shown(name, 40)}")
        out[name] = _value(members, name, "N")
    return out


def alert_from_image(image: Mapping[str, Any]) -> StreamAlert:
    """Decode an alert item's attribute-value map (a stream record's ``NewImage``).

    Raises :class:`MalformedRecord` naming the first attribute that is missing or wrong."""
    if not isinstance(image, Mapping):
        raise MalformedRecord(f"NewImage is a {type(image).__name__}, not an attribute map")
    alert_id = _value(image, "alert_id", "S")
    if not alert_id:
        raise MalformedRecord("attribute 'alert_id' is empty")
    events = _json("events", _value(image, "events", "S"))
    if not isinstance(events, dict) or not all(isinstance(v, list) for v in events.values()):
        raise MalformedRecord(
            "attribute 'events' must be a JSON object of stage name -> list of events"
        )
    mode = _value(image, "mode", "S", required=False) or LIVE
    if mode not in MODES:
        raise MalformedRecord(f"attribute 'mode' is {_shown(mode, 20)}, not one of {MODES}")
    return StreamAlert(
        alert_id=alert_id,
        rule_id=_value(image, "rule_id", "S"),
        rule_version=_value(image, "rule_version", "N"),
        key=_json("key", _value(image, "key", "S")),
        first_ts=_value(image, "first_ts", "N"),
        last_ts=_value(image, "last_ts", "N"),
        emitted_at=_value(image, "emitted_at", "N"),
        events=events,
        detected_at=_value(image, "detected_at", "N", required=False),
        source=_value(image, "source", "S", required=False) or "",
        mode=mode,
        lists=_lists(image),
    )
