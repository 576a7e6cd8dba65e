"""Per-key engine state in DynamoDB, for detectors without a process of their own (Lambda).

One table, four kinds of item, by the hash key ``pk``:

``key#<canonical key>``
    one key's state: ``state`` (B, the key's state: its engine key records and what the
    detector keeps beside them, see :class:`StoredKey`), ``version`` (N, +1 per save),
    ``offsets`` (M: ``"<topic>-<partition>"`` -> last input offset applied), ``rules`` (S,
    digest of the rule file the records were written with), ``updated_at`` (N, ms) and
    ``expires_at`` (N, epoch s; TTL). While the key waits for event time (held events, open
    windows), also ``timer_partition`` (S) and ``next_due`` (N): the sparse index ``timers``
    on them finds the keys a partition's event time has made due. Items written by earlier
    releases hold ``snapshot`` (B, a whole :meth:`fraudcep.Engine.snapshot`, format 1 or 2)
    instead of ``state``; they are read, and rewritten as ``state`` by the next save.
``partition#<topic>-<partition>``
    ``max_ts`` (N): the highest event time seen on the partition, which only grows.
``rules#<sha256>``
    ``text`` (S): a rule file records may have been written with, so that they can be read
    after the rules changed.
``failure#<what failed>``
    the failure count of a record (``<topic>-<partition>/<offset>``) or of a key's stored
    state (``key/<canonical key>``): ``failures`` (N), ``signature`` (S, how it failed:
    the stage and the exception type), ``detail`` (S), ``updated_at`` (N, ms) and
    ``expires_at`` (N, epoch s; TTL, :data:`FAILURE_TTL_S`). Counted with conditional
    updates (:meth:`KeyStateStore.count_failure`), so concurrent invocations lose no count.

A save is conditional on the version that was loaded (``attribute_not_exists(pk)`` for a new
key), so two writers of one key cannot both win: the loser gets :class:`StateConflict`,
reloads and redoes its work.

The ``state`` attribute (:func:`encode_key_state`, :func:`decode_key_state`): ``FCEPLKS1``
(8 bytes), flags (u8: 1 = keyed), a 16-byte BLAKE2b digest, then the MessagePack body
(:class:`StoredKey`). The digest covers the item's key, its ``rules`` and ``offsets`` and the
body, so a state cannot be moved to another key or paired with other offsets unnoticed; with
a state key (``FRAUDCEP_STATE_KEY``) it is keyed, a MAC, and the engine key records inside
carry their own. Decoding checks every type and range and raises
:class:`~fraudcep.errors.SnapshotError` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Final

import attrs
import msgspec
from botocore.exceptions import ClientError

from fraudcep.errors import FraudcepError, SnapshotError
from fraudcep.runtime import Backoff
from fraudcep.timeutil import MAX_TIMESTAMP, MIN_TIMESTAMP
from fraudcep_aws.dynamodb import (
    BATCH_BACKOFF,
    MAX_BATCH_GET,
    BatchRetrier,
    TableError,
    ensure_table,
    error_code,
    from_attribute_value,
    from_item,
    to_item,
)

__all__ = [
    "FAILURE_TTL_S",
    "MAX_ITEM_BYTES",
    "STATE_MAGIC",
    "STATE_TTL_S",
    "TIMERS_INDEX",
    "HeldEvent",
    "KeyState",
    "KeyStateStore",
    "StateConflict",
    "StateError",
    "StateTooLarge",
    "StoredKey",
    "StoredRecord",
    "create_state_table",
    "decode_key_state",
    "encode_key_state",
    "item_size",
    "key_text",
    "record_key",
]

STATE_TTL_S: Final = 7 * 86_400
"""How long the state of a key without records is kept (7 days), in seconds."""
FAILURE_TTL_S: Final = 14 * 86_400
"""How long a failure count is kept after its last failure (14 days), in seconds."""
MAX_FAILURE_DETAIL: Final = 1000
"""Characters of a failure's detail that are kept."""
MAX_ITEM_BYTES: Final = 400 * 1024
"""DynamoDB's item size limit."""
TIMERS_INDEX: Final = "timers"

