"""Where alert notifications go: Slack, e-mail through SES, and EventBridge.

Each channel delivers a list of alerts and says which ones it could not deliver and why; it
calls ``on_delivered`` right after each success so that the caller can record it at once
(a delivery marker), before the next alert is tried.

A channel that fails for one alert is not tried again for the later alerts of the same call
("breaker"): a webhook answering 500 or an unverified SES sender would fail them all, and
trying each one with its own retries could use up the Lambda's time. Those alerts are
reported as not attempted; the stream's retry of the batch tries them again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs
from botocore.exceptions import BotoCoreError, ClientError

from fraudcep.errors import ConfigurationError
from fraudcep.runtime import Backoff
from fraudcep_aws.alert_text import email_body, email_subject
from fraudcep_aws.slack import (
    MAX_RETRY_AFTER_S,
    SLACK_RETRY,
    SlackError,
    SlackWebhook,
    slack_message,
)
from fraudcep_aws.stream_event import StreamAlert

__all__ = [
    "DETAIL_TYPE",
    "EVENTBRIDGE_RETRY",
    "MAX_ENTRIES",
    "MAX_ENTRY_BYTES",
    "RETRYABLE_ENTRY_ERRORS",
    "Budget",
    "Channel",
    "EmailChannel",
    "EventBridgeChannel",
    "SlackChannel",
    "event_entry",
]

log = logging.getLogger("fraudcep.lambda.channels")

DETAIL_TYPE: Final = "fraud.alert"
MAX_ENTRIES: Final = 10
"""Entries per PutEvents request (an EventBridge limit)."""
MAX_ENTRY_BYTES: Final = 256 * 1024
"""Size of one PutEvents entry, and of all entries of one request (EventBridge limits)."""
RETRYABLE_ENTRY_ERRORS: Final = frozenset({"InternalFailure", "ThrottlingException"})
"""Per-entry error codes EventBridge documents as retryable; the others are permanent."""
EVENTBRIDGE_RETRY: Final = Backoff(base_s=0.2, cap_s=4.0, max_attempts=4)
"""How often failed PutEvents entries are sent (4 requests, the first included) and the
waits between (drawn from [0, min(4, 0.2 * 2**n)) seconds)."""

OnDelivered = Callable[[StreamAlert], None]


@attrs.frozen
class Budget:
    """The time an invocation has left, from Lambda's context (unlimited without one)."""

    remaining_ms: Callable[[], int] | None = None
    reserve_ms: int = 10_000
    """Kept back to answer Lambda: nothing new is started with less than this left."""

    def exhausted(self) -> bool:
        return self.remaining_ms is not None and self.remaining_ms() < self.reserve_ms

    def may_wait(self, seconds: float) -> bool:
        if self.remaining_ms is None:
            return True
        return self.remaining_ms() - seconds * 1000 >= self.reserve_ms


OUT_OF_TIME: Final = "not attempted: the invocation is running out of time"


class Channel(Protocol):
    """One notification target."""

    @property
    def name(self) -> str:
        """Short and stable: it names the delivery marker (``delivered_<name>``)."""
        ...

    def deliver(
        self, alerts: Sequence[StreamAlert], budget: Budget, on_delivered: OnDelivered
    ) -> dict[str, str]:
        """Deliver ``alerts`` in order; returns ``{alert_id: why}`` for those not delivered."""
        ...


def _one_by_one(
    name: str,
    alerts: Sequence[StreamAlert],
    budget: Budget,
    on_delivered: OnDelivered,
    send: Callable[[StreamAlert], None],
) -> dict[str, str]:
    failed: dict[str, str] = {}
    broken: str | None = None
    for alert in alerts:
        if broken is not None:
            failed[alert.alert_id] = broken
            continue
        if budget.exhausted():
            failed[alert.alert_id] = OUT_OF_TIME
            continue
        try:
            send(alert)
        except Exception as exc:  # reported for this alert, like any failure of the target
            why = _describe(exc)
            failed[alert.alert_id] = why
            broken = f"not attempted: {name} failed for alert {alert.alert_id} ({why})"
            log.warning(
                "delivery failed",
                extra={"fields": {"channel": name, "alert_id": alert.alert_id, "error": why}},
                exc_info=not isinstance(exc, _EXPECTED),
            )
            continue
        on_delivered(alert)
    return failed


