"""What a runtime writes to Kafka for an alert and for a dead letter: one format, every runtime.

The Kafka runner and the PyFlink job write the same records, so that a consumer of the
alerts or dead-letter topic cannot tell which runtime wrote them: an alert's value is its
JSON (:func:`alert_value`), its key the alert id, its headers the rule, rule version and mode
(:func:`alert_headers`); a shadow rule's alerts go to their own topic
(:data:`SHADOW_ALERTS_TOPIC` by default, :func:`alert_topic`), so that nothing reading the
alerts topic acts on them; a dead letter is the input record's own key and value with headers
saying why and where it came from (:func:`dead_letter_headers`). Header values are UTF-8.
"""

from __future__ import annotations

import json

from fraudcep.alert import Alert

__all__ = [
    "BAD_EVENT_REASON",
    "HEADER_PREFIX",
    "LATE_REASON",
    "POISON_REASON",
    "SHADOW_ALERTS_TOPIC",
    "alert_headers",
    "alert_topic",
    "alert_value",
    "dead_letter_headers",
    "origin_headers",
]

HEADER_PREFIX = "fraudcep."
SHADOW_ALERTS_TOPIC = "fraud.alerts.shadow"
"""The default topic of shadow rules' alerts (docs/rules.md, "Shadow rules")."""
POISON_REASON = "processing_failed"
"""The dead-letter reason of a record whose processing failed ``max_record_failures`` times."""
BAD_EVENT_REASON = "bad_event"
"""The dead-letter reason of a payment the rules cannot read (a rule's key field missing)."""
LATE_REASON = "late"
"""The dead-letter reason of a payment at or below the watermark when it arrived."""


def alert_value(alert: Alert) -> bytes:
    """The alerts topic's record value: the alert as JSON."""
    return json.dumps(alert.to_dict(), separators=(",", ":"), default=str).encode()


def alert_headers(alert: Alert) -> list[tuple[str, bytes]]:
    """The alerts topic's record headers: the rule, its version and its mode (``live`` or
    ``shadow``), so a consumer can route or count alerts without parsing them."""
    return [
        (HEADER_PREFIX + "rule", alert.rule_id.encode()),
        (HEADER_PREFIX + "rule_version", str(alert.rule_version).encode()),
        (HEADER_PREFIX + "mode", alert.mode.encode()),
    ]


def alert_topic(alert: Alert, alerts_topic: str, shadow_alerts_topic: str) -> str:
    """The topic ``alert`` goes to: a shadow rule's alerts to ``shadow_alerts_topic``."""
    return shadow_alerts_topic if alert.shadow else alerts_topic


def dead_letter_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int, timestamp: int | None
) -> list[tuple[str, bytes]]:
    """A dead letter's headers: why (``reason``, a stable code, and ``detail``, for people) and
    where the record was read (``timestamp``: the record's, None when it has none)."""
    return [
        (HEADER_PREFIX + "reason", reason.encode()),
        (HEADER_PREFIX + "detail", detail.encode("utf-8", errors="replace")),
        *origin_headers(topic, partition, offset, timestamp),
    ]


def origin_headers(
    topic: str, partition: int, offset: int, timestamp: int | None
) -> list[tuple[str, bytes]]:
    """Where a record was read: ``fraudcep.topic``, ``partition``, ``offset`` and, when it has
    one, ``timestamp`` (a dead letter's headers end with these)."""
    headers = [
        (HEADER_PREFIX + "topic", topic.encode()),
        (HEADER_PREFIX + "partition", str(partition).encode()),
        (HEADER_PREFIX + "offset", str(offset).encode()),
    ]
    if timestamp is not None:
        headers.append((HEADER_PREFIX + "timestamp", str(timestamp).encode()))
    return headers
