"""The Flink job's settings: one table of options, read from flags and the environment.

The names, syntax and defaults are the Kafka runner's where the two share an option (topics,
engine limits, event time), so a deployment moves from one runtime to the other with the
same environment; :data:`OPTIONS` adds what only Flink has (parallelism, checkpoints,
execution mode).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

import attrs

from fraudcep.errors import ConfigurationError
from fraudcep.runtime import ENGINE_OPTIONS, EngineOptions, Option, options_from_env
from fraudcep.runtime.options import (
    boolean,
    choice,
    duration,
    integer,
    key_values,
    optional_text,
    path_list,
    positive,
)
from fraudcep.runtime.output_records import SHADOW_ALERTS_TOPIC

__all__ = ["OPTIONS", "JobConfig", "parse_args"]

_ENGINE = {o.name: o for o in ENGINE_OPTIONS}


OPTIONS: tuple[Option, ...] = (
    Option("bootstrap", str, "127.0.0.1:9092", "Kafka bootstrap servers (host:port,...)"),
    Option("group_id", str, "fraudcep-flink", "the Kafka source's consumer group"),
    Option("input_topic", str, "payments.raw", "topic of the payment records"),
    Option("alerts_topic", str, "fraud.alerts", "topic the alerts are written to"),
    Option(
        "shadow_alerts_topic",
        str,
        SHADOW_ALERTS_TOPIC,
        "topic the alerts of shadow rules (mode: shadow) are written to, apart from the "
        "alerts anything acts on",
    ),
    Option(
        "dead_letter_topic",
        str,
        "payments.dlq",
        "topic for records that cannot be processed (malformed, late, bad_event), with the "
        "runner's reason codes and headers",
    ),
    Option(
        "rules_topic",
        optional_text,
        "fraud.rules",
        "compacted topic of live rule changes, as the runner reads it; 'off' to disable",
    ),
    Option(
        "rules",
        optional_text,
        None,
        "rule file (YAML or JSON); default: the packaged default rules",
        "FILE",
    ),
    Option(
        "lists",
        path_list,
        (),
        "named lists the rules may read (x in lists.NAME, see docs/rules.md): a list file "
        "(.txt, .list, .csv, .json, .jsonl; named after its stem), a directory of them, or "
        "s3://BUCKET/PREFIX (with the AWS adapter), read at start where the job is submitted "
        "and by every task manager (the lists topic carries changes); repeat the flag for "
        "several (comma-separated in the environment)",
        "FILE_OR_DIR",
        repeatable=True,
    ),
    Option(
        "lists_topic",
        optional_text,
        "fraud.lists",
        "compacted topic of live list changes, as the runner reads it (key: list name, value: "
        "its entries as a JSON array or one per line, empty: back to the --lists file); 'off' "
        "to disable",
    ),
    Option("parallelism", positive(integer), 1, "parallel instances of every operator", "N"),
    Option(
        "checkpoint_interval",
        positive(duration),
        1_000,
        "how often Flink checkpoints; alerts become visible to read_committed readers when a "
        "checkpoint completes, so this is also their added latency",
        "DURATION",
    ),
    Option(
        "idle_timeout",
        positive(duration),
        5_000,
        "a source subtask (or the rules stream) without records for this long no longer "
        "holds event time back (not for a bounded input); payments it then brings that "
        "event time has passed are dead letters 'late'",
        "DURATION",
    ),
    Option(
        "execution_mode",
        choice("thread", "process"),
        "thread",
        "where Python functions run: in the task manager's JVM (thread, faster) or in "
        "worker processes",
    ),
    Option(
        "bounded",
        boolean,
        False,
        "read the input topic up to its end offsets at start and stop there (backfills, tests)",
        "BOOL",
    ),
    Option(
        "transactional_id_prefix",
        str,
        "fraudcep-flink",
        "prefix of the Kafka sink's transactional ids (unique per job on a cluster)",
    ),
    Option(
        "transaction_timeout",
        positive(duration),
        600_000,
        "Kafka transaction timeout of the sink (at most the broker's "
        "transaction.max.timeout.ms; longer than checkpoints and restarts take)",
        "DURATION",
    ),
    Option(
        "kafka_config",
        key_values,
        {},
        "extra Kafka client properties for sources and sink (key=value,...)",
        "KEY=VALUE,...",
    ),
    Option(
        "fail_after",
        integer,
        0,
        "testing: the keyed function fails once at its N-th payment (with --fail-flag)",
        "N",
    ),
    Option("fail_flag", optional_text, None, "testing: a file marking the failure as done"),
    _ENGINE["max_out_of_orderness"],
    _ENGINE["timestamp_field"],
    _ENGINE["event_id_field"],
    _ENGINE["max_record_bytes"],
    _ENGINE["max_partial_matches_per_key"],
    _ENGINE["max_buffered_events"],
    _ENGINE["state_key"],
)
_BY_NAME = {o.name: o for o in OPTIONS}


@attrs.frozen
class JobConfig:
    """The job's settings; see :data:`OPTIONS` for each one's meaning and default."""

    bootstrap: str = _BY_NAME["bootstrap"].default
    group_id: str = _BY_NAME["group_id"].default
    input_topic: str = _BY_NAME["input_topic"].default
    alerts_topic: str = _BY_NAME["alerts_topic"].default
    shadow_alerts_topic: str = _BY_NAME["shadow_alerts_topic"].default
    dead_letter_topic: str = _BY_NAME["dead_letter_topic"].default
    rules_topic: str | None = _BY_NAME["rules_topic"].default
    rules: str | None = None
    lists: tuple[str, ...] = ()
    lists_topic: str | None = _BY_NAME["lists_topic"].default
    parallelism: int = _BY_NAME["parallelism"].default
    checkpoint_interval: int = _BY_NAME["checkpoint_interval"].default
    idle_timeout: int = _BY_NAME["idle_timeout"].default
    execution_mode: str = _BY_NAME["execution_mode"].default
    bounded: bool = False
    transactional_id_prefix: str = _BY_NAME["transactional_id_prefix"].default
    transaction_timeout: int = _BY_NAME["transaction_timeout"].default
    kafka_config: dict[str, str] = attrs.Factory(dict)
    fail_after: int = 0
    fail_flag: str | None = None
    max_out_of_orderness: int = _BY_NAME["max_out_of_orderness"].default
    timestamp_field: str = _BY_NAME["timestamp_field"].default
    event_id_field: str | None = _BY_NAME["event_id_field"].default
    max_record_bytes: int = _BY_NAME["max_record_bytes"].default
    max_partial_matches_per_key: int = _BY_NAME["max_partial_matches_per_key"].default
    max_buffered_events: int = _BY_NAME["max_buffered_events"].default
    state_key: str | None = attrs.field(default=None, repr=False)

    @property
    def engine_options(self) -> EngineOptions:
        return EngineOptions.of(self)


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> JobConfig:
    """Flags (``--name-with-dashes``) over the environment (``FRAUDCEP_NAME``) over defaults.
    Bad values raise :class:`~fraudcep.errors.ConfigurationError` naming where they came from."""
    parser = argparse.ArgumentParser(
        prog="fraudcep flink run",
        description="Run the fraud rules as a PyFlink job: Kafka payments in, alerts out "
        "exactly once (see docs/flink.md).",
    )
    for option in OPTIONS:
        parser.add_argument(
            option.flag,
            dest=option.name,
            action="append" if option.repeatable else "store",
            metavar=option.metavar or "TEXT",
            help=f"{option.help} (env {option.env})",
        )
    flags = vars(parser.parse_args(list(argv)))
    values = options_from_env(OPTIONS, environ)
    for option in OPTIONS:
        raw = flags.get(option.name)
        if raw is not None:
            values[option.name] = option.parse(raw, option.flag)
    try:
        return JobConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc)) from None