_EXPECTED: Final = (SlackError, ConfigurationError, ClientError, BotoCoreError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".strip()
    if isinstance(exc, SlackError | ConfigurationError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@attrs.define
class SlackChannel:
    """Block Kit messages to an incoming webhook. ``webhook_url`` is called on first use
    (it may read a secret) and its answer kept for later invocations."""

    webhook_url: Callable[[], str] = attrs.field(repr=False)
    retry: Backoff = SLACK_RETRY
    max_retry_after_s: float = MAX_RETRY_AFTER_S
    timeout_s: float = 10.0
    _webhook: SlackWebhook | None = attrs.field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return "slack"

    def _hook(self) -> SlackWebhook:
        if self._webhook is None:
            self._webhook = SlackWebhook(
                self.webhook_url(),
                retry=self.retry,
                max_retry_after_s=self.max_retry_after_s,
                timeout_s=self.timeout_s,
            )
        return self._webhook

    def deliver(
        self, alerts: Sequence[StreamAlert], budget: Budget, on_delivered: OnDelivered
    ) -> dict[str, str]:
        def send(alert: StreamAlert) -> None:
            self._hook().post(slack_message(alert), may_wait=budget.may_wait)

        return _one_by_one(self.name, alerts, budget, on_delivered, send)


@attrs.define
class EmailChannel:
    """One plain-text e-mail per alert through SES ``SendEmail``. Throttling is retried by
    botocore (``fraudcep_aws.clients`` uses its standard retry mode)."""

    ses: Any = attrs.field(repr=False)
    sender: str
    recipients: tuple[str, ...]

    def __attrs_post_init__(self) -> None:
        if not self.recipients:
            raise ConfigurationError("e-mail: no recipient")
        for address in (self.sender, *self.recipients):
            if "@" not in address or any(c.isspace() or c in ",;<>" for c in address):
                raise ConfigurationError(f"e-mail: {address!r} is not an e-mail address")

    @property
    def name(self) -> str:
        return "email"

    def deliver(
        self, alerts: Sequence[StreamAlert], budget: Budget, on_delivered: OnDelivered
    ) -> dict[str, str]:
        def send(alert: StreamAlert) -> None:
            self.ses.send_email(
                Source=self.sender,
                Destination={"ToAddresses": list(self.recipients)},
                Message={
                    "Subject": {"Data": email_subject(alert), "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": email_body(alert), "Charset": "UTF-8"}},
                },
            )

        return _one_by_one(self.name, alerts, budget, on_delivered, send)


def _entry_size(entry: Mapping[str, Any]) -> int:
    """EventBridge's own measure of an entry: the UTF-8 bytes of its strings."""
    size = sum(len(str(entry[k]).encode("utf-8")) for k in ("Source", "DetailType", "Detail"))
    return size + sum(len(r.encode("utf-8")) for r in entry.get("Resources", []))


def event_entry(alert: StreamAlert, *, source: str, bus: str) -> dict[str, Any]:
    """The PutEvents entry of ``alert``: ``Detail`` is the alert as JSON.

    An alert too large for one entry is sent without its matched events, with
    ``events_omitted`` (events per stage) and the reason, so that consumers still see it and
    can read the full alert from the alerts table by ``alert_id``."""
    detail = alert.to_detail()
    entry = {
        "Source": source,
        "DetailType": DETAIL_TYPE,
        "Detail": json.dumps(detail, separators=(",", ":"), default=str),
        "EventBusName": bus,
    }
    if _entry_size(entry) <= MAX_ENTRY_BYTES:
        return entry
    detail["events_omitted"] = {name: len(events) for name, events in alert.events.items()}
    detail["events_omitted_reason"] = (
        "the alert is larger than an EventBridge entry may be (256 KiB); "
        "the full alert is in the alerts table"
    )
    detail["events"] = {}
    entry["Detail"] = json.dumps(detail, separators=(",", ":"), default=str)
    log.warning(
        "alert too large for EventBridge: sent without its events",
        extra={"fields": {"alert_id": alert.alert_id, "events": detail["events_omitted"]}},
    )
    return entry


def _batches(
    entries: Sequence[tuple[StreamAlert, dict[str, Any]]],
) -> list[list[tuple[StreamAlert, dict[str, Any]]]]:
    batches: list[list[tuple[StreamAlert, dict[str, Any]]]] = []
    size = 0
    for pair in entries:
        entry_size = _entry_size(pair[1])
        if not batches or len(batches[-1]) >= MAX_ENTRIES or size + entry_size > MAX_ENTRY_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(pair)
        size += entry_size
    return batches


@attrs.define
class EventBridgeChannel:
    """``fraud.alert`` events on a bus, up to 10 per PutEvents request. Entries that come
    back in ``FailedEntries`` with a retryable code are sent again with back-off, a bounded
    number of times; a request that fails as a whole (no such bus, no permission) fails
    every alert in it."""

    events: Any = attrs.field(repr=False)
    bus: str = "default"
    source: str = "fraudcep"
    retry: Backoff = EVENTBRIDGE_RETRY

    def __attrs_post_init__(self) -> None:
        if not self.bus or not self.source:
            raise ConfigurationError("EventBridge: the event bus and the source must be set")

    @property
    def name(self) -> str:
        return "eventbridge"

    def deliver(
        self, alerts: Sequence[StreamAlert], budget: Budget, on_delivered: OnDelivered
    ) -> dict[str, str]:
        failed: dict[str, str] = {}
        broken: str | None = None
        pairs = []
        for alert in alerts:
            entry = event_entry(alert, source=self.source, bus=self.bus)
            if _entry_size(entry) > MAX_ENTRY_BYTES:
                failed[alert.alert_id] = "the alert is too large for an EventBridge entry"
                continue
            pairs.append((alert, entry))
        for batch in _batches(pairs):
            if broken is not None:
                failed.update((alert.alert_id, broken) for alert, _ in batch)
                continue
            if budget.exhausted():
                failed.update((alert.alert_id, OUT_OF_TIME) for alert, _ in batch)
                continue
            why = self._put(batch, budget, on_delivered, failed)
            if why is not None:
                broken = f"not attempted: an earlier PutEvents request failed ({why})"
        return failed

    def _put(
        self,
        batch: list[tuple[StreamAlert, dict[str, Any]]],
        budget: Budget,
        on_delivered: OnDelivered,
        failed: dict[str, str],
    ) -> str | None:
        """Send one batch; record failures in ``failed``. Returns why the request as a
        whole failed, else None."""
        pending = batch
        retries = self.retry.start()
        while True:
            attempt = retries.failures + 1
            try:
                answer = self.events.put_events(Entries=[entry for _, entry in pending])
            except (ClientError, BotoCoreError) as exc:
                why = _describe(exc)
                failed.update((alert.alert_id, why) for alert, _ in pending)
                log.warning(
                    "PutEvents failed",
                    extra={"fields": {"bus": self.bus, "entries": len(pending), "error": why}},
                )
                return why
            results = answer.get("Entries", [])
            if len(results) != len(pending):
                why = (
                    f"PutEvents answered {len(results)} result(s) for {len(pending)} entries; "
                    "which were accepted is unknown"
                )
                failed.update((alert.alert_id, why) for alert, _ in pending)
                return why
            again = []
            for (alert, entry), result in zip(pending, results, strict=True):
                code = result.get("ErrorCode")
                if not code and result.get("EventId"):
                    on_delivered(alert)
                    continue
                why = f"{code or 'no EventId'}: {result.get('ErrorMessage', '')}".strip()
                if code in RETRYABLE_ENTRY_ERRORS:
                    again.append((alert, entry))
                    failed[alert.alert_id] = f"{why} (after {attempt} attempt(s))"
                else:
                    failed[alert.alert_id] = why
                log.warning(
                    "EventBridge entry failed",
                    extra={"fields": {"alert_id": alert.alert_id, "error": why}},
                )
            if not again:
                return None
            wait = retries.failed()
            if wait is None or not budget.may_wait(wait):
                return None
            retries.wait(wait)
            for alert, _ in again:
                failed.pop(alert.alert_id, None)
            pending = again
