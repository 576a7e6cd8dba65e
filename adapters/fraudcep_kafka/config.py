"""The runner's configuration: one table of options, read from flags, environment and a file.

Every option has one name. It is ``--name-with-dashes`` on the command line,
``FRAUDCEP_NAME_IN_CAPITALS`` in the environment and ``name_with_underscores`` in the TOML
config file; a flag beats the environment, which beats the file, which beats the default.
Durations accept ``250ms``, ``10s``, ``5m``, ``1h`` (a bare number is milliseconds). The
options every runtime shares (event fields, disorder, state bounds, failures, the state key)
and the converters come from the core's runtime kit (:mod:`fraudcep.runtime.options`), so the
Lambda handlers read the same names with the same syntax; an older environment name of an
option (:attr:`~fraudcep.runtime.options.Option.aliases`: the Lambda's
``FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS``) is read too.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from fraudcep import ConfigurationError
from fraudcep.runtime.options import (
    ENGINE_OPTIONS,
    Option,
    boolean,
    choice,
    duration,
    integer,
    key_values,
    non_negative,
    optional_text,
    path_list,
    positive,
)
from fraudcep.runtime.output_records import SHADOW_ALERTS_TOPIC


def _url_list(value: Any) -> tuple[str, ...]:
    """URLs: a list (config file, repeated flag) or ``url,url`` (environment)."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    urls = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected a URL, got {item!r}")
        text = item.strip()
        if not text:
            continue
        if "://" not in text:
            raise ValueError(f"expected scheme://..., e.g. dynamodb://fraud_alerts, got {text!r}")
        urls.append(text)
    return tuple(urls)


def _default_instance() -> str:
    return socket.gethostname() or "fraudcep"


_ENGINE = {o.name: o for o in ENGINE_OPTIONS}

