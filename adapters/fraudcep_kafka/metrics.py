"""Prometheus metrics of one runner, served over HTTP for scraping.

Each runner has its own registry (several runners in one process, e.g. in tests, do not
collide). Counters count what the runner committed or did; gauges describe the moment.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip
STAGE_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Finer below 100 ms than LATENCY_BUCKETS: the stages of an alert's latency are a few
milliseconds each, and their tails are what is looked for."""
PAUSE_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    10.0, 30.0,
)  # fmt: skip


def observe_many(histogram: Histogram, amounts: Collection[float]) -> None:
    """``histogram.observe(a)`` for each of ``amounts`` (a histogram without labels, or one
    child), in one step per bucket instead of one call per amount: the runner observes the
    latency of every record it commits, hundreds per transaction from a backlog. Falls back
    to ``observe`` where prometheus_client's histogram is not laid out as expected."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if (
        not amounts
        or bounds is None
        or buckets is None
        or total is None
        or len(bounds) != len(buckets)
    ):
        for amount in amounts:
            histogram.observe(amount)
        return
    ordered = sorted(amounts)
    below = 0
    for bound, bucket in zip(bounds, buckets, strict=True):
        # observe() counts an amount in the first bucket with amount <= bound
        upto = bisect_right(ordered, bound, lo=below)
        if upto > below:
            bucket.inc(upto - below)
            below = upto
    total.inc(sum(amounts))


class RunnerMetrics:
    """The runner's metrics (names start with ``fraudcep_``; see ``docs/kafka.md``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "fraudcep_records_consumed", "input records read (replays after a restart excluded)",
            ["partition"], registry=r,
        )  # fmt: skip
        self.processed = Counter(
            "fraudcep_records_processed", "valid records fed to the engine", registry=r
        )
        self.dead_lettered = Counter(
            "fraudcep_records_dead_lettered", "records written to the dead-letter topic",
            ["reason"], registry=r,
        )  # fmt: skip
        self.alerts = Counter(
            "fraudcep_alerts",
            "alerts written, per rule and mode (live: the alerts topic, "
            "shadow: the shadow alerts topic)",
            ["rule", "mode"],
            registry=r,
        )
        self.timeouts = Counter(
            "fraudcep_partial_matches_timed_out", "partial matches whose window closed",
            registry=r,
        )  # fmt: skip
        self.condition_errors = Counter(
            "fraudcep_condition_errors", "events a rule's condition raised on", ["rule"],
            registry=r,
        )  # fmt: skip
        self.overflows = Counter(
            "fraudcep_overflows", "state cap overflows (partial matches dropped, watermark forced)",
            ["kind"], registry=r,
        )  # fmt: skip
        self.sink_errors = Counter(
            "fraudcep_sink_errors",
            "Sink writes that failed (the transaction was aborted and replayed)",
            registry=r,
        )
        self.replayed = Counter(
            "fraudcep_records_replayed",
            "records re-read after a restart or rebalance to rebuild state (outputs suppressed)",
            registry=r,
        )
        self.transactions = Counter(
            "fraudcep_transactions", "Kafka transactions by outcome", ["outcome"], registry=r
        )
        self.rebalances = Counter(
            "fraudcep_rebalances", "partition assignments and revocations", ["kind"], registry=r
        )
        self.rule_changes = Counter(
            "fraudcep_rule_changes", "rule changes applied from the rules topic", registry=r
        )
        self.rule_errors = Counter(
            "fraudcep_rule_records_rejected", "invalid records on the rules topic", registry=r
        )
        self.list_changes = Counter(
            "fraudcep_list_changes", "list changes applied from the lists topic", registry=r
        )
        self.list_errors = Counter(
            "fraudcep_list_records_rejected", "invalid records on the lists topic", registry=r
        )
        self.lag = Gauge(
            "fraudcep_consumer_lag", "records in the partition not yet read (high watermark - "
            "position)", ["partition"], registry=r,
        )  # fmt: skip
        self.event_time_lag = Gauge(
            "fraudcep_event_time_lag_seconds", "wall clock minus the partition's watermark",
            ["partition"], registry=r,
        )  # fmt: skip
        self.assigned = Gauge(
            "fraudcep_assigned_partitions", "input partitions this runner owns", registry=r
        )
        self.partial_matches = Gauge(
            "fraudcep_live_partial_matches", "partial matches held in memory", registry=r
        )
        self.latency = Histogram(
            "fraudcep_processing_latency_seconds",
            "from a record's Kafka timestamp to the commit of the transaction holding its "
            "offset",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.fetch_delay = Histogram(
            "fraudcep_fetch_delay_seconds",
            "from an input record's Kafka timestamp to the fetch that handed it to the runner "
            "(with LogAppendTime on the input topic: broker append to fetch; payments only, "
            "records replayed to rebuild state excluded)",
            buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.alert_stage = Histogram(
            "fraudcep_alert_stage_seconds",
            "the runner's part of an alert's latency, by stage: fetch (of the record that "
            "completed the match) to the engine's answer (engine), that to the alert handed "
            "to the producer (produce), that to the commit of its transaction (commit)",
            ["stage"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.commit_time = Histogram(
            "fraudcep_commit_seconds", "time to commit one transaction", buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.checkpoint_time = Histogram(
            "fraudcep_checkpoint_seconds",
            "from taking one partition's checkpoint to its being saved (off the loop)",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoint_pause = Histogram(
            "fraudcep_checkpoint_pause_seconds",
            "time the loop stops for one checkpoint: the snapshot or delta, the sinks' "
            "checkpoint writes, handing it to the store",
            buckets=PAUSE_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoint_pause_max = Gauge(
            "fraudcep_checkpoint_pause_max_seconds",
            "the longest checkpoint pause of the loop since the runner started", registry=r,
        )  # fmt: skip
        self.checkpoints = Counter(
            "fraudcep_checkpoints", "checkpoints taken (full, delta) and made by compaction "
            "(compacted)", ["kind"], registry=r,
        )  # fmt: skip
        self.checkpoint_bytes = Gauge(
            "fraudcep_checkpoint_bytes", "snapshot size of the partition's latest checkpoint",
            ["partition"], registry=r,
        )  # fmt: skip
        self.chain_deltas = Gauge(
            "fraudcep_checkpoint_chain_deltas",
            "deltas after the full checkpoint the partition's next delta builds on",
            ["partition"], registry=r,
        )  # fmt: skip
        self.compaction_time = Histogram(
            "fraudcep_compaction_seconds",
            "time to merge a chain into a new full checkpoint and save it (worker process)",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.record_failures = Counter(
            "fraudcep_record_failures",
            "records whose processing raised (the runner rewound; see docs/kafka.md)",
            ["stage"], registry=r,
        )  # fmt: skip
        self.checkpoint_failures = Counter(
            "fraudcep_checkpoint_failures",
            "failures to snapshot, save, compact or move on a partition's state (retried)",
            ["stage"], registry=r,
        )  # fmt: skip
        self._server: Any = None

    def serve(self, address: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` (port 0: any free one); returns the address."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._server = server
        return host, int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
