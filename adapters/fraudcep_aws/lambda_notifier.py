"""The notifier Lambda: new alerts from the alert table's DynamoDB stream to Slack, e-mail
(SES) and EventBridge.

Handler: ``fraudcep_aws.lambda_notifier.handler``, on a DynamoDB stream event source mapping
with ``FunctionResponseTypes=["ReportBatchItemFailures"]``. Deployment: ``docs/aws-lambda.md``.

Which records
    Only INSERT records are new alerts. MODIFY records (among them the ones the delivery
    markers below write) and REMOVE records (among them DynamoDB TTL's expiry deletes) are
    skipped and counted in the batch's summary log line.

Shadow alerts
    An alert item with ``mode`` ``"shadow"`` comes from a shadow rule (docs/rules.md): it is
    recorded in the table to be watched, never acted on. The notifier sends it nowhere,
    writes no delivery marker for it and never reports it as failed: it is logged
    (``shadow alert: not sent``, with the rule) and counted per rule as ``shadow`` in the
    batch's summary line. A live alert of the same batch is delivered as usual.

Failure semantics
    Every record of the batch is processed, in stream order, whatever happened to the
    records before it; the answer lists, in stream order, the sequence number of every record
    that was not delivered to all its channels: a channel that failed, or a record left
    undone because the invocation was running out of time. Lambda restarts the shard from
    the lowest sequence number listed, so the first failed record and all records after it
    are delivered again. Processing the later records anyway means that one failing channel
    does not hold back the other alerts, and that when Lambda finally gives up on a record
    (``MaximumRetryAttempts``, then the on-failure destination) the alerts after it have
    already gone out. A malformed event (no ``Records`` list, a record without a sequence
    number) raises :class:`~fraudcep_aws.stream_event.MalformedEvent`: the whole batch fails
    and is retried.

Malformed records
    A record that cannot be read as a new alert (an INSERT without ``NewImage``, an attribute
    of the wrong type, JSON that does not parse or nests deeper than
    :data:`~fraudcep_aws.stream_event.MAX_JSON_DEPTH`, an unknown ``eventName`` or
    ``eventSource``) can never succeed: reading is a pure function of the record. It is
    therefore *not* reported (that would hold up the shard from that record on, for good
    with the mapping's default ``MaximumRetryAttempts`` of -1, while every retry fails the
    same way) but logged at error level (``malformed stream record: skipped``, with the
    sequence number, event id, the alert id when it can be read, and the reason) and counted
    as ``malformed`` in the batch's summary line. The alert item, if there is one, is still
    in the table. Only that record is affected; the others are delivered as usual.

Delivery markers (no repeats on redelivery)
    After each successful delivery, the notifier sets ``delivered_<channel>`` (wall-clock
    ms) on the alert's item with an UpdateItem conditional on the item existing. Before
    delivering, it reads the item's markers (a consistent GetItem) and skips the channels
    already marked, so a redelivered batch sends each alert to each channel once. This is
    at-least-once, not exactly-once: a crash between a send and its marker repeats that
    one send. If the markers cannot be read, the alert is reported as failed rather than
    sent twice; if a marker cannot be written, the alert is *not* reported (reporting it
    would cause the very repeat the marker is for) and an error is logged. An alert whose
    item is gone (deleted, expired) is still delivered, without markers, with a warning.

Configuration (environment; :meth:`NotifierConfig.from_env`)
    ``FRAUDCEP_SLACK_WEBHOOK_URL``  the webhook URL, or ``secretsmanager:<secret id>`` or
    ``ssm:<parameter name>`` to read it from there (a secret's string is the URL, or a JSON
    object with ``url``); unset: no Slack.
    ``FRAUDCEP_EMAIL_FROM``, ``FRAUDCEP_EMAIL_TO`` (comma-separated): a verified SES sender
    and the recipients; both or neither.
    ``FRAUDCEP_EVENT_BUS`` (default ``default``; ``none`` turns EventBridge off) and
    ``FRAUDCEP_EVENT_SOURCE`` (default ``fraudcep``).
    ``FRAUDCEP_ALERTS_TABLE``: where the markers go; default: the table of the stream.
    ``FRAUDCEP_LOG_LEVEL`` (default INFO). ``AWS_ENDPOINT_URL`` points every client at
    LocalStack or moto.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs
from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from fraudcep.errors import ConfigurationError
from fraudcep_aws import lambda_logs
from fraudcep_aws.channels import (
    Budget,
    Channel,
    EmailChannel,
    EventBridgeChannel,
    SlackChannel,
)
from fraudcep_aws.clients import client as make_client
from fraudcep_aws.slack import check_webhook_url
from fraudcep_aws.stream_event import (
    MalformedEvent,
    MalformedRecord,
    StreamAlert,
    StreamRecord,
    parse_event,
    table_from_stream_arn,
)

__all__ = [
    "BatchResult",
    "Failure",
    "MalformedEvent",
    "Notifier",
    "NotifierConfig",
    "build_notifier",
    "handler",
    "marker_attribute",
    "resolve_webhook_url",
]

log = logging.getLogger("fraudcep.lambda.notifier")

MARKER_PREFIX: Final = "delivered_"
DEFAULT_RESERVE_MS: Final = 10_000
_SERIALIZER: Final = TypeSerializer()


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values as DynamoDB attribute values (the notifier leaves the alerts table's own
    helpers out: see :mod:`fraudcep_aws.stream_event`)."""
    return {name: _SERIALIZER.serialize(value) for name, value in values.items()}


