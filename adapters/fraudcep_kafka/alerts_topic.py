"""Reading an alerts topic to its current end: the alert records the runner (or the PyFlink
job) wrote there, for a report over them (``fraudcep shadow report``).

The reader is ``read_committed`` (it sees what the runners committed, no aborted
transaction's records) and assigns every partition from its start, with no consumer group,
so it moves no one's offsets. A record that is not a JSON object is logged, counted and
skipped; a report must not stop at one bad record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fraudcep_kafka.rules_topic import RulesTopicReader

__all__ = ["AlertsTopicReader", "read_alerts"]

log = logging.getLogger("fraudcep.alerts")


class AlertsTopicReader(RulesTopicReader):
    """Hands each alert record of ``topic`` (a JSON object) to ``keep``."""

    what = "alerts"
    log = log

    def __init__(
        self,
        consumer_factory: Any,
        topic: str,
        keep: Callable[[dict[str, Any]], None],
        *,
        on_rejected: Any = None,
    ) -> None:
        super().__init__(consumer_factory, topic, None, on_rejected=on_rejected)
        self.keep = keep

    def _apply(self, msg: Any, source: str) -> bool:
        record = json.loads(msg.value() or b"null")
        if not isinstance(record, dict):
            raise ValueError(f"{source}: not an alert record (a JSON object)")
        self.keep(record)
        return False


def read_alerts(
    bootstrap: str,
    topic: str,
    keep: Callable[[dict[str, Any]], None],
    *,
    client_config: Mapping[str, Any] | None = None,
    timeout_s: float = 600.0,
) -> int:
    """Hand every alert record now in ``topic`` to ``keep``; returns the records skipped
    (not a JSON object). Raises ``RuntimeError`` when the topic is missing or cannot be read
    to its end within ``timeout_s``."""
    from confluent_kafka import Consumer

    rejected = 0

    def count() -> None:
        nonlocal rejected
        rejected += 1

    conf = {**(client_config or {}), "bootstrap.servers": bootstrap}
    reader = AlertsTopicReader(
        lambda extra: Consumer({**conf, **extra}), topic, keep, on_rejected=count
    )
    try:
        reader.catch_up(timeout_s)
    finally:
        reader.close()
    return rejected
