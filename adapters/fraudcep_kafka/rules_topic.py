"""Following the rules topic: the rule file, overridden rule by rule by a compacted topic.

Every runner reads the whole rules topic itself (partitions assigned, no consumer group:
each instance needs every rule). What a record holds and how records override the rule file
is the runtime kit's (:mod:`fraudcep.runtime.rule_records`, shared with the PyFlink job).

A record that cannot be taken, for whatever reason, is refused: it is logged with its key,
partition, offset and the reason, counted (``on_rejected``: the runner's
``fraudcep_rule_records_rejected_total``), and the rules stay as they were — at start-up
as well as later, so one bad record can neither stop a runner nor keep it from starting.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fraudcep.rules import RuleDefinition
from fraudcep.runtime.rule_records import RuleRecordError, RuleSet, parse_rule_record, short_repr
from fraudcep_kafka.logs import fields

__all__ = [
    "RuleRecordError",
    "RuleSet",
    "RulesTopicReader",
    "parse_rule_record",
    "publish_rules",
]

log = logging.getLogger("fraudcep.rules")
# Error codes of a partition whose leader is not elected yet (or just moved).
_NOT_READY = frozenset({6, 5, 3})  # NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC


class RulesTopicReader:
    """Follows the rules topic with its own consumer (assigned partitions, no group).

    Subclasses follow another compacted topic the same way (:meth:`_apply` takes a record,
    :attr:`what` names the topic in messages): the lists topic's reader is one."""

    what = "rules"
    log = log

    def __init__(
        self,
        consumer_factory: Any,
        topic: str,
        rule_set: RuleSet | None,
        *,
        on_rejected: Any = None,
    ) -> None:
        self.topic = topic
        self.rule_set = rule_set
        self._on_rejected = on_rejected
        self._consumer = consumer_factory(
            {
                "group.id": f"fraudcep-{self.what}-{uuid.uuid4().hex}",  # never commits
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
            }
        )
        self._started = False

    def catch_up(self, timeout_s: float = 60.0) -> None:
        """Assign every partition from the start and read up to the current end."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        metadata = self._consumer.list_topics(self.topic, timeout=timeout_s)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise RuntimeError(
                f"{self.what} topic {self.topic!r} does not exist (or has no partitions)"
            )
        partitions = sorted(topic.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        ends = {p: self._end_offset(p, deadline) for p in partitions}
        positions = {p: 0 for p in partitions}
        while any(positions[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"could not read {self.what} topic {self.topic!r} to its end in time"
                )
            for msg in self._consumer.consume(500, 0.2):
                if msg.error() is None:
                    self._take(msg)
                    positions[msg.partition()] = msg.offset() + 1
            # transaction markers and compacted gaps leave offsets no record has
            for p in partitions:
                if positions[p] < ends[p]:
                    (tp,) = self._consumer.position([TopicPartition(self.topic, p)])
                    if tp.offset >= 0:
                        positions[p] = max(positions[p], tp.offset)
        self._started = True

    def _end_offset(self, partition: int, deadline: float) -> int:
        """The partition's high watermark, retrying what a young topic answers at first
        (no leader yet)."""
        from confluent_kafka import KafkaException, TopicPartition

        while True:
            try:
                high: int = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=5
                )[1]
                return high
            except KafkaException as exc:
                if not exc.args[0].retriable() and exc.args[0].code() not in _NOT_READY:
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def poll(self) -> bool:
        """Read what arrived since the last call (never blocks); True when something changed."""
        changed = False
        for msg in self._consumer.consume(500, 0):
            if msg.error() is None and self._take(msg):
                changed = True
        return changed

    def _take(self, msg: Any) -> bool:
        """Apply one record; a record that cannot be applied, whatever the reason, is
        logged, counted and otherwise ignored (the rules stay as they were)."""
        source = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        try:
            return self._apply(msg, source)
        except ValueError as exc:  # RuleRecordError, ListRecordError: the reason is the text
            error = str(exc)
        except Exception as exc:  # no record may stop or crash the runner
            error = f"{source}: {type(exc).__name__}: {exc}"
        key = msg.key()
        self.log.error(
            f"rejected {self.what} record",
            extra=fields(
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
                key=None if key is None else short_repr(key.decode("utf-8", errors="replace")),
                error=error[:4000],
            ),
        )
        if self._on_rejected is not None:
            self._on_rejected()
        return False

    def _apply(self, msg: Any, source: str) -> bool:
        """Take one record (raising ``ValueError`` with the reason to refuse it); True when it
        changed what the runner runs."""
        assert self.rule_set is not None
        return self.rule_set.apply_record(msg.key(), msg.value(), source=source)

    def close(self) -> None:
        self._consumer.close()


def publish_rules(
    bootstrap: str,
    topic: str,
    definitions: Sequence[RuleDefinition],
    *,
    delete: Sequence[str] = (),
    client_config: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Write ``definitions`` to the rules topic (one record per rule, keyed by id, its spec
    as JSON) and a tombstone per id in ``delete``; returns the records written. Creates the
    topic (compacted, one partition) when it is missing. Raises ``RuntimeError`` when the
    broker did not take every record."""
    import json

    from fraudcep_kafka.topics import publish_compacted

    records: list[tuple[bytes, bytes | None]] = [
        (d.id.encode(), json.dumps(d.spec, separators=(",", ":")).encode()) for d in definitions
    ]
    records += [(rule_id.encode(), None) for rule_id in delete]
    publish_compacted(
        bootstrap, topic, records, what="rules", client_config=client_config, timeout_s=timeout_s
    )
    return len(records)