def marker_attribute(channel: str) -> str:
    """The item attribute recording delivery to ``channel`` (``delivered_slack``)."""
    return MARKER_PREFIX + channel


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


@attrs.frozen
class Failure:
    """A record reported back to Lambda as not done."""

    sequence_number: str
    alert_id: str | None
    reason: str


@attrs.frozen
class BatchResult:
    """What one invocation did."""

    records: int
    alerts: int
    """INSERT records with a readable alert."""
    delivered: Mapping[str, int]
    """Per channel: alerts sent in this invocation."""
    already_delivered: Mapping[str, int]
    """Per channel: alerts skipped because their marker said they had been sent."""
    skipped: Mapping[str, int]
    """Records that are not new alerts: ``MODIFY``, ``REMOVE``, ``REMOVE_TTL``."""
    failures: tuple[Failure, ...]
    """In stream order."""
    malformed: tuple[Failure, ...] = ()
    """Records that can never be read (see the module docstring): logged, not reported."""
    shadow: Mapping[str, int] = attrs.Factory(dict)
    """Per rule: alerts of shadow rules, sent nowhere (counted in :attr:`alerts` too)."""

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The partial-batch response Lambda reads (``ReportBatchItemFailures``)."""
        return {"batchItemFailures": [{"itemIdentifier": f.sequence_number} for f in self.failures]}


@attrs.define
class _Pending:
    record: StreamRecord
    alert: StreamAlert
    channels: list[str]
    has_item: bool


@attrs.define
class Notifier:
    """Delivers the new alerts of one stream batch to ``channels`` (see the module docstring).

    ``dynamodb`` and ``table`` keep the delivery markers; ``table`` defaults to the table of
    the stream the records come from. Without ``dynamodb`` there are no markers, and a
    redelivered batch is sent again."""

    channels: Sequence[Channel]
    dynamodb: Any = attrs.field(default=None, repr=False)
    table: str | None = None
    reserve_ms: int = DEFAULT_RESERVE_MS
    """Time kept back to answer Lambda; nothing new starts with less left."""
    clock_ms: Callable[[], int] = attrs.field(default=_wall_ms, repr=False)

    def __attrs_post_init__(self) -> None:
        names = [c.name for c in self.channels]
        if not names:
            raise ConfigurationError("the notifier has no channel to deliver to")
        if len(set(names)) != len(names):
            raise ConfigurationError(f"channels must have distinct names, got {names}")

    def handle(self, event: Any, context: Any = None) -> dict[str, list[dict[str, str]]]:
        """Lambda's answer for ``event`` (see :meth:`process`)."""
        return self.process(event, context).response()

    def process(self, event: Any, context: Any = None) -> BatchResult:
        """Deliver the batch; raises :class:`MalformedEvent` if it cannot be read at all."""
        records = parse_event(event)
        budget = self._budget(context)
        failures: dict[str, Failure] = {}
        malformed: list[Failure] = []
        skipped: Counter[str] = Counter()
        alerts = self._new_alerts(records, malformed, skipped)
        shadow: Counter[str] = Counter()
        live = []
        for record, alert in alerts:
            if not alert.shadow:
                live.append((record, alert))
                continue
            shadow[alert.rule_id] += 1
            log.info(
                "shadow alert: not sent",
                extra={
                    "fields": _fields(
                        record, alert_id=alert.alert_id, rule_id=alert.rule_id, mode=alert.mode
                    )
                },
            )
        table = self._table(records)
        pending = self._pending(live, table, budget, failures)
        delivered, already = self._deliver(pending, table, budget, failures)
        ordered = tuple(
            failures[r.sequence_number] for r in records if r.sequence_number in failures
        )
        for failure in ordered:
            log.error(
                "alert not delivered: reported as failed",
                extra={
                    "fields": {
                        "sequence_number": failure.sequence_number,
                        "alert_id": failure.alert_id,
                        "error": failure.reason,
                    }
                },
            )
        result = BatchResult(
            records=len(records),
            alerts=len(alerts),
            delivered=dict(delivered),
            already_delivered=dict(already),
            skipped=dict(skipped),
            failures=ordered,
            malformed=tuple(malformed),
            shadow=dict(shadow),
        )
        log.info(
            "batch done",
            extra={
                "fields": {
                    "records": result.records,
                    "alerts": result.alerts,
                    "delivered": result.delivered,
                    "already_delivered": result.already_delivered,
                    "skipped": result.skipped,
                    "shadow": result.shadow,
                    "malformed": len(malformed),
                    "failed": len(ordered),
                    "first_failed": ordered[0].sequence_number if ordered else None,
                }
            },
        )
        return result

    def _budget(self, context: Any) -> Budget:
        """The invocation's time: ``reserve_ms`` is kept back, or a quarter of the time the
        invocation started with when that is less (a function with a short timeout)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if not callable(remaining):
            return Budget(None, self.reserve_ms)
        return Budget(remaining, min(self.reserve_ms, int(remaining()) // 4))

    def _new_alerts(
        self,
        records: Sequence[StreamRecord],
        malformed: list[Failure],
        skipped: Counter[str],
    ) -> list[tuple[StreamRecord, StreamAlert]]:
        """The INSERT records' alerts; counts the others, logs and collects the malformed."""
        alerts = []
        for record in records:
            try:
                record.check()
                if record.event_name != "INSERT":
                    kind = "REMOVE_TTL" if record.removed_by_ttl else record.event_name
                    skipped[kind] += 1
                    log.debug(
                        "not a new alert: skipped",
                        extra={"fields": _fields(record, event_name=kind)},
                    )
                    continue
                alerts.append((record, record.alert()))
            except Exception as exc:  # reading is pure: whatever it raised, it always will
                why = str(exc) if isinstance(exc, MalformedRecord) else _why(exc)
                alert_id = _alert_id(record)
                malformed.append(Failure(record.sequence_number, alert_id, why))
                log.error(
                    "malformed stream record: skipped",
                    extra={"fields": _fields(record, alert_id=alert_id, error=why)},
                    exc_info=not isinstance(exc, MalformedRecord),
                )
        return alerts

    def _deliver(
        self,
        pending: Sequence[_Pending],
        table: str | None,
        budget: Budget,
        failures: dict[str, Failure],
    ) -> tuple[Counter[str], Counter[str]]:
        """Each channel in turn; returns (delivered, already delivered) per channel."""
        delivered: Counter[str] = Counter()
        already: Counter[str] = Counter(
            c.name for p in pending for c in self.channels if c.name not in p.channels
        )
        for channel in self.channels:
            todo = _unique([p for p in pending if channel.name in p.channels])
            if not todo:
                continue
            by_id = {p.alert.alert_id: p for p in todo}

            done: set[str] = set()

            def on_delivered(
                alert: StreamAlert,
                channel: str = channel.name,
                by_id: Mapping[str, _Pending] = by_id,
                done: set[str] = done,
            ) -> None:
                done.add(alert.alert_id)
                delivered[channel] += 1
                self._mark(table, by_id[alert.alert_id], channel)

            try:
                failed = channel.deliver([p.alert for p in todo], budget, on_delivered)
            except Exception as exc:  # a channel's bug fails its alerts, not the batch
                log.error(
                    "channel failed", extra={"fields": {"channel": channel.name}}, exc_info=True
                )
                raised = f"not delivered: the channel raised {_why(exc)}"
                failed = {p.alert.alert_id: raised for p in todo if p.alert.alert_id not in done}
            for p in pending:
                why = failed.get(p.alert.alert_id)
                if why is None:
                    continue
                seq = p.record.sequence_number
                reason = f"{channel.name}: {why}"
                previous = failures.get(seq)
                if previous is not None:
                    reason = f"{previous.reason}; {reason}"
                failures[seq] = Failure(seq, p.alert.alert_id, reason)
        return delivered, already

    def _table(self, records: Sequence[StreamRecord]) -> str | None:
        if self.dynamodb is None:
            return None
        if self.table:
            return self.table
        for record in records:
            name = table_from_stream_arn(record.source_arn)
            if name:
                return name
        return None

    def _pending(
        self,
        alerts: Sequence[tuple[StreamRecord, StreamAlert]],
        table: str | None,
        budget: Budget,
        failures: dict[str, Failure],
    ) -> list[_Pending]:
        names = [c.name for c in self.channels]
        if table is None:
            if alerts:
                log.warning(
                    "no alerts table for delivery markers: a redelivered batch is sent again",
                    extra={"fields": {"alerts": len(alerts)}},
                )
            return [_Pending(r, a, list(names), has_item=False) for r, a in alerts]
        pending = []
        for record, alert in alerts:
            seq = record.sequence_number
            if budget.exhausted():
                failures[seq] = Failure(seq, alert.alert_id, "not attempted: out of time")
                continue
            try:
                answer = self.dynamodb.get_item(
                    TableName=table,
                    Key=_attributes({"alert_id": alert.alert_id}),
                    ConsistentRead=True,
                    ProjectionExpression=", ".join(
                        ["alert_id", *(marker_attribute(n) for n in names)]
                    ),
                )
            except (ClientError, BotoCoreError) as exc:
                why = f"cannot read its delivery markers from table {table!r}: {_why(exc)}"
                failures[seq] = Failure(seq, alert.alert_id, why)
                continue
            item = answer.get("Item")
            if item is None:
                log.warning(
                    "alert item not in the table: delivering without delivery markers",
                    extra={"fields": _fields(record, alert_id=alert.alert_id, table=table)},
                )
                pending.append(_Pending(record, alert, list(names), has_item=False))
                continue
            todo = [n for n in names if marker_attribute(n) not in item]
            if len(todo) < len(names):
                log.info(
                    "already delivered to some channels",
                    extra={
                        "fields": _fields(
                            record,
                            alert_id=alert.alert_id,
                            skipped=[n for n in names if n not in todo],
                        )
                    },
                )
            pending.append(_Pending(record, alert, todo, has_item=True))
        return pending

    def _mark(self, table: str | None, pending: _Pending, channel: str) -> None:
        alert = pending.alert
        fields = _fields(pending.record, alert_id=alert.alert_id, channel=channel)
        log.info(
            "alert delivered",
            extra={"fields": {**fields, "rule_id": alert.rule_id, "mode": alert.mode}},
        )
        if table is None or not pending.has_item:
            return
        try:
            self.dynamodb.update_item(
                TableName=table,
                Key=_attributes({"alert_id": pending.alert.alert_id}),
                UpdateExpression="SET #m = :now",
                ConditionExpression="attribute_exists(alert_id)",
                ExpressionAttributeNames={"#m": marker_attribute(channel)},
                ExpressionAttributeValues=_attributes({":now": self.clock_ms()}),
            )
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                log.warning("alert item gone: delivery not recorded", extra={"fields": fields})
            else:
                log.error(
                    "delivery marker not written: a redelivery would send this alert again",
                    extra={"fields": {**fields, "error": _why(exc)}},
                )


