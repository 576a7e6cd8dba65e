"""Creating the topics a job needs, idempotently, and waiting until they can be used."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from fraudcep_kafka.config import RunnerConfig
from fraudcep_kafka.logs import fields

log = logging.getLogger("fraudcep.topics")

COMPACTED = {"cleanup.policy": "compact"}


def create_topics(
    client_config: Mapping[str, Any],
    topics: Mapping[str, tuple[int, Mapping[str, str]]],
    *,
    timeout_s: float = 30.0,
) -> dict[str, int]:
    """Create each missing topic ``name: (partitions, config)``; returns every topic's
    partition count as the cluster has it.

    Topics that exist already are left as they are (their partition count is not changed,
    so callers can warn when it differs). Returns once every partition has a leader:
    creation returns when the controller has the topic, the brokers can lag behind.
    """
    for name, (partitions, _config) in topics.items():
        if partitions < 1:
            raise ValueError(f"topic {name}: partitions must be >= 1, got {partitions}")
    admin = AdminClient(dict(client_config))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(name, num_partitions=partitions, replication_factor=-1, config=dict(config))
        for name, (partitions, config) in topics.items()
        if name not in existing
    ]
    created: list[str] = []
    if wanted:
        for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    deadline = time.monotonic() + timeout_s
    while True:
        listed = admin.list_topics(timeout=timeout_s).topics
        # a topic is usable once every partition has a leader
        missing = [
            n
            for n in topics
            if n not in listed
            or listed[n].error is not None
            or not listed[n].partitions
            or any(p.leader < 0 for p in listed[n].partitions.values())
        ]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {missing} did not appear within {timeout_s} s")
        time.sleep(0.1)
    if created:
        log.info("topics created", extra=fields(topics=created))
    return {name: len(listed[name].partitions) for name in topics}


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    *,
    config: Mapping[str, str] | None = None,
    client_config: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> int:
    """:func:`create_topics` for one topic; returns its partition count."""
    conf = {**(client_config or {}), "bootstrap.servers": bootstrap}
    return create_topics(conf, {name: (partitions, config or {})}, timeout_s=timeout)[name]


def ensure_topics(client_config: Mapping[str, Any], config: RunnerConfig) -> dict[str, int]:
    """The runner's output topics (alerts, shadow alerts, dead letters) and the compacted
    rules and lists topics."""
    n = config.topic_partitions
    topics: dict[str, tuple[int, Mapping[str, str]]] = {
        config.alerts_topic: (n, {}),
        config.shadow_alerts_topic: (n, {}),
        config.dead_letter_topic: (n, {}),
    }
    if config.rules_topic:
        topics[config.rules_topic] = (1, COMPACTED)
    if config.lists_topic:
        topics[config.lists_topic] = (1, COMPACTED)
    return create_topics(client_config, topics)


def publish_compacted(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes, bytes | None]],
    *,
    what: str,
    client_config: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Write keyed ``records`` (a None value is a tombstone) to the compacted one-partition
    ``topic`` (the rules topic, the lists topic), creating it when missing. Raises
    ``RuntimeError`` naming ``what`` when the broker did not take every record."""
    create_topic(bootstrap, topic, 1, config=COMPACTED, client_config=client_config)
    producer = Producer(
        {**(client_config or {}), "bootstrap.servers": bootstrap, "enable.idempotence": True}
    )
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(f"{msg.key()!r}: {err}")

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    left = producer.flush(timeout_s)
    if failed or left:
        raise RuntimeError(
            f"{what} not published to {topic}: {'; '.join(failed) or f'{left} undelivered'}"
        )