_KEY = "key#"
_PARTITION = "partition#"
_RULES = "rules#"
_FAILURE = "failure#"
_CONDITION_FAILED = "ConditionalCheckFailedException"


class StateError(FraudcepError):
    """The state table could not be read or written."""


class StateConflict(FraudcepError):
    """Another writer saved the key's state since it was loaded."""


class StateTooLarge(FraudcepError):
    """A key's state does not fit in one DynamoDB item."""


def create_state_table(dynamodb_client: Any, name: str) -> None:
    """Create (or accept) the state table: hash key ``pk``, on-demand, TTL on
    ``expires_at`` and the ``timers`` index."""
    ensure_table(
        dynamodb_client,
        name,
        hash_key="pk",
        ttl_attribute="expires_at",
        indexes=[
            {
                "IndexName": TIMERS_INDEX,
                "KeySchema": [
                    {"AttributeName": "timer_partition", "KeyType": "HASH"},
                    {"AttributeName": "next_due", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        index_attributes={"timer_partition": "S", "next_due": "N"},
    )


# -- the state attribute ----------------------------------------------------------------------

STATE_MAGIC: Final = b"FCEPLKS1"
_STATE_HEADER: Final = struct.Struct(">8sB16s")
_KEYED: Final = 1
_PERSON: Final = b"fraudcep-lambda1"  # BLAKE2b personalization: these digests are no others
_MAX_KEY_TEXT: Final = 4096
_PLAIN: Final = frozenset('"\\')  # what a JSON string needs escaped, beside control characters

Time = Annotated[int, msgspec.Meta(ge=MIN_TIMESTAMP, le=MAX_TIMESTAMP)]
Count = Annotated[int, msgspec.Meta(ge=0, le=1 << 62)]
Partition = Annotated[int, msgspec.Meta(ge=0, le=(1 << 31) - 1)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_KEY_TEXT)]


class StoredRecord(msgspec.Struct, array_like=True, frozen=True):
    """One engine key record (:meth:`fraudcep.Engine.export_key`) of the item's key."""

    group: Name
    """The key group (the key spec its rules share, ``"card_id"``)."""
    key: Name
    """The engine's key in that group, as JSON text (:func:`record_key` reads it)."""
    record: bytes


class HeldEvent(msgspec.Struct, array_like=True, frozen=True):
    """A payment the key took that waits for its partition's event time to pass it: the
    record's value as it came, and where it came from (None for one taken over from a
    whole-engine snapshot, which did not keep that)."""

    ts: Time
    value: bytes
    topic: str | None = None
    partition: Partition | None = None
    offset: Offset | None = None


class StoredKey(msgspec.Struct, array_like=True, frozen=True):
    """What the detector keeps of one key: its engine key records, the events it holds for
    event time, its event-time clock and processing order, and when it is next due."""

    watermark: Time | None
    """The event time the key was last moved to: its records at or below it are late."""
    order: Count
    """The processing order of the engine that wrote the records (an engine that takes them
    in numbers new matches after it)."""
    due: Time | None
    """The lowest watermark at which the key has something to do (a held event or a window
    to close), None when it waits for nothing."""
    records: list[StoredRecord]
    held: list[HeldEvent]


_ENCODE: Final = msgspec.msgpack.Encoder().encode
_DECODE: Final = msgspec.msgpack.Decoder(StoredKey).decode


def _digest(
    body: bytes | memoryview,
    key: str,
    rules: str,
    offsets: Mapping[str, int],
    state_key: bytes | None,
) -> bytes:
    h = hashlib.blake2b(digest_size=16, key=state_key or b"", person=_PERSON)
    context = _ENCODE((key, rules, sorted(offsets.items())))
    h.update(len(context).to_bytes(8, "big"))
    h.update(context)
    h.update(body)
    return h.digest()


def encode_key_state(
    stored: StoredKey,
    *,
    key: str,
    rules: str,
    offsets: Mapping[str, int],
    state_key: bytes | None = None,
) -> bytes:
    """The ``state`` attribute of key ``key`` (canonical) saved with ``rules`` and
    ``offsets``: framed, digested over all of them, keyed with ``state_key`` if given."""
    body = _ENCODE(stored)
    digest = _digest(body, key, rules, offsets, state_key)
    return _STATE_HEADER.pack(STATE_MAGIC, _KEYED if state_key else 0, digest) + body


def decode_key_state(
    data: bytes,
    *,
    key: str,
    rules: str,
    offsets: Mapping[str, int],
    state_key: bytes | None = None,
) -> StoredKey:
    """The :class:`StoredKey` in ``data``, the ``state`` attribute of the item of ``key``
    holding ``rules`` and ``offsets``; :class:`SnapshotError` if it is not one, is corrupt,
    belongs to another item or was written with another state key (or with one when none is
    given, or without one when one is)."""
    if len(data) < _STATE_HEADER.size or data[:8] != STATE_MAGIC:
        raise SnapshotError("the key's stored state is not a fraudcep key state (bad magic)")
    flags = data[8]
    if flags & ~_KEYED:
        raise SnapshotError(f"the key's stored state has a corrupt header (flags {flags})")
    keyed = bool(flags & _KEYED)
    if keyed and not state_key:
        raise SnapshotError(
            "the key's stored state is authenticated with a state key, but none is given"
        )
    if state_key and not keyed:
        raise SnapshotError(
            "the key's stored state is not authenticated, but a state key is given: it was "
            "written without the key, or by someone who does not hold it"
        )
    body = memoryview(data)[_STATE_HEADER.size :]
    if _digest(body, key, rules, offsets, state_key) != data[9:25]:
        raise SnapshotError(
            "the key's stored state does not match its digest: it is corrupt, belongs to "
            "another item" + (", or was written with another state key" if state_key else "")
        )
    try:
        stored = _DECODE(body)
    except (msgspec.MsgspecError, ValueError, TypeError, RecursionError) as exc:
        raise SnapshotError(f"the key's stored state cannot be decoded: {str(exc)[:200]}") from None
    pairs = set()
    for r in stored.records:
        pair = (r.group, r.key)
        if pair in pairs:
            raise SnapshotError(f"the key's stored state holds group {r.group!r:.80} key twice")
        pairs.add(pair)
        record_key(r.key)
    return stored


def record_key(text: str) -> Hashable:
    """The engine key written as ``text`` in a :class:`StoredRecord` (a JSON string, number,
    boolean or null; anything else is a :class:`SnapshotError`)."""
    inner = text[1:-1]
    if len(text) > 1 and text[0] == text[-1] == '"' and _PLAIN.isdisjoint(inner):
        if inner.isprintable():
            return inner  # a string without escapes: what user and card ids are
        raise SnapshotError(f"a stored record's key is not JSON: {text[:80]!r}")
    if text[:1] in ("[", "{"):
        raise SnapshotError(f"a stored record's key is not a plain value: {text[:80]!r}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise SnapshotError(f"a stored record's key is not JSON: {text[:80]!r}") from None
    if not isinstance(value, str | int | float | bool) and value is not None:
        raise SnapshotError(f"a stored record's key is not a plain value: {text[:80]!r}")
    return value


def key_text(key: Any) -> str:
    """An engine key as :class:`StoredRecord` keeps it (the inverse of :func:`record_key`)."""
    if type(key) is str and key.isascii() and key.isprintable() and _PLAIN.isdisjoint(key):
        return f'"{key}"'
    if not isinstance(key, str | int | float | bool) and key is not None:
        raise SnapshotError(
            f"an engine key of type {type(key).__name__} cannot be kept in the state table"
        )
    try:
        return json.dumps(key, allow_nan=False)
    except ValueError:
        raise SnapshotError(f"the engine key {key!r} cannot be kept in the state table") from None


# -- the table --------------------------------------------------------------------------------


@attrs.frozen
class KeyState:
    """One key's stored state as loaded; ``version`` 0 means nothing is stored yet."""

    key: str
    """The key in canonical form (:func:`fraudcep.alert.identity.canonical_key`)."""
    version: int = 0
    state: bytes | None = None
    """The ``state`` attribute (:func:`decode_key_state` reads it)."""
    offsets: Mapping[str, int] = attrs.Factory(dict)
    rules: str | None = None
    snapshot: bytes | None = None
    """A whole-engine snapshot, in an item written by an earlier release (read once: the next
    save writes ``state`` instead)."""

    def applied(self, partition: str, offset: int) -> bool:
        """Whether the record at ``offset`` of ``partition`` is already in the state."""
        last = self.offsets.get(partition)
        return last is not None and offset <= last

    @property
    def empty(self) -> bool:
        """Whether no engine state is stored (none yet, or it was given up)."""
        return self.state is None and self.snapshot is None


def item_size(item: Mapping[str, Any]) -> int:
    """An upper bound of the size DynamoDB counts for ``item`` (attribute-value form)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Mapping[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "N":
        return len(str(data)) + 1
    if kind == "B":
        return len(data)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(v) + 1 for k, v in data.items())
    if kind == "L":
        return 3 + sum(_value_size(v) + 1 for v in data)
    return 1


@attrs.define
class KeyStateStore:
    """The state table (see the module docstring)."""

    name: str
    client: Any
    ttl_s: int = STATE_TTL_S
    backoff: Backoff = BATCH_BACKOFF

    # -- keys -----------------------------------------------------------------------------

    def load(self, key: str) -> KeyState:
        """The key's state, read consistently."""
        answer = self.client.get_item(
            TableName=self.name, Key=to_item({"pk": _KEY + key}), ConsistentRead=True
        )
        item = answer.get("Item")
        return KeyState(key) if item is None else _state(key, item)

    def load_many(self, keys: Iterable[str]) -> dict[str, KeyState]:
        """The states of many keys, read consistently, 100 per request."""
        wanted = list(dict.fromkeys(keys))
        found = {key: KeyState(key) for key in wanted}
        for item in self._batch_get([_KEY + key for key in wanted], "loading key states"):
            key = _pk(item)[len(_KEY) :]
            found[key] = _state(key, item)
        return found

    def save(
        self,
        previous: KeyState,
        *,
        state: bytes,
        offsets: Mapping[str, int],
        rules: str,
        due: tuple[str, int] | None,
        now_ms: int,
        item: dict[str, Any] | None = None,
    ) -> KeyState:
        """Replace ``previous`` (as loaded) by the new state; :class:`StateConflict` if
        another writer saved the key since, :class:`StateTooLarge` if it does not fit.

        ``due`` is ``(partition, watermark)`` while the key waits for event time. ``item``:
        the item :meth:`state_item` made of the same arguments (checked already)."""
        if item is None:
            item = self.state_item(
                previous, state=state, offsets=offsets, rules=rules, due=due, now_ms=now_ms
            )
        if previous.version:
            condition = "version = :expected"
            values: dict[str, Any] = to_item({":expected": previous.version})
        else:
            condition, values = "attribute_not_exists(pk)", {}
        try:
            self.client.put_item(
                TableName=self.name,
                Item=item,
                ConditionExpression=condition,
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                raise StateConflict(
                    f"key {previous.key}: saved by another writer since version "
                    f"{previous.version} was loaded"
                ) from None
            raise
        return KeyState(previous.key, previous.version + 1, state, dict(offsets), rules)

    def state_item(
        self,
        previous: KeyState,
        *,
        state: bytes,
        offsets: Mapping[str, int],
        rules: str,
        due: tuple[str, int] | None,
        now_ms: int,
    ) -> dict[str, Any]:
        """The item :meth:`save` would write; :class:`StateTooLarge` if it does not fit (so
        that the size can be checked before anything else is written)."""
        item = to_item(
            {
                "pk": _KEY + previous.key,
                "version": previous.version + 1,
                "state": state,
                "offsets": dict(offsets),
                "rules": rules,
                "updated_at": now_ms,
                "expires_at": now_ms // 1000 + self.ttl_s,
                "timer_partition": due[0] if due is not None else None,
                "next_due": due[1] if due is not None else None,
            }
        )
        # a bound first (the attributes beside the state and the offsets are numbers and
        # short names): the exact count only for items that might not fit
        bound = len(state) + len(previous.key.encode()) + len(rules.encode()) + 512
        bound += sum(len(tp.encode()) + 32 for tp in offsets)
        bound += len(due[0].encode()) if due else 0
        size = bound if bound <= MAX_ITEM_BYTES else item_size(item)
        if size > MAX_ITEM_BYTES:
            raise StateTooLarge(
                f"key {previous.key}: its state takes {size} bytes, over DynamoDB's item "
                f"limit of {MAX_ITEM_BYTES} (state {len(state)} bytes); lower "
                "max_partial_matches_per_key or shorten the rules' windows, or the "
                "watermark lag (events held for event time are kept in the item)"
            )
        return item

    def due_keys(self, partition: str, watermark: int) -> list[str]:
        """Keys of ``partition`` that wait for a watermark <= ``watermark``.

        The index is eventually consistent: a key may be listed that is no longer due (the
        caller checks its loaded state) or be missed until the next call."""
        keys = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.name,
            IndexName=TIMERS_INDEX,
            KeyConditionExpression="timer_partition = :p AND next_due <= :w",
            ExpressionAttributeValues=to_item({":p": partition, ":w": watermark}),
        ):
            for item in page.get("Items", []):
                keys.append(_pk(item)[len(_KEY) :])
        return keys

    # -- partitions -----------------------------------------------------------------------

    def partition_max_ts(self, partitions: Iterable[str]) -> dict[str, int]:
        """The highest event time stored for each partition that has one."""
        out = {}
        pks = [_PARTITION + p for p in dict.fromkeys(partitions)]
        for item in self._batch_get(pks, "loading partition clocks"):
            out[_pk(item)[len(_PARTITION) :]] = int(from_attribute_value(item["max_ts"]))
        return out

    def raise_partition_max_ts(self, partition: str, max_ts: int) -> None:
        """Store ``max_ts`` for ``partition`` unless a higher one is stored."""
        try:
            self.client.update_item(
                TableName=self.name,
                Key=to_item({"pk": _PARTITION + partition}),
                UpdateExpression="SET max_ts = :t",
                ConditionExpression="attribute_not_exists(max_ts) OR max_ts < :t",
                ExpressionAttributeValues=to_item({":t": max_ts}),
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise

    # -- failure counts -------------------------------------------------------------------

    def count_failure(self, what: str, signature: str, detail: str, *, now_ms: int) -> int:
        """Count one failure of ``what`` (a record or a key's state, see the module
        docstring); the number of failures in a row with this ``signature``, this one
        included. A failure with another signature starts the count again at 1.

        Two conditional updates keep concurrent callers exact: an increment that only
        applies while the stored signature is this one (or none is stored), else a reset to
        1 that only applies while it is another one; whichever condition fails, the other
        is tried again."""
        key = to_item({"pk": _FAILURE + what})
        values = to_item(
            {
                ":sig": signature,
                ":detail": detail[:MAX_FAILURE_DETAIL],
                ":now": now_ms,
                ":exp": now_ms // 1000 + FAILURE_TTL_S,
                ":one": 1,
            }
        )
        names = {  # names, not words: none can collide with DynamoDB's reserved words
            "#f": "failures",
            "#s": "signature",
            "#d": "detail",
            "#u": "updated_at",
            "#e": "expires_at",
        }
        common = "#s = :sig, #d = :detail, #u = :now, #e = :exp"
        increment = f"SET #f = if_not_exists(#f, :zero) + :one, {common}"
        for _ in range(10):
            try:
                answer = self.client.update_item(
                    TableName=self.name,
                    Key=key,
                    UpdateExpression=increment,
                    ConditionExpression=(
                        "attribute_not_exists(pk) OR attribute_not_exists(#s) OR #s = :sig"
                    ),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={**values, **to_item({":zero": 0})},
                    ReturnValues="UPDATED_NEW",
                )
                return int(from_item(answer["Attributes"])["failures"])
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise
            try:  # another signature is stored: this failure starts a new count
                self.client.update_item(
                    TableName=self.name,
                    Key=key,
                    UpdateExpression=f"SET #f = :one, {common}",
                    ConditionExpression="attribute_exists(pk) AND #s <> :sig",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
                return 1
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise
        raise StateError(f"failure count of {what}: changed by others 10 times in a row")

    def failure_count(self, what: str) -> tuple[int, str | None]:
        """The stored count and signature of ``what``'s failures ((0, None): none)."""
        answer = self.client.get_item(
            TableName=self.name, Key=to_item({"pk": _FAILURE + what}), ConsistentRead=True
        )
        item = answer.get("Item")
        if item is None or "signature" not in item:
            return 0, None
        values = from_item(item)
        return int(values["failures"]), str(values["signature"])

    def clear_failures(self, what: str) -> None:
        """Forget ``what``'s failures (once it has been dealt with): the count goes back to
        0 (an UpdateItem, so that no DeleteItem permission is needed; the TTL removes it)."""
        try:
            self.client.update_item(
                TableName=self.name,
                Key=to_item({"pk": _FAILURE + what}),
                UpdateExpression="SET #f = :zero REMOVE #s",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#f": "failures", "#s": "signature"},
                ExpressionAttributeValues=to_item({":zero": 0}),
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise

    # -- rule files -----------------------------------------------------------------------

    def put_rules(self, digest: str, text: str) -> None:
        """Keep rule file ``text`` under its ``digest`` (once)."""
        item = to_item({"pk": _RULES + digest, "text": text})
        if item_size(item) > MAX_ITEM_BYTES:
            raise TableError(f"the rule file ({len(text)} characters) does not fit in one item")
        try:
            self.client.put_item(
                TableName=self.name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise

    def get_rules(self, digest: str) -> str:
        """The rule file stored under ``digest``."""
        answer = self.client.get_item(
            TableName=self.name, Key=to_item({"pk": _RULES + digest}), ConsistentRead=True
        )
        item = answer.get("Item")
        if item is None:
            raise TableError(f"table {self.name!r} has no rule file {digest}")
        return str(from_attribute_value(item["text"]))

    # -- helpers --------------------------------------------------------------------------

    def _batch_get(self, pks: Sequence[str], what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []

        def send(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            answer = self.client.batch_get_item(
                RequestItems={self.name: {"Keys": chunk, "ConsistentRead": True}}
            )
            items.extend(answer.get("Responses", {}).get(self.name, []))
            left: list[dict[str, Any]] = (
                answer.get("UnprocessedKeys", {}).get(self.name, {}).get("Keys", [])
            )
            return left

        retrier = BatchRetrier(f"state table {self.name!r}: {what}", self.backoff, error=StateError)
        retrier.drain(
            [to_item({"pk": pk}) for pk in pks],
            MAX_BATCH_GET,
            send,
            lambda left: f"{len(left)} item(s) not read",
        )
        return items


def _pk(item: Mapping[str, Any]) -> str:
    return str(from_attribute_value(item["pk"]))


def _state(key: str, item: Mapping[str, Any]) -> KeyState:
    values = from_item(item)
    state = values.get("state")
    snapshot = values.get("snapshot")
    rules = values.get("rules")
    return KeyState(
        key=key,
        version=int(values["version"]),
        state=bytes(state) if state is not None else None,
        offsets={str(tp): int(o) for tp, o in (values.get("offsets") or {}).items()},
        rules=str(rules) if rules is not None else None,
        snapshot=bytes(snapshot) if snapshot is not None and state is None else None,
    )