OPTIONS: tuple[Option, ...] = (
    Option("bootstrap", str, "127.0.0.1:9092", "Kafka bootstrap servers (host:port,...)"),
    Option("group_id", str, "fraudcep", "consumer group shared by every runner of one job"),
    Option(
        "instance_id",
        str,
        None,
        "this runner's stable name in the group (default: the host name); it names the "
        "transactional producer, so a restarted runner fences its dead predecessor at once. "
        "Runners on one host need distinct ids",
    ),
    Option(
        "static_membership",
        boolean,
        True,
        "join the group as a static member (group.instance.id = instance id): a runner that "
        "restarts within the session timeout gets its partitions back without a rebalance; "
        "a runner that stops for good hands its partitions over after the session timeout",
        "BOOL",
    ),
    Option(
        "session_timeout",
        positive(duration),
        10_000,
        "how long the group waits for a silent runner before moving its partitions",
        "DURATION",
    ),
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
        "topic for records that cannot be processed (malformed, late), with the reason, "
        "topic, partition and offset in headers",
    ),
    Option(
        "rules_topic",
        optional_text,
        "fraud.rules",
        "compacted topic of live rule changes (key: rule id, value: the rule as YAML or "
        "JSON, empty: back to the rules file); 'off' to disable",
    ),
    Option(
        "rules",
        optional_text,
        None,
        "rule file (YAML or JSON, see docs/rules.md); default: the packaged default rules "
        "(fraudcep/payments/default_rules.yaml)",
        "FILE",
    ),
    Option(
        "lists",
        path_list,
        (),
        "named lists the rules may read (x in lists.NAME, see docs/rules.md): a list file "
        "(.txt, .list, .csv, .json, .jsonl; named after its stem), a directory of them, or "
        "s3://BUCKET/PREFIX (read at start; the lists topic carries changes); repeat the flag "
        "for several (comma-separated in the environment, a list in the file)",
        "FILE_OR_DIR",
        repeatable=True,
    ),
    Option(
        "lists_topic",
        optional_text,
        "fraud.lists",
        "compacted topic of live list changes (key: list name, value: its entries as a JSON "
        "array or one per line, empty: back to the --lists file); 'off' to disable",
    ),
    Option(
        "checkpoints",
        str,
        "checkpoints",
        "where partition checkpoints are kept: a directory (or file:///path), or "
        "s3://BUCKET/PREFIX (needs fraudcep[aws])",
        "LOCATION",
    ),
    Option(
        "sink",
        _url_list,
        (),
        "also write alerts (and for s3, raw payments as Parquet) to this store, exactly once "
        "(idempotent writes ahead of each commit): dynamodb://TABLE or s3://BUCKET/PREFIX; "
        "repeat the flag for several (comma-separated in the environment, a list in the file; "
        "see docs/aws.md)",
        "URL",
        repeatable=True,
    ),
    Option(
        "missing_checkpoint",
        choice("fail", "reset"),
        "fail",
        "when the checkpoint a committed offset names is gone: 'fail' (stop, the default) "
        "or 'reset' (continue from the committed offset with empty state, losing partial "
        "matches)",
    ),
    Option(
        "commit_interval",
        positive(duration),
        100,
        "how often offsets (and dead letters) are committed (one Kafka transaction); "
        "a transaction holding alerts is committed sooner, see --alert-commit-delay",
        "DURATION",
    ),
    Option(
        "alert_commit_delay",
        non_negative(duration),
        0,
        "how long a transaction holding alerts may wait for more before it is committed "
        "(at most --commit-interval): 0 commits right after the batch that produced them, "
        "for the lowest alert latency; more groups alerts into fewer transactions (while "
        "catching up on a backlog, alerts wait for --commit-interval)",
        "DURATION",
    ),
    Option(
        "checkpoint_interval",
        positive(duration),
        10_000,
        "how often each partition's engine state is checkpointed; after a crash at most "
        "this much input is re-read",
        "DURATION",
    ),
    Option(
        "checkpoint_pause_goal",
        non_negative(duration),
        10,
        "a checkpoint is a delta of the keys changed since the last one, taken on the loop: "
        "take it before the interval once it would hold the loop up this long (estimated "
        "from the measured cost per record taken); 0: only at the interval",
        "DURATION",
    ),
    Option(
        "compact_after_deltas",
        non_negative(integer),
        100,
        "merge a partition's chain of delta checkpoints into a new full one (in a worker "
        "process) once it holds this many deltas (0: never for their number)",
        "N",
    ),
    Option(
        "compact_after_percent",
        non_negative(integer),
        50,
        "... or once its deltas hold more than this percentage of the full checkpoint's "
        "bytes (and at least 1 MiB; 0: never for their size)",
        "PERCENT",
    ),
    Option(
        "compaction",
        choice("process", "thread"),
        "process",
        "where chains are compacted: a worker process (the loop never waits for it), or a "
        "thread of the runner (the codec then holds the interpreter: small state only)",
    ),
    _ENGINE["state_key"],
    Option(
        "idle_timeout",
        positive(duration),
        5_000,
        "a partition without records for this long lets its event time follow the wall "
        "clock, so its last matches and window timeouts are not held back",
        "DURATION",
    ),
    _ENGINE["max_out_of_orderness"],
    _ENGINE["timestamp_field"],
    _ENGINE["event_id_field"],
    _ENGINE["max_record_bytes"],
    _ENGINE["max_record_failures"],
    Option(
        "max_checkpoint_failures",
        positive(integer),
        5,
        "failures in a row to checkpoint a partition (snapshot or store; retried with "
        "back-off) before the runner exits with code 5 for its supervisor to restart it",
        "N",
    ),
    _ENGINE["max_partial_matches_per_key"],
    _ENGINE["max_buffered_events"],
    Option("batch_size", positive(integer), 2_000, "records taken from the consumer at once", "N"),
    Option(
        "auto_offset_reset",
        choice("earliest", "latest"),
        "earliest",
        "where a partition without committed offset starts",
    ),
    Option(
        "transaction_timeout",
        positive(duration),
        30_000,
        "Kafka transaction timeout: how long a dead runner's open transaction can block "
        "readers when no runner with its instance id comes back",
        "DURATION",
    ),
    Option(
        "create_topics",
        boolean,
        True,
        "create the alerts, dead-letter, rules and lists topics when missing",
        "BOOL",
    ),
    Option(
        "topic_partitions", positive(integer), 4, "partitions of topics the runner creates", "N"
    ),
    Option(
        "metrics_address",
        optional_text,
        "127.0.0.1:9108",
        "host:port of the Prometheus metrics endpoint ('off' to disable; port 0 picks one)",
        "HOST:PORT",
    ),
    Option("log_format", choice("json", "text"), "json", "log lines as JSON objects or text"),
    Option("log_level", choice("debug", "info", "warning", "error"), "info", "lowest level logged"),
    Option(
        "kafka_config",
        key_values,
        {},
        "extra librdkafka properties for every client (key=value,...; a table in the file), "
        "e.g. security.protocol=SSL",
        "KEY=VALUE,...",
    ),
)
_BY_NAME = {o.name: o for o in OPTIONS}


