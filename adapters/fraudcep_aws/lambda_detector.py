"""A Lambda function that runs the fraud rules on the batches of a Kafka event source
(Amazon MSK or self-managed Kafka), keeping each key's state in DynamoDB.

A Lambda invocation has no memory of the previous one, so the state lives in the state
table (:mod:`fraudcep_aws.key_state`), one item per key of ``FRAUDCEP_KEY_FIELD``
(``user_id``): the key's engine key records (:meth:`fraudcep.Engine.export_key`, one per key
group the key's payments touch: the user, each of the user's cards) and what the detector
keeps beside them (held events, the key's clock). For each batch:

1. records are decoded (:func:`fraudcep.payments.payment.decode_payment`); a record that is not a
   valid payment, or not a readable record at all, is dead-lettered (below) and counts as
   done: retrying cannot fix it;
2. the payments are grouped by key, and the keys are run many to an engine (up to
   ``FRAUDCEP_WORKERS`` engines at a time, each in a thread of its own): each key's records
   are imported into the engine (:meth:`~fraudcep.Engine.import_key`), it takes the key's
   held events and the records whose offsets the key has not applied yet (so a batch
   delivered again changes nothing), the engine is moved to the partition's watermark (3.),
   and each key's state is exported again. A key's alerts are written to the alert table
   with :meth:`~fraudcep_aws.dynamodb.AlertTable.put_if_absent` *before* its state is saved
   with a save conditional on the version loaded. If another invocation saved the key in
   between, the key is reloaded and redone alone (up to ``max_conflict_retries`` times);
   alert ids are deterministic, so redoing never doubles an alert;
3. event time: a partition's watermark is the highest event time seen on it (kept in the
   state table) minus ``FRAUDCEP_MAX_OUT_OF_ORDERNESS`` minus 1 ms, as in the Kafka
   runner. A record at or below its key's own clock (the watermark the key was last moved
   to, raised by the key's records as they come, as an engine's would be) is late. The
   engines never move their event time but to the partition's watermark, once every key has
   taken its records; events above it wait, kept in the key's item (held events), and are
   taken again first when the key is next run. Keys *not* in the batch that wait for event
   time (a held event, a window to close, an absence to confirm) are found through the state
   table's ``timers`` index and moved too. So a key's alerts do not wait for its next
   payment, only for later payments of its partition. The limitation left: a partition
   without new records does not move, so what its keys wait for comes out with the
   partition's next batch.

Rules: every rule's key must be a function of the key field (``card_id`` is, when each card
belongs to one user; keys whose states would share an engine key anyway are run in different
engines), and a key's records must come from one partition, in offset order, as Kafka
delivers them when producers key payments by user. Two invocations racing on the same
records (a retry of a timed-out invocation) are safe; a later batch of a partition must not
overtake an earlier one that failed, which Lambda ensures by retrying a partition from its
lowest failed offset before it moves on. A new rule file takes effect on each key when the
key is next loaded: its records are imported into an engine with the rules they were written
with (kept in the state table by digest), which is then brought in line with the new file as
the Kafka runner does it (:func:`fraudcep.runtime.reconcile`). A change the engine refuses
-- the file holds a rule at an older version than the one the key's records were written
with -- leaves the key on the rules it has, as it leaves a runner's engine: the key runs,
and is saved, with the rule file its records name, until a file with versions at least as
new comes; the refusal is logged (once per rule file in a container) and counted
(:attr:`Detector.refused_rule_changes`). Keys without a stored state start with the
current file. Items written by earlier releases (a whole-engine snapshot per key,
format 1 or 2) are read and rewritten as key records by the key's next save; they are not
authenticated, so with a state key they are refused (see "Poison records").

Named lists: ``FRAUDCEP_LISTS`` names the lists the rules read (``card_id in
lists.blocked_cards``): a list file or directory in the package or a layer
(:meth:`fraudcep.rules.Lists.from_path`), or ``s3://BUCKET/PREFIX``, one list per object
(:mod:`fraudcep_aws.s3_lists`). The rules (the current file, and the files keys' records were
written with) are compiled against them, so a rule naming a list they lack is refused when
the container starts (:class:`~fraudcep.rules.RuleSpecError`), as lists that cannot be read
are. S3 lists change without a redeploy: at the start of a batch, at most every
``FRAUDCEP_LISTS_REFRESH_S`` (60) seconds, the prefix is listed and the objects whose ETag
changed are read; a list whose entries changed gets the next version, and the batch's
payments are judged against it. An object that cannot be taken leaves its list as it was
(logged, see :mod:`fraudcep_aws.s3_lists`). Alerts record the versions of the lists their
rule read (the ``lists`` attribute of the alert item). List contents are in no stored
state: a key's partial matches go on under the new entries.

Shadow rules: a rule version with ``mode: shadow`` runs like any other; its alerts are
written to the alert table with ``mode`` ``"shadow"`` in their item, which the notifier
(:mod:`fraudcep_aws.lambda_notifier`) never sends. Promoting one is a rule change like any
other: a rule file with the rule's next version in mode live. Each batch's alert counts per
rule and mode are in the ``batch done`` log line and in CloudWatch embedded-metric lines
(:meth:`BatchReport.metric_lines`).

State key: with ``FRAUDCEP_STATE_KEY`` (a secret of at least 16 characters), the key records
and the item's state carry a MAC (keyed BLAKE2b) over the key, its rules digest, its offsets
and the state: an item written without the key, with another key, or changed by anyone who
does not hold it is refused as a stored state that cannot be read.

Tables: :func:`~fraudcep_aws.dynamodb.create_alerts_table`,
:func:`~fraudcep_aws.key_state.create_state_table` and :func:`create_dead_letter_table`
create them as needed.

Failures. ``FRAUDCEP_ON_FAILURE=report`` (default): when a key fails (DynamoDB errors, too
many conflicts, a poison record below its failure limit: see below) its records are listed
in the partial
batch response (:mod:`fraudcep_aws.msk_event`), which Lambda honours only with
``ReportBatchItemFailures`` turned on in the event source mapping (provisioned mode), and
otherwise takes as success, so *turn it on or use* ``raise``. The detector relies on Lambda
resuming a partition from its lowest failed offset (so a failed key's records come back in
order, before anything later); where that cannot be relied on, use ``raise``: the handler
then raises when anything failed and Lambda retries the whole batch (the keys that succeeded
skip their applied offsets). Either way failed keys are logged. An event that is not a Kafka
batch at all raises :class:`~fraudcep_aws.msk_event.KafkaEventError`, and so does any
error before the keys are processed (the state table cannot be read): Lambda retries it.

Poison records. A failure that is not the tables' (DynamoDB, the network: those are
retried as they are) but comes from the data -- the stored state cannot be read, processing
a payment raises, an alert id or alert item cannot be made, the key's state cannot be
exported or does not fit in an item -- would come back on every redelivery, and Lambda
resumes a partition from its lowest failed offset: the key's detection, and its partition,
would stop for good. So the detector finds the cause. A key of an engine in which anything
failed is run again alone; if it fails alone, the detector tries its stored state alone
(read, moved to the watermark, exported, read again and moved again), then the key with its
first new record, its first two, and so on, each try followed by those steps; the record
that makes the first failing try fail is the culprit (when none fails alone, the first
record takes the blame, which still guarantees progress). The failure is counted in the
state table under the culprit (``failure#<topic>-<partition>/<offset>`` or
``failure#key/<key>``, with the stage -- ``restore``, ``process``, ``watermark``,
``snapshot`` (the export), ``state_size``, ``alerts`` -- and exception type as its
signature, conditional updates so that concurrent invocations count every failure once).
Below ``FRAUDCEP_MAX_RECORD_FAILURES`` (3) failures in a row with one signature, the key
fails as before (its records are reported, Lambda retries them). At the N-th, a culprit
record is dead-lettered with reason ``processing_failed`` and a detail naming the stage, the
exception and the count, and counts as applied: the key goes on with its other records in
the same invocation. A stored state that fails N times is given up: the key starts afresh
without its partial matches (an error log says so) and goes on. The same holds for a key
moved by its partition's event time. Data is checked before anything is written, so a
failing attempt writes no alert.

Dead letters: one item per record in ``FRAUDCEP_DEAD_LETTER_TABLE``, written only if absent:
id ``topic/partition/offset``, reason, detail, the raw key and value, TTL 14 days. Reasons:
those of :data:`fraudcep.payments.payment.REASONS`; ``bad_record`` and ``bad_base64`` (see
:mod:`fraudcep_aws.msk_event`); ``bad_event`` (a payment the rules cannot read, e.g. without
a rule's key field); ``late`` (event time at or below its key's watermark);
``processing_failed`` (a poison record, above). Each is also a
warning log line; without the table, the log line carries the record's value in base64. A
dead letter that cannot be written makes its record fail instead.

Configuration (environment; :data:`DETECTOR_OPTIONS`): ``FRAUDCEP_ALERTS_TABLE``,
``FRAUDCEP_STATE_TABLE`` (both required), ``FRAUDCEP_DEAD_LETTER_TABLE``, ``FRAUDCEP_RULES``
(a rule file; default the packaged default rules), ``FRAUDCEP_LISTS`` (none),
``FRAUDCEP_LISTS_REFRESH_S`` (60), ``FRAUDCEP_KEY_FIELD`` (``user_id``),
``FRAUDCEP_ALERT_TTL_S`` (86400), ``FRAUDCEP_ON_FAILURE`` (``report``),
``FRAUDCEP_WORKERS`` (8), and the options every runtime shares, with the Kafka runner's
names and syntax (:data:`fraudcep.runtime.ENGINE_OPTIONS`): ``FRAUDCEP_TIMESTAMP_FIELD``
(``ts``), ``FRAUDCEP_EVENT_ID_FIELD`` (``payment_id``, so both give a match the same alert
id; ``none`` or ``off``: ids from the whole payment), ``FRAUDCEP_MAX_OUT_OF_ORDERNESS`` (0;
a duration: ``250ms``, ``10s``, ``5m``, a bare number is milliseconds; the older name
``FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS`` is still read, with the same syntax),
``FRAUDCEP_MAX_PARTIAL_MATCHES_PER_KEY`` (10000), ``FRAUDCEP_MAX_BUFFERED_EVENTS``
(1000000), ``FRAUDCEP_MAX_RECORD_BYTES`` (65536), ``FRAUDCEP_MAX_RECORD_FAILURES`` (3, at
least 1), ``FRAUDCEP_STATE_KEY`` (none; secret, never logged). A variable set to blank counts
as not set. Rules are compiled once per container.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, Literal

import attrs
from botocore.exceptions import BotoCoreError, ClientError

from fraudcep.alert import Alert, ConditionFailure, Overflow
from fraudcep.alert.identity import canonical_key
from fraudcep.engine.codec import read_blob
from fraudcep.engine.engine import Engine
from fraudcep.engine.state import key_group
from fraudcep.errors import ConfigurationError, EventError, FraudcepError, SnapshotError
from fraudcep.payments.default_rules import DEFAULT_RULES_FILE
from fraudcep.payments.payment import DEFAULT_MAX_BYTES, InvalidRecord, Reason, decode_payment
from fraudcep.rules import Lists, RuleDefinition, apply_definitions, load_rules
from fraudcep.runtime import (
    ENGINE_OPTIONS,
    EngineOptions,
    Option,
    SideOutputs,
    options_from_env,
    reconcile,
)
from fraudcep.runtime.options import (
    ENV_PREFIX,
    choice,
    integer,
    non_negative,
    optional_text,
    positive,
)
from fraudcep.timeutil import MIN_TIMESTAMP
from fraudcep_aws.clients import client as make_client
from fraudcep_aws.dynamodb import (
    ALERTS_TTL_S,
    AlertTable,
    TableError,
    alert_item,
    ensure_table,
    error_code,
    to_item,
    wall_clock_ms,
)
from fraudcep_aws.key_state import (
    HeldEvent,
    KeyState,
    KeyStateStore,
    StateConflict,
    StateError,
    StoredKey,
    StoredRecord,
    decode_key_state,
    encode_key_state,
    key_text,
    record_key,
)
from fraudcep_aws.lambda_logs import emit_metrics, metric_line
from fraudcep_aws.msk_event import BadRecord, KafkaRecord, batch_response, parse_kafka_event
from fraudcep_aws.s3_lists import S3Lists, open_s3_lists

__all__ = [
    "ALERT_SOURCE",
    "DEAD_LETTER_TTL_S",
    "DETECTOR_OPTIONS",
    "BatchFailed",
    "BatchReport",
    "DeadLetter",
    "DeadLetterTable",
    "Detector",
    "DetectorConfig",
    "DetectorError",
    "RuleSet",
    "create_dead_letter_table",
    "handler",
    "load_lists",
    "load_rule_set",
]

log = logging.getLogger(__name__)

DEAD_LETTER_TTL_S: Final = 14 * 86_400
ALERT_SOURCE: Final = "lambda"
_MAX_STORED_BYTES: Final = 256 * 1024  # of a dead letter's value or raw record
_LOGGED_BYTES: Final = 64 * 1024


class DetectorError(FraudcepError):
    """The detector could not process (part of) a batch."""


class BatchFailed(DetectorError):
    """Some records failed and ``on_failure`` is ``raise``: Lambda retries the batch."""


# -- configuration ----------------------------------------------------------------------------


def _name(value: Any) -> str:
    return str(value).strip()


DETECTOR_OPTIONS: Final[tuple[Option, ...]] = (
    Option("alerts_table", _name, None, "the alerts table (required)", "TABLE"),
    Option(
        "state_table",
        _name,
        None,
        "per-key state: each key's engine key records and the events it holds for event "
        "time (required)",
        "TABLE",
    ),
    Option(
        "dead_letter_table",
        optional_text,
        None,
        "invalid records, one item each; without it they are logged",
        "TABLE",
    ),
    Option(
        "rules",
        optional_text,
        None,
        "a rule file (YAML or JSON) inside the package or a layer; default: the packaged "
        "default rules",
        "FILE",
    ),
    Option(
        "lists",
        optional_text,
        None,
        "the named lists the rules read: a list file or directory inside the package or a "
        "layer, or s3://BUCKET/PREFIX (one list per object, followed while the function is "
        "warm); default: none",
        "PATH",
    ),
    Option(
        "lists_refresh_s",
        non_negative(integer),
        60,
        "with s3:// lists, how often at most a warm function looks for changed list objects "
        "(0: at every invocation)",
        "SECONDS",
    ),
    Option("key_field", _name, "user_id", "the field payments are keyed by"),
    Option(
        "alert_ttl_s",
        positive(integer),
        ALERTS_TTL_S,
        "the alerts' TTL, seconds after they are written",
        "SECONDS",
    ),
    Option(
        "on_failure",
        choice("report", "raise"),
        "report",
        "report: failed keys' records go in the partial batch response (turn on "
        "ReportBatchItemFailures); raise: the handler raises and Lambda retries the whole batch",
    ),
    Option(
        "workers",
        positive(integer),
        8,
        "engines run at once (threads), each taking its share of the batch's keys",
        "N",
    ),
    *ENGINE_OPTIONS,
)
"""The detector's options: its own, then the ones every runtime shares
(:data:`fraudcep.runtime.ENGINE_OPTIONS`: the same environment names and syntax as the Kafka
runner's). A variable set to blank counts as not set."""


@attrs.frozen(kw_only=True)
class DetectorConfig:
    """What the detector does; :meth:`from_env` reads it from the environment (see
    :data:`DETECTOR_OPTIONS`). The fields named as shared options make its
    :class:`~fraudcep.runtime.EngineOptions` (:attr:`engine`)."""

    alerts_table: str
    state_table: str
    dead_letter_table: str | None = None
    rules: str | None = None
    """A rule file; None: the packaged default rules."""
    lists: str | None = None
    """Named lists: a list file or directory (:meth:`fraudcep.rules.Lists.from_path`), or
    ``s3://BUCKET/PREFIX`` (:mod:`fraudcep_aws.s3_lists`); None: no lists."""
    lists_refresh_s: int = attrs.field(default=60, validator=attrs.validators.ge(0))
    """With ``s3://`` lists: a warm container looks for changed list objects at most this
    often (seconds)."""
    key_field: str = attrs.field(default="user_id", validator=attrs.validators.min_len(1))
    timestamp_field: str = attrs.field(default="ts", validator=attrs.validators.min_len(1))
    event_id_field: str | None = "payment_id"
    """The field that identifies a payment in alert ids (as the Kafka runner's
    ``--event-id-field``), so both runtimes give a match the same id; None: the whole event."""
    max_out_of_orderness: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Milliseconds: the watermark lag."""
    max_partial_matches_per_key: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    max_buffered_events: int = attrs.field(default=1_000_000, validator=attrs.validators.gt(0))
    """An engine takes at most this many events (and at most 100,000), so that it never
    forces its watermark on: the detector moves it."""
    alert_ttl_s: int = attrs.field(default=ALERTS_TTL_S, validator=attrs.validators.gt(0))
    on_failure: Literal["report", "raise"] = attrs.field(
        default="report", validator=attrs.validators.in_(("report", "raise"))
    )
    workers: int = attrs.field(default=8, validator=attrs.validators.gt(0))
    max_record_bytes: int = attrs.field(default=DEFAULT_MAX_BYTES, validator=attrs.validators.gt(0))
    max_conflict_retries: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    max_record_failures: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    """A record whose processing fails this many times in a row the same way is
    dead-lettered (reason ``processing_failed``); a key's stored state that does is given
    up. See "Poison records" in the module docstring."""
    state_key: str | None = attrs.field(default=None, repr=False)
    """A secret (at least 16 characters) that authenticates the keys' stored states; state
    written without it, or with another, is refused. Never logged."""

    @state_key.validator
    def _check_state_key(self, _attribute: Any, value: str | None) -> None:
        if value is not None and len(value) < 16:
            raise ValueError("the state key must be at least 16 characters")

    @property
    def engine(self) -> EngineOptions:
        """The options every runtime shares, as the runtime kit types them."""
        return EngineOptions.of(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DetectorConfig:
        """The configuration in ``env`` (default ``os.environ``); see the module docstring."""
        env = os.environ if env is None else env
        given = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX) and v.strip()}
        values = options_from_env(DETECTOR_OPTIONS, given)
        for option in DETECTOR_OPTIONS[:2]:
            if values.get(option.name) is None:
                raise ConfigurationError(f"{option.env} is not set (the name of a DynamoDB table)")
        try:
            return cls(**values)
        except ValueError as exc:  # attrs validators
            raise ConfigurationError(f"detector configuration: {exc}") from None


@attrs.frozen
class RuleSet:
    """A rule file as loaded: its text, the digest the state table knows it by, its rules."""

    text: str
    digest: str
    definitions: tuple[RuleDefinition, ...]

    @classmethod
    def from_text(cls, text: str, *, source: str, lists: Lists | None = None) -> RuleSet:
        """The rules of ``text``, their expressions compiled against ``lists`` (a rule
        naming a list it lacks is refused: :class:`~fraudcep.rules.RuleSpecError`)."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        return cls(text, digest, tuple(load_rules(text, source=source, lists=lists)))


@functools.cache
def load_rule_set(path: str | None = None, lists: Lists | None = None) -> RuleSet:
    """The rule file at ``path`` (None: the default rules), compiled once per process and
    registry of ``lists``."""
    file = DEFAULT_RULES_FILE if path is None else path
    with open(file, encoding="utf-8") as f:
        return RuleSet.from_text(f.read(), source=str(file), lists=lists)


def load_lists(config: DetectorConfig, *, s3: Any = None) -> tuple[Lists | None, S3Lists | None]:
    """The named lists ``config`` names, and for ``s3://`` lists what follows them (``s3``:
    the S3 client to use; default one at the URL's ``endpoint_url`` and ``region``, else
    boto3's); ``(None, None)`` without lists."""
    where = config.lists
    if where is None:
        return None, None
    if where.startswith("s3://"):
        source = open_s3_lists(where, client=s3, refresh_s=config.lists_refresh_s)
        return source.lists, source
    return Lists.from_path(where), None


# -- dead letters -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A record the detector could not use, and why."""

    reason: str
    detail: str
    partition_key: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    index: int | None = None
    timestamp: int | None = None
    key: bytes | None = None
    value: bytes | None = None
    raw: str | None = None
    """The JSON of a record that could not be read at all."""

    @property
    def id(self) -> str:
        if self.topic is not None and self.partition is not None and self.offset is not None:
            return f"{self.topic}/{self.partition}/{self.offset}"
        digest = hashlib.sha256((self.raw or "").encode()).hexdigest()[:16]
        return f"{self.partition_key}#{self.index}:{digest}"

    @classmethod
    def of_record(cls, record: KafkaRecord, reason: str, detail: str) -> DeadLetter:
        return cls(
            reason=reason,
            detail=detail,
            partition_key=record.partition_key,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
        )

    @classmethod
    def of_bad(cls, bad: BadRecord) -> DeadLetter:
        return cls(
            reason=bad.reason,
            detail=bad.detail,
            partition_key=bad.partition_key,
            topic=bad.topic,
            partition=bad.partition,
            offset=bad.offset,
            index=bad.index,
            raw=json.dumps(bad.raw, separators=(",", ":"), default=repr),
        )

    def log_fields(self, *, with_value: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "id": self.id,
            "reason": self.reason,
            "detail": self.detail,
            "partition_key": self.partition_key,
            "offset": self.offset,
        }
        if with_value:
            if self.value is not None:
                fields["value_b64"] = base64.b64encode(self.value[:_LOGGED_BYTES]).decode()
                fields["value_truncated"] = len(self.value) > _LOGGED_BYTES
            if self.raw is not None:
                fields["raw"] = self.raw[:_LOGGED_BYTES]
        return fields


def create_dead_letter_table(dynamodb_client: Any, name: str) -> None:
    """Create (or accept) a dead-letter table: hash key ``id``, on-demand, TTL on
    ``expires_at``."""
    ensure_table(dynamodb_client, name, hash_key="id", ttl_attribute="expires_at")


@attrs.define
class DeadLetterTable:
    """Dead letters, one item per record, written once."""

    name: str
    client: Any
    ttl_s: int = DEAD_LETTER_TTL_S
    clock: Callable[[], int] = wall_clock_ms

    def put(self, letter: DeadLetter) -> bool:
        """Store ``letter`` unless its record is there already; True if it was new."""
        now = self.clock()
        value = letter.value
        item = to_item(
            {
                "id": letter.id,
                "reason": letter.reason,
                "detail": letter.detail,
                "partition_key": letter.partition_key,
                "recorded_at": now,
                "expires_at": now // 1000 + self.ttl_s,
                "topic": letter.topic,
                "partition": letter.partition,
                "offset": letter.offset,
                "index": letter.index,
                "timestamp": letter.timestamp,
                "key": letter.key[:_MAX_STORED_BYTES] if letter.key is not None else None,
                "value": value[:_MAX_STORED_BYTES] if value is not None else None,
                "value_size": len(value) if value is not None else None,
                "raw": letter.raw[:_MAX_STORED_BYTES] if letter.raw is not None else None,
            }
        )
        try:
            self.client.put_item(
                TableName=self.name, Item=item, ConditionExpression="attribute_not_exists(id)"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True


# -- the detector -----------------------------------------------------------------------------


@attrs.frozen
class BatchReport:
    """What one batch came to."""

    records: int
    """Records in the event (readable or not)."""
    dead_lettered: int
    keys: int
    applied: int
    """Records applied to key states now (not before)."""
    alerts: int
    """Alerts the engines emitted (again, when a key was redone)."""
    new_alerts: int
    """Alerts written to the table now (not there before)."""
    conflicts: int
    timer_keys: int
    """Keys outside the batch whose event time was moved."""
    failed_keys: Mapping[str, str]
    failures: tuple[tuple[str, int], ...]
    """Failed records as ``(topic-partition, offset)``."""
    state_resets: int = 0
    """Keys whose stored state kept failing and was given up (see "Poison records")."""
    rule_alerts: Mapping[tuple[str, str], int] = attrs.Factory(dict)
    """:attr:`alerts` per rule id and mode (``live``, ``shadow``)."""
    rule_new_alerts: Mapping[tuple[str, str], int] = attrs.Factory(dict)
    """:attr:`new_alerts` per rule id and mode."""

    def response(self) -> dict[str, Any]:
        """The partial batch response (see :mod:`fraudcep_aws.msk_event`)."""
        return batch_response(self.failures)

    def by_rule(self) -> list[dict[str, Any]]:
        """The alert counts per rule and mode, sorted: ``rule_id``, ``mode``, ``alerts``,
        ``new_alerts``."""
        pairs = sorted(set(self.rule_alerts) | set(self.rule_new_alerts))
        return [
            {
                "rule_id": rule_id,
                "mode": mode,
                "alerts": self.rule_alerts.get((rule_id, mode), 0),
                "new_alerts": self.rule_new_alerts.get((rule_id, mode), 0),
            }
            for rule_id, mode in pairs
        ]

    def metric_lines(self, *, timestamp_ms: int) -> list[str]:
        """The batch's alert metrics as EMF lines (:func:`fraudcep_aws.lambda_logs.metric_line`):
        ``Alerts`` and ``NewAlerts`` with the dimensions ``rule_id`` and ``mode``, one line
        per rule and mode that had alerts."""
        return [
            metric_line(
                {"rule_id": row["rule_id"], "mode": row["mode"]},
                {"Alerts": row["alerts"], "NewAlerts": row["new_alerts"]},
                timestamp_ms=timestamp_ms,
            )
            for row in self.by_rule()
        ]


@attrs.define(eq=False)
class _Item:
    record: KafkaRecord
    payment: dict[str, Any]


_Job = tuple[str, list[_Item], KeyState]
"""A key, its records in the batch and its state as loaded."""


_RuleMode = tuple[str, str]
"""A rule id and an alert mode (``live``, ``shadow``): what alerts are counted by."""


@attrs.frozen
class _KeyResult:
    applied: int = 0
    alerts: int = 0
    new_alerts: int = 0
    conflicts: int = 0
    dead_lettered: int = 0
    state_resets: int = 0
    rule_alerts: Counter[_RuleMode] = attrs.Factory(Counter)
    rule_new_alerts: Counter[_RuleMode] = attrs.Factory(Counter)


@attrs.define
class _Tally:
    """What one key's work came to, over its attempts (an alert written by an attempt that
    lost a conflict was written all the same)."""

    applied: int = 0
    emitted: int = 0
    written: int = 0
    conflicts: int = 0
    dead: int = 0
    resets: int = 0
    rule_emitted: Counter[_RuleMode] = attrs.Factory(Counter)
    rule_written: Counter[_RuleMode] = attrs.Factory(Counter)

    def result(self) -> _KeyResult:
        return _KeyResult(
            self.applied,
            self.emitted,
            self.written,
            self.conflicts,
            self.dead,
            self.resets,
            Counter(self.rule_emitted),
            Counter(self.rule_written),
        )


@attrs.define
class _NewState:
    """A key's state to be saved (see :meth:`KeyStateStore.save`)."""

    state: bytes
    offsets: Mapping[str, int]
    rules: str
    due: tuple[str, int] | None
    now_ms: int
    item: dict[str, Any] | None = None
    """The item, once :meth:`Detector._check_fits` has made it."""


@attrs.define(eq=False)
class _Held:
    """An event the key holds for event time: as stored, and decoded."""

    stored: HeldEvent
    payment: dict[str, Any]


@attrs.define(eq=False)
class _Start:
    """A key's state as read from its item, ready for an engine with the current rules:
    its key records ``(group, key, record)``, held events, clock, processing order and next
    due time (see :class:`~fraudcep_aws.key_state.StoredKey`)."""

    records: list[tuple[str, Hashable, bytes]] = attrs.Factory(list)
    held: list[_Held] = attrs.Factory(list)
    watermark: int | None = None
    order: int = 0
    due: int | None = None
    migrated: bool = False
    """Read from an item of an earlier release (or another rule file): it must be saved."""
    rules: RuleSet | None = None
    """The rules its records stay on when the change to the current rules was refused (see
    "Rules" in the module docstring); None: the current rules."""


@attrs.define(eq=False)
class _Work:
    """One key's work in an engine shared with other keys."""

    key: str
    state: KeyState
    """As loaded (the save is conditional on its version)."""
    start: _Start
    new: list[_Item]
    """Records to apply, in offset order."""
    skipped: list[_Item]
    """Records dead-lettered as poison: marked applied, never processed."""
    partition: str
    """The partition whose ``timers`` index lists the key while it waits."""
    pairs: dict[tuple[str, Hashable], None]
    """Every ``(group, key)`` of the engine the key's state may hold (in a stable order)."""
    rules: RuleSet
    """The rules the key runs on (the current ones unless a change was refused)."""


@attrs.define(eq=False)
class _Outcome:
    """What one key's work came to in the engine, before anything is written."""

    alerts: list[Alert]
    refused: list[tuple[KafkaRecord | None, str]]
    """Records (or held events) the engine could not read, and why."""
    late: list[tuple[KafkaRecord, str]]
    errors: list[ConditionFailure]
    overflows: list[Overflow]
    save: _NewState


class _StageFailure(Exception):
    """Work on a key's data failed at ``stage`` with ``error`` (not a table's failure)."""

    def __init__(self, stage: str, error: Exception) -> None:
        super().__init__(stage, error)
        self.stage = stage
        self.error = error


_RESET: Final = object()
"""The verdict on a key whose stored state keeps failing: start it afresh."""
POISON_REASON: Final = "processing_failed"
"""The dead-letter reason of a record that failed ``max_record_failures`` times."""
# Failures of the tables and the network: retrying can fix them, they count for no record.
_TRANSIENT: Final = (
    ClientError,
    BotoCoreError,
    OSError,
    StateError,
    StateConflict,
    TableError,
    DetectorError,
)
_MAX_ENGINE_EVENTS: Final = 100_000
"""Events (new and held) one engine takes at most (and at most ``max_buffered_events``, so
that the engine never forces its event time on): keys beyond it go to another engine."""
_MIN_TS: Final = MIN_TIMESTAMP


@attrs.define(eq=False)
class Detector:
    """Runs the rules on Kafka batches (see the module docstring); thread-safe."""

    config: DetectorConfig
    alerts: AlertTable
    state: KeyStateStore
    rules: RuleSet
    dead_letters: DeadLetterTable | None = None
    clock: Callable[[], int] = wall_clock_ms
    lists: Lists | None = None
    """The named lists the rules were compiled against (None: none)."""
    list_source: S3Lists | None = None
    """What keeps :attr:`lists` in step with S3 (checked at the start of each batch)."""
    conflicts: int = attrs.field(default=0, init=False)
    """State saves lost to another writer so far (each one redone)."""
    refused_rule_changes: int = attrs.field(default=0, init=False)
    """Keys loaded so far whose records stay on the rules they were written with, because the
    engine refused the change to the current rules (see "Rules" in the module docstring)."""
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _pool: ThreadPoolExecutor | None = attrs.field(default=None, init=False, repr=False)
    _rules_stored: bool = attrs.field(default=False, init=False, repr=False)
    _old_rules: dict[str, RuleSet] = attrs.field(factory=dict, init=False, repr=False)
    _refused_logged: set[str] = attrs.field(factory=set, init=False, repr=False)
    _keyers_of: dict[str, list[tuple[str, Callable[[Any], Hashable]]]] = attrs.field(
        factory=dict, init=False, repr=False
    )

    @classmethod
    def from_config(
        cls, config: DetectorConfig, *, dynamodb: Any = None, s3: Any = None
    ) -> Detector:
        """A detector on the tables and lists ``config`` names (``dynamodb``, ``s3``: clients
        to use). A rule naming a list the lists lack is refused
        (:class:`~fraudcep.rules.RuleSpecError`), and so are lists that cannot be read
        (:class:`~fraudcep.rules.ListError`)."""
        client = dynamodb if dynamodb is not None else make_client("dynamodb")
        dead = config.dead_letter_table
        lists, source = load_lists(config, s3=s3)
        return cls(
            config=config,
            alerts=AlertTable(config.alerts_table, client, ttl_s=config.alert_ttl_s),
            state=KeyStateStore(config.state_table, client),
            rules=load_rule_set(config.rules, lists),
            dead_letters=DeadLetterTable(dead, client) if dead else None,
            lists=lists,
            list_source=source,
        )

    # -- one batch ------------------------------------------------------------------------

    def process(self, event: Any) -> BatchReport:
        """Run one invocation's event; see :class:`BatchReport`."""
        batch = parse_kafka_event(event)
        if self.list_source is not None:
            self.list_source.refresh()
        self._store_rules()
        failures: list[tuple[str, int]] = []
        dead = 0
        for bad in batch.bad:
            if self._dead_letter(DeadLetter.of_bad(bad)):
                dead += 1
            elif bad.offset is not None:
                failures.append((bad.partition_key, bad.offset))
            else:
                raise DetectorError(
                    f"record #{bad.index} of {bad.partition_key!r} has no offset and could not "
                    "be dead-lettered"
                )
        work: dict[str, list[_Item]] = {}
        batch_max: dict[str, int] = {}
        seen: set[tuple[str, int]] = set()
        for record in batch.records:
            where = (record.partition_key, record.offset)
            if where in seen:
                continue  # listed twice in one event: the same record
            seen.add(where)
            try:
                payment, key, ts = self._decode(record)
            except InvalidRecord as exc:
                if self._dead_letter(DeadLetter.of_record(record, exc.reason, exc.detail)):
                    dead += 1
                else:
                    failures.append(where)
                continue
            work.setdefault(canonical_key(key), []).append(_Item(record, payment))
            batch_max[record.partition_key] = max(batch_max.get(record.partition_key, ts), ts)

        lag = self.config.max_out_of_orderness + 1
        stored = self.state.partition_max_ts(batch_max)
        watermarks = {tp: max(ts, stored.get(tp, ts)) - lag for tp, ts in batch_max.items()}
        states = self.state.load_many(work)
        targets = {
            key: min(watermarks[i.record.partition_key] for i in items)
            for key, items in work.items()
        }
        pool = self._executor()
        futures = [
            (chunk, pool.submit(self._run_chunk, chunk, watermark))
            for watermark, chunk in self._chunks(
                [(key, work[key], states[key]) for key in work], targets
            )
        ]
        totals = _KeyResult()
        failed_keys: dict[str, str] = {}
        failed_partitions: set[str] = set()
        for chunk, future in futures:
            try:
                outcomes = future.result()
            except Exception as exc:  # the chunk as a whole (not one of its keys) failed
                outcomes = [exc] * len(chunk)
            for (key, items, _), outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, _KeyResult):
                    totals = _add(totals, outcome)
                    continue
                failed_keys[key] = f"{type(outcome).__name__}: {outcome}"
                log.error("key %s failed: %s", key, failed_keys[key], exc_info=outcome)
                for item in items:
                    failures.append((item.record.partition_key, item.record.offset))
                    failed_partitions.add(item.record.partition_key)

        timer_keys, timer_totals = self._advance_due(watermarks, set(work))
        totals = _add(totals, timer_totals)
        for tp, ts in batch_max.items():
            if tp not in failed_partitions:
                try:
                    self.state.raise_partition_max_ts(tp, ts)
                except Exception:  # only delays what the next batch moves
                    log.warning("could not store the event time of %s", tp, exc_info=True)
        return BatchReport(
            records=len(batch.records) + len(batch.bad),
            dead_lettered=dead + totals.dead_lettered,
            keys=len(work),
            applied=totals.applied,
            alerts=totals.alerts,
            new_alerts=totals.new_alerts,
            conflicts=totals.conflicts,
            timer_keys=timer_keys,
            failed_keys=failed_keys,
            failures=tuple(sorted(set(failures))),
            state_resets=totals.state_resets,
            rule_alerts=dict(totals.rule_alerts),
            rule_new_alerts=dict(totals.rule_new_alerts),
        )

    def _decode(self, record: KafkaRecord) -> tuple[dict[str, Any], Any, int]:
        payment = decode_payment(record.value, max_bytes=self.config.max_record_bytes)
        c = self.config
        key = payment.get(c.key_field)
        if key is None:
            raise InvalidRecord("missing_field", f"no key field {c.key_field!r}", c.key_field)
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise InvalidRecord(
                "wrong_type",
                f"key field {c.key_field!r}: expected a string or an integer, got {key!r:.80}",
                c.key_field,
            )
        ts = payment.get(c.timestamp_field)
        if not isinstance(ts, int) or isinstance(ts, bool):
            reason: Reason = "missing_field" if ts is None else "wrong_type"
            raise InvalidRecord(
                reason,
                f"timestamp field {c.timestamp_field!r}: expected integer epoch milliseconds, "
                f"got {ts!r:.80}",
                c.timestamp_field,
            )
        return payment, key, ts

    def _chunks(self, jobs: list[_Job], targets: Mapping[str, int]) -> list[tuple[int, list[_Job]]]:
        """The keys split into the engines that run them: keys moved to the same watermark
        share engines, up to ``workers`` of them, so that their tables are written to
        ``workers`` at a time."""
        by_target: dict[int, list[_Job]] = {}
        for job in jobs:
            by_target.setdefault(targets[job[0]], []).append(job)
        chunks: list[tuple[int, list[_Job]]] = []
        for watermark, same in by_target.items():
            size = -(-len(same) // self.config.workers)
            chunks += [(watermark, same[i : i + size]) for i in range(0, len(same), size)]
        return chunks

    # -- keys, many to an engine ----------------------------------------------------------

    def _run_chunk(self, jobs: list[_Job], watermark: int) -> list[_KeyResult | Exception]:
        """Run keys in shared engines (:meth:`_shared`): each key's records not applied yet
        are applied, all are moved to ``watermark`` at once, each key's state is exported and
        saved. A key run alone (:meth:`_run_key`) after losing a conflict is reloaded first,
        one conflict spent."""

        def prepare(job: _Job) -> _Work | _KeyResult:
            key, items, state = job
            new = [i for i in items if not state.applied(i.record.partition_key, i.record.offset)]
            if not new:
                return _KeyResult()
            return self._work(key, state, self._start(state), new, [])

        def alone(job: _Job, spent: _Tally | None) -> _KeyResult:
            key, items, state = job
            if spent is not None:
                state = self.state.load(key)
            return self._run_key(key, items, state, watermark, spent, conflicts=spent is not None)

        return self._shared(jobs, watermark, prepare, alone)

    def _shared(
        self,
        jobs: list[_Job],
        watermark: int,
        prepare: Callable[[_Job], _Work | _KeyResult],
        alone: Callable[[_Job, _Tally | None], _KeyResult],
    ) -> list[_KeyResult | Exception]:
        """Run ``jobs`` many to an engine: ``prepare`` loads a key's work (or answers its
        result when there is nothing to do), the engines run it, and each key's outcome is
        written. A key whose stored state cannot be loaded, every key of an engine in which
        something failed, and a key whose save lost to another writer (with the tally spent
        so far) is run alone by ``alone``, where failures are traced and counted."""
        results: list[_KeyResult | Exception | None] = [None] * len(jobs)
        lone: list[tuple[int, _Tally | None]] = []
        ready: list[tuple[int, _Work]] = []
        for index, job in enumerate(jobs):
            try:
                prepared = prepare(job)
            except Exception:  # run alone: it is traced and counted there
                lone.append((index, None))
                continue
            if isinstance(prepared, _KeyResult):
                results[index] = prepared
            else:
                ready.append((index, prepared))
        for group in _engines(ready, self._engine_events):
            try:
                outcomes = self._compute([w for _, w in group], watermark)
            except Exception:
                lone += [(index, None) for index, _ in group]
                continue
            for (index, w), outcome in zip(group, outcomes, strict=True):
                tally = _Tally()
                try:
                    tally.dead += self._commit(w, outcome, tally)
                    tally.applied += len(w.new)
                    results[index] = tally.result()
                except StateConflict:
                    tally.conflicts += 1
                    self._count_conflict()
                    lone.append((index, tally))
                except Exception as exc:
                    results[index] = exc
        for index, spent in lone:
            try:
                results[index] = alone(jobs[index], spent)
            except Exception as exc:
                results[index] = exc
        return [r if r is not None else DetectorError("not run") for r in results]

    @property
    def _engine_events(self) -> int:
        """Events (new and held) one engine takes at most."""
        return min(_MAX_ENGINE_EVENTS, self.config.max_buffered_events)

    def _work(
        self,
        key: str,
        state: KeyState,
        start: _Start,
        new: list[_Item],
        skipped: list[_Item],
        partition: str | None = None,
    ) -> _Work:
        rules = start.rules or self.rules
        pairs: dict[tuple[str, Hashable], None] = {}
        for group, engine_key, _ in start.records:
            pairs[(group, engine_key)] = None
        keyers = self._keyers(rules)
        for payment in [*(h.payment for h in start.held), *(i.payment for i in new)]:
            for group, read in keyers:
                try:
                    engine_key = read(payment)
                    pairs[(group, engine_key)] = None
                except (EventError, TypeError):  # the engine refuses it: a dead letter
                    continue
        if partition is None:
            last = [*new, *skipped]
            partition = last[-1].record.partition_key if last else ""
        return _Work(key, state, start, new, skipped, partition, pairs, rules)

    def _compute(self, works: Sequence[_Work], watermark: int) -> list[_Outcome]:
        """Run ``works`` in one engine: import each key's records, feed its held events and
        its new records (deciding lateness against the key's own clock), move the engine to
        ``watermark``, export each key's state and check it fits. Nothing is written; any
        failure of the data is a :class:`_StageFailure` of the whole engine."""
        outputs = SideOutputs()
        rules = works[0].rules
        stage = "restore"
        try:
            if any(w.rules.digest != rules.digest for w in works):
                raise DetectorError("keys on different rules share an engine")
            engine = self._new_engine(outputs, rules.definitions)
            groups_of = {r: g for g, ids in engine.key_groups().items() for r in ids}
            owner: dict[tuple[str, Hashable], int] = {}
            for index, w in enumerate(works):
                for pair in w.pairs:
                    if owner.setdefault(pair, index) != index:
                        raise DetectorError(f"two keys of one engine share {pair!r:.100}")
            for w in works:
                for group, engine_key, record in w.start.records:
                    engine.import_key(group, engine_key, record)
            stage = "process"
            lag = self.config.max_out_of_orderness + 1
            ts_field = self.config.timestamp_field
            alerts: list[Alert] = []
            kept: list[list[HeldEvent]] = []
            clocks: list[int] = []
            refused: list[list[tuple[KafkaRecord | None, str]]] = []
            late: list[list[tuple[KafkaRecord, str]]] = []
            for w in works:
                mine: list[HeldEvent] = []
                no: list[tuple[KafkaRecord | None, str]] = []
                for h in w.start.held:
                    try:
                        alerts += engine.process(h.payment)
                    except EventError as exc:  # the rules changed since it was taken
                        no.append((_held_record(h.stored), str(exc)))
                        continue
                    mine.append(h.stored)
                clock = _MIN_TS if w.start.watermark is None else w.start.watermark
                too_late: list[tuple[KafkaRecord, str]] = []
                for i in w.new:
                    ts: int = i.payment[ts_field]
                    if ts <= clock:
                        too_late.append(
                            (i.record, f"event time {ts} <= watermark {clock} of key {w.key}")
                        )
                        continue
                    try:
                        alerts += engine.process(i.payment)
                    except EventError as exc:  # refused before it changed anything
                        no.append((i.record, str(exc)))
                        continue
                    clock = max(clock, ts - lag)
                    r = i.record
                    mine.append(HeldEvent(ts, r.value or b"", r.topic, r.partition, r.offset))
                kept.append(mine)
                clocks.append(max(clock, watermark))
                refused.append(no)
                late.append(too_late)
            stage = "watermark"
            alerts += engine.advance_watermark(watermark)
            mine_alerts: list[list[Alert]] = [[] for _ in works]
            for alert in alerts:
                mine_alerts[owner[(groups_of[alert.rule_id], alert.key)]].append(alert)
            stage = "snapshot"
            order = engine.processing_order
            deadlines = _deadlines(engine)
            digest = rules.digest
            outcomes = []
            for index, w in enumerate(works):
                records = []
                for group, engine_key in w.pairs:
                    exported = engine.export_key(group, engine_key)
                    if exported is not None:
                        records.append(StoredRecord(group, key_text(engine_key), exported))
                held = [h for h in kept[index] if h.ts > watermark]
                due = min(
                    [h.ts for h in held] + [d for p in w.pairs if (d := deadlines(p)) is not None],
                    default=None,
                )
                clock = clocks[index]
                stored = StoredKey(clock if clock > _MIN_TS else None, order, due, records, held)
                offsets = dict(w.state.offsets)
                for i in [*w.new, *w.skipped]:
                    tp = i.record.partition_key
                    offsets[tp] = max(offsets.get(tp, -1), i.record.offset)
                blob = encode_key_state(
                    stored, key=w.key, rules=digest, offsets=offsets, state_key=self._state_key
                )
                save = _NewState(
                    state=blob,
                    offsets=offsets,
                    rules=digest,
                    due=(w.partition, due) if due is not None else None,
                    now_ms=self.clock(),
                )
                stage = "state_size"
                self._check_fits(w.state, save)
                stage = "snapshot"
                outcomes.append(
                    _Outcome(mine_alerts[index], refused[index], late[index], [], [], save)
                )
            for failure in outputs.errors:
                index = owner.get((groups_of.get(failure.rule_id, ""), failure.key), 0)
                outcomes[index].errors.append(failure)
            for overflow in outputs.overflows:
                index = owner.get((groups_of.get(overflow.rule_id or "", ""), overflow.key), 0)
                outcomes[index].overflows.append(overflow)
            for event in outputs.late:  # cannot happen: the engine moves only at the end
                log.error(
                    "an engine found an event late (%d <= %d)", event.timestamp, event.watermark
                )
            stage = "alerts"
            for alert in alerts:
                alert_item(alert, now_ms=0)
        except _TRANSIENT:
            raise
        except Exception as exc:
            raise _StageFailure(stage, exc) from exc
        return outcomes

    def _commit(self, work: _Work, outcome: _Outcome, tally: _Tally) -> int:
        """Write what ``work`` came to: dead letters, alerts (if absent), then the state,
        conditional on the version loaded (:class:`StateConflict` if another writer saved
        the key since). Returns how many records were dead-lettered."""
        dead = self._side_outputs(work.key, outcome)
        tally.emitted += len(outcome.alerts)
        tally.rule_emitted.update((a.rule_id, a.mode) for a in outcome.alerts)
        new = self.alerts.put_new(outcome.alerts, source=ALERT_SOURCE)
        tally.written += len(new)
        tally.rule_written.update((a.rule_id, a.mode) for a in new)
        self._store(work.state, outcome.save)
        return dead

    # -- one key alone --------------------------------------------------------------------

    def _run_key(
        self,
        key: str,
        items: list[_Item],
        state: KeyState,
        watermark: int,
        tally: _Tally | None = None,
        *,
        conflicts: bool = False,
    ) -> _KeyResult:
        """Apply the key's records not applied yet, in an engine of its own; see "Poison
        records" in the module docstring for what happens when that fails for another
        reason than the tables. ``conflicts``: one of the key's conflict retries is spent."""
        tally = tally or _Tally()
        poisoned: list[_Item] = []  # dead-lettered now: marked applied, never processed
        fresh = False  # the stored state failed too often: start the key from empty state
        conflicts_left = self.config.max_conflict_retries - (1 if conflicts else 0)
        if conflicts_left < 0:
            raise DetectorError(f"key {key}: another writer saved it first; giving up")
        for _ in range(len(items) + self.config.max_conflict_retries + 3):
            done = {(i.record.partition_key, i.record.offset) for i in poisoned}
            new = [
                i
                for i in items
                if not state.applied(i.record.partition_key, i.record.offset)
                and (i.record.partition_key, i.record.offset) not in done
            ]
            skipped = [
                i for i in poisoned if not state.applied(i.record.partition_key, i.record.offset)
            ]
            if not new and not skipped:
                return tally.result()
            base = attrs.evolve(state, state=None, snapshot=None, rules=None) if fresh else state
            try:
                dead = self._attempt(key, base, new, skipped, watermark, tally)
            except StateConflict:
                tally.conflicts += 1
                self._count_conflict()
                if conflicts_left == 0:
                    break
                conflicts_left -= 1
                state, fresh = self.state.load(key), False
                continue
            except _StageFailure as failure:
                verdict = self._on_failure(key, base, new, watermark, failure)
                if verdict is _RESET:
                    fresh = True
                    tally.resets += 1
                    continue
                if isinstance(verdict, _Item):
                    poisoned.append(verdict)
                    tally.dead += 1
                    continue
                raise DetectorError(
                    f"key {key}: {failure.stage} failed: {type(failure.error).__name__}: "
                    f"{failure.error}"
                ) from failure.error
            tally.applied += len(new)
            tally.dead += dead
            return tally.result()
        raise DetectorError(
            f"key {key}: another writer saved it first {tally.conflicts} times in a row; giving up"
        )

    def _attempt(
        self,
        key: str,
        state: KeyState,
        new: list[_Item],
        skipped: list[_Item],
        watermark: int,
        tally: _Tally,
    ) -> int:
        """One try at applying ``new`` (and marking ``skipped`` applied) to ``state``;
        returns how many records were dead-lettered (refused, late).

        Everything that depends on the records' data (reading the stored state, processing,
        the watermark, the export and its size, the alert items) is done before anything is
        written, and a failure there is a :class:`_StageFailure`; then dead letters, alerts
        and the state are written (failures there are the tables' and propagate as they
        are)."""
        work = self._work(key, state, self._start_or_fail(state), new, skipped)
        (outcome,) = self._compute([work], watermark)
        return self._commit(work, outcome, tally)

    def _on_failure(
        self, key: str, state: KeyState, new: list[_Item], watermark: int, failure: _StageFailure
    ) -> _Item | object | None:
        """Count a failure against the record (or the stored state) that causes it. At the
        ``max_record_failures``-th failure in a row with the same signature, a record is
        dead-lettered (returned: the key goes on without it) or the state given up
        (:data:`_RESET`); below it, None: the key fails and its records are reported."""
        stage, culprit, error = self._isolate(key, state, new, watermark, failure)
        if culprit is None:
            return _RESET if self._state_given_up(key, stage, error) else None
        what = f"{culprit.record.partition_key}/{culprit.record.offset}"
        count, reason = self._count_failure(key, what, stage, error)
        if count < self.config.max_record_failures:
            return None
        letter = DeadLetter.of_record(
            culprit.record, POISON_REASON, f"failed {count} times the same way: {reason}"
        )
        if not self._dead_letter(letter):
            raise DetectorError(f"key {key}: could not dead-letter record {culprit.record.where}")
        return culprit

    def _isolate(
        self, key: str, state: KeyState, new: list[_Item], watermark: int, failure: _StageFailure
    ) -> tuple[str, _Item | None, BaseException]:
        """What makes the key fail: ``(stage, record, error)``, with record None when the
        stored state fails on its own (read, moved to the watermark, exported, read again and
        moved again). Else the key is tried with its first record, its first two, ...; each
        try's state is read back and moved to the watermark again: the record that makes the
        first failing try fail is the culprit. When none does alone, the first record takes
        the blame, so that the key still gets past it in at most ``max_record_failures``
        tries."""

        def probe(records: list[_Item]) -> None:
            work = self._work(key, state, self._start_or_fail(state), records, [])
            (outcome,) = self._compute([work], watermark)
            save = outcome.save
            again = attrs.evolve(
                state, state=save.state, snapshot=None, offsets=save.offsets, rules=save.rules
            )
            self._compute([self._work(key, again, self._start_or_fail(again), [], [])], watermark)

        try:
            probe([])
        except _StageFailure as alone:
            return alone.stage, None, alone.error
        for n, item in enumerate(new, 1):
            try:
                probe(new[:n])
            except _StageFailure as with_it:
                return with_it.stage, item, with_it.error
        if not new:
            return failure.stage, None, failure.error
        return failure.stage, new[0], failure.error

    def _check_fits(self, state: KeyState, new: _NewState) -> None:
        """Raise :class:`StateTooLarge` if ``new`` would not fit in the state table (the item
        made is kept for the save)."""
        new.item = self.state.state_item(
            state,
            state=new.state,
            offsets=new.offsets,
            rules=new.rules,
            due=new.due,
            now_ms=new.now_ms,
        )

    def _store(self, state: KeyState, new: _NewState) -> None:
        """Save ``new`` over ``state`` (as loaded); :class:`StateConflict` if it changed."""
        self.state.save(
            state,
            state=new.state,
            offsets=new.offsets,
            rules=new.rules,
            due=new.due,
            now_ms=new.now_ms,
            item=new.item,
        )

    # -- keys moved by their partition's event time ---------------------------------------

    def _advance_due(self, watermarks: Mapping[str, int], skip: set[str]) -> tuple[int, _KeyResult]:
        """Move the keys outside the batch that wait for their partition's event time."""
        futures: list[tuple[list[str], Future[list[_KeyResult | Exception]]]] = []
        taken: set[str] = set(skip)
        for tp, watermark in watermarks.items():
            try:
                due = [
                    k for k in dict.fromkeys(self.state.due_keys(tp, watermark)) if k not in taken
                ]
                states = self.state.load_many(due)
            except Exception:  # they stay due: the next batch moves them
                log.warning("could not list or load the due keys of %s", tp, exc_info=True)
                continue
            taken.update(due)
            jobs: list[_Job] = [(key, [], states[key]) for key in due]
            for _, chunk in self._chunks(jobs, dict.fromkeys(due, watermark)):
                keys = [key for key, _, _ in chunk]
                future = self._executor().submit(self._advance_chunk, chunk, tp, watermark)
                futures.append((keys, future))
        totals = _KeyResult()
        moved = 0
        for keys, future in futures:
            try:
                outcomes = future.result()
            except Exception as exc:
                outcomes = [exc] * len(keys)
            for key, outcome in zip(keys, outcomes, strict=True):
                if isinstance(outcome, _KeyResult):
                    moved += 1
                    totals = _add(totals, outcome)
                else:  # it stays due: the next batch of its partition retries
                    log.warning("could not move the event time of key %s", key, exc_info=outcome)
        return moved, totals

    def _advance_chunk(
        self, jobs: list[_Job], partition: str, watermark: int
    ) -> list[_KeyResult | Exception]:
        """Move due keys to ``watermark`` in shared engines (:meth:`_shared`); a key that
        fails or loses a conflict there is moved alone (:meth:`_advance_key`)."""

        def prepare(job: _Job) -> _Work | _KeyResult:
            key, _, state = job
            if state.empty:
                return _KeyResult()
            start = self._start(state)
            if not _is_due(start, state, self.rules.digest, watermark):
                return _KeyResult()  # the index was behind
            return self._work(key, state, start, [], [], partition)

        def alone(job: _Job, spent: _Tally | None) -> _KeyResult:
            return self._advance_key(job[0], partition, watermark, spent)

        return self._shared(jobs, watermark, prepare, alone)

    def _advance_key(
        self, key: str, partition: str, watermark: int, tally: _Tally | None = None
    ) -> _KeyResult:
        """Move a key's event time to ``watermark``. A stored state that fails there for
        another reason than the tables ``max_record_failures`` times in a row (the same way)
        is given up: the key starts afresh, as in :meth:`_run_key`. ``tally``: what earlier
        tries of the key came to."""
        tally = tally or _Tally()
        for _ in range(self.config.max_conflict_retries + 1):
            state = self.state.load(key)
            if state.empty:
                break
            try:
                start = self._start_or_fail(state)
                if not _is_due(start, state, self.rules.digest, watermark):
                    break  # the index was behind
                work = self._work(key, state, start, [], [], partition)
                (outcome,) = self._compute([work], watermark)
            except _StageFailure as failure:
                if not self._state_given_up(key, failure.stage, failure.error):
                    raise DetectorError(
                        f"key {key}: {failure.stage} failed: {type(failure.error).__name__}: "
                        f"{failure.error}"
                    ) from failure.error
                work = self._work(key, state, _Start(), [], [], partition)
                (outcome,) = self._compute([work], watermark)
                tally.resets += 1
            try:
                self._commit(work, outcome, tally)
            except StateConflict:
                tally.conflicts += 1
                self._count_conflict()
                continue
            break
        else:
            raise DetectorError(f"key {key}: another writer saved it first {tally.conflicts} times")
        return tally.result()

    def _state_given_up(self, key: str, stage: str, error: BaseException) -> bool:
        """Count a failure of the key's stored state; True at the ``max_record_failures``-th
        in a row with the same signature (the count is then cleared)."""
        what = f"key/{key}"
        count, reason = self._count_failure(key, what, stage, error)
        if count < self.config.max_record_failures:
            return False
        log.error(
            "key %s: its stored state failed %d times the same way (%s): starting the key "
            "afresh, without its partial matches",
            key,
            count,
            reason,
        )
        self.state.clear_failures(what)
        return True

    def _count_failure(
        self, key: str, what: str, stage: str, error: BaseException
    ) -> tuple[int, str]:
        """Count one failure of ``what`` (a record, or ``key/<key>``: the key's stored
        state) at ``stage`` and log it; returns the failures in a row with this signature
        and the reason."""
        reason = f"{stage}: {type(error).__name__}: {str(error)[:500]}"
        count = self.state.count_failure(
            what, f"{stage}:{type(error).__name__}", reason, now_ms=self.clock()
        )
        log.error(
            "key %s failed (%s, %d of %d): %s",
            key,
            what,
            count,
            self.config.max_record_failures,
            reason,
            exc_info=error if count == 1 else None,
        )
        return count, reason

    # -- engines and stored states --------------------------------------------------------

    @property
    def _state_key(self) -> bytes | None:
        """The state key as bytes, as the engine takes it (a key over 64 bytes is hashed)."""
        key = self.config.state_key
        if not key:
            return None
        raw = key.encode()
        return raw if len(raw) <= 64 else hashlib.sha512(raw).digest()

    def _engine_options(self, outputs: SideOutputs) -> dict[str, Any]:
        """An engine's keyword arguments: the shared engine options of the configuration,
        the event time moved only by the detector, side outputs collected in ``outputs``."""
        return self.config.engine.engine_kwargs(auto_watermark=False, **outputs.callbacks())

    def _new_engine(
        self, outputs: SideOutputs, definitions: Sequence[RuleDefinition] | None = None
    ) -> Engine:
        """An empty engine with ``definitions`` (default: the current rules)."""
        engine = Engine([], **self._engine_options(outputs))
        apply_definitions(engine, self.rules.definitions if definitions is None else definitions)
        return engine

    def _keyers(self, rules: RuleSet) -> list[tuple[str, Callable[[Any], Hashable]]]:
        """The key group and key function of each key group of ``rules``."""
        with self._lock:
            cached = self._keyers_of.get(rules.digest)
        if cached is None:
            cached = list(
                {
                    key_group(d.rule): d.rule.key_function() for d in rules.definitions if d.enabled
                }.items()
            )
            with self._lock:
                self._keyers_of[rules.digest] = cached
        return cached

    def _start_or_fail(self, state: KeyState) -> _Start:
        """:meth:`_start`, a failure of the data being a :class:`_StageFailure`."""
        try:
            return self._start(state)
        except _TRANSIENT:
            raise
        except Exception as exc:
            raise _StageFailure("restore", exc) from exc

    def _start(self, state: KeyState) -> _Start:
        """The key's stored state, read, checked and brought to the current rules."""
        if state.empty:
            return _Start()
        if state.state is None:
            return self._migrate(state)
        stored = decode_key_state(
            state.state,
            key=state.key,
            rules=state.rules or "",
            offsets=state.offsets,
            state_key=self._state_key,
        )
        start = _Start(
            records=[(r.group, record_key(r.key), r.record) for r in stored.records],
            held=[_Held(h, self._held_payment(h)) for h in stored.held],
            watermark=stored.watermark,
            order=stored.order,
            due=stored.due,
        )
        if state.rules != self.rules.digest:
            return self._convert(start, state.rules)
        return start

    def _held_payment(self, held: HeldEvent) -> dict[str, Any]:
        try:
            payment = decode_payment(held.value, max_bytes=self.config.max_record_bytes)
        except InvalidRecord as exc:
            raise SnapshotError(f"a held event cannot be read: {exc.detail}") from None
        if payment.get(self.config.timestamp_field) != held.ts:
            raise SnapshotError("a held event's time is not the one stored with it")
        return payment

    def _convert(self, start: _Start, digest: str | None) -> _Start:
        """``start`` (records of the rule file ``digest``) brought to the current rules, as
        the Kafka runner changes a running engine's rules (:func:`fraudcep.runtime.reconcile`);
        when that change is refused, its records stay on the rules they have."""
        old = self._rules_of(digest)
        engine = self._new_engine(SideOutputs(), old.definitions)
        for group, engine_key, record in start.records:
            engine.import_key(group, engine_key, record)
        if not self._to_current_rules(engine, old):
            return attrs.evolve(start, rules=old)
        return self._start_of(engine, [(g, k) for g, k, _ in start.records], start)

    def _migrate(self, state: KeyState) -> _Start:
        """The whole-engine snapshot of an item written by an earlier release, as records."""
        assert state.snapshot is not None
        if self._state_key:
            raise SnapshotError(
                "the key's stored state is a whole-engine snapshot of an earlier release, "
                "which is not authenticated: refused while a state key is set"
            )
        old = self._rules_of(state.rules)
        options = {**self._engine_options(SideOutputs()), "state_key": None}
        engine = Engine.restore(state.snapshot, [d.rule for d in old.definitions], **options)
        kept = None if self._to_current_rules(engine, old) else old
        body = read_blob(engine.snapshot()).body
        part = body.engine
        events = part.events
        held = []
        for b in sorted(part.buffer, key=lambda b: (b.ts, b.seq)):
            payment = events[b.event]
            value = json.dumps(payment, separators=(",", ":"), ensure_ascii=False).encode()
            stored = HeldEvent(b.ts, value)
            held.append(_Held(stored, self._held_payment(stored)))
        watermark = None if part.watermark == MIN_TIMESTAMP else part.watermark
        start = _Start(held=held, watermark=watermark, order=part.order, rules=kept)
        return self._start_of(engine, [(s.group, s.key) for s in body.records], start)

    def _to_current_rules(self, engine: Engine, old: RuleSet) -> bool:
        """Bring ``engine`` (on the rules ``old``) to the current rule file, each rule at the
        version an engine made from the file has, so that the records it exports can be read
        by one (:func:`~fraudcep.runtime.reconcile` with ``as_loaded``). False when the
        change is refused (a rule of the file is older than the one the engine runs): the
        engine keeps the rules it has, and the refusal is counted and logged (once per rule
        file in a container)."""
        done = reconcile(engine, self.rules.definitions, as_loaded=True)
        if done.refused is None:
            return True
        with self._lock:
            self.refused_rule_changes += 1
            first = old.digest not in self._refused_logged
            self._refused_logged.add(old.digest)
        log.log(
            logging.ERROR if first else logging.DEBUG,
            "rule change refused: keys whose state was written with rule file %s keep its "
            "rules: %s",
            old.digest[:12],
            done.refused,
        )
        return False

    def _start_of(self, engine: Engine, pairs: list[tuple[str, Hashable]], start: _Start) -> _Start:
        """The records of ``pairs`` in ``engine`` (which runs the current rules), with the
        held events, clock and order of ``start``."""
        groups = engine.key_groups()
        deadlines = _deadlines(engine)
        records = []
        due = min((h.stored.ts for h in start.held), default=None)
        for group, engine_key in dict.fromkeys(pairs):
            if group not in groups:
                continue  # no rule is keyed by it any more
            record = engine.export_key(group, engine_key)
            if record is not None:
                records.append((group, engine_key, record))
                deadline = deadlines((group, engine_key))
                if deadline is not None:
                    due = deadline if due is None else min(due, deadline)
        order = max(start.order, engine.processing_order)
        return _Start(
            records, start.held, start.watermark, order, due, migrated=True, rules=start.rules
        )

    def _side_outputs(self, key: str, outcome: _Outcome) -> int:
        """Dead-letter refused and late records (raises if that fails: the key is then
        retried), log the rest; returns how many records were dead-lettered."""
        dead = 0
        for refused, error in outcome.refused:
            if refused is None:
                log.warning("a held event of key %s is refused by the rules now: %s", key, error)
                continue
            if not self._dead_letter(DeadLetter.of_record(refused, "bad_event", error)):
                raise DetectorError(f"key {key}: could not dead-letter record {refused.where}")
            dead += 1
        for record, detail in outcome.late:
            if not self._dead_letter(DeadLetter.of_record(record, "late", detail)):
                raise DetectorError(f"key {key}: could not dead-letter late record {record.where}")
            dead += 1
        for failure in outcome.errors:
            log.warning(
                "rule %s: condition raised for key %s: %s", failure.rule_id, key, failure.error
            )
        for overflow in outcome.overflows:
            log.warning(
                "state cap overflow (%s) for key %s, rule %s: dropped %d",
                overflow.kind,
                key,
                overflow.rule_id,
                overflow.dropped,
            )
        return dead

    # -- helpers --------------------------------------------------------------------------

    def _dead_letter(self, letter: DeadLetter) -> bool:
        """Record ``letter``; False if it could not be stored (its record must fail)."""
        if self.dead_letters is None:
            log.error(
                "dead letter (no dead-letter table) %s", _json(letter.log_fields(with_value=True))
            )
            return True
        log.warning("dead letter %s", _json(letter.log_fields(with_value=False)))
        try:
            self.dead_letters.put(letter)
        except Exception:
            log.error("could not store dead letter %s", letter.id, exc_info=True)
            return False
        return True

    def _store_rules(self) -> None:
        """Keep the rule file in the state table before any snapshot names it."""
        with self._lock:
            if self._rules_stored:
                return
        self.state.put_rules(self.rules.digest, self.rules.text)
        with self._lock:
            self._rules_stored = True

    def _rules_of(self, digest: str | None) -> RuleSet:
        """The rule file a stored state was written with. One that names none, or a rule
        file the table does not have, is a :class:`SnapshotError`: the stored state cannot be
        used (see "Poison records")."""
        if digest is None:
            raise SnapshotError("a stored snapshot names no rule file")
        with self._lock:
            cached = self._old_rules.get(digest)
        if cached is None:
            try:
                text = self.state.get_rules(digest)
            except TableError as exc:
                raise SnapshotError(str(exc)) from None
            cached = RuleSet(
                text,
                digest,
                tuple(load_rules(text, source=f"rule file {digest[:12]}", lists=self.lists)),
            )
            with self._lock:
                self._old_rules[digest] = cached
        return cached

    def _count_conflict(self) -> None:
        with self._lock:
            self.conflicts += 1

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="keys")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.alerts.close()


def _engines(works: list[tuple[int, _Work]], limit: int) -> list[list[tuple[int, _Work]]]:
    """``works`` split into engines: keys on different rules, and keys whose states could
    hold the same engine key (a card used by two users, against the rules' assumption) go to
    different engines, and an engine takes at most ``limit`` events."""
    members: list[list[tuple[int, _Work]]] = []
    taken: list[set[tuple[str, Hashable]]] = []
    sizes: list[int] = []
    for entry in works:
        w = entry[1]
        size = len(w.new) + len(w.start.held)
        at = next(
            (
                i
                for i in range(len(members))
                if sizes[i] + size <= limit
                and members[i][0][1].rules.digest == w.rules.digest
                and taken[i].isdisjoint(w.pairs)
            ),
            None,
        )
        if at is None:
            at = len(members)
            members.append([])
            taken.append(set())
            sizes.append(0)
        members[at].append(entry)
        taken[at].update(w.pairs)
        sizes[at] += size
    return members


def _is_due(start: _Start, state: KeyState, digest: str, watermark: int) -> bool:
    """Whether moving the key to ``watermark`` changes its item (for a key the ``timers``
    index lists: the index may be behind); ``digest``: the current rules'."""
    if start.rules is not None:
        digest = start.rules.digest  # a refused change: the key stays on its rules
    if start.migrated or state.rules != digest:
        return True
    return start.due is not None and start.due <= watermark


def _held_record(held: HeldEvent) -> KafkaRecord | None:
    """The record a held event came from, as far as it is known (for its dead letter)."""
    if held.topic is None or held.partition is None or held.offset is None:
        return None
    return KafkaRecord(
        partition_key=f"{held.topic}-{held.partition}",
        topic=held.topic,
        partition=held.partition,
        offset=held.offset,
        timestamp=None,
        key=None,
        value=held.value,
    )


def _deadlines(engine: Engine) -> Callable[[tuple[str, Hashable]], int | None]:
    """A function of ``(group, key)``: the key's next timer in ``engine`` (None: none)."""
    return lambda pair: engine.key_due(*pair)


def _add(a: _KeyResult, b: _KeyResult) -> _KeyResult:
    return _KeyResult(
        a.applied + b.applied,
        a.alerts + b.alerts,
        a.new_alerts + b.new_alerts,
        a.conflicts + b.conflicts,
        a.dead_lettered + b.dead_lettered,
        a.state_resets + b.state_resets,
        a.rule_alerts + b.rule_alerts,
        a.rule_new_alerts + b.rule_new_alerts,
    )


def _json(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), default=str)


