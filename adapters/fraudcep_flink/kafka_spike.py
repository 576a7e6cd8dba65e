"""Spike: the same keyed engine function as :mod:`fraudcep_flink.spike`, between a
``KafkaSource`` of payments and a ``KafkaSink`` of alerts with
``DeliveryGuarantee.EXACTLY_ONCE`` (the connector jar of ``scripts/flink-setup.sh``).

``python -m fraudcep_flink.kafka_spike --bootstrap HOST:PORT --input payments --output alerts``
reads the input topic from its start to the offsets it has when the job starts (a bounded
source), and commits the alerts (JSON) in transactions at checkpoints, the last at the end of
the input. The caller creates the topics (with ``retention.ms=-1`` when the payments carry old
timestamps, as generated ones do) and reads the output with ``isolation.level=read_committed``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from pyflink.common import Duration, SimpleStringSchema, Types, WatermarkStrategy
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)

from fraudcep_flink.environment import local_environment
from fraudcep_flink.spike import (
    RULES_STATE,
    EngineFunction,
    FanOut,
    PaymentTimestamps,
    groups_of,
)

__all__ = ["run_kafka_spike"]


def run_kafka_spike(
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    *,
    parallelism: int = 1,
    max_out_of_orderness_ms: int = 0,
    checkpoint_ms: int = 2000,
    fail_after: int = 0,
    fail_flag: str | None = None,
) -> float:
    """Run the job to the end of its bounded input; returns its wall time (s). With
    ``fail_after`` and ``fail_flag``, a task fails once (see :class:`EngineFunction`) and the
    job restarts from its last checkpoint (fixed delay, up to 3 attempts)."""
    env = local_environment(
        parallelism=parallelism,
        watermark_interval_ms=1,
        extra={
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "3",
            "restart-strategy.fixed-delay.delay": "1 s",
        },
    )
    env.enable_checkpointing(checkpoint_ms)
    started = time.monotonic()
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(input_topic)
        .set_group_id(f"fraudcep-spike-{input_topic}")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(output_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(f"fraudcep-spike-{output_topic}")
        .set_property("transaction.timeout.ms", "60000")
        .build()
    )
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(max_out_of_orderness_ms)
    ).with_timestamp_assigner(PaymentTimestamps())
    payments = (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "payments")
        .set_parallelism(1)
        .map(json.loads, output_type=Types.PICKLED_BYTE_ARRAY())
        .assign_timestamps_and_watermarks(strategy)
    )
    rules = env.from_collection(["default"], type_info=Types.STRING())
    keyed = payments.flat_map(FanOut(groups_of()), output_type=Types.PICKLED_BYTE_ARRAY()).key_by(
        lambda e: f"{e[0]}\x00{e[1]}", key_type=Types.STRING()
    )
    alerts = keyed.connect(rules.broadcast(RULES_STATE)).process(
        EngineFunction(fail_after=fail_after, fail_flag=fail_flag), output_type=Types.STRING()
    )
    alerts.sink_to(sink)
    env.execute("fraudcep-kafka-spike")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--bound-ms", type=int, default=2000)
    parser.add_argument("--checkpoint-ms", type=int, default=2000)
    parser.add_argument("--fail-after", type=int, default=0, help="inject a task failure")
    parser.add_argument("--fail-flag", help="file that marks the failure as done (once)")
    args = parser.parse_args(argv)
    took = run_kafka_spike(
        args.bootstrap,
        args.input,
        args.output,
        parallelism=args.parallelism,
        max_out_of_orderness_ms=args.bound_ms,
        checkpoint_ms=args.checkpoint_ms,
        fail_after=args.fail_after,
        fail_flag=args.fail_flag,
    )
    result: dict[str, Any] = {"seconds": round(took, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