@attrs.frozen
class RunnerConfig:
    """The runner's settings; see :data:`OPTIONS` for each one's meaning and default."""

    bootstrap: str = _BY_NAME["bootstrap"].default
    group_id: str = _BY_NAME["group_id"].default
    instance_id: str = attrs.Factory(_default_instance)
    static_membership: bool = _BY_NAME["static_membership"].default
    session_timeout: int = _BY_NAME["session_timeout"].default
    input_topic: str = _BY_NAME["input_topic"].default
    alerts_topic: str = _BY_NAME["alerts_topic"].default
    shadow_alerts_topic: str = _BY_NAME["shadow_alerts_topic"].default
    dead_letter_topic: str = _BY_NAME["dead_letter_topic"].default
    rules_topic: str | None = _BY_NAME["rules_topic"].default
    rules: str | None = None
    lists: tuple[str, ...] = _BY_NAME["lists"].default
    lists_topic: str | None = _BY_NAME["lists_topic"].default
    checkpoints: str = _BY_NAME["checkpoints"].default
    sink: tuple[str, ...] = _BY_NAME["sink"].default
    missing_checkpoint: str = _BY_NAME["missing_checkpoint"].default
    commit_interval: int = _BY_NAME["commit_interval"].default
    alert_commit_delay: int = _BY_NAME["alert_commit_delay"].default
    checkpoint_interval: int = _BY_NAME["checkpoint_interval"].default
    checkpoint_pause_goal: int = _BY_NAME["checkpoint_pause_goal"].default
    compact_after_deltas: int = _BY_NAME["compact_after_deltas"].default
    compact_after_percent: int = _BY_NAME["compact_after_percent"].default
    compaction: str = _BY_NAME["compaction"].default
    state_key: str | None = attrs.field(default=None, repr=False)
    idle_timeout: int = _BY_NAME["idle_timeout"].default
    max_out_of_orderness: int = _BY_NAME["max_out_of_orderness"].default
    timestamp_field: str = _BY_NAME["timestamp_field"].default
    event_id_field: str | None = _BY_NAME["event_id_field"].default
    max_record_bytes: int = _BY_NAME["max_record_bytes"].default
    max_record_failures: int = _BY_NAME["max_record_failures"].default
    max_checkpoint_failures: int = _BY_NAME["max_checkpoint_failures"].default
    max_partial_matches_per_key: int = _BY_NAME["max_partial_matches_per_key"].default
    max_buffered_events: int = _BY_NAME["max_buffered_events"].default
    batch_size: int = _BY_NAME["batch_size"].default
    auto_offset_reset: str = _BY_NAME["auto_offset_reset"].default
    transaction_timeout: int = _BY_NAME["transaction_timeout"].default
    create_topics: bool = _BY_NAME["create_topics"].default
    topic_partitions: int = _BY_NAME["topic_partitions"].default
    metrics_address: str | None = _BY_NAME["metrics_address"].default
    log_format: str = _BY_NAME["log_format"].default
    log_level: str = _BY_NAME["log_level"].default
    kafka_config: dict[str, str] = attrs.Factory(dict)

    @property
    def transactional_id(self) -> str:
        return f"fraudcep-{self.group_id}-{self.instance_id}"

    def evolve(self, **changes: Any) -> RunnerConfig:
        return attrs.evolve(self, **changes)


def from_sources(
    flags: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> RunnerConfig:
    """Merge the sources, strongest first: ``flags`` (None = not given), the environment,
    the TOML file (top-level keys, or a ``[runner]`` table). Unknown file keys and bad
    values raise :class:`ConfigurationError` naming the source."""
    env = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"config file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config file {path}: {exc}") from None
        table = data.get("runner", data)
        if not isinstance(table, dict):
            raise ConfigurationError(f"config file {path}: [runner] must be a table")
        unknown = sorted(k for k in table if k not in _BY_NAME and k != "runner")
        if "runner" in data:  # options go in the table; anything beside it is a mistake
            unknown += sorted(f"{k} (outside [runner])" for k in data if k != "runner")
        if unknown:
            raise ConfigurationError(
                f"config file {path}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(_BY_NAME)}"
            )
        file_values = {k: v for k, v in table.items() if k in _BY_NAME}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if flags.get(option.name) is not None:
            raw, source = flags[option.name], option.flag
        elif (variable := option.lookup(env)) is not None:  # its name, or an older one
            raw, source = env[variable], variable
        elif option.name in file_values:
            raw, source = file_values[option.name], f"{config_file}: {option.name}"
        else:
            continue
        try:
            values[option.name] = option.convert(raw)
        except (ValueError, TypeError, ConfigurationError) as exc:
            raise ConfigurationError(f"{source}: {exc}") from None
    return RunnerConfig(**values)
