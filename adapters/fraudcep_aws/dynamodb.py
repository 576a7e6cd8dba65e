"""The DynamoDB alert table: its item format, idempotent writers, TTL-aware readers, and the
``dynamodb://TABLE`` sink.

One item per alert, keyed by the deterministic ``alert_id``, so writing the same alert twice
(a runner's replay, a Lambda retry, two racing invocations) is detected instead of doubled.
The table streams NEW_IMAGE records to the notifier; that is why a writer never rewrites an
existing item: a rewrite would be a MODIFY record and would push the TTL out. Items expire
through DynamoDB TTL on ``expires_at`` (epoch seconds); because TTL deletion is lazy (up to
days late), the readers here ignore items whose ``expires_at`` has passed.

Item attributes (the notifier reads exactly these):

==============  ====  ===================================================================
alert_id        S     hash key; :attr:`fraudcep.Alert.alert_id`
rule_id         S
rule_version    N
key             S     :func:`fraudcep.alert.identity.canonical_key` of the alert's key
first_ts        N     event time of the first matched event (ms)
last_ts         N     event time of the last matched event (ms)
emitted_at      N     event time the engine emitted the alert at (ms)
detected_at     N     wall clock when the item was written (ms)
expires_at      N     ``detected_at // 1000 + ttl`` (epoch seconds; the TTL attribute)
events          S     compact JSON of ``Alert.to_dict()["events"]``
source          S     where it came from: ``"payments.raw/3"`` (runner), ``"lambda"``
lists           M     list name -> version (N) of each named list the rule read
                      (:attr:`fraudcep.Alert.lists`); absent for a rule that reads none
mode            S     ``"shadow"`` for an alert of a shadow rule (:attr:`fraudcep.Alert.mode`):
                      recorded, never notified; absent for a live alert, so live items are
                      as they always were
==============  ====  ===================================================================
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import attrs
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from fraudcep.alert import LIVE, Alert
from fraudcep.alert.identity import canonical_key
from fraudcep.errors import FraudcepError
from fraudcep.runtime import Backoff
from fraudcep.runtime.sink import SinkError, SourcePartition
from fraudcep_aws.clients import client as make_client
from fraudcep_aws.clients import location_options
from fraudcep_aws.stream_event import loads_bounded

__all__ = [
    "ALERTS_TTL_S",
    "BATCH_BACKOFF",
    "MAX_BATCH_GET",
    "MAX_BATCH_WRITE",
    "MAX_NESTING",
    "THROTTLING_ERRORS",
    "AlertTable",
    "BatchRetrier",
    "DynamoDBPartitionSink",
    "DynamoDBSink",
    "TableError",
    "alert_from_item",
    "alert_item",
    "create_alerts_table",
    "ensure_table",
    "error_code",
    "from_attribute_value",
    "from_item",
    "open_dynamodb_sink",
    "to_item",
    "wall_clock_ms",
]

ALERTS_TTL_S: Final = 86_400
"""How long an alert item lives by default (24 h), in seconds."""

TTL_ATTRIBUTE: Final = "expires_at"
MAX_BATCH_GET: Final = 100  # keys per BatchGetItem, a DynamoDB limit
MAX_BATCH_WRITE: Final = 25  # requests per BatchWriteItem, a DynamoDB limit
THROTTLING_ERRORS: Final = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
"""Error codes that mean "slow down and try again"."""
BATCH_BACKOFF: Final = Backoff(base_s=0.05, cap_s=5.0, max_attempts=10, deadline_s=120.0)
"""How a batch call retries what DynamoDB left unprocessed or throttled: up to 10 rounds in a
row that leave something undone, and 120 s in all."""
_WAIT_ACTIVE: Final = Backoff(base_s=0.2, cap_s=5.0, max_attempts=None, jitter=False)
"""How often a table that is being created or changed is looked at (the deadline is the
caller's timeout)."""
_SERIALIZER: Final = TypeSerializer()
_DESERIALIZER: Final = TypeDeserializer()

# a stream of either view carries what a reader of the key's view needs
_VIEWS_WITH: Final = {"NEW_IMAGE": ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")}
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_CONDITION_FAILED = "ConditionalCheckFailedException"
_REQUIRED = (
    "alert_id",
    "rule_id",
    "rule_version",
    "key",
    "first_ts",
    "last_ts",
    "emitted_at",
    "detected_at",
    "expires_at",
    "events",
    "source",
)

T = TypeVar("T")


class TableError(FraudcepError):
    """A DynamoDB table that cannot be used as asked (wrong key schema, stream or TTL)."""


def wall_clock_ms() -> int:
    """Wall-clock epoch milliseconds (``detected_at``; TTL reads compare against it)."""
    return time.time_ns() // 1_000_000


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError``, else None."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


# -- tables -----------------------------------------------------------------------------------


def ensure_table(
    client: Any,
    name: str,
    *,
    hash_key: str,
    stream_view: str | None = None,
    ttl_attribute: str | None = None,
    indexes: Sequence[Mapping[str, Any]] = (),
    index_attributes: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Create table ``name`` (hash key ``hash_key`` of type S, on-demand) or accept the one
    that exists with that key; enable the stream and TTL if asked and missing; wait until it
    is ACTIVE. Returns the table's description.

    ``indexes`` are GlobalSecondaryIndexes for a new table (``index_attributes`` gives their
    key attributes' types); an existing table must already have them.
    """
    definitions = [{"AttributeName": hash_key, "AttributeType": "S"}]
    definitions += [
        {"AttributeName": attr, "AttributeType": kind}
        for attr, kind in (index_attributes or {}).items()
    ]
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": hash_key, "KeyType": "HASH"}],
        "AttributeDefinitions": definitions,
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream_view is not None:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream_view}
    if indexes:
        request["GlobalSecondaryIndexes"] = list(indexes)
    try:
        client.create_table(**request)
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise TableError(f"table {name!r}: cannot create it: {exc}") from None
    table = _wait_active(client, name, timeout_s)
    _check_key(table, name, hash_key)
    missing = {ix["IndexName"] for ix in indexes} - {
        ix["IndexName"] for ix in table.get("GlobalSecondaryIndexes", [])
    }
    if missing:
        raise TableError(f"table {name!r} exists without the index(es) {sorted(missing)}")
    if stream_view is not None:
        spec = table.get("StreamSpecification") or {}
        if not spec.get("StreamEnabled"):
            client.update_table(
                TableName=name,
                StreamSpecification={"StreamEnabled": True, "StreamViewType": stream_view},
            )
            table = _wait_active(client, name, timeout_s)
        elif spec.get("StreamViewType") not in _VIEWS_WITH.get(stream_view, (stream_view,)):
            raise TableError(
                f"table {name!r} streams {spec.get('StreamViewType')} records; "
                f"{stream_view} is needed (disable its stream, or use another table)"
            )
    if ttl_attribute is not None:
        _ensure_ttl(client, name, ttl_attribute)
    return table


def _wait_active(client: Any, name: str, timeout_s: float) -> dict[str, Any]:
    polls = attrs.evolve(_WAIT_ACTIVE, deadline_s=timeout_s).start()
    while True:
        try:
            table: dict[str, Any] = client.describe_table(TableName=name)["Table"]
        except ClientError as exc:  # a table just created may not be visible yet
            if error_code(exc) != "ResourceNotFoundException":
                raise
            table = {"TableStatus": "not visible"}
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table["TableStatus"] == "ACTIVE" and all(
            ix.get("IndexStatus", "ACTIVE") == "ACTIVE" for ix in indexes
        ):
            return table
        wait = polls.failed()
        if wait is None:
            raise TableError(f"table {name!r} is still {table['TableStatus']} after {timeout_s}s")
        polls.wait(wait)


def _check_key(table: Mapping[str, Any], name: str, hash_key: str) -> None:
    schema = [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]]
    types = {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}
    if schema != [(hash_key, "HASH")] or types.get(hash_key) != "S":
        shown = ", ".join(f"{attr} {kind} ({types.get(attr)})" for attr, kind in schema)
        raise TableError(
            f"table {name!r} exists with key schema [{shown}]; expected the single hash key "
            f"{hash_key} of type S (use another table name)"
        )


def _ensure_ttl(client: Any, name: str, attribute: str) -> None:
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    status = ttl.get("TimeToLiveStatus")
    if status in ("ENABLED", "ENABLING"):
        if ttl.get("AttributeName") != attribute:
            raise TableError(
                f"table {name!r} has TTL on {ttl.get('AttributeName')!r}; {attribute!r} is needed"
            )
        return
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
    )


def create_alerts_table(
    dynamodb_client: Any, name: str, *, ttl_attribute: str = TTL_ATTRIBUTE
) -> str:
    """Create (or accept) the alert table and return its latest stream ARN.

    Hash key ``alert_id``, on-demand billing, a NEW_IMAGE stream for the notifier and TTL on
    ``ttl_attribute``. Calling it again on the same table changes nothing.
    """
    table = ensure_table(
        dynamodb_client,
        name,
        hash_key="alert_id",
        stream_view="NEW_IMAGE",
        ttl_attribute=ttl_attribute,
    )
    arn = table.get("LatestStreamArn")
    if not arn:
        table = dynamodb_client.describe_table(TableName=name)["Table"]
        arn = table.get("LatestStreamArn")
    if not arn:
        raise TableError(f"table {name!r} reports no stream ARN")
    return str(arn)


# -- items ------------------------------------------------------------------------------------


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (plain Python: text, ints, bytes, bools, maps, lists) as a low-level item,
    an attribute-value map (``boto3``'s ``TypeSerializer``); None values are left out."""
    return {name: _SERIALIZER.serialize(v) for name, v in values.items() if v is not None}


def alert_item(
    alert: Alert, *, now_ms: int, ttl_s: int = ALERTS_TTL_S, source: str = ""
) -> dict[str, Any]:
    """The alert as a DynamoDB item (attribute-value map), written at wall-clock ``now_ms``."""
    events = json.dumps(alert.to_dict()["events"], separators=(",", ":"), default=str)
    return to_item(
        {
            "alert_id": alert.alert_id,
            "rule_id": alert.rule_id,
            "rule_version": alert.rule_version,
            "key": canonical_key(alert.key),
            "first_ts": alert.first_ts,
            "last_ts": alert.last_ts,
            "emitted_at": alert.emitted_at,
            "detected_at": now_ms,
            "expires_at": now_ms // 1000 + ttl_s,
            "events": events,
            "source": source,
            "lists": dict(alert.lists) or None,
            "mode": None if alert.mode == LIVE else alert.mode,
        }
    )


MAX_NESTING: Final = 32
"""How deep ``M`` and ``L`` attribute values nest at most: DynamoDB's own limit."""


def from_attribute_value(value: Mapping[str, Any]) -> Any:
    """A low-level DynamoDB attribute value (``{"N": "3"}``) as a plain Python value.

    Numbers without a fraction or exponent become ``int``, others ``float``; binary values
    given as base64 text (as in a stream record's JSON) become ``bytes``. The conversion does
    not recurse (maps and lists are unfolded with a stack of their own), and refuses nesting
    deeper than DynamoDB allows (:data:`MAX_NESTING`) with a ``ValueError``, as it does any
    value that is not an attribute value.

    Why not ``TypeDeserializer`` for the whole value: it recurses into every ``M`` and ``L``
    it meets, and a stream record's image is untrusted input (a JSON document Lambda hands
    over, which nothing bounds before it arrives here): one nested a hundred thousand deep
    would exhaust the stack before anything could refuse it. So the maps and lists are
    unfolded here, depth counted first, and only scalars are handed to the deserializer.
    """
    root: list[Any] = [None]
    # (attribute value, where its result goes, the slot there, how deep it is)
    todo: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 0)]
    while todo:
        current, container, slot, depth = todo.pop()
        if not isinstance(current, Mapping) or len(current) != 1:
            raise ValueError(f"not a DynamoDB attribute value: {_described(current)}")
        ((kind, data),) = current.items()
        if kind in ("M", "L"):
            if depth >= MAX_NESTING:
                raise ValueError(f"attribute value nests deeper than {MAX_NESTING} levels")
            if kind == "M":
                if not isinstance(data, Mapping):
                    raise ValueError(f"an M attribute value holds {_described(data)}")
                mapping: dict[str, Any] = {}
                for name, member in data.items():
                    mapping[str(name)] = None  # keeps the order; filled in below
                    todo.append((member, mapping, str(name), depth + 1))
                container[slot] = mapping
            else:
                if not isinstance(data, list | tuple):
                    raise ValueError(f"an L attribute value holds {_described(data)}")
                items: list[Any] = [None] * len(data)
                for index, member in enumerate(data):
                    todo.append((member, items, index, depth + 1))
                container[slot] = items
        else:
            container[slot] = _scalar(kind, data)
    return root[0]


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A low-level item as plain values (:func:`from_attribute_value` of each attribute)."""
    return {str(name): from_attribute_value(value) for name, value in item.items()}


_SCALARS: Final = frozenset({"S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS"})


def _scalar(kind: Any, data: Any) -> Any:
    """A scalar or set attribute value, read by ``TypeDeserializer``; numbers as ``int`` or
    ``float`` (not ``Decimal``) and binary as ``bytes`` (base64 text decoded first)."""
    if kind not in _SCALARS:
        raise ValueError(f"unknown DynamoDB attribute type {_described(kind)}")
    if kind in ("SS", "NS", "BS") and not isinstance(data, list | tuple | set | frozenset):
        raise ValueError(f"a {kind} attribute value holds {_described(data)}")
    if kind == "B":
        data = _binary(data)
    elif kind == "BS":
        data = [_binary(b) for b in data]
    elif kind in ("S", "N"):
        data = str(data)
    elif kind == "SS":
        data = [str(s) for s in data]
    elif kind == "NS":
        data = [str(n) for n in data]
    try:
        value = _DESERIALIZER.deserialize({kind: data})
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(f"a {kind} attribute value cannot be read: {exc}") from None
    if kind == "N":
        return _number(value, data)
    if kind == "NS":
        return {_number(n, n) for n in value}
    if kind == "B":
        return bytes(value.value)
    if kind == "BS":
        return {bytes(b.value) for b in value}
    if kind == "BOOL":
        return bool(value)
    return value


def _described(value: Any) -> str:
    """A value for a message: a scalar's ``repr`` (cut short), a container's type and size
    (its ``repr`` would recurse into it)."""
    if value is None or isinstance(value, str | bytes | int | float | bool):
        text = repr(value)
        return text if len(text) <= 100 else text[:97] + "..."
    size = len(value) if isinstance(value, Sized) else None
    return f"a {type(value).__name__}" + (f" of {size} item(s)" if size is not None else "")


def _number(value: Decimal, given: Any) -> int | float:
    """A number as ``int`` when it is written without a fraction or exponent, else
    ``float``; ``given`` is what it was read from (for the message)."""
    if not value.is_finite():
        raise ValueError(f"an N attribute value holds {_described(given)}, not a number")
    text = str(value)
    return float(value) if any(c in text for c in ".eE") else int(value)


def _binary(data: Any) -> bytes:
    if isinstance(data, Binary):
        return bytes(data.value)
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    return base64.b64decode(str(data), validate=True)


def alert_from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An alert item (low-level form, as from GetItem or a stream's NEW_IMAGE) as a plain
    dict: numbers as ``int``, ``events`` parsed from JSON, ``key`` as stored (canonical)."""
    missing = [name for name in _REQUIRED if name not in item]
    if missing:
        raise ValueError(f"not an alert item: missing {', '.join(missing)}")
    out = from_item(item)
    events = out["events"]
    try:
        if not isinstance(events, str):
            raise TypeError(f"events is {_described(events)}, not text")
        out["events"] = loads_bounded(events)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"alert item {out['alert_id']!r}: events is not JSON: {exc}") from None
    return out


def _expired(item: Mapping[str, Any], now_ms: int) -> bool:
    expires = item.get(TTL_ATTRIBUTE)
    if expires is None:
        return False
    return int(from_attribute_value(expires)) * 1000 <= now_ms


# -- retries ----------------------------------------------------------------------------------


@attrs.define
class BatchRetrier:
    """Runs batch requests until nothing is left, backing off between rounds that leave
    something undone (``backoff``: :data:`BATCH_BACKOFF` by default; a round that does part
    of the work starts the count of rounds in a row again); raises ``error`` (naming
    ``what`` and what is left) when the back-off policy gives up."""

    what: str
    backoff: Backoff = BATCH_BACKOFF
    error: type[FraudcepError] = SinkError

    def drain(
        self,
        pending: list[T],
        size: int,
        send: Callable[[list[T]], list[T]],
        describe: Callable[[list[T]], str],
    ) -> None:
        """Send ``pending`` in chunks of ``size``; ``send`` returns what it left undone."""
        retries = self.backoff.start()
        while pending:
            chunk, rest = pending[:size], pending[size:]
            try:
                left = send(chunk)
            except ClientError as exc:
                if error_code(exc) not in THROTTLING_ERRORS:
                    raise self.error(f"{self.what}: {exc}; {describe(pending)}") from None
                left = chunk
            except BotoCoreError as exc:
                raise self.error(f"{self.what}: {exc}; {describe(pending)}") from None
            pending = left + rest
            if not left:
                retries.progressed()
                continue
            wait = retries.failed()
            if wait is None:
                raise self.error(
                    f"{self.what}: gave up after {retries.failures} rounds in a row with "
                    f"unprocessed or throttled requests ({retries.elapsed_s:.1f}s); "
                    f"{describe(pending)}"
                )
            retries.wait(wait)


# -- the table --------------------------------------------------------------------------------


def _unique(alerts: Iterable[Alert]) -> list[Alert]:
    seen: set[str] = set()
    out = []
    for alert in alerts:
        if alert.alert_id not in seen:
            seen.add(alert.alert_id)
            out.append(alert)
    return out


@attrs.define
class AlertTable:
    """Writers and readers of one alert table (see the module docstring)."""

    name: str
    client: Any
    ttl_s: int = ALERTS_TTL_S
    backoff: Backoff = BATCH_BACKOFF
    max_workers: int = 8
    clock: Callable[[], int] = wall_clock_ms
    _executor: ThreadPoolExecutor | None = attrs.field(default=None, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def put_if_absent(self, alerts: Iterable[Alert], *, source: str = "") -> int:
        """Write each alert unless its id is already there; returns how many were new.

        One conditional PutItem per alert (``attribute_not_exists(alert_id)``), several at
        once: safe when writers race, and an existing item is never rewritten."""
        return len(self.put_new(alerts, source=source))

    def put_new(self, alerts: Iterable[Alert], *, source: str = "") -> list[Alert]:
        """:meth:`put_if_absent`, answering the alerts that were new (for counts per rule)."""
        unique = _unique(alerts)
        if not unique:
            return []
        now = self.clock()
        items = [alert_item(a, now_ms=now, ttl_s=self.ttl_s, source=source) for a in unique]
        if len(items) == 1:
            written = [self._put_new(items[0])]
        else:
            written = list(self._pool().map(self._put_new, items))
        return [a for a, new in zip(unique, written, strict=True) if new]

    def _put_new(self, item: dict[str, Any]) -> bool:
        try:
            self.client.put_item(
                TableName=self.name,
                Item=item,
                ConditionExpression="attribute_not_exists(alert_id)",
            )
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise SinkError(
                f"dynamodb table {self.name!r}: writing alert {_alert_id(item)}: {exc}"
            ) from None
        except BotoCoreError as exc:
            raise SinkError(
                f"dynamodb table {self.name!r}: writing alert {_alert_id(item)}: {exc}"
            ) from None
        return True

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix=f"alerts-{self.name}"
                )
            return self._executor

    def write_batch(self, alerts: Iterable[Alert], *, source: str = "") -> int:
        """Write the alerts whose ids are not in the table yet; returns how many it wrote.

        For one writer with many alerts: BatchGetItem finds the ids already there, then
        BatchWriteItem writes the others. Unprocessed keys and items, and throttling, are
        retried with back-off; when that gives up, :class:`SinkError` says what is left."""
        unique = _unique(alerts)
        if not unique:
            return 0
        existing = self._existing([a.alert_id for a in unique])
        fresh = [a for a in unique if a.alert_id not in existing]
        if not fresh:
            return 0
        now = self.clock()
        requests = [
            {"PutRequest": {"Item": alert_item(a, now_ms=now, ttl_s=self.ttl_s, source=source)}}
            for a in fresh
        ]

        def send(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            answer = self.client.batch_write_item(RequestItems={self.name: chunk})
            left: list[dict[str, Any]] = answer.get("UnprocessedItems", {}).get(self.name, [])
            return left

        def describe(left: list[dict[str, Any]]) -> str:
            ids = [_alert_id(r["PutRequest"]["Item"]) for r in left]
            return f"{len(ids)} of {len(fresh)} alert(s) left unwritten: {_ids(ids)}"

        self._retrier("writing alerts").drain(requests, MAX_BATCH_WRITE, send, describe)
        return len(fresh)

    def _existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        keys = [to_item({"alert_id": i}) for i in ids]

        def send(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            answer = self.client.batch_get_item(
                RequestItems={
                    self.name: {
                        "Keys": chunk,
                        "ConsistentRead": True,
                        "ProjectionExpression": "alert_id",
                    }
                }
            )
            for item in answer.get("Responses", {}).get(self.name, []):
                found.add(_alert_id(item))
            left: list[dict[str, Any]] = (
                answer.get("UnprocessedKeys", {}).get(self.name, {}).get("Keys", [])
            )
            return left

        def describe(left: list[dict[str, Any]]) -> str:
            return f"{len(left)} alert id(s) not checked, nothing written: {_ids(ids)}"

        self._retrier("checking which alerts exist").drain(keys, MAX_BATCH_GET, send, describe)
        return found

    def _retrier(self, what: str) -> BatchRetrier:
        return BatchRetrier(f"dynamodb table {self.name!r}: {what}", self.backoff)

    def get(self, alert_id: str, *, now_ms: int | None = None) -> dict[str, Any] | None:
        """The live alert ``alert_id`` (see :func:`alert_from_item`), None if absent or
        expired."""
        answer = self.client.get_item(
            TableName=self.name, Key=to_item({"alert_id": alert_id}), ConsistentRead=True
        )
        item = answer.get("Item")
        if item is None or _expired(item, self.clock() if now_ms is None else now_ms):
            return None
        return alert_from_item(item)

    def live_items(self, *, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Every live alert of the table (a full scan; for tools and tests)."""
        now = self.clock() if now_ms is None else now_ms
        out = []
        for page in self.client.get_paginator("scan").paginate(
            TableName=self.name, ConsistentRead=True
        ):
            for item in page.get("Items", []):
                if not _expired(item, now):
                    out.append(alert_from_item(item))
        return out

    def close(self) -> None:
        """Stop the writer threads."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _alert_id(item: Mapping[str, Any]) -> str:
    return str(from_attribute_value(item["alert_id"]))


def _ids(ids: Sequence[str], shown: int = 10) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more


# -- the sink ---------------------------------------------------------------------------------


@attrs.define
class DynamoDBPartitionSink:
    """One input partition's alerts, buffered until the runner commits (``flush``)."""

    table: AlertTable
    source: str
    buffer: list[Alert] = attrs.Factory(list)

    def payments(self, records: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Payments are not stored here."""

    def alerts(self, alerts: Sequence[Alert]) -> None:
        self.buffer.extend(alerts)

    def flush(self) -> None:
        """Write the buffered alerts; on failure keep them and raise :class:`SinkError`."""
        if self.buffer:
            self.table.write_batch(self.buffer, source=self.source)
            self.buffer.clear()

    def checkpoint(self, offset: int, checkpoint_id: str) -> None:
        """Everything was written at the last flush."""

    def close(self) -> None:
        self.buffer.clear()


@attrs.define
class DynamoDBSink:
    """The ``dynamodb://TABLE`` sink: alerts, written per commit with :meth:`AlertTable.write_batch`
    (each partition has one writer, the runner that owns it)."""

    table: AlertTable
    wants_payments: bool = attrs.field(default=False, init=False)

    def open(
        self, source: SourcePartition, start_offset: int, start_checkpoint: str | None
    ) -> DynamoDBPartitionSink:
        return DynamoDBPartitionSink(self.table, f"{source.topic}/{source.partition}")

    def describe(self) -> str:
        return f"dynamodb://{self.table.name}"

    def close(self) -> None:
        self.table.close()


_PARAMETERS = ("ttl", "create", "endpoint_url", "region")


def open_dynamodb_sink(url: str) -> DynamoDBSink:
    """The sink ``dynamodb://TABLE[?ttl=SECONDS&create=true|false&endpoint_url=URL&region=R]``.

    ``ttl`` is the alerts' lifetime (default 86400), ``create=true`` creates the table (with
    its stream and TTL) when missing, ``endpoint_url`` and ``region`` override the
    environment's."""
    parts = urlsplit(url)
    if parts.scheme != "dynamodb":
        raise SinkError(f"sink {url!r}: expected dynamodb://TABLE")
    name = parts.netloc
    if not name:
        raise SinkError(f"sink {url!r}: no table name (expected dynamodb://TABLE)")
    if not _TABLE_NAME.fullmatch(name):
        raise SinkError(
            f"sink {url!r}: {name!r} is not a DynamoDB table name "
            "(3 to 255 of the characters a-z, A-Z, 0-9, '_', '-' and '.')"
        )
    if parts.path not in ("", "/") or parts.fragment:
        raise SinkError(f"sink {url!r}: a table name has no path or fragment")
    options = location_options(
        parts.query, where=f"sink {url!r}", parameters=_PARAMETERS, error=SinkError
    )
    ttl = ALERTS_TTL_S
    if "ttl" in options:
        text = options["ttl"]
        if not text.isdigit() or int(text) <= 0:
            raise SinkError(f"sink {url!r}: ttl must be a positive number of seconds")
        ttl = int(text)
    create = options.get("create", "false").lower()
    if create not in ("true", "false"):
        raise SinkError(f"sink {url!r}: create must be true or false, got {create!r}")
    endpoint = options.get("endpoint_url") or None
    try:
        dynamodb = make_client(
            "dynamodb", endpoint_url=endpoint, region=options.get("region") or None
        )
        if create == "true":
            create_alerts_table(dynamodb, name)
    except (TableError, ClientError, BotoCoreError) as exc:
        raise SinkError(f"sink {url!r}: {exc}") from None
    return DynamoDBSink(AlertTable(name, dynamodb, ttl_s=ttl))
