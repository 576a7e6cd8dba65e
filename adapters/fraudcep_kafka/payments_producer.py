"""Writing payment events to Kafka, and creating the topic they go to.

:class:`PaymentProducer` keys every payment by its ``user_id``, so all the payments of a user
(and therefore of its cards) land in one partition, in the order they were sent: a keyed
engine reading a partition sees each user's (and card's) payments in order. Delivery
failures are kept and raised by :meth:`PaymentProducer.flush` rather than lost in a
callback. ``confluent_kafka`` is imported only here, so the rest of fraudcep runs without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

from confluent_kafka import Producer

from fraudcep.errors import FraudcepError

__all__ = ["DEFAULT_PRODUCER_CONFIG", "DeliveryError", "PaymentProducer"]

#: Settings :class:`PaymentProducer` starts from; its ``config`` overrides them.
#: Idempotence keeps each partition in send order even when librdkafka retries; a short
#: linger keeps the send-to-broker latency low (paced streams measure latency) while
#: still batching at high rates.
DEFAULT_PRODUCER_CONFIG: Final[Mapping[str, Any]] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
}
#: How long :meth:`PaymentProducer.send` serves delivery reports before retrying a send
#: refused because the local queue is full.
_QUEUE_FULL_POLL_S: Final = 0.05
_LISTED_ERRORS: Final = 5


class DeliveryError(FraudcepError):
    """Payments that Kafka did not accept (or did not acknowledge in time)."""

    def __init__(self, failed: int, errors: list[str], undelivered: int = 0) -> None:
        self.failed = failed
        self.errors = errors
        self.undelivered = undelivered
        parts = []
        if failed:
            shown = "; ".join(errors[:_LISTED_ERRORS])
            more = f" (and {failed - _LISTED_ERRORS} more)" if failed > _LISTED_ERRORS else ""
            parts.append(f"{failed} payment(s) failed: {shown}{more}")
        if undelivered:
            parts.append(f"{undelivered} payment(s) still unacknowledged at the flush timeout")
        super().__init__("; ".join(parts) or "delivery failed")


class PaymentProducer:
    """Sends payments (mappings) as compact JSON to one topic, keyed by ``user_id``.

    ``config`` is passed to :class:`confluent_kafka.Producer` on top of
    :data:`DEFAULT_PRODUCER_CONFIG` and ``bootstrap.servers``. ``sent`` counts the payments
    handed to the producer, ``delivered`` those the broker acknowledged, ``failed`` those it
    refused; :meth:`flush` raises :class:`DeliveryError` if any failed.
    """

    def __init__(
        self, bootstrap: str, topic: str, *, config: Mapping[str, Any] | None = None
    ) -> None:
        self.topic = topic
        settings = {**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap, **(config or {})}
        settings["error_cb"] = self._on_error
        self._producer = Producer(settings)
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self._errors: list[str] = []
        self._fatal: str | None = None

    @property
    def in_flight(self) -> int:
        """Payments sent but neither acknowledged nor failed yet."""
        return self.sent - self.delivered - self.failed

    def send(self, payment: Mapping[str, Any]) -> None:
        """Queue ``payment``; when the local queue is full, serve deliveries and retry."""
        if self._fatal is not None:
            raise DeliveryError(0, [self._fatal])
        key = str(payment["user_id"]).encode()
        value = json.dumps(payment, separators=(",", ":"), ensure_ascii=False).encode()
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                # Queue full: deliveries free room once acknowledged.
                self._producer.poll(_QUEUE_FULL_POLL_S)
        self.sent += 1
        self._producer.poll(0)  # serve delivery reports as they come, without waiting

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports for up to ``timeout`` seconds (an idle wait that works)."""
        self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every sent payment; returns ``delivered``.

        Raises :class:`DeliveryError` if any payment failed or some are still in flight
        after ``timeout`` seconds.
        """
        left = self._producer.flush(timeout)
        if self._errors or left or self._fatal is not None:
            errors = [self._fatal] if self._fatal is not None else []
            raise DeliveryError(self.failed, errors + self._errors, undelivered=left)
        return self.delivered

    def __enter__(self) -> PaymentProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if len(self._errors) < _LISTED_ERRORS:
            key = msg.key().decode(errors="replace") if msg.key() is not None else None
            self._errors.append(f"key {key}: {err.str()}")

    def _on_error(self, err: Any) -> None:
        # Most client-level errors (e.g. a broker down for a while) are retried by
        # librdkafka; only fatal ones (the idempotent producer gave up) lose payments.
        if err.fatal():
            self._fatal = f"fatal producer error: {err.str()}"
