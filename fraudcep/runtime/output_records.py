"""What a runtime writes to Kafka for an alert and for a dead letter: one format, every runtime.

The Kafka runner and the PyFlink job write the same records, so that a consumer of the
alerts or dead-letter topic cannot tell which runtime wrote them: an alert's value is its
JSON (:func:`alert_value`), its key the alert id, its headers the rule and rule version
(:func:`alert_headers`); a dead letter is the input record's own key and value with headers
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
    "alert_headers",
    "alert_value",
    "dead_letter_headers",
    "origin_headers",
]

HEADER_PREFIX = "fraudcep."
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
    """The alerts topic's record headers: the rule and its version."""
    return [
        (HEADER_PREFIX + "rule", alert.rule_id.encode()),
        (HEADER_PREFIX + "rule_version", str(alert.rule_version).encode()),
    ]


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
