"""Sinks: stores a runtime writes a partition's outputs to, besides its own output topic.

A runtime (the Kafka runner, a Lambda handler, ...) opens one :class:`PartitionSink` per
input partition it owns, at the offset its restored state starts from, and calls it in
offset order. Because a runtime restores its last checkpoint and replays after a crash, a
sink sees the same payments and the same alerts (same deterministic ``alert_id``) again; so
every sink must be idempotent, and it must make what it was handed durable when
:meth:`PartitionSink.flush` or :meth:`PartitionSink.checkpoint` returns, because the runtime
commits right after. The calls, in order:

- :meth:`~PartitionSink.payments` and :meth:`~PartitionSink.alerts` for every decoded
  payment and every alert, *also* during a replay of records whose outputs the runtime
  committed before (what a sink buffered was lost with the process that buffered it);
- :meth:`~PartitionSink.flush` before the runtime commits a transaction (outputs and input
  offsets): a sink that writes per commit (DynamoDB) writes here;
- :meth:`~PartitionSink.checkpoint` before the runtime saves a checkpoint at ``offset``: a
  sink that writes per checkpoint (Parquet files on S3) writes everything it got since the
  previous checkpoint here, named after the checkpoint the range starts from, so that a
  retry replaces the file. Checkpoint ids, not offsets, name ranges: an idle partition's
  event time can move (and emit alerts) with no new record, so two checkpoints may share
  an offset;
- :meth:`~PartitionSink.close` when the partition goes away or is rewound: unflushed output
  is dropped (the next owner replays it).

Sinks are named by URLs (``dynamodb://fraud_alerts``, ``s3://bucket/prefix``); packages
register a factory per URL scheme under the ``fraudcep.sinks`` entry-point group, so the core
and the runtimes know no storage service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from fraudcep.alert import Alert
from fraudcep.errors import FraudcepError
from fraudcep.runtime.plugins import load_plugin

SINKS_GROUP = "fraudcep.sinks"


class SinkError(FraudcepError):
    """A sink is misconfigured or could not make its output durable."""


@attrs.frozen
class SourcePartition:
    """The input partition a :class:`PartitionSink` receives the outputs of."""

    group: str
    """The runtime's name for its job (the Kafka consumer group)."""
    topic: str
    partition: int


class PartitionSink(Protocol):
    """One input partition's outputs, in offset order (see the module docstring)."""

    def payments(self, records: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """Decoded payments with their input offsets, in offset order."""

    def alerts(self, alerts: Sequence[Alert]) -> None:
        """Alerts, in the order the engine emitted them."""

    def flush(self) -> None:
        """Make durable what this sink writes per commit; raise :class:`SinkError` if not."""

    def checkpoint(self, offset: int, checkpoint_id: str) -> None:
        """Make durable what this sink writes per checkpoint, up to input ``offset``; the
        checkpoint about to be saved is ``checkpoint_id`` (the next range starts from it)."""

    def close(self) -> None:
        """Drop what is buffered and not durable (the partition is revoked or rewound)."""


class Sink(Protocol):
    """A store that opens one :class:`PartitionSink` per input partition."""

    wants_payments: bool
    """Whether the runtime should hand it payments (it always hands alerts)."""

    def open(
        self, source: SourcePartition, start_offset: int, start_checkpoint: str | None
    ) -> PartitionSink:
        """The partition's sink. The runtime's state (and replay) starts at ``start_offset``,
        from checkpoint ``start_checkpoint`` (None: no checkpoint yet, a fresh partition)."""

    def describe(self) -> str:
        """Where the sink writes, for logs."""

    def close(self) -> None:
        """Release clients and threads."""


def open_sink(url: str) -> Sink:
    """The sink a URL names, from the factory its scheme's package registered."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise SinkError(f"sink {url!r}: expected scheme://..., e.g. dynamodb://fraud_alerts")
    factory: Callable[[str], Sink] = load_plugin(SINKS_GROUP, scheme, what=f"sink {url!r}")
    return factory(url)
