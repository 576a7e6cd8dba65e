"""The exactly-once Kafka runner: ``payments.raw`` -> engines -> ``fraud.alerts``.

One consumer group shares the input partitions; each runner keeps one :class:`Engine` per
partition it owns. Every ``commit_interval`` the runner commits one Kafka transaction that
holds the alerts and dead letters produced since the last one *and* the input offsets
(``send_offsets_to_transaction``), so a ``read_committed`` reader sees each alert once.

Engine state is not in Kafka: it is checkpointed to a :class:`CheckpointStore` every
``checkpoint_interval`` (sooner when the state changed so much that the checkpoint would
hold up the loop; and at revocation, shutdown, rule changes and idle-time watermark moves).
A checkpoint is a delta of the keys changed since the partition's previous one, so a
partition's checkpoints form a chain from a full one, which a worker process compacts into
a new full one now and then. The committed offset's *metadata* names the checkpoint its
state derives from; the checkpoint is written before the transaction that names it. A
restarted (or new) owner of a partition loads that checkpoint's chain, re-reads the input
from the checkpoint's offset up to the committed offset with outputs suppressed (those were
committed already) and goes on: the engine is deterministic, so the rebuilt state is the
state the crashed runner had at the commit. See ``docs/kafka.md`` for the argument in full.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from types import FrameType
from typing import Any

import attrs
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from fraudcep import Alert, Engine, FraudcepError
from fraudcep.errors import ConfigurationError, EventError, SnapshotError
from fraudcep.payments.default_rules import default_rule_definitions
from fraudcep.payments.payment import InvalidRecord, decode_payment
from fraudcep.rules import (
    RuleDefinition,
    RuleSpecError,
    dump_rules,
    load_rule_file,
    load_rules,
)
from fraudcep.runtime import (
    Backoff,
    EngineOptions,
    Reconciliation,
    SideOutputs,
    reconcile,
    refusal,
)
from fraudcep.runtime.checkpoint import (
    DELTA,
    FULL,
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    id_offset,
    load_chain,
    open_checkpoint_store,
)
from fraudcep.runtime.list_sources import load_lists
from fraudcep.runtime.output_records import (
    BAD_EVENT_REASON,
    LATE_REASON,
    POISON_REASON,
    alert_headers,
    alert_topic,
    alert_value,
    dead_letter_headers,
)
from fraudcep.runtime.rule_records import RuleSet
from fraudcep.runtime.sink import PartitionSink, Sink, SinkError, SourcePartition, open_sink
from fraudcep_kafka.checkpoints import CheckpointWork, Compacted
from fraudcep_kafka.config import RunnerConfig
from fraudcep_kafka.lists_topic import ListSet, ListsTopicReader
from fraudcep_kafka.logs import fields
from fraudcep_kafka.metrics import RunnerMetrics, observe_many
from fraudcep_kafka.rules_topic import RulesTopicReader
from fraudcep_kafka.topics import ensure_topics

log = logging.getLogger("fraudcep.runner")

METADATA_PREFIX = "fraudcep/1 "
EXIT_OK = 0
EXIT_BAD_RULES = 2
"""The rule file names a list that neither ``--lists`` nor the lists topic holds (found once
the lists topic is read; the command line's code for a bad configuration)."""
EXIT_FATAL = 3
EXIT_STATE = 5
"""A partition's state could not be checkpointed, restored or moved on: the checkpoint store
failed ``max_checkpoint_failures`` times in a row (with back-off between), is unreachable,
or the state fails in a way no single record explains. See ``docs/kafka.md``."""
_STATE_BACKOFF = Backoff(base_s=1.0, cap_s=30.0, jitter=False)
"""Waits after a failed checkpoint save: 1, 2, 4 ... up to 30 s (its ``max_attempts`` is the
configuration's ``max_checkpoint_failures``). No jitter: one runner owns the partition."""
_RULES_POLL_S = 0.2
_IDLE_CHECK_S = 0.05
_GAUGES_S = 1.0
_TXN_TIMEOUT_S = 20.0
PRODUCER_RETRY_BACKOFF: dict[str, Any] = {"retry.backoff.ms": 2, "retry.backoff.max.ms": 10}
"""The transactional producer's retry backoff (``--kafka-config`` overrides it). The broker
answers ``EndTxn`` before its commit markers are written, so a transaction begun right after
a commit often has its ``AddOffsetsToTxn`` (``send_offsets_to_transaction``) or
``AddPartitionsToTxn`` refused with ``CONCURRENT_TRANSACTIONS``, and librdkafka sends it
again after ``retry.backoff.ms``: 100 ms by default, the loop blocked all the while (the
alert latency's p99 step, docs/performance.md). The Java client retries that case after
20 ms since KAFKA-5477; librdkafka grows the backoff from 2 ms up to 10 ms here."""
# librdkafka can block a transactional call far past its timeout when the coordinator it
# cached went away (librdkafka issues #5456, #5511, open in 2.16): e.g. a broker restart that
# leaves no broker up for a moment makes the producer re-bootstrap, which retires the broker
# object its group coordinator entry still names, and send_offsets_to_transaction waits for
# it forever (seen in most broker-restart test runs). A call blocked this long
# is treated as a crash: the process exits and its supervisor restarts it, which the
# exactly-once design makes safe.
STUCK_CALL_S = 2 * _TXN_TIMEOUT_S + 5


def producer_retry_backoff(kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`PRODUCER_RETRY_BACKOFF`, unless ``kafka_config`` (the user's settings, which
    the client gets anyway) sets either of its keys: then nothing, so that the two are
    never mixed (librdkafka refuses a ``retry.backoff.max.ms`` below ``retry.backoff.ms``)."""
    return (
        {} if PRODUCER_RETRY_BACKOFF.keys() & kafka_config.keys() else dict(PRODUCER_RETRY_BACKOFF)
    )


EXIT_STUCK = 4
DELTA_COST_PRIOR_S = 20e-6
"""What a delta checkpoint is taken to cost per record taken since the previous checkpoint,
until the runner has measured one (benchmarks/bench_state.py: 14-17 µs per changed key)."""
_EARLY_SPACING = 1
"""A checkpoint taken before the interval (to keep pauses short) waits at least this many
times the previous pause after the previous checkpoint (and _EARLY_MIN_S): should a delta
cost much more than its records explain, such checkpoints take at most half the loop's time.
A larger factor bounds that share further but lets more records pile up between deltas
while new keys pour in, and so lengthens the pauses it was meant to shorten."""
_EARLY_MIN_S = 0.05
_COMMIT_RETRY_S = 0.002  # a commit waiting for a checkpoint's save looks again this soon
_COMPACT_MIN_BYTES = 1 << 20
"""Deltas holding less than this are not compacted for their size (only for their number)."""
_COMPACT_BACKOFF = Backoff(base_s=2.0, cap_s=300.0, max_attempts=None, jitter=False)
"""Waits before compacting a chain again after a failure: 2, 4, 8 ... up to 300 s."""
_TXN_BACKOFF = Backoff(base_s=0.1, cap_s=2.0, max_attempts=None, jitter=False)
"""Waits between retries of a transactional call that failed with a retriable error (0.1,
0.2, ... 2 s): librdkafka says to retry those; a call that stays stuck is the watchdog's."""


class RunnerError(FraudcepError):
    """The runner cannot go on (fenced by another instance, a checkpoint is gone, ...)."""


def checkpoint_reference(checkpoint_id: str) -> str:
    """The committed-offset metadata that names a checkpoint."""
    return METADATA_PREFIX + checkpoint_id


def parse_reference(metadata: str | None) -> str | None:
    """The checkpoint id in committed-offset metadata, None when it names none."""
    if metadata and metadata.startswith(METADATA_PREFIX):
        return metadata[len(METADATA_PREFIX) :].strip() or None
    return None


@attrs.frozen
class _Link:
    """A checkpoint of a partition's chain, as the runner knows it."""

    checkpoint_id: str
    offset: int
    full: bool
    size: int
    """Of its snapshot, in bytes."""
    base: str
    """The full checkpoint a restore of it starts from (itself, if it is full)."""


@attrs.define(eq=False)
class _Pending:
    """A checkpoint taken and handed to the store, not yet referenced by a commit."""

    link: _Link
    saving: Future[float]
    required: bool
    """It covers a change no replay redoes (or the partition has no other checkpoint): the
    transaction holding that change waits for this save before it commits."""
    taken: float = attrs.Factory(time.monotonic)
    saved: bool = False


@attrs.define(eq=False)
class _Compaction:
    """A chain of checkpoints being merged into a new full one (off the loop)."""

    ids: tuple[str, ...]
    result: Future[Compacted]


@attrs.define(eq=False)
class _Partition:
    """What the runner knows about one input partition it owns."""

    number: int
    engine: Engine
    rules_text: str
    """The rule file the engine runs (what a checkpoint of it must carry)."""
    position: int | None
    """The next input offset to take (None: not known until the first record arrives)."""
    replay_until: int
    """Records below this offset were processed and committed before: outputs suppressed."""
    base_id: str | None
    """The checkpoint the committed state derives from."""
    chain: list[_Link] = attrs.Factory(list)
    """What the next delta builds on: a full checkpoint, then the deltas after the one it
    stands for, down to ``base_id`` (committed checkpoints only)."""
    pending: _Pending | None = None
    """The checkpoint taken after ``base_id``: at most one at a time (a sink that writes
    per checkpoint relies on one uncommitted range)."""
    need_full: bool = False  # the engine's record of changes no longer follows base_id
    records_since: int = 0  # records taken since the last checkpoint was taken
    early_after: float = 0.0  # no checkpoint before the interval until then
    compaction: _Compaction | None = None
    compact_failures: int = 0
    compact_after: float = 0.0  # no compaction before then (back-off after a failure)
    retired: list[tuple[str, list[str]]] = attrs.Factory(list)
    """(base, ids it made unnecessary), oldest first: once a commit references a chain
    starting at that base, those checkpoints are deleted."""
    pruned_base: str | None = None  # the base of the chain the last pruning kept
    dirty: bool = False  # taken records or produced output since the last commit
    changed: bool = False  # state changed since the last checkpoint
    force_checkpoint: bool = False
    rules_pending: bool = False  # apply the runner's rules once the replay is over
    last_checkpoint: float = attrs.Factory(time.monotonic)
    last_record: float = attrs.Factory(time.monotonic)
    idle_base: int | None = None  # the watermark when the last record arrived
    outputs: SideOutputs = attrs.Factory(SideOutputs)
    sinks: list[PartitionSink] | None = None
    """Open once the offset the state starts from is known (see ``fraudcep.runtime.sink``)."""
    payment_sinks: list[PartitionSink] = attrs.Factory(list)
    held: list[Any] = attrs.Factory(list)
    """Records fetched and not taken yet (see ``Runner._must_wait``)."""

    @property
    def replaying(self) -> bool:
        return self.position is not None and self.position < self.replay_until

    def to_sinks(self, alerts: Sequence[Alert]) -> None:
        if alerts and self.sinks:
            for sink in self.sinks:
                sink.alerts(alerts)

    def close_sinks(self) -> None:
        """Drop what the sinks buffered: whoever owns the partition next replays it."""
        for sink in self.sinks or ():
            try:
                sink.close()
            except Exception:  # closing drops a buffer; a failure there loses nothing
                log.warning("closing a sink failed", exc_info=True)
        self.sinks = None
        self.payment_sinks = []


class Runner:
    """``fraudcep run`` as an object: build it, call :meth:`run`, call :meth:`stop` to end.

    ``rules`` (optional) replaces loading ``config.rules``; ``store`` replaces the store
    named by ``config.checkpoints``; ``sinks`` replaces the sinks named by ``config.sink``.
    """

    def __init__(
        self,
        config: RunnerConfig,
        *,
        rules: Sequence[RuleDefinition] | None = None,
        store: CheckpointStore | None = None,
        sinks: Sequence[Sink] | None = None,
        metrics: RunnerMetrics | None = None,
        on_started: Callable[[Runner], None] | None = None,
    ) -> None:
        self.config = config
        self.lists = load_lists(*config.lists)
        """The named lists the rules read: the ``--lists`` files (or ``s3://`` prefixes), then
        the lists topic."""
        self.list_set = ListSet(self.lists)
        self._rules_deferred = False
        """The rule file names lists the ``--lists`` files lack: loaded again once the lists
        topic is read (it may hold them)."""
        if rules is None:
            if not config.rules:
                rules = default_rule_definitions()
            else:
                try:
                    rules = load_rule_file(config.rules, lists=self.lists)
                except RuleSpecError as exc:
                    unknown = any(p.missing_list is not None for p in exc.problems)
                    if not (config.lists_topic and unknown):
                        raise
                    rules, self._rules_deferred = [], True
        self.rule_set = RuleSet(rules, lists=self.lists)
        self.store = store if store is not None else open_store(config.checkpoints)
        self.sinks = list(sinks) if sinks is not None else open_sinks(config.sink)
        self.metrics = metrics if metrics is not None else RunnerMetrics()
        self.metrics_address: tuple[str, int] | None = None
        self._on_started = on_started
        self._stop = threading.Event()
        self._partitions: dict[int, _Partition] = {}
        self._parked: dict[int, _Partition] = {}
        self._latencies: list[int] = []  # Kafka timestamps (ms) of records in the open txn
        self._alerts_produced: list[float] = []  # when each alert of the open txn was produced
        self._fetched_at = 0.0  # wall clock (s) when the last fetch returned records
        self._outputs = 0  # records produced in the open transaction
        self._alerts_since: float | None = None  # when the open transaction got its first alert
        self._backlogged = False  # the last fetch filled a whole batch
        self._rules_text = ""
        self._consumer: Any = None
        self._consumer_fatal: KafkaError | None = None
        self._watchdog = _Watchdog(STUCK_CALL_S)
        self._producer_fatal: KafkaError | None = None
        self._producer: Any = None
        self._reader: RulesTopicReader | None = None
        self._lists_reader: ListsTopicReader | None = None
        self._failed = False  # stopping after a failure: nothing more is committed
        self._failing: dict[tuple[int, int], _RecordFailures] = {}
        """Records whose processing failed, by (partition, offset) (see _record_failed)."""
        self._state_failures: dict[int, int] = {}
        """Failures in a row to checkpoint (or move on) a partition's state."""
        self._isolating: set[int] = set()
        """Partitions whose state failed: each record is checked on its own until the next
        checkpoint succeeds, to find the one that causes it."""
        self._work = CheckpointWork(
            self.store, state_key=config.state_key, processes=config.compaction == "process"
        )
        self._compactions: list[tuple[_Partition, _Compaction]] = []
        self._prunes: list[Future[int]] = []
        self._delta_cost = DELTA_COST_PRIOR_S
        """Seconds a delta costs per record taken since the previous checkpoint (measured)."""
        self._longest_pause = 0.0
        self._commit_retry_at: float | None = None
        self._engine = EngineOptions.of(config)
        self._state_backoff = attrs.evolve(
            _STATE_BACKOFF, max_attempts=config.max_checkpoint_failures
        )

    # -- public API ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish: a last commit and checkpoint, then :meth:`run` returns."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the runner gracefully (call from the main thread)."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received, stopping", extra=fields(signal=signum))
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> int:
        """Run until :meth:`stop`; returns the exit code (0, or 3 for a fatal error).

        A stop asked for before or during the start (a signal at start-up) ends it at the
        next step of the start, with nothing to commit: exit code 0."""
        try:
            if not self._start():
                log.info("stopped while starting")
                self._close_quietly()
                return EXIT_OK
            self._loop()
            self._shutdown()
            return EXIT_OK
        except (RunnerError, KafkaException) as exc:
            log.error("runner stopped: %s", exc, extra=fields(error=str(exc)))
            self._close_quietly()
            return EXIT_FATAL
        except _Exit as exc:
            log.error("runner stopped: %s", exc.message, extra=fields(error=exc.message))
            self._close_quietly()
            return exc.code
        finally:
            self._work.close(wait=not self._failed)
            self.metrics.close()

    @property
    def assigned(self) -> list[int]:
        return sorted(self._partitions)

    # -- start and stop --------------------------------------------------------------------

    def _client_config(self, **extra: Any) -> dict[str, Any]:
        # librdkafka's own log lines stay on stderr: a Python `logger` here can deadlock a
        # blocking transactional call (it needs the GIL from librdkafka's threads).
        conf: dict[str, Any] = {"bootstrap.servers": self.config.bootstrap}
        conf.update(self.config.kafka_config)
        conf.update(extra)
        return conf

    def _start(self) -> bool:
        """Connect, load the rules, join the group; False when a stop came first."""
        c = self.config
        if self._stop.is_set():
            return False
        if c.metrics_address:
            self.metrics_address = self.metrics.serve(c.metrics_address)
            log.info(
                "metrics endpoint up",
                extra=fields(url=f"http://{self.metrics_address[0]}:{self.metrics_address[1]}/metrics"),
            )  # fmt: skip
        if c.create_topics:
            ensure_topics(self._client_config(), c)
        if c.lists_topic:  # before the rules topic: its rules may name the topic's lists
            self._lists_reader = ListsTopicReader(
                lambda conf: Consumer(self._client_config(**conf)),
                c.lists_topic,
                self.list_set,
                on_rejected=self.metrics.list_errors.inc,
            )
            self._lists_reader.catch_up()
        if c.lists or len(self.lists):
            log.info("lists loaded", extra=fields(lists=self.lists.versions()))
        if self._rules_deferred:
            assert c.rules is not None
            try:
                self.rule_set.file_rules = {
                    d.id: d for d in load_rule_file(c.rules, lists=self.lists)
                }
            except RuleSpecError as exc:
                raise _Exit(EXIT_BAD_RULES, str(exc)) from None
        if c.rules_topic:
            self._reader = RulesTopicReader(
                lambda conf: Consumer(self._client_config(**conf)),
                c.rules_topic,
                self.rule_set,
                on_rejected=self.metrics.rule_errors.inc,
            )
            self._reader.catch_up()
        if self._stop.is_set():
            return False
        definitions = self.rule_set.effective()
        if not definitions:
            raise RunnerError(
                "no rules: give a rule file (--rules) or publish rules to the rules topic "
                f"({c.rules_topic or 'disabled'})"
            )
        self._rules_text = dump_rules(definitions)
        log.info("rules loaded", extra=fields(rules=[d.id for d in definitions]))
        self._producer = Producer(
            self._client_config(
                **{
                    "transactional.id": c.transactional_id,
                    "transaction.timeout.ms": c.transaction_timeout,
                    "enable.idempotence": True,
                    "linger.ms": 2,
                    **producer_retry_backoff(c.kafka_config),
                    "error_cb": self._on_producer_error,
                }
            )
        )
        try:
            self._retrying(
                "init_transactions",
                lambda: self._producer.init_transactions(_TXN_TIMEOUT_S),
                stoppable=True,
            )
        except _Stopped:
            return False
        self._consumer = self._new_consumer()
        self._producer.begin_transaction()
        log.info(
            "runner started",
            extra=fields(group=c.group_id, instance=c.instance_id, input=c.input_topic,
                         alerts=c.alerts_topic, checkpoints=self.store.describe()),
        )  # fmt: skip
        if self._on_started is not None:
            self._on_started(self)
        return True

    def _new_consumer(self) -> Any:
        """A consumer in the group, subscribed to the input topic."""
        c = self.config
        membership = {"group.instance.id": c.instance_id} if c.static_membership else {}
        consumer = Consumer(
            self._client_config(
                **membership,
                **{
                    "group.id": c.group_id,
                    "session.timeout.ms": c.session_timeout,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": c.auto_offset_reset,
                    "enable.partition.eof": False,
                    "fetch.wait.max.ms": 25,
                    "error_cb": self._on_consumer_error,
                },
            )
        )
        consumer.subscribe(
            [c.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        return consumer

    def _on_consumer_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._consumer_fatal = err
        log.warning("consumer: %s", err.str(), extra=fields(code=err.name(), fatal=err.fatal()))

    def _on_producer_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._producer_fatal = err
        log.warning("producer: %s", err.str(), extra=fields(code=err.name(), fatal=err.fatal()))

    def _replace_consumer(self) -> None:
        """A fatal consumer error (e.g. a static member fenced after its session timed out
        while the broker was away) makes the consumer unusable; librdkafka's advice is a new
        one. Uncommitted work is aborted and the new consumer rejoins the group."""
        err = self._consumer_fatal
        self._consumer_fatal = None
        log.warning("replacing the consumer after a fatal error", extra=fields(error=str(err)))
        self._abort_and_rewind("consumer failed", lost=list(self._partitions))
        old, self._consumer = self._consumer, None
        try:
            with self._watchdog.watching("closing the failed consumer"):
                old.close()
        except (KafkaException, RuntimeError):
            log.debug("closing the failed consumer", exc_info=True)
        self._consumer = self._new_consumer()

    def _shutdown(self) -> None:
        log.info("stopping: final commit and checkpoints")
        for st in self._partitions.values():
            st.force_checkpoint = True
        if self._consumer_fatal is not None:  # stopped before it was replaced: commit nothing
            self._abort_and_rewind("stopping with a failed consumer")
        elif self._commit_final():
            for st in self._partitions.values():
                self._drop_unused_base(st)
        self._consumer.close()  # revokes the partitions (nothing left to commit)
        for reader in (self._reader, self._lists_reader):
            if reader is not None:
                reader.close()
        self._producer.flush(10)
        self._close_sinks()
        log.info("runner stopped")

    def _close_quietly(self) -> None:
        """Close after a failure: nothing more is committed (the revocation that closing
        the consumer causes drops the partitions; their next owner replays them)."""
        self._failed = True
        if self._producer is not None:
            try:  # so that readers need not wait for the transaction timeout
                with self._watchdog.watching("abort_transaction"):
                    self._producer.abort_transaction(5)
            except Exception:  # fenced, not started, or the broker away: it times out
                log.debug("abort on the way out failed", exc_info=True)
        for client in (self._consumer, self._reader, self._lists_reader):
            if client is None:
                continue
            try:
                client.close()
            except Exception:  # already failing; the first error is the one reported
                log.debug("close failed", exc_info=True)
        self._close_sinks()

    def _close_sinks(self) -> None:
        for st in [*self._partitions.values(), *self._parked.values()]:
            st.close_sinks()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # stopping anyway; what was durable stays durable
                log.warning("closing a sink failed", exc_info=True)

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        c = self.config
        commit_s = c.commit_interval / 1000
        alert_delay_s = min(c.alert_commit_delay, c.commit_interval) / 1000
        next_commit = time.monotonic() + commit_s
        next_rules = next_idle = next_gauges = time.monotonic()
        while not self._stop.is_set():
            if self._producer_fatal is not None:
                raise RunnerError(
                    f"fatal producer error: {self._producer_fatal.str()} (another runner with "
                    f"instance id {c.instance_id!r} may have taken over)"
                )
            if self._consumer_fatal is not None:
                self._replace_consumer()
            timeout = max(
                0.0, min(self._commit_due(next_commit, alert_delay_s) - time.monotonic(), 0.1)
            )
            messages = self._fetch(c.batch_size, timeout)
            # A full batch means more is waiting: catching up, throughput matters more
            # than the latency of single alerts, so they wait for the commit interval.
            self._backlogged = len(messages) >= c.batch_size
            if messages or any(st.held for st in self._partitions.values()):
                try:
                    self._take(messages)
                except _RecordFailed as failure:
                    self._record_failed(failure)
                except _BatchFailed as failure:
                    self._batch_failed(failure)
                except SinkError as exc:
                    self._sink_failed(exc)
                except _Rewind as rewind:
                    self._abort_and_rewind(rewind.reason)
                except _StateFailed as failure:
                    self._state_failed(failure)
            if self._consumer_fatal is not None:
                continue  # replaced first: nothing more is committed with the dead consumer
            now = time.monotonic()
            self._checkpoint_work(now)
            if now >= next_rules:
                next_rules = now + _RULES_POLL_S
                if self._lists_reader is not None and self._lists_reader.poll():
                    self._lists_changed()
                if self._reader is not None:
                    self._poll_rules()
            if now >= next_idle:
                next_idle = now + _IDLE_CHECK_S
                self._advance_idle(now)
            if now >= self._commit_due(next_commit, alert_delay_s):
                next_commit = now + commit_s
                self._commit()
            if now >= next_gauges:
                next_gauges = now + _GAUGES_S
                self._update_gauges()

    def _commit_due(self, next_commit: float, alert_delay_s: float) -> float:
        """When the open transaction is due: alerts do not wait for the commit interval
        (unless the runner is working through a backlog); a commit that waits for a
        checkpoint's save is tried again soon."""
        due = next_commit
        if self._alerts_since is not None and not self._backlogged:
            due = min(due, self._alerts_since + alert_delay_s)
        if self._commit_retry_at is not None:
            due = min(due, self._commit_retry_at)
        return due

    def _fetch(self, batch_size: int, timeout: float) -> list[Any]:
        """Up to ``batch_size`` records, waiting at most ``timeout`` for the first one.

        ``consume(n, timeout)`` alone waits until it has ``n`` records or the timeout passed,
        so at moderate rates every record would sit in the client's queue until the next
        commit was due; taking what is there and waiting only when nothing is keeps the
        time from arrival to processing at the cost of a fetch.
        """
        messages: list[Any] = self._consumer.consume(batch_size, 0)
        if not messages and timeout > 0:
            messages = self._consumer.consume(1, timeout)
            if messages and batch_size > 1:
                messages.extend(self._consumer.consume(batch_size - 1, 0))
        if messages:
            self._fetched_at = time.time()
        return messages

    def _take(self, messages: list[Any]) -> None:
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal() or err.code() == KafkaError._FATAL:
                    # librdkafka hands a fatal consumer error to the application as an error
                    # event among the records (code _FATAL, without the fatal flag), not to
                    # error_cb: the consumer is dead, nothing it fetched is taken
                    self._consumer_fatal = err
                    return
                log.warning("consumer error", extra=fields(error=err.str(), code=err.code()))
                continue
            by_partition[msg.partition()].append(msg)
        for number, waiting in list(self._partitions.items()):
            if waiting.held:
                by_partition[number][:0] = waiting.held
                waiting.held = []
        for number, records in by_partition.items():
            st = self._partitions.get(number)
            if st is None:  # revoked since it was fetched
                continue
            size = self._chunk_size()
            for start in range(0, len(records), size):
                if self._must_wait(st, min(size, len(records) - start)):
                    st.held = records[start:]
                    break
                self._feed(st, records[start : start + size])
                if start + size < len(records):
                    self._between_chunks(st)

    def _must_wait(self, st: _Partition, records: int) -> bool:
        """Whether the partition's next ``records`` wait: its checkpoint under way is not
        committed yet, and its next delta would have more changes with them than
        ``checkpoint_pause_goal`` allows. Taking them now would make that delta, and the
        loop's pause for it, longer; the other partitions go on meanwhile."""
        goal = self.config.checkpoint_pause_goal / 1000
        return (
            goal > 0
            and st.pending is not None
            and not st.replaying
            and st.records_since > 0
            and (st.records_since + records) * self._delta_cost > goal
        )

    def _chunk_size(self) -> int:
        """How many records of a partition to take before looking whether it is due for a
        checkpoint: about what a delta of ``checkpoint_pause_goal`` covers, so that a large
        batch (a backlog, a restart) does not make the next delta longer than that."""
        goal = self.config.checkpoint_pause_goal / 1000
        if goal <= 0:
            return self.config.batch_size
        return max(100, int(goal / self._delta_cost))

    def _between_chunks(self, st: _Partition) -> None:
        """Within a batch: note a finished save and take a checkpoint that is due. A failure
        of the partition's state ends the batch (:class:`_StateFailed`, see the loop)."""
        if st.position is None or st.replaying:
            return
        self._collect(st)
        if st.pending is None and self._checkpoint_due(st, time.monotonic()):
            self._take_checkpoint(st)

    def _feed(self, st: _Partition, records: list[Any]) -> None:
        """Decode and process a partition's records one at a time, in offset order.

        Every way one record can fail is that record's: not a payment (dead-lettered with
        the decoder's reason), a payment the rules cannot read (``bad_event``), or
        processing, its alerts, or (while the partition is being isolated) the state it
        leaves raising anything else: :class:`_RecordFailed`, see :meth:`_record_failed`."""
        c = self.config
        taken: list[tuple[Any, Any, bool]] = []  # (message, payment, replayed)
        consumed = 0
        if st.sinks is None:
            start = st.position if st.position is not None else records[0].offset()
            self._open_sinks(st, start, None)
        to_payment_sinks: list[tuple[int, Any]] | None = [] if st.payment_sinks else None
        fetched_ms = self._fetched_at * 1000  # (records held back were fetched before it)
        fetch_delays: list[float] = []
        for msg in records:
            offset = msg.offset()
            if st.position is not None and offset < st.position:
                continue  # delivered again after a seek
            replay = offset < st.replay_until
            st.position = offset + 1
            if not replay:
                consumed += 1
            failing = self._failing.get((st.number, offset)) if self._failing else None
            if failing is not None and failing.count >= c.max_record_failures:
                self._skip_poison(st, msg, failing, replay)
                continue
            try:
                payment = decode_payment(msg.value(), max_bytes=c.max_record_bytes)
            except InvalidRecord as exc:
                if not replay:
                    self._dead_letter(msg, exc.reason, exc.detail)
                continue
            except Exception as exc:  # the decoder's own failure is still this record's
                raise _RecordFailed(st.number, msg, "decode", exc) from exc
            taken.append((msg, payment, replay))
            if to_payment_sinks is not None:
                to_payment_sinks.append((offset, payment))
            if not replay:
                ts_type, ts = msg.timestamp()
                if ts_type != 0:
                    self._latencies.append(ts)
                    fetch_delays.append(max(0.0, fetched_ms - ts) / 1000)
        if to_payment_sinks:
            for sink in st.payment_sinks:
                sink.payments(to_payment_sinks)
        origin: dict[int, Any] = {}
        replayed = processed = 0
        live = False
        # The records after the replayed ones (a prefix, by offset) go through the engine in
        # one call, after them: what a call costs is most of what a payment costs. While the
        # partition is isolated, every record goes on its own.
        first_live = 0
        if st.number not in self._isolating:
            while first_live < len(taken) and taken[first_live][2]:
                first_live += 1
        else:
            first_live = len(taken)
        for msg, payment, replay in taken[:first_live]:
            if not replay and st.rules_pending:
                self._apply_rules(st)
            live = live or not replay
            done = self._process_one(st, msg, payment, replay)
            if done is None:
                continue  # refused: dead-lettered
            alerts, values = done
            if replay:
                # Committed to Kafka before, so not produced again; but the sinks lost what
                # they had buffered with the process, so they see it once more (idempotently).
                st.to_sinks(alerts)
                st.outputs.clear()
                replayed += 1
            else:
                origin[id(payment)] = msg
                if alerts:
                    self._emit_timed(st, alerts, values)
                processed += 1
        if first_live < len(taken):
            processed += self._process_batch(st, taken[first_live:], origin)
            live = True
        observe_many(self.metrics.fetch_delay, fetch_delays)
        if replayed:
            self.metrics.replayed.inc(replayed)
        if st.rules_pending and not st.replaying:
            self._apply_rules(st)
        if live:
            self._side_outputs(st, origin)
            self.metrics.processed.inc(processed)
        if consumed:
            self.metrics.consumed.labels(str(st.number)).inc(consumed)
        st.records_since += len(taken)
        st.dirty = True
        st.changed = True
        st.last_record = time.monotonic()
        st.idle_base = st.engine.watermark

    def _process_batch(
        self, st: _Partition, taken: list[tuple[Any, Any, bool]], origin: dict[int, Any]
    ) -> int:
        """Payments not replayed through the engine in one call, their alerts produced and
        those the rules cannot read dead-lettered, as :meth:`_process_one` does one at a time
        (``Engine.process_many`` is ``process`` per payment). Returns how many were processed.
        Any other failure cannot be pinned on a record here: :class:`_BatchFailed`, after
        which the partition's records go one at a time until it is checkpointed again."""
        if st.rules_pending:
            self._apply_rules(st)
        for msg, payment, _ in taken:
            origin[id(payment)] = msg
        refused: list[tuple[Any, EventError]] = []
        try:
            alerts = st.engine.process_many(
                [payment for _, payment, _ in taken],
                refused=lambda payment, exc: refused.append((payment, exc)),
            )
        except Exception as exc:
            raise _BatchFailed(st.number, taken[0][0], "process", exc) from exc
        try:
            values = [alert_value(alert) for alert in alerts]
        except Exception as exc:
            raise _BatchFailed(st.number, taken[0][0], "alerts", exc) from exc
        for payment, error in refused:
            self._dead_letter(origin.pop(id(payment)), BAD_EVENT_REASON, str(error))
        if alerts:
            self._emit_timed(st, alerts, values)
        return len(taken) - len(refused)

    def _process_one(
        self, st: _Partition, msg: Any, payment: Any, replay: bool
    ) -> tuple[list[Alert], list[bytes]] | None:
        """One payment through the engine: its alerts and their record values. A payment
        the rules cannot read is dead-lettered (None); any other failure is the record's
        (:class:`_RecordFailed`)."""
        try:
            alerts = st.engine.process(payment)
        except EventError as exc:  # refused before it changed anything
            if not replay:
                self._dead_letter(msg, BAD_EVENT_REASON, str(exc))
            return None
        except Exception as exc:
            raise _RecordFailed(st.number, msg, "process", exc) from exc
        try:
            values = [alert_value(alert) for alert in alerts]
        except Exception as exc:
            raise _RecordFailed(st.number, msg, "alerts", exc) from exc
        if st.number in self._isolating:
            try:
                self._probe_state(st)
            except Exception as exc:
                raise _RecordFailed(st.number, msg, "state", exc) from exc
        return alerts, values

    def _probe_state(self, st: _Partition) -> None:
        """What a checkpoint and a restore of the partition's engine would do, on a copy:
        snapshot, restore, close every window and render the alerts. Raises what they raise.
        The full snapshot restarts the engine's record of changes, so the partition's next
        checkpoint is a full one."""
        engine = st.engine
        st.need_full = True
        blob = engine.snapshot()
        copy = Engine.restore(blob, engine.rules, **self._engine_options(SideOutputs()))
        for alert in copy.flush():
            alert_value(alert)

    def _skip_poison(
        self, st: _Partition, msg: Any, failing: _RecordFailures, replay: bool
    ) -> None:
        """A record that failed ``max_record_failures`` times: not processed again, but
        dead-lettered, and the partition is checkpointed in the transaction that holds the
        dead letter, so that no replay reaches the record again. That holds for a record
        found while replaying too (one whose state broke a later checkpoint): it had been
        processed, never dead-lettered, before. Only a crash after another partition's
        commit took the dead letter but before this partition's checkpoint can repeat it."""
        if st.pending is not None:
            # The skip must be checkpointed before its dead letter is committed, and the
            # checkpoint under way was taken before it: redo the work from the last commit,
            # where no checkpoint is under way (none is taken while a failing record lies
            # ahead, see _checkpoint_due).
            raise _Rewind(f"poison record {st.number}@{msg.offset()} reached while a "
                          "checkpoint was being saved")  # fmt: skip
        detail = f"failed {failing.count} times the same way: {failing.detail}"
        log.warning(
            "poison record dead-lettered and skipped",
            extra=fields(partition=st.number, offset=msg.offset(), replay=replay, error=detail),
        )
        self._dead_letter(msg, POISON_REASON, detail)
        st.changed = st.force_checkpoint = True

    def _emit(
        self, st: _Partition, alerts: list[Alert], values: Sequence[bytes] | None = None
    ) -> None:
        """Produce ``alerts`` (``values``: their record values, when already rendered)."""
        st.to_sinks(alerts)
        live, shadow = self.config.alerts_topic, self.config.shadow_alerts_topic
        rendered = list(values) if values is not None else [alert_value(a) for a in alerts]
        for alert, value in zip(alerts, rendered, strict=True):
            topic = alert_topic(alert, live, shadow)
            self._produce(topic, alert.alert_id.encode(), value, alert_headers(alert))
            self.metrics.alerts.labels(alert.rule_id, alert.mode).inc()
        if alerts and self._alerts_since is None:
            self._alerts_since = time.monotonic()

    def _emit_timed(self, st: _Partition, alerts: list[Alert], values: Sequence[bytes]) -> None:
        """:meth:`_emit` for alerts of a record just processed, timing the stages from the
        record's fetch to the alerts' produce (``fraudcep_alert_stage_seconds``); the commit
        stage is observed when their transaction commits."""
        engine_done = time.time()
        self._emit(st, alerts, values)
        produced = time.time()
        n = len(alerts)
        stage = self.metrics.alert_stage
        observe_many(stage.labels("engine"), [max(0.0, engine_done - self._fetched_at)] * n)
        observe_many(stage.labels("produce"), [produced - engine_done] * n)
        self._alerts_produced.extend([produced] * n)

    def _dead_letter(self, msg: Any, reason: str, detail: str) -> None:
        ts_type, ts = msg.timestamp()
        headers = dead_letter_headers(
            reason, detail, msg.topic(), msg.partition(), msg.offset(), ts if ts_type else None
        )
        self._produce(self.config.dead_letter_topic, msg.key(), msg.value(), headers)
        self.metrics.dead_lettered.labels(reason).inc()

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
        self._producer.poll(0)
        self._outputs += 1

    def _side_outputs(self, st: _Partition, origin: dict[int, Any]) -> None:
        out = st.outputs
        for late in out.late:
            msg = origin.get(id(late.event))
            detail = f"event time {late.timestamp} <= watermark {late.watermark}"
            if msg is not None:
                self._dead_letter(msg, LATE_REASON, detail)
            else:  # released by a watermark move: no record at hand
                log.warning("late event", extra=fields(partition=st.number, detail=detail))
        for failure in out.errors:
            self.metrics.condition_errors.labels(failure.rule_id).inc()
            log.warning(
                "condition raised",
                extra=fields(partition=st.number, rule=failure.rule_id, error=failure.error),
            )
        for overflow in out.overflows:
            self.metrics.overflows.labels(overflow.kind).inc()
            log.warning(
                "state cap overflow",
                extra=fields(partition=st.number, kind=overflow.kind, rule=overflow.rule_id,
                             dropped=overflow.dropped),
            )  # fmt: skip
        self.metrics.timeouts.inc(out.timeout_count)
        out.clear()

    # -- idle partitions -------------------------------------------------------------------

    def _advance_idle(self, now: float) -> None:
        """Let the event time of partitions without records follow the wall clock.

        Without this, the last events of a partition would wait for a later event that may
        never come. The move is not a function of the input, so it is checkpointed (with
        its outputs' transaction) to keep restores deterministic. It starts from the
        watermark of the partition's last record (or of its restored state), and only when
        the partition has nothing left to read (:meth:`_nothing_to_read`).
        """
        idle_ms = self.config.idle_timeout
        for st in self._partitions.values():
            if st.replaying or st.rules_pending or st.pending is not None:
                continue  # a move must be checkpointed, one checkpoint under way at a time
            quiet = int((now - st.last_record) * 1000)
            due = st.engine.next_due
            if quiet < idle_ms or due is None or not self._nothing_to_read(st):
                continue
            base = st.idle_base if st.idle_base is not None else due - 1
            target = base + quiet
            if target < due:
                continue
            try:
                alerts = st.engine.advance_watermark(target)
                values = [alert_value(alert) for alert in alerts]
            except Exception as exc:  # no record at hand: the partition's state failed
                self._state_failed(_StateFailed(st.number, "advance", exc))
                return  # rewound: the partitions are not the ones this loop iterates
            self._emit(st, alerts, values)
            self._side_outputs(st, {})
            st.dirty = st.changed = st.force_checkpoint = True

    def _nothing_to_read(self, st: _Partition) -> bool:
        """Whether the partition holds no record the runner has not taken, by the consumer's
        cached end offset (unknown, before the first fetch answered: not known to be idle).
        A partition with records waiting is not idle, however long they take to arrive (a
        restarted runner fetching its partitions, a loaded machine): moving its event time
        on would make them late."""
        if st.position is None:
            return False
        try:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.config.input_topic, st.number), cached=True
            )
        except KafkaException:
            return False
        return bool(0 <= high <= st.position)

    # -- commits and checkpoints -----------------------------------------------------------

    def _commit(self, *, wait: bool = False) -> bool:
        """Commit the open transaction (outputs + offsets); True when it committed.

        Each partition's offset names the newest of its checkpoints that is saved: the one
        under way once its save is done, else the one committed before. A checkpoint that
        covers a change no replay redoes (``required``) must be saved before the transaction
        holding that change commits: until then the commit waits (False; the loop goes on
        and tries again). ``wait``: block on saves instead (revocation, shutdown)."""
        c = self.config
        now = time.monotonic()
        offsets = []
        committing: list[tuple[_Partition, str]] = []
        try:
            for st in list(self._partitions.values()):
                for sink in st.sinks or ():
                    sink.flush()  # durable before the alerts' transaction commits
                if st.position is None or st.replaying:
                    continue  # nothing taken yet / state not back at the committed offset yet
                self._collect(st, wait=wait)
                if st.pending is None and self._checkpoint_due(st, now):
                    self._take_checkpoint(st)
                    if wait:
                        self._collect(st, wait=True)
                pending = st.pending
                if pending is not None and pending.saved:
                    reference = pending.link.checkpoint_id
                elif pending is not None and pending.required:
                    self._commit_retry_at = now + _COMMIT_RETRY_S
                    return False
                elif st.base_id is not None:
                    reference = st.base_id
                else:  # no checkpoint yet, none under way: nothing changed, nothing to name
                    continue
                if not st.dirty and reference == st.base_id:
                    continue
                offsets.append(
                    TopicPartition(
                        c.input_topic,
                        st.number,
                        st.position,
                        metadata=checkpoint_reference(reference),
                    )
                )
                committing.append((st, reference))
        except SinkError as exc:
            self._sink_failed(exc)
            return False
        except _StateFailed as failure:
            self._state_failed(failure)
            return False
        self._commit_retry_at = None
        if not offsets and not self._outputs:
            return True
        started = time.perf_counter()
        try:
            if offsets:
                group = self._consumer.consumer_group_metadata()
                self._retrying(
                    "send_offsets_to_transaction",
                    lambda: self._producer.send_offsets_to_transaction(
                        offsets, group, _TXN_TIMEOUT_S
                    ),
                )
            self._retrying(
                "commit_transaction", lambda: self._producer.commit_transaction(_TXN_TIMEOUT_S)
            )
        except _Abortable as exc:
            if exc.code == KafkaError.FENCED_INSTANCE_ID and self._consumer_fatal is None:
                # another consumer took over the static membership: the consumer is dead
                # (its fatal error may not have been polled yet) and is replaced
                self._consumer_fatal = KafkaError(exc.code, str(exc), fatal=True)
            self._abort_and_rewind(str(exc))
            return False
        done = time.time()
        self.metrics.commit_time.observe(time.perf_counter() - started)
        self.metrics.transactions.labels("committed").inc()
        observe_many(self.metrics.latency, [max(0.0, done - ts / 1000) for ts in self._latencies])
        self._latencies.clear()
        observe_many(
            self.metrics.alert_stage.labels("commit"),
            [max(0.0, done - t) for t in self._alerts_produced],
        )
        self._alerts_produced.clear()
        self._outputs = 0
        self._alerts_since = None
        for st, reference in committing:
            st.dirty = False
            if st.pending is not None and st.pending.link.checkpoint_id == reference:
                self._committed(st)
        self._producer.begin_transaction()
        return True

    def _commit_final(self) -> bool:
        """Commit everything and checkpoint the partitions marked for it, waiting for the
        saves (revocation, shutdown). One checkpoint is under way per partition at most, so
        a partition whose checkpoint was under way is checkpointed in a second commit."""
        for _ in range(2):
            if not self._commit(wait=True):
                return False
            if not any(
                st.force_checkpoint and st.changed and st.position is not None
                and not st.replaying
                for st in self._partitions.values()
            ):  # fmt: skip
                break
        return True

    def _checkpoint_due(self, st: _Partition, now: float) -> bool:
        """Whether to take a checkpoint of ``st`` now (none being under way): it has none;
        it changed and is marked for one; or it changed and the interval passed, or the
        delta it would take would pause the loop for ``checkpoint_pause_goal`` by the cost
        measured per record. While a record known to fail lies ahead, only marked ones: a
        poison record's skip must be checkpointed, and it cannot wait for another."""
        if not st.changed:
            return False
        if st.base_id is None or st.force_checkpoint:
            return True
        if any(p == st.number and st.position is not None and o >= st.position
               for p, o in self._failing):  # fmt: skip
            return False
        c = self.config
        if now - st.last_checkpoint >= c.checkpoint_interval / 1000:
            return True
        goal = c.checkpoint_pause_goal / 1000
        return goal > 0 and now >= st.early_after and st.records_since * self._delta_cost >= goal

    def _take_checkpoint(self, st: _Partition) -> None:
        """Snapshot the partition (a delta after its chain, else a full snapshot) and hand
        the checkpoint to the store (saved off the loop, see :meth:`_collect`). The time
        this takes on the loop is ``fraudcep_checkpoint_pause_seconds``."""
        assert st.position is not None and st.pending is None
        started = time.perf_counter()
        records = st.records_since
        full = st.need_full or not st.chain or st.base_id is None
        try:
            snapshot = None
            if not full:
                try:
                    snapshot = st.engine.snapshot_delta()
                except ConfigurationError:  # restored from a format-1 snapshot: no record
                    full = True  # of changes to follow
            if snapshot is None:
                snapshot = st.engine.snapshot()
        except Exception as exc:
            raise _StateFailed(st.number, "snapshot", exc) from exc
        snapshot_s = time.perf_counter() - started
        checkpoint = Checkpoint(
            group=self.config.group_id,
            topic=self.config.input_topic,
            partition=st.number,
            offset=st.position,
            snapshot=snapshot,
            rules=st.rules_text,
            kind=FULL if full else DELTA,
            parent=None if full else st.base_id,
            base=None if full else st.chain[0].checkpoint_id,
        )
        for sink in st.sinks or ():
            sink.checkpoint(st.position, checkpoint.checkpoint_id)  # before the save
        link = _Link(
            checkpoint.checkpoint_id,
            st.position,
            full,
            len(snapshot),
            checkpoint.checkpoint_id if full else st.chain[0].checkpoint_id,
        )
        required = st.force_checkpoint or st.base_id is None
        st.pending = _Pending(link, self._work.save(checkpoint), required)
        st.changed = st.force_checkpoint = st.need_full = False
        st.records_since = 0
        st.last_checkpoint = time.monotonic()
        pause = time.perf_counter() - started
        st.early_after = st.last_checkpoint + max(_EARLY_MIN_S, _EARLY_SPACING * pause)
        if not full and records > 0:
            # quick to rise, slow to fall: a delta that cost more than expected (a loaded
            # machine, keys with more state) shortens the next ones at once
            sample = snapshot_s / records
            weight = 0.5 if sample > self._delta_cost else 0.1
            self._delta_cost += weight * (sample - self._delta_cost)
        self.metrics.checkpoint_pause.observe(pause)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "checkpoint taken",
                extra=fields(partition=st.number, checkpoint=checkpoint.checkpoint_id,
                             kind=checkpoint.kind, records=records, bytes=len(snapshot),
                             snapshot_ms=round(snapshot_s * 1000, 2),
                             pause_ms=round(pause * 1000, 2)),
            )  # fmt: skip
        if pause > self._longest_pause:
            self._longest_pause = pause
            self.metrics.checkpoint_pause_max.set(pause)
        self.metrics.checkpoints.labels(FULL if full else DELTA).inc()

    def _collect(self, st: _Partition, *, wait: bool = False) -> None:
        """Take note of the save of the partition's checkpoint under way, if it is over
        (``wait``: wait for it); a failed save is a :class:`_StateFailed`."""
        pending = st.pending
        if pending is None or pending.saved or not (wait or pending.saving.done()):
            return
        try:
            pending.saving.result()
        except Exception as exc:
            raise _StateFailed(st.number, "save", exc) from exc
        pending.saved = True
        st.dirty = True  # the next commit names it
        goal = self.config.checkpoint_pause_goal / 1000
        if goal > 0 and st.records_since * self._delta_cost >= goal / 2:
            # the next checkpoint waits for this one's commit, and the state keeps changing:
            # commit now rather than at the interval, or the next delta grows past the goal
            self._commit_retry_at = time.monotonic()
        self._state_failures.pop(st.number, None)
        self._isolating.discard(st.number)
        self.metrics.checkpoint_time.observe(time.monotonic() - pending.taken)
        self.metrics.checkpoint_bytes.labels(str(st.number)).set(pending.link.size)

    def _committed(self, st: _Partition) -> None:
        """A commit named the partition's checkpoint under way: it joins the chain (a full
        one starts a new chain); then pruning and compaction."""
        pending = st.pending
        assert pending is not None
        st.pending = None
        link = pending.link
        st.base_id = link.checkpoint_id
        if link.full:
            st.retired.append((link.checkpoint_id, [x.checkpoint_id for x in st.chain]))
            st.chain = [link]
        else:
            st.chain.append(link)
        self.metrics.chain_deltas.labels(str(st.number)).set(len(st.chain) - 1)
        self._forget_failures(st.number, link.offset)
        self._prune(st, link.base)
        self._maybe_compact(st)

    def _prune(self, st: _Partition, base: str) -> None:
        """The committed chain now starts at ``base``: delete (off the loop) the partition's
        checkpoints made for offsets below it, and those it made unnecessary (compacted or
        replaced chains, which may share its offset)."""
        if base == st.pruned_base:
            return
        ends = [n for n, (b, _) in enumerate(st.retired) if b == base]
        cut = ends[-1] + 1 if ends else 0
        doomed = [one for _, ids in st.retired[:cut] for one in ids if one != base]
        del st.retired[:cut]
        st.pruned_base = base
        c = self.config
        self._prunes.append(
            self._work.prune(c.group_id, c.input_topic, st.number, id_offset(base), doomed)
        )

    def _drop_unused_base(self, st: _Partition) -> None:
        """At shutdown: a compacted checkpoint that no committed chain starts from yet (the
        next delta would have named it) is of no use to the next start; delete it."""
        committed = next((x.base for x in st.chain if x.checkpoint_id == st.base_id), None)
        if st.chain and st.chain[0].checkpoint_id not in (committed, st.base_id):
            c = self.config
            self._prunes.append(self._work.prune(
                c.group_id, c.input_topic, st.number, 0, [st.chain[0].checkpoint_id]
            ))  # fmt: skip

    def _maybe_compact(self, st: _Partition) -> None:
        """Start merging the partition's chain into a new full checkpoint (in the worker
        process) once it holds ``compact_after_deltas`` deltas, or deltas of more than
        ``compact_after_percent`` of the base's bytes (and at least 1 MiB)."""
        c = self.config
        deltas = st.chain[1:]
        if not deltas or st.compaction is not None or time.monotonic() < st.compact_after:
            return
        size = sum(x.size for x in deltas)
        by_count = 0 < c.compact_after_deltas <= len(deltas)
        by_size = (
            c.compact_after_percent > 0
            and size >= _COMPACT_MIN_BYTES
            and size * 100 >= c.compact_after_percent * st.chain[0].size
        )
        if not (by_count or by_size):
            return
        ids = tuple(x.checkpoint_id for x in st.chain)
        try:
            result = self._work.compact(c.group_id, c.input_topic, st.number, ids)
        except Exception as exc:  # the worker could not be started: try again later
            self._compaction_failed(st, exc)
            return
        st.compaction = _Compaction(ids, result)
        self._compactions.append((st, st.compaction))
        log.info(
            "compacting checkpoints",
            extra=fields(partition=st.number, deltas=len(deltas), bytes=size,
                         base_bytes=st.chain[0].size),
        )  # fmt: skip

    def _collect_compactions(self) -> None:
        """Take the compactions that are over: the new full checkpoint replaces the part
        of the chain it merges (if the chain still has it), and the next delta names it as
        its base. One that is of no use any more (the partition was rewound, revoked or
        started a new chain) is deleted."""
        c = self.config
        for st, job in [x for x in self._compactions if x[1].result.done()]:
            self._compactions.remove((st, job))
            if st.compaction is job:
                st.compaction = None
            try:
                done = job.result.result()
            except Exception as exc:
                self._compaction_failed(st, exc)
                continue
            st.compact_failures = 0
            self.metrics.compaction_time.observe(done.seconds)
            self.metrics.checkpoints.labels("compacted").inc()
            current = self._partitions.get(st.number) is st or self._parked.get(st.number) is st
            merged = len(done.merged)
            if not current or tuple(x.checkpoint_id for x in st.chain[:merged]) != done.merged:
                self._prunes.append(self._work.prune(
                    c.group_id, c.input_topic, st.number, 0, [done.checkpoint_id]
                ))  # fmt: skip
                continue
            link = _Link(done.checkpoint_id, done.offset, True, done.size, done.checkpoint_id)
            st.retired.append((done.checkpoint_id, list(done.merged)))
            st.chain = [link, *st.chain[merged:]]
            self.metrics.chain_deltas.labels(str(st.number)).set(len(st.chain) - 1)
            log.info(
                "checkpoint chain compacted",
                extra=fields(partition=st.number, checkpoint=done.checkpoint_id,
                             merged=merged, bytes=done.size, seconds=round(done.seconds, 3)),
            )  # fmt: skip

    def _compaction_failed(self, st: _Partition, exc: BaseException) -> None:
        """A chain that does not hold together (a checkpoint of it missing or corrupt) makes
        the partition's next checkpoint a full one, which the next commit names instead;
        anything else (the store, the worker process) is tried again with back-off."""
        self.metrics.checkpoint_failures.labels("compact").inc()
        detail = f"{type(exc).__name__}: {str(exc)[:500]}"
        if isinstance(exc, CheckpointError | SnapshotError):
            st.need_full = st.changed = True
            log.error(
                "checkpoint chain unusable: the next checkpoint is a full one",
                extra=fields(partition=st.number, error=detail),
            )
            return
        st.compact_failures += 1
        delay = _COMPACT_BACKOFF.delay(st.compact_failures - 1)
        st.compact_after = time.monotonic() + delay
        log.warning(
            "compacting checkpoints failed: trying again later",
            extra=fields(partition=st.number, error=detail, retry_in=delay),
        )

    def _checkpoint_work(self, now: float) -> None:
        """What the loop does for checkpoints between records: note finished saves and
        compactions, apply rule changes that waited for a save, and take the checkpoints
        that are due (before the interval when the state changed enough to make a long
        pause; see :meth:`_checkpoint_due`)."""
        try:
            for st in list(self._partitions.values()):
                if st.position is None or st.replaying:
                    continue
                self._collect(st)
                if st.pending is None and st.rules_pending:
                    self._apply_rules(st)
                if st.pending is None and self._checkpoint_due(st, now):
                    self._take_checkpoint(st)
        except _StateFailed as failure:
            self._state_failed(failure)
        except SinkError as exc:
            self._sink_failed(exc)
        if self._compactions:
            self._collect_compactions()
        for prune in [p for p in self._prunes if p.done()]:
            self._prunes.remove(prune)
            error = prune.exception()
            if error is not None:  # old checkpoints are harmless; say so and go on
                log.warning("pruning checkpoints failed", extra=fields(error=str(error)))

    # -- failures --------------------------------------------------------------------------

    def _record_failed(self, failure: _RecordFailed) -> None:
        """One record's processing failed: count it (per record and signature, in memory)
        and rewind to the last commit. The engine may have been left half-way through the
        record, so nothing of the open transaction is kept; the records before it are done
        again. At ``max_record_failures`` failures in a row the same way, the record is
        skipped when it comes again (:meth:`_skip_poison`)."""
        limit = self.config.max_record_failures
        key = (failure.partition, failure.offset)
        error = failure.error
        signature = f"{failure.stage}:{type(error).__name__}"
        detail = f"{failure.stage}: {type(error).__name__}: {str(error)[:500]}"
        entry = self._failing.get(key)
        if entry is None or entry.signature != signature:
            entry = self._failing[key] = _RecordFailures(signature, detail)
        entry.count += 1
        entry.detail = detail
        self.metrics.record_failures.labels(failure.stage).inc()
        # A failure can show at a later record than the one that causes it (a match
        # completed by an innocent payment holds a bad one): until the partition's next
        # checkpoint, each record is checked on its own, so that the first one that leaves
        # a state that fails takes the blame.
        self._isolating.add(failure.partition)
        log.error(
            "record failed: rewinding to the last commit",
            extra=fields(partition=failure.partition, offset=failure.offset, stage=failure.stage,
                         error=detail, failures=entry.count, limit=limit),
            exc_info=error if entry.count == 1 else None,
        )  # fmt: skip
        self._abort_and_rewind(f"record {failure.partition}@{failure.offset} failed")

    def _batch_failed(self, failure: _BatchFailed) -> None:
        """Processing a batch of a partition's records failed, which record's fault is not
        known: rewind to the last commit and take the partition's records one at a time
        (isolating it) until its next checkpoint, where a record that fails again is found
        and counted (:meth:`_record_failed`). Nothing is counted against a record here."""
        error = failure.error
        detail = f"{failure.stage}: {type(error).__name__}: {str(error)[:500]}"
        self.metrics.record_failures.labels("batch").inc()
        self._isolating.add(failure.partition)
        log.error(
            "a batch of records failed: rewinding to the last commit, then one at a time",
            extra=fields(partition=failure.partition, offset=failure.offset,
                         stage=failure.stage, error=detail),
            exc_info=error,
        )  # fmt: skip
        self._abort_and_rewind(f"a batch from {failure.partition}@{failure.offset} failed")

    def _forget_failures(self, partition: int, below: int) -> None:
        """Drop the failure counts of records no replay can reach any more (below the
        offset of the partition's committed checkpoint)."""
        for key in [k for k in self._failing if k[0] == partition and k[1] < below]:
            del self._failing[key]

    def _sink_failed(self, exc: SinkError) -> None:
        """A sink could not take or store output: it may be down, so replay from the last
        commit after a pause (the outputs are redone, idempotently)."""
        self.metrics.sink_errors.inc()
        log.error("sink failed: replaying from the last commit", extra=fields(error=str(exc)))
        self._abort_and_rewind(f"sink failed: {exc}")
        self._stop.wait(_SINK_BACKOFF_S)  # a store that is down should not be hammered

    def _state_failed(self, failure: _StateFailed) -> None:
        """A partition's state could not be checkpointed (snapshot or save) or moved on by
        the wall clock. Counted per partition; the runner rewinds to the last commit, backs
        off (a store failure: 1, 2, 4 ... up to 30 s), and while the state fails checks each
        record on its own (:meth:`_probe_state`) so that one that causes it is found and
        dealt with as a failing record. At ``max_checkpoint_failures`` in a row it exits
        with :data:`EXIT_STATE`: loudly, for its supervisor and alerting."""
        c = self.config
        number, stage, error = failure.partition, failure.stage, failure.error
        failures = self._state_failures.get(number, 0) + 1
        self._state_failures[number] = failures
        if stage != "save":
            self._isolating.add(number)
        self.metrics.checkpoint_failures.labels(stage).inc()
        detail = f"{stage}: {type(error).__name__}: {str(error)[:500]}"
        log.error(
            "partition state failed: rewinding to the last commit",
            extra=fields(partition=number, stage=stage, error=detail, failures=failures,
                         limit=c.max_checkpoint_failures),
            exc_info=error if failures == 1 else None,
        )  # fmt: skip
        if self._state_backoff.gives_up(failures):
            raise _Exit(
                EXIT_STATE,
                f"{c.input_topic}[{number}]: its state failed {failures} times in a row "
                f"({detail}); exiting with code {EXIT_STATE}",
            )
        self._abort_and_rewind(f"state of partition {number} failed ({stage})")
        if stage == "save":
            self._stop.wait(self._state_backoff.delay(failures - 1))

    def _retrying(self, what: str, call: Callable[[], Any], *, stoppable: bool = False) -> Any:
        """Call a transactional producer API the way librdkafka documents: retry retriable
        errors, report abortable ones, stop on fatal ones. ``stoppable``: a stop ends the
        retries (:class:`_Stopped`)."""
        retries = _TXN_BACKOFF.start()
        while True:
            if stoppable and self._stop.is_set():
                raise _Stopped(what)
            try:
                with self._watchdog.watching(what):
                    return call()
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    raise RunnerError(
                        f"{what}: fatal producer error: {err.str()} (another runner with "
                        f"instance id {self.config.instance_id!r} may have taken over)"
                    ) from None
                if err.txn_requires_abort():
                    raise _Abortable(f"{what}: {err.str()}", err.code()) from None
                if err.retriable() or err.code() in _RETRY_CODES:
                    log.warning("retrying", extra=fields(call=what, error=err.str()))
                    wait = retries.failed()  # never None: stuck calls are the watchdog's
                    if wait is None:
                        raise _Abortable(f"{what}: {err.str()}") from None
                    retries.wait(wait)
                    continue
                raise _Abortable(f"{what}: {err.str()}", err.code()) from None

    def _abort_and_rewind(self, reason: str, *, lost: Sequence[int] = ()) -> None:
        """Abort the open transaction and bring every partition back to its committed
        state (the in-memory state ran ahead of it)."""
        log.warning("aborting transaction", extra=fields(reason=reason))
        try:
            self._retrying(
                "abort_transaction", lambda: self._producer.abort_transaction(_TXN_TIMEOUT_S)
            )
        except _Abortable as exc:
            raise RunnerError(f"could not abort the transaction: {exc}") from None
        self.metrics.transactions.labels("aborted").inc()
        self._outputs = 0
        self._alerts_since = None
        self._latencies.clear()
        self._alerts_produced.clear()
        if self._consumer_fatal is not None:  # the consumer that is replaced cannot seek
            lost = list(self._partitions)  # the new one's assignment restores them
        for number in lost:
            gone = self._partitions.pop(number, None)
            if gone is not None:
                gone.close_sinks()
        self._drop_parked()
        if self._partitions:
            tps = [TopicPartition(self.config.input_topic, p) for p in self._partitions]
            committed = self._consumer.committed(tps, timeout=_TXN_TIMEOUT_S)
            for tp in committed:
                self._partitions[tp.partition].close_sinks()
                st = self._restore(tp.partition, tp.offset, tp.metadata)
                self._partitions[tp.partition] = st
                self._consumer.seek(
                    TopicPartition(self.config.input_topic, tp.partition, self._start_offset(st))
                )
        self._producer.begin_transaction()

    # -- rebalancing -----------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.metrics.rebalances.labels("assigned").inc()
        committed = consumer.committed(partitions, timeout=_TXN_TIMEOUT_S) if partitions else []
        assignment = []
        for tp in committed:
            st = self._restore(tp.partition, tp.offset, tp.metadata)
            self._partitions[tp.partition] = st
            assignment.append(TopicPartition(tp.topic, tp.partition, self._start_offset(st)))
        self._drop_parked()  # those not taken back by _restore
        consumer.assign(assignment)
        log.info("partitions assigned", extra=fields(partitions=self.assigned))
        self.metrics.assigned.set(len(self._partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.metrics.rebalances.labels("revoked").inc()
        numbers = [tp.partition for tp in partitions]
        if consumer is not self._consumer:  # a replaced consumer closing: nothing of it is ours
            return
        if self._failed:  # closing after a failure: commit nothing more
            for number in numbers:
                gone = self._partitions.pop(number, None)
                if gone is not None:
                    gone.close_sinks()
            return
        for number in numbers:
            st = self._partitions.get(number)
            if st is not None:
                st.force_checkpoint = True
        committed = self._commit_final()
        for number in numbers:
            st = self._partitions.pop(number, None)
            if st is not None and committed and not st.replaying:
                st.held = []  # fetched again from its position if it comes back
                self._parked[number] = st
            elif st is not None:
                st.close_sinks()
        log.info("partitions revoked", extra=fields(partitions=numbers, committed=committed))
        self.metrics.assigned.set(len(self._partitions))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        numbers = [tp.partition for tp in partitions]
        if consumer is not self._consumer:
            return
        self.metrics.rebalances.labels("lost").inc()
        log.warning("partitions lost", extra=fields(partitions=numbers))
        self._abort_and_rewind("partitions lost", lost=numbers)
        self.metrics.assigned.set(len(self._partitions))

    def _start_offset(self, st: _Partition) -> int:
        if st.position is not None:
            return st.position
        return OFFSET_BEGINNING if self.config.auto_offset_reset == "earliest" else OFFSET_END

    def _restore(self, number: int, committed: int, metadata: str | None) -> _Partition:
        """The state of a partition as of its committed offset."""
        c = self.config
        reference = parse_reference(metadata)
        parked = self._parked.get(number)
        if parked is not None and parked.position == committed and parked.base_id == reference:
            del self._parked[number]
            parked.replay_until = committed
            parked.last_record = time.monotonic()
            return parked
        where = f"{c.input_topic}[{number}]"
        if committed < 0 or committed == OFFSET_INVALID:
            log.info("partition starts afresh", extra=fields(partition=number))
            return self._fresh(number, None)
        if reference is None:
            log.warning(
                "committed offset names no checkpoint: starting with empty state",
                extra=fields(partition=number, offset=committed),
            )
            return self._fresh(number, committed)
        outputs = SideOutputs()
        started = time.perf_counter()
        try:
            chain = load_chain(
                self.store, c.group_id, c.input_topic, number, reference, state_key=c.state_key
            )
            checkpoint = chain[-1]
            definitions = load_rules(
                checkpoint.rules, source=f"checkpoint {reference}", lists=self.lists
            )
            engine = Engine.restore(
                chain[0].snapshot,
                [d.rule for d in definitions],
                deltas=[x.snapshot for x in chain[1:]],
                **self._engine_options(outputs),
            )
        except OSError as exc:  # the store, not the checkpoint: stop rather than reset
            raise _Exit(
                EXIT_STATE,
                f"{where}: cannot read checkpoint {reference} from {self.store.describe()}: {exc}",
            ) from None
        except Exception as exc:  # a checkpoint that cannot be used, however it fails
            why = str(exc) if isinstance(exc, FraudcepError) else f"{type(exc).__name__}: {exc}"
            if c.missing_checkpoint != "reset":
                raise RunnerError(
                    f"{where}: cannot restore checkpoint {reference} named by the committed "
                    f"offset {committed}: {why}. Restore the checkpoint store, or start with "
                    "--missing-checkpoint reset to continue with empty state"
                ) from None
            log.error(
                "checkpoint unusable: continuing with empty state",
                extra=fields(partition=number, checkpoint=reference, error=why),
            )
            return self._fresh(number, committed)
        base = chain[0].checkpoint_id
        links = [
            _Link(x.checkpoint_id, x.offset, x.kind == FULL, len(x.snapshot), base) for x in chain
        ]
        st = _Partition(
            number=number,
            engine=engine,
            rules_text=checkpoint.rules,
            position=checkpoint.offset,
            replay_until=committed,
            base_id=reference,
            chain=links,
            rules_pending=True,
            idle_base=engine.watermark,
            outputs=outputs,
        )
        compacted = chain[0].stands_for != base
        if compacted:  # what the base merged is not needed
            st.retired.append((base, [chain[0].stands_for]))
        del chain
        self.metrics.chain_deltas.labels(str(number)).set(len(links) - 1)
        self._open_sinks(st, checkpoint.offset, reference)
        log.info(
            "partition restored",
            extra=fields(
                partition=number, checkpoint=reference, replay=committed - checkpoint.offset,
                base=base, compacted=compacted, deltas=len(links) - 1,
                seconds=round(time.perf_counter() - started, 3),
            ),
        )  # fmt: skip
        if not st.replaying:
            self._apply_rules(st)
        return st

    def _fresh(self, number: int, position: int | None) -> _Partition:
        outputs = SideOutputs()
        engine = Engine([], **self._engine_options(outputs))
        self._reconcile(engine, number)
        st = _Partition(
            number=number,
            engine=engine,
            rules_text=self._rules_text,
            position=position,
            replay_until=-1 if position is None else position,
            base_id=None,
            force_checkpoint=True,
            changed=True,
            outputs=outputs,
        )
        if position is not None:
            self._open_sinks(st, position, None)
        return st

    def _open_sinks(self, st: _Partition, start_offset: int, start_checkpoint: str | None) -> None:
        source = SourcePartition(self.config.group_id, self.config.input_topic, st.number)
        st.sinks = [sink.open(source, start_offset, start_checkpoint) for sink in self.sinks]
        st.payment_sinks = [
            ps for sink, ps in zip(self.sinks, st.sinks, strict=True) if sink.wants_payments
        ]

    def _drop_parked(self) -> None:
        for st in self._parked.values():
            st.close_sinks()
        self._parked.clear()

    def _engine_options(self, outputs: SideOutputs) -> dict[str, Any]:
        """An engine's keyword arguments: the configuration's engine options, its side
        outputs collected in ``outputs``."""
        return self._engine.engine_kwargs(**outputs.callbacks())

    # -- rules -----------------------------------------------------------------------------

    def _poll_rules(self) -> None:
        assert self._reader is not None
        before = dict(self.rule_set.topic_rules)
        if not self._reader.poll():
            return
        definitions = self.rule_set.effective()
        try:
            # a checkpoint carries the rules as text: they must load back
            load_rules(dump_rules(definitions), source="rules topic", lists=self.lists)
            for st in self._partitions.values():
                refused = refusal(st.engine, definitions)
                if refused is not None:
                    raise RunnerError(refused)
        except FraudcepError as exc:
            self.rule_set.topic_rules = before
            self.metrics.rule_errors.inc()
            log.error("rule change refused", extra=fields(error=str(exc)))
            return
        self._rules_text = dump_rules(definitions)
        self.metrics.rule_changes.inc()
        for st in self._partitions.values():
            st.rules_pending = True
            if not st.replaying:
                self._apply_rules(st)

    def _lists_changed(self) -> None:
        """A list changed: the next payments are judged against it. List contents are not
        in checkpoints, so a replay after a restart uses the lists as they are then; a
        checkpoint of every partition that took records under the old entries keeps the
        replays that could span the change short."""
        self.metrics.list_changes.inc()
        for st in self._partitions.values():
            st.force_checkpoint = True

    def _apply_rules(self, st: _Partition) -> None:
        """Bring the partition's engine to the runner's rules; a change the engine refuses
        (an older version than a restored checkpoint's, say) leaves it on the rules it has."""
        if st.pending is not None:
            return  # a change is checkpointed, one checkpoint under way at a time: after it
        st.rules_pending = False
        done = self._reconcile(st.engine, st.number)
        if done.refused is not None:
            return
        st.rules_text = self._rules_text
        if done.changed:
            st.changed = st.force_checkpoint = st.dirty = True
            log.info("rules applied", extra=fields(partition=st.number, changes=list(done.changes)))

    def _reconcile(self, engine: Engine, partition: int) -> Reconciliation:
        """Bring ``engine`` to the runner's rules; a refusal is counted and logged."""
        done = reconcile(engine, self.rule_set.effective())
        if done.refused is not None:
            self.metrics.rule_errors.inc()
            log.error("rule change refused", extra=fields(partition=partition, error=done.refused))
        return done

    # -- gauges ----------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        now_ms = time.time() * 1000
        for st in self._partitions.values():
            label = str(st.number)
            wm = st.engine.watermark
            if wm is not None:
                self.metrics.event_time_lag.labels(label).set(max(0.0, (now_ms - wm) / 1000))
            if st.position is not None:
                try:
                    _low, high = self._consumer.get_watermark_offsets(
                        TopicPartition(self.config.input_topic, st.number), cached=True
                    )
                    if high >= 0:
                        self.metrics.lag.labels(label).set(max(0, high - st.position))
                except KafkaException:
                    pass
        # engines count their live partial matches as they change: this reads a counter each
        live = sum(st.engine.stats.live_partial_matches for st in self._partitions.values())
        self.metrics.partial_matches.set(live)


class _Watchdog:
    """Ends the process when a blocking Kafka call outlives ``limit_s`` (see STUCK_CALL_S)."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._call: tuple[str, float] | None = None
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, what: str) -> Iterator[None]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="kafka-watchdog", daemon=True)
            self._thread.start()
        self._call = (what, time.monotonic())
        try:
            yield
        finally:
            self._call = None

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            call = self._call
            if call is not None and time.monotonic() - call[1] > self.limit_s:
                log.critical(
                    "a Kafka call is stuck: exiting so that the runner is restarted",
                    extra=fields(call=call[0], seconds=round(time.monotonic() - call[1])),
                )
                for handler in logging.getLogger("fraudcep").handlers:
                    handler.flush()
                os._exit(EXIT_STUCK)


class _Abortable(Exception):
    """A transactional call failed in a way that aborting the transaction recovers from
    (``code``: the error's)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class _Stopped(Exception):
    """A stop was asked for while a call was being retried at start-up."""


class _Exit(Exception):
    """The runner must stop with exit ``code`` (see :data:`EXIT_STATE`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _ProcessingFailed(Exception):
    """Processing records of ``partition`` from ``msg`` on failed at ``stage`` with
    ``error``."""

    def __init__(self, partition: int, msg: Any, stage: str, error: Exception) -> None:
        super().__init__(partition, msg.offset(), stage, error)
        self.partition = partition
        self.offset: int = msg.offset()
        self.stage = stage
        self.error = error


class _RecordFailed(_ProcessingFailed):
    """Processing the record ``msg`` of ``partition`` failed at ``stage`` with ``error``."""


class _BatchFailed(_ProcessingFailed):
    """Processing a batch of records of ``partition`` (the first: ``msg``) failed at
    ``stage`` with ``error``; which record caused it is not known."""


class _Rewind(Exception):
    """The open transaction must be aborted and every partition rewound (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _StateFailed(Exception):
    """A partition's state failed at ``stage`` (snapshot, save, advance), not one record."""

    def __init__(self, partition: int, stage: str, error: Exception) -> None:
        super().__init__(partition, stage, error)
        self.partition = partition
        self.stage = stage
        self.error = error


@attrs.define
class _RecordFailures:
    """How often a record failed in a row the same way (``signature``: stage and type)."""

    signature: str
    detail: str
    count: int = 0


_RETRY_CODES = frozenset({KafkaError._TIMED_OUT})
_SINK_BACKOFF_S = 1.0


def open_sinks(urls: Sequence[str]) -> list[Sink]:
    """The sinks the URLs name (``dynamodb://``, ``s3://``, ...)."""
    try:
        return [open_sink(url) for url in urls]
    except FraudcepError as exc:
        raise RunnerError(str(exc)) from None


def open_store(location: str) -> CheckpointStore:
    """The checkpoint store a location names (a directory, ``file://``, ``s3://``, ...)."""
    try:
        return open_checkpoint_store(location)
    except FraudcepError as exc:
        raise RunnerError(str(exc)) from None
