"""Unit tests of the Kafka runner's parts that need no broker: configuration, checkpoints
and their store, the rules topic's record handling, the runner's pure helpers, structured
logs and the metrics endpoint."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from fraudcep import Alert, ConfigurationError, Engine
from fraudcep.rules import RuleDefinition, load_rules
from fraudcep.runtime.checkpoint import frame
from fraudcep.runtime.output_records import alert_value
from fraudcep.runtime.rule_records import RuleRecordError, RuleSet, parse_rule_record
from fraudcep_cli.main import build_parser
from fraudcep_kafka.checkpoints import (
    FORMAT_VERSION,
    MAGIC,
    STALE_TMP_S,
    Checkpoint,
    CheckpointError,
    DirectoryCheckpointStore,
    id_offset,
    new_id,
)
from fraudcep_kafka.config import OPTIONS, RunnerConfig, from_sources
from fraudcep_kafka.logs import JsonFormatter, TextFormatter, configure, fields
from fraudcep_kafka.metrics import LATENCY_BUCKETS, RunnerMetrics, observe_many
from fraudcep_kafka.runner import (
    METADATA_PREFIX,
    RunnerError,
    checkpoint_reference,
    open_store,
    parse_reference,
)

# == config ==================================================================================


def write_toml(tmp_path: Path, text: str, name: str = "runner.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_source_are_the_option_defaults() -> None:
    config = from_sources({}, environ={})
    assert config == RunnerConfig()
    for option in OPTIONS:
        if option.name != "instance_id":
            assert getattr(config, option.name) == option.default, option.name
    assert config.instance_id == socket.gethostname()
    assert config.transactional_id == f"fraudcep-fraudcep-{socket.gethostname()}"


def test_every_option_is_a_config_field_with_the_same_default() -> None:
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names))
    assert [f.name for f in attrs.fields(RunnerConfig)] == names
    for option in OPTIONS:
        assert option.help.strip(), f"{option.name} has no help"
        assert option.flag == "--" + option.name.replace("_", "-")
        assert option.env == "FRAUDCEP_" + option.name.upper()
        if option.default is not None:
            # the default is a value its own converter accepts unchanged
            assert option.convert(option.default) == option.default, option.name


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "commit_interval = 3000\ngroup_id = 'from-file'\n")
    env = {"FRAUDCEP_COMMIT_INTERVAL": "2s", "FRAUDCEP_GROUP_ID": "from-env"}
    flags = {"commit_interval": "1s", "group_id": None}  # None: flag not given

    config = from_sources(flags, environ=env, config_file=path)
    assert config.commit_interval == 1_000
    assert config.group_id == "from-env"

    config = from_sources({}, environ=env, config_file=path)
    assert config.commit_interval == 2_000

    config = from_sources({}, environ={}, config_file=path)
    assert (config.commit_interval, config.group_id) == (3_000, "from-file")

    config = from_sources({}, environ={})
    assert (config.commit_interval, config.group_id) == (100, "fraudcep")


def test_environ_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDCEP_GROUP_ID", "from-os-environ")
    monkeypatch.setenv("FRAUDCEP_INSTANCE_ID", "runner-7")
    config = from_sources({})
    assert config.group_id == "from-os-environ"
    assert config.transactional_id == "fraudcep-from-os-environ-runner-7"


def test_a_bad_flag_fails_even_when_the_env_value_is_good() -> None:
    with pytest.raises(ConfigurationError, match=r"^--batch-size: "):
        from_sources({"batch_size": "0"}, environ={"FRAUDCEP_BATCH_SIZE": "10"})


@pytest.mark.parametrize(
    "text",
    [
        'bootstrap = "k1:9092"\nbatch_size = 7\n',
        '[runner]\nbootstrap = "k1:9092"\nbatch_size = 7\n',
    ],
    ids=["top-level", "runner-table"],
)
def test_toml_top_level_and_runner_table(tmp_path: Path, text: str) -> None:
    config = from_sources({}, environ={}, config_file=write_toml(tmp_path, text))
    assert (config.bootstrap, config.batch_size) == ("k1:9092", 7)


def test_unknown_file_keys_are_rejected_by_name(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path, "[runner]\nbootstrapp = 'x'\ncommit_intervall = 5\nbatch_size = 3\n"
    )
    with pytest.raises(ConfigurationError) as info:
        from_sources({}, environ={}, config_file=path)
    message = str(info.value)
    assert str(path) in message
    assert "bootstrapp" in message
    assert "commit_intervall" in message


def test_top_level_keys_beside_a_runner_table_are_not_silently_dropped(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'bootstrap = "k1:9092"\n[runner]\ngroup_id = "g"\n')
    try:
        config = from_sources({}, environ={}, config_file=path)
    except ConfigurationError:
        return  # refusing the mixed form is fine too
    assert config.bootstrap == "k1:9092"


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match=re.escape(str(missing))):
        from_sources({}, environ={}, config_file=missing)
    broken = write_toml(tmp_path, "bootstrap = \n", "broken.toml")
    with pytest.raises(ConfigurationError, match=re.escape(str(broken))):
        from_sources({}, environ={}, config_file=broken)
    not_table = write_toml(tmp_path, "runner = 5\n", "not_table.toml")
    with pytest.raises(ConfigurationError, match=r"\[runner\] must be a table"):
        from_sources({}, environ={}, config_file=not_table)


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        from_sources({}, environ={"FRAUDCEP_COMMIT_INTERVAL": "abc"})
    assert str(info.value).startswith("FRAUDCEP_COMMIT_INTERVAL: ")
    assert "'abc'" in str(info.value)


def test_negative_partitions_name_the_flag() -> None:
    with pytest.raises(ConfigurationError, match=r"^--topic-partitions: must be > 0"):
        from_sources({"topic_partitions": "-1"}, environ={})
    with pytest.raises(ConfigurationError, match=r"^--topic-partitions: "):
        from_sources({"topic_partitions": "four"}, environ={})


def test_sinks_from_repeated_flags_environment_and_file(tmp_path: Path) -> None:
    urls = ["dynamodb://fraud_alerts", "s3://lake/fraud"]
    assert from_sources({"sink": urls}, environ={}).sink == tuple(urls)
    env = {"FRAUDCEP_SINK": "dynamodb://fraud_alerts, s3://lake/fraud"}
    assert from_sources({}, environ=env).sink == tuple(urls)
    path = write_toml(tmp_path, '[runner]\nsink = ["dynamodb://fraud_alerts", "s3://lake/fraud"]\n')
    assert from_sources({}, environ={}, config_file=path).sink == tuple(urls)
    assert from_sources({}, environ={}).sink == ()
    with pytest.raises(ConfigurationError, match=r"^FRAUDCEP_SINK: expected scheme://"):
        from_sources({}, environ={"FRAUDCEP_SINK": "fraud_alerts"})
    bad = write_toml(tmp_path, "[runner]\nsink = [3]\n", "bad.toml")
    with pytest.raises(ConfigurationError, match=r"expected a URL, got 3"):
        from_sources({}, environ={}, config_file=bad)


def test_unknown_sink_and_store_schemes_are_refused_with_the_known_ones() -> None:
    from fraudcep_kafka.runner import open_sinks

    with pytest.raises(RunnerError, match=r"no installed package handles ftp://.*dynamodb://"):
        open_sinks(["ftp://host/alerts"])
    with pytest.raises(RunnerError, match=r"no installed package handles gs://.*s3://"):
        open_store("gs://bucket/checkpoints")


def test_bad_choice_in_the_file_names_the_file_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[runner]\nmissing_checkpoint = 'ignore'\n")
    with pytest.raises(ConfigurationError) as info:
        from_sources({}, environ={}, config_file=path)
    message = str(info.value)
    assert message.startswith(f"{path}: missing_checkpoint: ")
    assert "fail, reset" in message and "'ignore'" in message


def test_choices_are_case_insensitive() -> None:
    config = from_sources(
        {"missing_checkpoint": "RESET"}, environ={"FRAUDCEP_LOG_FORMAT": " Text "}
    )
    assert (config.missing_checkpoint, config.log_format) == ("reset", "text")


@pytest.mark.parametrize(
    ("raw", "ms"),
    [("250ms", 250), ("10s", 10_000), ("5m", 300_000), ("1h", 3_600_000), ("750", 750),
     (" 10s ", 10_000)],
)  # fmt: skip
def test_durations_from_env(raw: str, ms: int) -> None:
    assert from_sources({}, environ={"FRAUDCEP_IDLE_TIMEOUT": raw}).idle_timeout == ms


def test_durations_from_file_accept_integers_and_strings(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "idle_timeout = 42\ncheckpoint_interval = '2m'\n")
    config = from_sources({}, environ={}, config_file=path)
    assert (config.idle_timeout, config.checkpoint_interval) == (42, 120_000)


@pytest.mark.parametrize("raw", ["10x", "-5", "1.5s", "0", "0ms", "", "ms"])
def test_bad_positive_durations_are_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^--commit-interval: "):
        from_sources({"commit_interval": raw}, environ={})


def test_boolean_in_file_is_not_a_duration(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "session_timeout = true\n")
    with pytest.raises(ConfigurationError, match="session_timeout"):
        from_sources({}, environ={}, config_file=path)


def test_max_out_of_orderness_accepts_zero_and_refuses_negative() -> None:
    assert from_sources({"max_out_of_orderness": "0"}, environ={}).max_out_of_orderness == 0
    assert from_sources({"max_out_of_orderness": "2s"}, environ={}).max_out_of_orderness == 2000
    with pytest.raises(ConfigurationError, match="--max-out-of-orderness"):
        from_sources({"max_out_of_orderness": "-1"}, environ={})


@pytest.mark.parametrize("raw", ["0s", "0ms"])
def test_max_out_of_orderness_zero_with_a_unit(raw: str) -> None:
    assert from_sources({"max_out_of_orderness": raw}, environ={}).max_out_of_orderness == 0


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("YES", True), ("on", True),
     ("0", False), ("False", False), ("no", False), (" off ", False)],
)  # fmt: skip
def test_booleans_from_env(raw: str, value: bool) -> None:
    config = from_sources({}, environ={"FRAUDCEP_CREATE_TOPICS": raw})
    assert config.create_topics is value


def test_booleans_from_file_and_bad_booleans(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "static_membership = false\n")
    assert from_sources({}, environ={}, config_file=path).static_membership is False
    with pytest.raises(ConfigurationError, match=r"^FRAUDCEP_STATIC_MEMBERSHIP: .*'maybe'"):
        from_sources({}, environ={"FRAUDCEP_STATIC_MEMBERSHIP": "maybe"})


def test_kafka_config_from_flag_text() -> None:
    config = from_sources(
        {"kafka_config": "security.protocol=SSL, ssl.ca.location = /ca.pem,"
                         "sasl.jaas.config=a=b"},
        environ={},
    )  # fmt: skip
    assert config.kafka_config == {
        "security.protocol": "SSL",
        "ssl.ca.location": "/ca.pem",
        "sasl.jaas.config": "a=b",  # only the first '=' separates
    }


def test_kafka_config_from_file_table(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[runner]\nbatch_size = 5\n[runner.kafka_config]\n"security.protocol" = "SSL"\n'
        '"socket.timeout.ms" = 5000\n',
    )
    config = from_sources({}, environ={}, config_file=path)
    assert config.kafka_config == {"security.protocol": "SSL", "socket.timeout.ms": "5000"}
    assert config.batch_size == 5


@pytest.mark.parametrize("raw", ["security.protocol", "=SSL", "a=1,b"])
def test_kafka_config_needs_key_value_pairs(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^FRAUDCEP_KAFKA_CONFIG: expected key=value"):
        from_sources({}, environ={"FRAUDCEP_KAFKA_CONFIG": raw})


@pytest.mark.parametrize("raw", ["off", "OFF", "none", "", "  "])
def test_rules_topic_off_disables_it(raw: str) -> None:
    assert from_sources({}, environ={"FRAUDCEP_RULES_TOPIC": raw}).rules_topic is None


def test_optional_text_options_keep_real_names() -> None:
    config = from_sources(
        {"rules_topic": "fraud.rules.v2", "metrics_address": "off", "event_id_field": "off"},
        environ={"FRAUDCEP_RULES": "/etc/fraudcep/rules.yaml"},
    )
    assert config.rules_topic == "fraud.rules.v2"
    assert config.metrics_address is None
    assert config.event_id_field is None
    assert config.rules == "/etc/fraudcep/rules.yaml"


def test_the_state_key_is_a_secret(tmp_path: Path) -> None:
    secret = "0123456789abcdef-do-not-show"
    config = from_sources({}, environ={"FRAUDCEP_STATE_KEY": secret})
    assert config.state_key == secret
    assert secret not in repr(config)
    assert from_sources({}, environ={"FRAUDCEP_STATE_KEY": "off"}).state_key is None
    with pytest.raises(ConfigurationError, match="at least 16 characters") as short:
        from_sources({}, environ={"FRAUDCEP_STATE_KEY": "short-secret"})
    assert "short-secret" not in str(short.value)
    path = write_toml(tmp_path, "state_key = 12345678901234567890\n")
    with pytest.raises(ConfigurationError, match="expected text, got int") as typed:
        from_sources({}, environ={}, config_file=path)
    assert "12345678901234567890" not in str(typed.value)


def test_checkpoint_chain_options_and_their_defaults() -> None:
    config = from_sources({}, environ={})
    assert (config.checkpoint_pause_goal, config.compact_after_deltas) == (10, 100)
    assert (config.compact_after_percent, config.compaction) == (50, "process")
    env = {"FRAUDCEP_CHECKPOINT_PAUSE_GOAL": "0", "FRAUDCEP_COMPACT_AFTER_DELTAS": "0",
           "FRAUDCEP_COMPACT_AFTER_PERCENT": "200", "FRAUDCEP_COMPACTION": "Thread"}  # fmt: skip
    config = from_sources({}, environ=env)
    assert (config.checkpoint_pause_goal, config.compact_after_deltas) == (0, 0)
    assert (config.compact_after_percent, config.compaction) == (200, "thread")
    with pytest.raises(ConfigurationError, match="FRAUDCEP_COMPACT_AFTER_DELTAS"):
        from_sources({}, environ={"FRAUDCEP_COMPACT_AFTER_DELTAS": "-1"})
    with pytest.raises(ConfigurationError, match="expected one of process, thread"):
        from_sources({}, environ={"FRAUDCEP_COMPACTION": "fork"})


def test_instance_id_defaults_to_the_host_name_and_names_the_transaction() -> None:
    config = from_sources({"group_id": "fraud-prod"}, environ={})
    assert config.instance_id == socket.gethostname()
    assert config.transactional_id == f"fraudcep-fraud-prod-{socket.gethostname()}"
    config = from_sources({"group_id": "g", "instance_id": "node-2"}, environ={})
    assert config.transactional_id == "fraudcep-g-node-2"
    assert config.evolve(instance_id="node-3").transactional_id == "fraudcep-g-node-3"


def run_help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    parser = build_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["run", "--help"])
    assert info.value.code == 0
    out: str = capsys.readouterr().out
    return out


def test_run_help_documents_every_option_with_its_env_var(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_help(capsys, monkeypatch)
    # one entry per option line "  --flag METAVAR  help..." up to the next "  -" line
    section = out.split("options:", 1)[1]
    entries: dict[str, str] = {}
    for block in re.split(r"\n(?=  -)", section):
        head = block.strip().split()
        if head:
            entries[head[0].rstrip(",")] = " ".join(block.split())
    for option in OPTIONS:
        assert option.flag in entries, f"{option.flag} missing from run --help"
        text = entries[option.flag]
        assert re.search(rf"\b{option.env}\b", text), f"{option.env} not in help of {option.flag}"
        assert " ".join(option.help.split()[:3]) in text, option.name
    assert "FRAUDCEP_CONFIG" in entries["--config"]


def test_run_flags_parse_into_from_sources() -> None:
    args = build_parser().parse_args(["run", "--commit-interval", "5s", "--rules-topic", "off"])
    flags = {o.name: getattr(args, o.name) for o in OPTIONS}
    assert all(v is None for k, v in flags.items() if k not in {"commit_interval", "rules_topic"})
    config = from_sources(flags, environ={"FRAUDCEP_COMMIT_INTERVAL": "9s"})
    assert (config.commit_interval, config.rules_topic) == (5_000, None)


def test_run_flags_for_sinks_and_an_s3_checkpoint_location() -> None:
    argv = ["run", "--sink", "dynamodb://fraud_alerts", "--sink", "s3://lake/fraud",
            "--checkpoint", "s3://lake/checkpoints"]  # fmt: skip
    args = build_parser().parse_args(argv)
    config = from_sources({o.name: getattr(args, o.name) for o in OPTIONS}, environ={})
    assert config.sink == ("dynamodb://fraud_alerts", "s3://lake/fraud")
    assert config.checkpoints == "s3://lake/checkpoints"


# == checkpoints =============================================================================


def snapshot_bytes() -> bytes:
    return Engine([], timestamp="ts").snapshot()


def make_checkpoint(offset: int = 42, partition: int = 0, **changes: Any) -> Checkpoint:
    values: dict[str, Any] = {
        "group": "fraud",
        "topic": "payments.raw",
        "partition": partition,
        "offset": offset,
        "snapshot": snapshot_bytes(),
        "rules": "- id: r\n  description: règle ✓\n",
    }
    values.update(changes)
    return Checkpoint(**values)


def test_checkpoint_round_trip() -> None:
    checkpoint = make_checkpoint(offset=123_456, partition=7)
    again = Checkpoint.from_bytes(checkpoint.to_bytes())
    assert again == checkpoint
    assert again.snapshot == checkpoint.snapshot
    assert id_offset(again.checkpoint_id) == 123_456


def test_checkpoint_round_trip_with_arbitrary_snapshot_bytes() -> None:
    checkpoint = make_checkpoint(snapshot=bytes(range(256)) * 3)
    assert Checkpoint.from_bytes(checkpoint.to_bytes()) == checkpoint


def test_every_single_corrupted_byte_is_detected() -> None:
    blob = make_checkpoint().to_bytes()
    for position in range(len(blob)):
        for mask in (0x01, 0x80):
            corrupt = bytearray(blob)
            corrupt[position] ^= mask
            with pytest.raises(CheckpointError, match=r"^c\.ckpt: "):
                Checkpoint.from_bytes(bytes(corrupt), source="c.ckpt")


@pytest.mark.parametrize("keep", [0, 1, 7, 8, 10, 46, -1])
def test_truncated_checkpoints_are_refused(keep: int) -> None:
    blob = make_checkpoint().to_bytes()
    with pytest.raises(CheckpointError, match=r"^/x/c\.ckpt: "):
        Checkpoint.from_bytes(blob[:keep], source="/x/c.ckpt")


def test_appended_bytes_are_refused() -> None:
    blob = make_checkpoint().to_bytes()
    with pytest.raises(CheckpointError, match="checksum"):
        Checkpoint.from_bytes(blob + b"\x00")


def test_wrong_magic_is_refused() -> None:
    blob = make_checkpoint().to_bytes()
    with pytest.raises(CheckpointError, match="not a fraudcep checkpoint"):
        Checkpoint.from_bytes(b"FCEPSNAP" + blob[len(MAGIC) :])


def test_wrong_version_is_refused_naming_it() -> None:
    blob = bytearray(make_checkpoint().to_bytes())
    struct.pack_into(">H", blob, len(MAGIC), FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        Checkpoint.from_bytes(bytes(blob))


@pytest.mark.parametrize("version", [1, FORMAT_VERSION])
def test_valid_checksum_but_incomplete_metadata_is_refused(version: int) -> None:
    meta = json.dumps({"group": "g", "topic": "t", "partition": 0, "offset": 1}).encode()
    with pytest.raises(CheckpointError, match="bad metadata"):
        Checkpoint.from_bytes(frame(meta, b"state", version=version))


def test_a_format_1_checkpoint_is_still_read_as_a_full_one() -> None:
    checkpoint = make_checkpoint(offset=9)
    meta = {k: v for k, v in checkpoint.metadata().items() if k not in ("kind", "parent", "base")}
    prefix = struct.pack(">8sHI", MAGIC, 1, len(json.dumps(meta).encode()))
    body = json.dumps(meta).encode() + checkpoint.snapshot
    blob = prefix + hashlib.sha256(prefix + body).digest() + body  # as format 1 wrote it
    assert Checkpoint.from_bytes(blob) == checkpoint
    assert Checkpoint.from_bytes(frame(json.dumps(meta).encode(), checkpoint.snapshot, version=1))
    with pytest.raises(CheckpointError, match="format-1 checkpoint is not authenticated"):
        Checkpoint.from_bytes(blob, state_key="k" * 16)


def test_ids_are_unique_and_sort_by_offset() -> None:
    offsets = [10, 9, 100, 0, 2**40, 10, 99_999]
    ids = [new_id(o) for o in offsets]
    assert len(set(ids)) == len(ids)
    assert [id_offset(i) for i in ids] == offsets
    assert [id_offset(i) for i in sorted(ids)] == sorted(offsets)
    assert make_checkpoint(offset=77).checkpoint_id.startswith(f"{77:020d}-")


@pytest.mark.parametrize(
    "bad", ["../x", "", "42", "00000000000000000042", "00000000000000000042-ABCDEF012345",
            "00000000000000000042-abc", "00000000000000000042-abcdef012345/..", "a" * 33],
)  # fmt: skip
def test_id_offset_refuses_non_ids(bad: str) -> None:
    with pytest.raises(CheckpointError, match="not a checkpoint id"):
        id_offset(bad)


def partition_dir(root: Path, checkpoint: Checkpoint) -> Path:
    return root / checkpoint.group / checkpoint.topic / str(checkpoint.partition)


def test_store_save_and_load(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    checkpoint = make_checkpoint(offset=5, partition=3)
    store.save(checkpoint)
    directory = partition_dir(tmp_path, checkpoint)
    assert [p.name for p in directory.iterdir()] == [f"{checkpoint.checkpoint_id}.ckpt"]
    loaded = store.load("fraud", "payments.raw", 3, checkpoint.checkpoint_id)
    assert loaded == checkpoint
    assert str(tmp_path) in store.describe()


def test_store_load_of_a_missing_id_names_the_path(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    missing = new_id(9)
    expected = tmp_path / "fraud" / "payments.raw" / "0" / f"{missing}.ckpt"
    with pytest.raises(CheckpointError, match="missing") as info:
        store.load("fraud", "payments.raw", 0, missing)
    assert str(expected) in str(info.value)


def test_store_load_refuses_ids_that_are_paths(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    checkpoint = make_checkpoint(partition=0)
    store.save(checkpoint)
    # "../0/<id>" would reach the very file that exists: refused as an id, not as missing
    sneaky = f"../0/{checkpoint.checkpoint_id}"
    assert (partition_dir(tmp_path, checkpoint) / f"{sneaky}.ckpt").exists()
    for bad in (sneaky, "../x", f"{checkpoint.checkpoint_id}.ckpt"):
        with pytest.raises(CheckpointError, match="not a checkpoint id"):
            store.load("fraud", "payments.raw", 0, bad)


@pytest.mark.parametrize(
    ("group", "topic"),
    [("a/b", "t"), ("..", "t"), (".", "t"), ("", "t"), ("g", "x/../y"), ("g", ".."),
     ("g", "/abs"), ("g", "a b")],
)  # fmt: skip
def test_store_refuses_group_and_topic_names_that_are_not_path_segments(
    tmp_path: Path, group: str, topic: str
) -> None:
    store = DirectoryCheckpointStore(tmp_path / "store")
    with pytest.raises(CheckpointError, match="cannot name a checkpoint location"):
        store.save(make_checkpoint(group=group, topic=topic))
    with pytest.raises(CheckpointError, match="cannot name a checkpoint location"):
        store.load(group, topic, 0, new_id(1))
    with pytest.raises(CheckpointError, match="cannot name a checkpoint location"):
        store.prune(group, topic, 0, 10)
    assert list(tmp_path.rglob("*.ckpt")) == []


def test_store_refuses_a_checkpoint_of_another_partition_or_group(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    checkpoint = make_checkpoint(partition=0)
    store.save(checkpoint)
    name = f"{checkpoint.checkpoint_id}.ckpt"
    source = partition_dir(tmp_path, checkpoint) / name
    for group, partition in (("fraud", 1), ("other-group", 0)):
        target = tmp_path / group / "payments.raw" / str(partition)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target / name)
        with pytest.raises(CheckpointError) as info:
            store.load(group, "payments.raw", partition, checkpoint.checkpoint_id)
        assert "payments.raw[0]" in str(info.value)
        assert f"payments.raw[{partition}]" in str(info.value)


def test_store_load_of_a_corrupt_file_names_it(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    checkpoint = make_checkpoint()
    store.save(checkpoint)
    path = partition_dir(tmp_path, checkpoint) / f"{checkpoint.checkpoint_id}.ckpt"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        store.load("fraud", "payments.raw", 0, checkpoint.checkpoint_id)


def test_prune_removes_only_checkpoints_below_the_offset(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    saved = {o: [make_checkpoint(offset=o) for _ in range(2 if o == 10 else 1)]
             for o in (1, 5, 10, 20)}  # fmt: skip
    for group in saved.values():
        for checkpoint in group:
            store.save(checkpoint)
    other_partition = make_checkpoint(offset=1, partition=1)
    store.save(other_partition)
    directory = partition_dir(tmp_path, saved[1][0])
    (directory / "notes.txt").write_text("keep")
    (directory / "readme.ckpt").write_text("keep: not a checkpoint id")

    assert store.prune("fraud", "payments.raw", 0, 10) == 2

    left = sorted(p.name for p in directory.iterdir())
    kept = sorted(f"{c.checkpoint_id}.ckpt" for o in (10, 20) for c in saved[o])
    assert left == sorted([*kept, "notes.txt", "readme.ckpt"])
    for checkpoint in saved[10] + saved[20]:
        assert store.load("fraud", "payments.raw", 0, checkpoint.checkpoint_id) == checkpoint
    assert store.load("fraud", "payments.raw", 1, other_partition.checkpoint_id)
    assert store.prune("fraud", "payments.raw", 0, 10) == 0


def test_prune_of_an_unknown_partition_is_a_no_op(tmp_path: Path) -> None:
    assert DirectoryCheckpointStore(tmp_path / "none").prune("g", "t", 0, 100) == 0


def test_prune_removes_temporary_files_only_when_stale(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    checkpoint = make_checkpoint(offset=50)
    store.save(checkpoint)
    directory = partition_dir(tmp_path, checkpoint)
    now = time.time()
    fresh = directory / ".tmp-fresh.ckpt"
    recent = directory / ".tmp-recent.ckpt"
    stale = directory / ".tmp-stale.ckpt"
    for path, age in ((fresh, 0), (recent, STALE_TMP_S - 60), (stale, STALE_TMP_S + 60)):
        path.write_bytes(b"partial")
        os.utime(path, (now - age, now - age))

    store.prune("fraud", "payments.raw", 0, 10)

    assert fresh.exists()
    assert recent.exists()  # may be a save in progress
    assert not stale.exists()
    assert (directory / f"{checkpoint.checkpoint_id}.ckpt").exists()


def test_save_leaves_no_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    checkpoint = make_checkpoint()

    def refuse(src: Any, dst: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk gone"):
        store.save(checkpoint)
    monkeypatch.undo()
    directory = partition_dir(tmp_path, checkpoint)
    assert list(directory.iterdir()) == []  # neither the final name nor a temporary file
    with pytest.raises(CheckpointError, match="missing"):
        store.load("fraud", "payments.raw", 0, checkpoint.checkpoint_id)


def test_save_leaves_no_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    earlier = make_checkpoint(offset=1)
    store.save(earlier)
    checkpoint = make_checkpoint(offset=2)

    def no_sync(fd: int) -> None:
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", no_sync)
    with pytest.raises(OSError, match="fsync failed"):
        store.save(checkpoint)
    monkeypatch.undo()
    directory = partition_dir(tmp_path, checkpoint)
    assert [p.name for p in directory.iterdir()] == [f"{earlier.checkpoint_id}.ckpt"]


def test_save_never_shows_a_partial_file_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    checkpoint = make_checkpoint()
    final = partition_dir(tmp_path, checkpoint) / f"{checkpoint.checkpoint_id}.ckpt"
    seen: list[bool] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        # when the rename happens, the temporary file is complete and the final one absent
        seen.append(final.exists())
        assert Checkpoint.from_bytes(Path(src).read_bytes()) == checkpoint
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    store.save(checkpoint)
    assert seen == [False]
    assert final.read_bytes() == checkpoint.to_bytes()


def test_save_refuses_a_checkpoint_id_that_is_a_path(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path / "store")
    checkpoint = make_checkpoint(checkpoint_id="../../../../escaped")
    try:
        with pytest.raises(CheckpointError):
            store.save(checkpoint)
    finally:
        assert not (tmp_path / "escaped.ckpt").exists()


# == rules topic =============================================================================

RULE_BIG: dict[str, Any] = {
    "id": "big",
    "version": 1,
    "key": "user_id",
    "pattern": [{"name": "a", "where": "amount > 100"}],
}
RULE_SMALL: dict[str, Any] = {
    "id": "small",
    "key": "user_id",
    "pattern": [{"name": "a", "where": "amount < 1"}],
}


def rule(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    out.update(changes)
    return out


def as_json(spec: Any) -> bytes:
    return json.dumps(spec).encode()


def file_rules() -> list[RuleDefinition]:
    return load_rules(json.dumps([RULE_BIG, RULE_SMALL]), source="rules.json")


def test_parse_json_value() -> None:
    definition = parse_rule_record(b"big", as_json(RULE_BIG), source="fraud.rules[0]@3")
    assert (definition.id, definition.version, definition.enabled) == ("big", 1, True)
    assert definition.spec["pattern"] == [{"name": "a", "where": "amount > 100"}]


def test_parse_yaml_value_and_list_and_document_forms() -> None:
    yaml_mapping = (
        b"id: big\nversion: 1\nkey: user_id\npattern:\n  - {name: a, where: amount > 100}\n"
    )
    yaml_list = (
        b"- id: big\n  version: 1\n  key: user_id\n  pattern: [{name: a, where: amount > 100}]\n"
    )
    expected = parse_rule_record(b"big", as_json(RULE_BIG), source="s").spec
    for value in (yaml_mapping, yaml_list, as_json([RULE_BIG]), as_json({"rules": [RULE_BIG]})):
        assert parse_rule_record(b"big", value, source="s").spec == expected, value


def test_parse_refuses_a_key_that_is_not_the_rule_id() -> None:
    with pytest.raises(RuleRecordError) as info:
        parse_rule_record(b"other", as_json(RULE_BIG), source="fraud.rules[1]@9")
    message = str(info.value)
    assert message.startswith("fraud.rules[1]@9: ")
    assert "'other'" in message and "'big'" in message


def test_parse_refuses_two_rules_in_one_record() -> None:
    with pytest.raises(RuleRecordError, match=r"^fraud.rules\[0\]@4: .*exactly"):
        parse_rule_record(b"big", as_json([RULE_BIG, RULE_SMALL]), source="fraud.rules[0]@4")


@pytest.mark.parametrize(
    "spec",
    [rule(RULE_BIG, pattern=[{"name": "a", "where": "amount >"}]),
     rule(RULE_BIG, within="soon"),
     {"id": "big"},
     rule(RULE_BIG, surprise=True)],
    ids=["bad-expression", "bad-window", "incomplete", "unknown-field"],
)  # fmt: skip
def test_parse_refuses_invalid_rules_naming_the_source(spec: Any) -> None:
    with pytest.raises(RuleRecordError, match=re.escape("fraud.rules[2]@17")):
        parse_rule_record(b"big", as_json(spec), source="fraud.rules[2]@17")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [(b"big", b"\xff\xfe", "UTF-8"), (b"\xff", as_json(RULE_BIG), "UTF-8"),
     (None, as_json(RULE_BIG), "key"), (b"big", b"id: [", "YAML"), (b"big", b"", "no rules")],
)  # fmt: skip
def test_parse_refuses_unreadable_records(key: bytes | None, value: bytes, fragment: str) -> None:
    with pytest.raises(RuleRecordError) as info:
        parse_rule_record(key, value, source="fraud.rules[0]@1")
    assert "fraud.rules[0]@1" in str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def effective(rule_set: RuleSet) -> list[tuple[str, int | None, str]]:
    return [(d.id, d.version, d.spec["pattern"][0]["where"]) for d in rule_set.effective()]


def test_rule_set_topic_overrides_file_and_tombstone_restores_it() -> None:
    rule_set = RuleSet(file_rules())
    assert effective(rule_set) == [("big", 1, "amount > 100"), ("small", None, "amount < 1")]

    v2 = as_json(rule(RULE_BIG, version=2, pattern=[{"name": "a", "where": "amount > 500"}]))
    assert rule_set.apply_record(b"big", v2, source="r@0") is True
    # the override keeps the file's position
    assert effective(rule_set) == [("big", 2, "amount > 500"), ("small", None, "amount < 1")]

    assert rule_set.apply_record(b"big", v2, source="r@1") is False  # same record again
    same_as_yaml = b"id: big\nversion: 2\nkey: user_id\npattern: [{name: a, where: amount > 500}]"
    assert rule_set.apply_record(b"big", same_as_yaml, source="r@2") is False

    assert rule_set.apply_record(b"big", None, source="r@3") is True
    assert effective(rule_set) == [("big", 1, "amount > 100"), ("small", None, "amount < 1")]
    assert rule_set.apply_record(b"big", None, source="r@4") is False  # nothing left to drop


def test_rule_set_version_and_spec_changes_count_as_changes() -> None:
    rule_set = RuleSet(file_rules())
    assert rule_set.apply_record(b"big", as_json(rule(RULE_BIG, version=3)), source="r@0")
    assert rule_set.apply_record(b"big", as_json(rule(RULE_BIG, version=4)), source="r@1")
    changed_spec = rule(RULE_SMALL, pattern=[{"name": "a", "where": "amount < 2"}])
    assert rule_set.apply_record(b"small", as_json(RULE_SMALL), source="r@2") is True
    assert rule_set.apply_record(b"small", as_json(changed_spec), source="r@3") is True
    disabled = rule(changed_spec, enabled=False)
    assert rule_set.apply_record(b"small", as_json(disabled), source="r@4") is True
    assert [d.enabled for d in rule_set.effective()] == [True, False]


def test_rule_set_tombstone_of_an_unknown_id_changes_nothing() -> None:
    rule_set = RuleSet(file_rules())
    before = effective(rule_set)
    assert rule_set.apply_record(b"never-seen", None, source="r@0") is False
    assert rule_set.apply_record(b"small", None, source="r@1") is False  # file-only rule stays
    assert effective(rule_set) == before


def test_rule_set_topic_only_rules_are_appended_and_removable() -> None:
    rule_set = RuleSet(file_rules())
    extra = rule(RULE_SMALL, id="extra")
    newer = rule(RULE_SMALL, id="newer")
    assert rule_set.apply_record(b"extra", as_json(extra), source="r@0")
    assert rule_set.apply_record(b"newer", as_json(newer), source="r@1")
    assert [d.id for d in rule_set.effective()] == ["big", "small", "extra", "newer"]
    assert rule_set.apply_record(b"extra", None, source="r@2")
    assert [d.id for d in rule_set.effective()] == ["big", "small", "newer"]


def test_rule_set_keeps_the_old_definition_when_a_record_is_rejected() -> None:
    rule_set = RuleSet(file_rules())
    v2 = as_json(rule(RULE_BIG, version=2))
    rule_set.apply_record(b"big", v2, source="r@0")
    broken = as_json(rule(RULE_BIG, version=3, pattern=[{"name": "a", "where": "amount >"}]))
    with pytest.raises(RuleRecordError, match=re.escape("r@1")):
        rule_set.apply_record(b"big", broken, source="r@1")
    assert [(d.id, d.version) for d in rule_set.effective()] == [("big", 2), ("small", None)]
    with pytest.raises(RuleRecordError, match="tombstone without a key"):
        rule_set.apply_record(None, None, source="r@2")


def test_rule_set_with_no_file_rules() -> None:
    rule_set = RuleSet([])
    assert rule_set.effective() == []
    assert rule_set.apply_record(b"big", as_json(RULE_BIG), source="r@0")
    assert [d.id for d in rule_set.effective()] == ["big"]
    assert rule_set.apply_record(b"big", None, source="r@1")
    assert rule_set.effective() == []


# == runner helpers ==========================================================================


def test_checkpoint_reference_round_trip() -> None:
    checkpoint_id = new_id(1234)
    reference = checkpoint_reference(checkpoint_id)
    assert reference.startswith(METADATA_PREFIX)
    assert parse_reference(reference) == checkpoint_id


@pytest.mark.parametrize(
    "metadata",
    [None, "", "some other tool's metadata", "fraudcep/2 00000000000000000001-abcdef012345",
     METADATA_PREFIX, METADATA_PREFIX + "   "],
)  # fmt: skip
def test_parse_reference_of_foreign_metadata_is_none(metadata: str | None) -> None:
    assert parse_reference(metadata) is None


def test_open_store_for_a_directory_and_file_url(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "ckpts"))
    assert isinstance(store, DirectoryCheckpointStore)
    assert store.root == tmp_path / "ckpts"
    url_store = open_store(f"file://{tmp_path}/other")
    assert isinstance(url_store, DirectoryCheckpointStore)
    assert url_store.root == tmp_path / "other"
    checkpoint = make_checkpoint()
    url_store.save(checkpoint)
    assert (tmp_path / "other" / "fraud" / "payments.raw" / "0").is_dir()


@pytest.mark.parametrize("location", ["gs://b/p", "hdfs://namenode/checkpoints"])
def test_open_store_of_an_unknown_scheme_names_it(location: str) -> None:
    scheme = location.split("://")[0]
    with pytest.raises(RunnerError, match=re.escape(f"{scheme}://")):
        open_store(location)


def test_open_store_finds_the_s3_store_through_its_entry_point() -> None:
    from fraudcep_aws.s3_checkpoints import S3CheckpointStore

    store = open_store("s3://fraud-checkpoints/prod")
    assert isinstance(store, S3CheckpointStore)
    assert store.describe() == "s3://fraud-checkpoints/prod"


def test_alert_value_is_the_alert_as_json() -> None:
    definitions = load_rules(json.dumps([RULE_BIG]), source="r.json")
    engine = Engine([d.rule for d in definitions], timestamp="ts")
    event = {"ts": 1, "user_id": "u1", "amount": 150, "payment_id": "p1"}
    alerts = [*engine.process_many([event]), *engine.flush()]
    assert len(alerts) == 1
    doc = json.loads(alert_value(alerts[0]))
    assert doc["alert_id"] == alerts[0].alert_id
    assert doc["rule_id"] == "big"
    assert doc["rule_version"] == 1
    assert doc["key"] == "u1"
    assert doc["events"] == {"a": [event]}


def test_alert_value_renders_non_json_values_as_text() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    alert = Alert(
        rule_id="r", key=("u", 1), events={"a": [{"at": when}]}, first_ts=1, last_ts=2,
        alert_id="abc", emitted_at=3,
    )  # fmt: skip
    value = alert_value(alert)
    assert isinstance(value, bytes)
    doc = json.loads(value)
    assert doc["events"] == {"a": [{"at": str(when)}]}
    assert (doc["alert_id"], doc["rule_id"], doc["key"]) == ("abc", "r", ["u", 1])


# == logs ====================================================================================


def make_record(message: str = "partition assigned", **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("fraudcep.runner", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_json_formatter_writes_one_object_with_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fraudcep.test_parts.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("partition %d assigned", 3, extra=fields(partition=3, rule="big", msg="x"))
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["level"] == "warning"
    assert doc["logger"] == "fraudcep.test_parts.json"
    assert doc["msg"] == "partition 3 assigned"  # a field cannot overwrite the message
    assert doc["partition"] == 3 and doc["rule"] == "big"
    assert datetime.fromisoformat(doc["ts"]).tzinfo is not None
    assert "exception" not in doc


def test_json_formatter_includes_exceptions_and_odd_values() -> None:
    try:
        raise RuntimeError("checkpoint store down")
    except RuntimeError:
        record = make_record(fields={"path": Path("/x"), "ids": {1}})
        record.exc_info = sys.exc_info()
        line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert "RuntimeError: checkpoint store down" in doc["exception"]
    assert doc["path"] == "/x"
    assert doc["ids"] == "{1}"


def test_json_formatter_without_fields() -> None:
    doc = json.loads(JsonFormatter().format(make_record("plain ünïcode")))
    assert set(doc) == {"ts", "level", "logger", "msg"}
    assert doc["msg"] == "plain ünïcode"


def test_text_formatter_appends_key_values() -> None:
    line = TextFormatter().format(make_record(fields={"partition": 3, "rule": "big"}))
    assert line.endswith("WARNING fraudcep.runner: partition assigned partition=3 rule=big")
    plain = TextFormatter().format(make_record())
    assert plain.endswith("fraudcep.runner: partition assigned")


def test_configure_routes_fraudcep_loggers() -> None:
    logger = logging.getLogger("fraudcep")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    stream = io.StringIO()
    try:
        configure("warning", "json", stream)
        logging.getLogger("fraudcep.runner").info("hidden")
        logging.getLogger("fraudcep.runner").error("shown", extra=fields(partition=1))
        configure("info", "text", stream)
        logging.getLogger("fraudcep.rules").info("as text", extra=fields(rule="r"))
    finally:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["msg"] == "shown"
    assert lines[1].endswith("fraudcep.rules: as text rule=r")


def test_the_producer_retry_backoff_is_a_default_the_kafka_config_replaces() -> None:
    from confluent_kafka import Producer

    from fraudcep_kafka.runner import producer_retry_backoff

    short = producer_retry_backoff({})
    assert short == {"retry.backoff.ms": 2, "retry.backoff.max.ms": 10}
    assert producer_retry_backoff({"retry.backoff.ms": "100"}) == {}
    assert producer_retry_backoff({"retry.backoff.max.ms": "50", "linger.ms": "1"}) == {}
    # librdkafka takes it (a transactional producer; nothing is connected)
    Producer({"bootstrap.servers": "127.0.0.1:1", "transactional.id": "t", **short})


# == metrics =================================================================================

METRIC_NAMES = [
    "fraudcep_records_consumed_total", "fraudcep_records_processed_total",
    "fraudcep_records_dead_lettered_total", "fraudcep_alerts_total",
    "fraudcep_partial_matches_timed_out_total", "fraudcep_condition_errors_total",
    "fraudcep_overflows_total", "fraudcep_records_replayed_total", "fraudcep_transactions_total",
    "fraudcep_rebalances_total", "fraudcep_rule_changes_total",
    "fraudcep_rule_records_rejected_total", "fraudcep_consumer_lag",
    "fraudcep_event_time_lag_seconds", "fraudcep_assigned_partitions",
    "fraudcep_live_partial_matches", "fraudcep_processing_latency_seconds",
    "fraudcep_commit_seconds", "fraudcep_checkpoint_seconds", "fraudcep_checkpoint_bytes",
    "fraudcep_fetch_delay_seconds", "fraudcep_alert_stage_seconds",
]  # fmt: skip


def scrape(address: tuple[str, int]) -> str:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text: str = response.read().decode()
        return text


def _histogram_samples(metrics: RunnerMetrics) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in metrics.registry.collect()
        if family.name == "fraudcep_processing_latency_seconds"
        for s in family.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "amounts",
    [
        [],
        [0.0],
        [0.0005, 0.001, 0.0010000001, 0.002, 29.9, 30.0, 30.1, 1e9],
        list(LATENCY_BUCKETS) * 3,
        [i / 997 for i in range(5000)],
    ],
)
def test_observe_many_counts_what_observe_one_by_one_does(amounts: list[float]) -> None:
    one_by_one, at_once = RunnerMetrics(), RunnerMetrics()
    for amount in amounts:
        one_by_one.latency.observe(amount)
    observe_many(at_once.latency, amounts)
    expected, got = _histogram_samples(one_by_one), _histogram_samples(at_once)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_metrics_are_served_over_http() -> None:
    metrics = RunnerMetrics()
    address = metrics.serve("127.0.0.1:0")
    try:
        assert address[0] == "127.0.0.1" and address[1] > 0
        metrics.processed.inc(5)
        metrics.alerts.labels(rule="big", mode="live").inc()
        metrics.lag.labels(partition="2").set(17)
        metrics.latency.observe(0.003)
        metrics.fetch_delay.observe(0.004)
        metrics.alert_stage.labels("commit").observe(0.006)
        text = scrape(address)
    finally:
        metrics.close()
    for name in METRIC_NAMES:
        assert re.search(rf"^# HELP {name} \S", text, re.M), name
    assert "fraudcep_records_processed_total 5.0" in text
    assert 'fraudcep_alerts_total{mode="live",rule="big"} 1.0' in text
    assert 'fraudcep_consumer_lag{partition="2"} 17.0' in text
    assert 'fraudcep_processing_latency_seconds_bucket{le="0.005"} 1.0' in text
    assert 'fraudcep_fetch_delay_seconds_bucket{le="0.005"} 1.0' in text
    assert 'fraudcep_alert_stage_seconds_bucket{le="0.0075",stage="commit"} 1.0' in text


def test_two_runner_metrics_do_not_collide() -> None:
    first, second = RunnerMetrics(), RunnerMetrics()
    a = first.serve("127.0.0.1:0")
    try:
        b = second.serve("127.0.0.1:0")
        try:
            assert a[1] != b[1]
            first.processed.inc(3)
            second.processed.inc(11)
            assert "fraudcep_records_processed_total 3.0" in scrape(a)
            assert "fraudcep_records_processed_total 11.0" in scrape(b)
        finally:
            second.close()
    finally:
        first.close()


def test_close_stops_the_server() -> None:
    metrics = RunnerMetrics()
    address = metrics.serve("127.0.0.1:0")
    scrape(address)
    metrics.close()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(address)
    metrics.close()  # closing twice is harmless
