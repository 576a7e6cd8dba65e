"""Per-key engine state in DynamoDB, for detectors without a process of their own (Lambda).

One table, three kinds of item, by the hash key ``pk``:

``key#<canonical key>``
    one key's engine: ``snapshot`` (B, :meth:`fraudcep.Engine.snapshot`), ``version`` (N,
    +1 per save), ``offsets`` (M: ``"<topic>-<partition>"`` -> last input offset applied),
    ``rules`` (S, digest of the rule file the snapshot was taken with), ``updated_at`` (N, ms)
    and ``expires_at`` (N, epoch s; TTL). While the engine waits for event time (held events,
    open windows), also ``timer_partition`` (S) and ``next_due`` (N): the sparse index
    ``timers`` on them finds the keys a partition's event time has made due.
``partition#<topic>-<partition>``
    ``max_ts`` (N): the highest event time seen on the partition, which only grows.
``rules#<sha256>``
    ``text`` (S): a rule file a snapshot may have been taken with, so that it can be restored
    after the rules changed.

A save is conditional on the version that was loaded (``attribute_not_exists(pk)`` for a new
key), so two writers of one key cannot both win: the loser gets :class:`StateConflict`,
reloads and redoes its work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
from botocore.exceptions import ClientError

from fraudcep.errors import FraudcepError
from fraudcep_aws.dynamodb import (
    MAX_BATCH_GET,
    Backoff,
    BatchRetrier,
    TableError,
    ensure_table,
    error_code,
)

__all__ = [
    "MAX_ITEM_BYTES",
    "STATE_TTL_S",
    "TIMERS_INDEX",
    "KeyState",
    "KeyStateStore",
    "StateConflict",
    "StateError",
    "StateTooLarge",
    "create_state_table",
    "item_size",
]

STATE_TTL_S: Final = 7 * 86_400
"""How long the state of a key without records is kept (7 days), in seconds."""
MAX_ITEM_BYTES: Final = 400 * 1024
"""DynamoDB's item size limit."""
TIMERS_INDEX: Final = "timers"

_KEY = "key#"
_PARTITION = "partition#"
_RULES = "rules#"
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