# -- the Lambda entry point -------------------------------------------------------------------

_detector: Detector | None = None
_detector_lock = threading.Lock()


def _container_detector() -> Detector:
    """The detector of this container, made from the environment on first use."""
    global _detector
    with _detector_lock:
        if _detector is None:
            _detector = Detector.from_config(DetectorConfig.from_env())
        return _detector


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda handler: run the batch, answer the partial batch response (or raise
    :class:`BatchFailed` with ``FRAUDCEP_ON_FAILURE=raise``)."""
    detector = _container_detector()
    report = detector.process(event)
    log.info(
        "batch done %s",
        _json(
            {
                "records": report.records,
                "keys": report.keys,
                "applied": report.applied,
                "alerts": report.alerts,
                "new_alerts": report.new_alerts,
                "dead_lettered": report.dead_lettered,
                "conflicts": report.conflicts,
                "timer_keys": report.timer_keys,
                "state_resets": report.state_resets,
                "failed_records": len(report.failures),
                "alerts_by_rule": report.by_rule(),
                **({"lists": detector.lists.versions()} if detector.lists else {}),
            }
        ),
    )
    emit_metrics(report.metric_lines(timestamp_ms=detector.clock()))
    if report.failures and detector.config.on_failure == "raise":
        partition, offset = report.failures[0]
        raise BatchFailed(
            f"{len(report.failures)} record(s) failed, the first {partition}@{offset}; "
            f"failed keys: {', '.join(list(report.failed_keys)[:5]) or 'none'} "
            "(the other failures are dead letters that could not be written)"
        )
    return report.response()