def _unique(pending: Sequence[_Pending]) -> list[_Pending]:
    seen: set[str] = set()
    out = []
    for p in pending:
        if p.alert.alert_id not in seen:
            seen.add(p.alert.alert_id)
            out.append(p)
    return out


def _alert_id(record: StreamRecord) -> str | None:
    """The alert id of a record that may be malformed, when it can be read at all (for the
    log line: looked up by hand, as anything in a malformed image may be wrong)."""
    image = record.new_image
    raw = image.get("alert_id") if isinstance(image, Mapping) else None
    value = raw.get("S") if isinstance(raw, Mapping) else None
    return value[:200] if isinstance(value, str) and value else None


def _fields(record: StreamRecord, **more: Any) -> dict[str, Any]:
    return {"sequence_number": record.sequence_number, "event_id": record.event_id, **more}


# -- configuration ----------------------------------------------------------------------------


def _addresses(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


@attrs.frozen
class NotifierConfig:
    """The notifier's settings (see the module docstring for the variables)."""

    slack_webhook: str | None = attrs.field(default=None, repr=False)
    """A URL, ``secretsmanager:<id>`` or ``ssm:<name>``."""
    email_from: str | None = None
    email_to: tuple[str, ...] = ()
    event_bus: str | None = "default"
    event_source: str = "fraudcep"
    alerts_table: str | None = None

    def __attrs_post_init__(self) -> None:
        if bool(self.email_from) != bool(self.email_to):
            raise ConfigurationError(
                "e-mail needs both FRAUDCEP_EMAIL_FROM and FRAUDCEP_EMAIL_TO (or neither)"
            )
        if self.slack_webhook and not self.slack_webhook.startswith(_SECRET_PREFIXES):
            check_webhook_url(self.slack_webhook)
        if not (self.slack_webhook or self.email_from or self.event_bus):
            raise ConfigurationError(
                "no channel configured: set FRAUDCEP_SLACK_WEBHOOK_URL, FRAUDCEP_EMAIL_FROM and "
                "FRAUDCEP_EMAIL_TO, or FRAUDCEP_EVENT_BUS"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NotifierConfig:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        bus = get("FRAUDCEP_EVENT_BUS") or "default"
        return cls(
            slack_webhook=get("FRAUDCEP_SLACK_WEBHOOK_URL"),
            email_from=get("FRAUDCEP_EMAIL_FROM"),
            email_to=_addresses(env.get("FRAUDCEP_EMAIL_TO", "")),
            event_bus=None if bus.lower() == "none" else bus,
            event_source=get("FRAUDCEP_EVENT_SOURCE") or "fraudcep",
            alerts_table=get("FRAUDCEP_ALERTS_TABLE"),
        )


_SECRET_PREFIXES: Final = ("secretsmanager:", "ssm:")


def resolve_webhook_url(value: str, client: Callable[[str], Any] = make_client) -> str:
    """The webhook URL ``value`` stands for: itself, or the Secrets Manager secret / SSM
    parameter it names. Errors name the secret, never its content."""
    if value.startswith("secretsmanager:"):
        name = value.removeprefix("secretsmanager:")
        try:
            text = client("secretsmanager").get_secret_value(SecretId=name).get("SecretString")
        except (ClientError, BotoCoreError) as exc:
            raise ConfigurationError(f"Slack webhook secret {name!r}: {_why(exc)}") from None
        if not isinstance(text, str):
            raise ConfigurationError(f"Slack webhook secret {name!r} has no SecretString")
        text = text.strip()
        if text.startswith("{"):
            try:
                text = str(json.loads(text)["url"])
            except (ValueError, KeyError, TypeError):
                raise ConfigurationError(
                    f"Slack webhook secret {name!r}: a JSON secret needs a 'url' field"
                ) from None
        return check_webhook_url(text)
    if value.startswith("ssm:"):
        name = value.removeprefix("ssm:")
        try:
            answer = client("ssm").get_parameter(Name=name, WithDecryption=True)
        except (ClientError, BotoCoreError) as exc:
            raise ConfigurationError(f"Slack webhook parameter {name!r}: {_why(exc)}") from None
        return check_webhook_url(str(answer["Parameter"]["Value"]))
    return check_webhook_url(value)


def build_notifier(config: NotifierConfig, client: Callable[[str], Any] = make_client) -> Notifier:
    """A notifier with the clients ``client(service)`` makes (``fraudcep_aws.clients``)."""
    channels: list[Channel] = []
    if config.event_bus:
        channels.append(
            EventBridgeChannel(client("events"), bus=config.event_bus, source=config.event_source)
        )
    if config.slack_webhook:
        webhook = config.slack_webhook
        channels.append(SlackChannel(lambda: resolve_webhook_url(webhook, client)))
    if config.email_from:
        channels.append(EmailChannel(client("ses"), config.email_from, config.email_to))
    return Notifier(channels, dynamodb=client("dynamodb"), table=config.alerts_table)


_cached: tuple[NotifierConfig, Notifier] | None = None
_lock = threading.Lock()


def _notifier() -> Notifier:
    """The notifier for the current environment, kept across warm invocations."""
    global _cached
    config = NotifierConfig.from_env()
    with _lock:
        if _cached is None or _cached[0] != config:
            _cached = (config, build_notifier(config))
        return _cached[1]


def handler(event: Any, context: Any) -> dict[str, list[dict[str, str]]]:
    """The Lambda entry point (DynamoDB stream event source, ReportBatchItemFailures)."""
    lambda_logs.configure()
    token = lambda_logs.request_id.set(getattr(context, "aws_request_id", None))
    try:
        return _notifier().handle(event, context)
    except ConfigurationError as exc:
        log.error("bad configuration", extra={"fields": {"error": str(exc)}})
        raise
    except MalformedEvent as exc:
        log.error("malformed event: the whole batch fails", extra={"fields": {"error": str(exc)}})
        raise
    finally:
        lambda_logs.request_id.reset(token)