@attrs.frozen
class KeyState:
    """One key's stored state as loaded; ``version`` 0 means nothing is stored yet."""

    key: str
    """The key in canonical form (:func:`fraudcep.engine.canonical_key`)."""
    version: int = 0
    snapshot: bytes | None = None
    offsets: Mapping[str, int] = attrs.Factory(dict)
    rules: str | None = None

    def applied(self, partition: str, offset: int) -> bool:
        """Whether the record at ``offset`` of ``partition`` is already in the state."""
        last = self.offsets.get(partition)
        return last is not None and offset <= last


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
    backoff: Backoff = attrs.Factory(Backoff)

    # -- keys -----------------------------------------------------------------------------

    def load(self, key: str) -> KeyState:
        """The key's state, read consistently."""
        answer = self.client.get_item(
            TableName=self.name, Key={"pk": {"S": _KEY + key}}, ConsistentRead=True
        )
        item = answer.get("Item")
        return KeyState(key) if item is None else _state(key, item)

    def load_many(self, keys: Iterable[str]) -> dict[str, KeyState]:
        """The states of many keys, read consistently, 100 per request."""
        wanted = list(dict.fromkeys(keys))
        found = {key: KeyState(key) for key in wanted}
        for item in self._batch_get([_KEY + key for key in wanted], "loading key states"):
            key = item["pk"]["S"][len(_KEY) :]
            found[key] = _state(key, item)
        return found

    def save(
        self,
        previous: KeyState,
        *,
        snapshot: bytes,
        offsets: Mapping[str, int],
        rules: str,
        due: tuple[str, int] | None,
        now_ms: int,
    ) -> KeyState:
        """Replace ``previous`` (as loaded) by the new state; :class:`StateConflict` if
        another writer saved the key since, :class:`StateTooLarge` if it does not fit.

        ``due`` is ``(partition, watermark)`` while the engine waits for event time."""
        version = previous.version + 1
        item: dict[str, Any] = {
            "pk": {"S": _KEY + previous.key},
            "version": {"N": str(version)},
            "snapshot": {"B": snapshot},
            "offsets": {"M": {tp: {"N": str(o)} for tp, o in offsets.items()}},
            "rules": {"S": rules},
            "updated_at": {"N": str(now_ms)},
            "expires_at": {"N": str(now_ms // 1000 + self.ttl_s)},
        }
        if due is not None:
            item["timer_partition"] = {"S": due[0]}
            item["next_due"] = {"N": str(due[1])}
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise StateTooLarge(
                f"key {previous.key}: its state takes {size} bytes, over DynamoDB's item "
                f"limit of {MAX_ITEM_BYTES} (snapshot {len(snapshot)} bytes); lower "
                "max_partial_matches_per_key or shorten the rules' windows"
            )
        if previous.version:
            condition = "version = :expected"
            values: dict[str, Any] = {":expected": {"N": str(previous.version)}}
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
        return KeyState(previous.key, version, snapshot, dict(offsets), rules)

    def due_keys(self, partition: str, watermark: int) -> list[str]:
        """Keys of ``partition`` whose engines wait for a watermark <= ``watermark``.

        The index is eventually consistent: a key may be listed that is no longer due (the
        caller checks its loaded state) or be missed until the next call."""
        keys = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.name,
            IndexName=TIMERS_INDEX,
            KeyConditionExpression="timer_partition = :p AND next_due <= :w",
            ExpressionAttributeValues={":p": {"S": partition}, ":w": {"N": str(watermark)}},
        ):
            for item in page.get("Items", []):
                keys.append(item["pk"]["S"][len(_KEY) :])
        return keys

    # -- partitions -----------------------------------------------------------------------

    def partition_max_ts(self, partitions: Iterable[str]) -> dict[str, int]:
        """The highest event time stored for each partition that has one."""
        out = {}
        pks = [_PARTITION + p for p in dict.fromkeys(partitions)]
        for item in self._batch_get(pks, "loading partition clocks"):
            out[item["pk"]["S"][len(_PARTITION) :]] = int(item["max_ts"]["N"])
        return out

    def raise_partition_max_ts(self, partition: str, max_ts: int) -> None:
        """Store ``max_ts`` for ``partition`` unless a higher one is stored."""
        try:
            self.client.update_item(
                TableName=self.name,
                Key={"pk": {"S": _PARTITION + partition}},
                UpdateExpression="SET max_ts = :t",
                ConditionExpression="attribute_not_exists(max_ts) OR max_ts < :t",
                ExpressionAttributeValues={":t": {"N": str(max_ts)}},
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise

    # -- rule files -----------------------------------------------------------------------

    def put_rules(self, digest: str, text: str) -> None:
        """Keep rule file ``text`` under its ``digest`` (once)."""
        item = {"pk": {"S": _RULES + digest}, "text": {"S": text}}
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
            TableName=self.name, Key={"pk": {"S": _RULES + digest}}, ConsistentRead=True
        )
        item = answer.get("Item")
        if item is None:
            raise TableError(f"table {self.name!r} has no rule file {digest}")
        return str(item["text"]["S"])

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
            [{"pk": {"S": pk}} for pk in pks],
            MAX_BATCH_GET,
            send,
            lambda left: f"{len(left)} item(s) not read",
        )
        return items


def _state(key: str, item: Mapping[str, Any]) -> KeyState:
    offsets = {tp: int(v["N"]) for tp, v in item.get("offsets", {}).get("M", {}).items()}
    snapshot = item.get("snapshot", {}).get("B")
    return KeyState(
        key=key,
        version=int(item["version"]["N"]),
        snapshot=bytes(snapshot) if snapshot is not None else None,
        offsets=offsets,
        rules=item.get("rules", {}).get("S"),
    )
