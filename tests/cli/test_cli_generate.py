"""``fraudcep generate``: synthetic payments with labelled scenarios, to a file or to Kafka.

File output is checked against :class:`fraudcep.payments.synthetic.PaymentGenerator` itself (same
payments, labels matching the ground truth); pacing with lower bounds only (a paced run
never sends a payment before its timestamp, so it cannot beat the schedule); Kafka output
(``pytest.mark.kafka``) by reading the topic back from all its partitions.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from support.paths import REPO

from fraudcep.payments.synthetic import EXPECTED_RULE, SCENARIO_KINDS, PaymentGenerator
from fraudcep_cli.generate import generate_to_file
from fraudcep_cli.main import main

ROOT = REPO
FRAUDCEP = Path(sys.executable).parent / "fraudcep"
PAYMENT_FIELDS = {
    "payment_id": str,
    "user_id": str,
    "card_id": str,
    "merchant": str,
    "country": str,
    "amount": float,
    "currency": str,
    "status": str,
    "ts": int,
}
# Many scenarios in few events, so every kind shows up.
DENSE = ["--events", "3000", "--scenarios-per-10k", "80", "--seed", "11", "--users", "2000"]


def generate_cli(*args: str) -> int:
    """``fraudcep generate ARGS`` in this process; the exit code (argparse's too)."""
    try:
        return main(["generate", *args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_truth(payments: list[dict[str, Any]], truth: list[dict[str, Any]]) -> None:
    """The truth records describe exactly the labelled payments."""
    by_id = {p["payment_id"]: p for p in payments}
    labelled = {p["payment_id"] for p in payments if "scenario_id" in p}
    assert {pid for record in truth for pid in record["payment_ids"]} == labelled
    assert len({record["scenario_id"] for record in truth}) == len(truth)
    for record in truth:
        mine = [by_id[pid] for pid in record["payment_ids"]]
        assert {p["scenario_id"] for p in mine} == {record["scenario_id"]}
        assert {p["scenario"] for p in mine} == {record["kind"]}
        assert {p["user_id"] for p in mine} == {record["user_id"]}
        assert {p["card_id"] for p in mine} == {record["card_id"]}
        assert record["expected_rule"] == EXPECTED_RULE[record["kind"]]
        key_field = "card_id" if record["kind"] == "card-testing" else "user_id"
        assert record["key"] == record[key_field]
        assert record["start_ts"] == min(p["ts"] for p in mine)
        assert record["end_ts"] == max(p["ts"] for p in mine)


# -- file output ------------------------------------------------------------------------------


def test_file_output_is_the_generators_stream_with_consistent_truth(tmp_path: Path) -> None:
    out, truth = tmp_path / "sub" / "payments.jsonl", tmp_path / "truth.jsonl"
    code = generate_cli(*DENSE, "--out", str(out), "--truth", str(truth), "--quiet")
    assert code == 0

    payments = read_jsonl(out)
    assert len(payments) == 3000
    for payment in payments:
        for name, kind in PAYMENT_FIELDS.items():
            assert isinstance(payment[name], kind), (name, payment)
        assert payment["status"] in ("approved", "declined")
        assert ("scenario" in payment) == ("scenario_id" in payment)
        if "scenario" in payment:
            assert payment["scenario"] in SCENARIO_KINDS
    assert len({p["payment_id"] for p in payments}) == len(payments)

    expected, scenarios = PaymentGenerator(
        seed=11, users=2000, rate=1000.0, scenarios_per_10k=80
    ).generate(3000)
    assert payments == expected  # unpaced: the generator's own timestamps

    records = read_jsonl(truth)
    assert {r["kind"] for r in records} == set(SCENARIO_KINDS)
    assert [r["scenario_id"] for r in records] == [s.scenario_id for s in scenarios]
    check_truth(payments, records)


def test_same_seed_same_bytes_other_seed_other_stream(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        out, truth = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.truth.jsonl"
        args = ["--events", "2000", "--scenarios-per-10k", "50", "--seed", seed]
        assert generate_cli(*args, "--out", str(out), "--truth", str(truth), "--quiet") == 0
        runs[name] = (out.read_bytes(), truth.read_bytes())
    assert runs["a"] == runs["b"]
    assert runs["a"][0] != runs["c"][0]


def test_kinds_rate_and_start_ts_shape_the_stream(tmp_path: Path) -> None:
    out, truth = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    args = [*DENSE, "--kinds", "card-testing", "--rate", "50", "--start-ts", "1000"]
    assert generate_cli(*args, "--out", str(out), "--truth", str(truth), "--quiet") == 0
    payments = read_jsonl(out)
    assert {p["scenario"] for p in payments if "scenario" in p} == {"card-testing"}
    assert {r["kind"] for r in read_jsonl(truth)} == {"card-testing"}
    background = [p["ts"] for p in payments if "scenario" not in p]
    assert 1000 < background[0] < 1000 + 1000
    # ~2900 background payments at 50/s span about 58 s of event time.
    assert 40_000 < background[-1] - background[0] < 80_000


def test_stdout_output_with_the_installed_command() -> None:
    result = subprocess.run(
        [str(FRAUDCEP), "generate", "--events", "500", "--seed", "3", "--out", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 500
    assert [json.loads(line) for line in lines] == PaymentGenerator(seed=3, rate=1000.0).generate(
        500
    )[0]
    assert "--- summary" in result.stderr
    assert "500" in result.stderr


# -- pacing -----------------------------------------------------------------------------------


class _TimedWrites(io.StringIO):
    """Records the wall clock (epoch ms) of every write."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def write(self, text: str) -> int:
        self.times.append(time.time_ns() / 1e6)
        return super().write(text)


def test_paced_file_run_keeps_to_the_schedule_and_the_wall_clock() -> None:
    generator = PaymentGenerator(seed=2, rate=1000.0, scenarios_per_10k=0)
    out = _TimedWrites()
    before_ms = time.time_ns() / 1e6
    started = time.perf_counter()
    summary = generate_to_file(out, generator, 300, pace=True)
    elapsed = time.perf_counter() - started

    payments = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary.events == len(payments) == len(out.times) == 300
    ts = [p["ts"] for p in payments]
    # The generator's stream, shifted as a whole so that it starts now.
    unpaced = generator.generate(300)[0]
    assert [p["payment_id"] for p in payments] == [p["payment_id"] for p in unpaced]
    assert {t - p["ts"] for t, p in zip(ts, unpaced, strict=True)} == {summary.offset_ms}
    assert math.floor(before_ms) <= ts[0] <= out.times[0]
    # Never sent before its timestamp (1 ms for the two clocks' rounding) ...
    for sent_ms, payment_ts in zip(out.times, ts, strict=True):
        assert sent_ms >= payment_ts - 1
    # ... so the run lasts at least the stream's span of event time (~0.3 s at 1000/s).
    span_s = (ts[-1] - ts[0]) / 1000
    assert span_s > 0.15
    assert elapsed >= span_s - 0.002
    assert summary.elapsed_s >= span_s - 0.002
    assert summary.paced and summary.max_behind_ms is not None


def test_paced_cli_file_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "paced.jsonl"
    before_ms = time.time_ns() // 1_000_000
    args = ["--events", "200", "--rate", "2000", "--scenarios-per-10k", "0", "--pace"]
    assert generate_cli(*args, "--out", str(out)) == 0
    ts = [p["ts"] for p in read_jsonl(out)]
    assert len(ts) == 200 and ts[0] >= before_ms
    err = capsys.readouterr().err
    assert "paced" in err and "behind schedule" in err


# -- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x.jsonl", "--bootstrap", "h:9092"], "not allowed with argument"),
        ([], "one of the arguments --out --bootstrap is required"),
        (["--out", "x.jsonl", "--rate", "-5"], "argument --rate: must be > 0, got -5"),
        (["--out", "x.jsonl", "--rate=0"], "argument --rate: must be > 0, got 0"),
        (["--out", "x.jsonl", "--rate", "fast"], "argument --rate: not a number: 'fast'"),
        (["--out", "x.jsonl", "--events", "0"], "argument --events: must be >= 1"),
        (["--out", "x.jsonl", "--kinds", "phishing"], "argument --kinds: invalid choice"),
        (["--out", "x.jsonl", "--pace", "--start-ts", "5"], "--start-ts applies only without"),
        (["--out", "x.jsonl", "-X", "acks=all"], "--producer-config applies only with"),
        (["--bootstrap", "h:9092", "-X", "no-equals"], "expected KEY=VALUE"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(tmp_path / a) if a == "x.jsonl" else a for a in args]
    assert generate_cli(*args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_unwritable_output_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert generate_cli("--out", str(blocker / "p.jsonl"), "--events", "5") == 2
    assert "cannot" in capsys.readouterr().err


def test_delivery_failures_are_raised_on_flush() -> None:
    pytest.importorskip("confluent_kafka")
    from fraudcep_kafka.payments_producer import DeliveryError, PaymentProducer

    # Nothing listens on port 1: every payment times out after 300 ms.
    producer = PaymentProducer("127.0.0.1:1", "t", config={"message.timeout.ms": 300})
    payments = PaymentGenerator(seed=1).generate(3)[0]
    for payment in payments:
        producer.send(payment)
    with pytest.raises(DeliveryError) as raised:
        producer.flush(30)
    assert raised.value.failed == 3 and producer.delivered == 0
    assert "3 payment(s) failed" in str(raised.value)


# -- Kafka ------------------------------------------------------------------------------------


def _read_topic(bootstrap: str, topic: str) -> dict[int, list[Any]]:
    """Every message of ``topic``, per partition, in order (up to the high watermarks)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        # assign(), not subscribe(): no group rebalance to wait for.
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: dict[int, list[Any]] = {p: [] for p in partitions}
        deadline = time.monotonic() + 60
        while any(len(messages[p]) < ends[p] for p in partitions):
            assert time.monotonic() < deadline, "topic not read back within 60 s"
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                partition = msg.partition()
                assert partition is not None
                messages[partition].append(msg)
        return messages
    finally:
        consumer.close()


@pytest.mark.kafka
def test_kafka_output_matches_the_file_and_keeps_users_in_one_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"fraudcep-generate-{uuid.uuid4().hex[:12]}"
    out, truth, kafka_truth = (tmp_path / n for n in ("p.jsonl", "t.jsonl", "kt.jsonl"))
    assert generate_cli(*DENSE, "--out", str(out), "--truth", str(truth), "--quiet") == 0
    code = generate_cli(
        *DENSE,
        *("--bootstrap", kafka_bootstrap, "--topic", topic, "--partitions", "3", "--no-pace"),
        *("--truth", str(kafka_truth), "--quiet"),
    )
    assert code == 0
    assert kafka_truth.read_bytes() == truth.read_bytes()

    messages = _read_topic(kafka_bootstrap, topic)
    assert sorted(messages) == [0, 1, 2]
    assert sum(len(m) for m in messages.values()) == 3000
    lines = out.read_bytes().splitlines()
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for partition, msgs in messages.items():
        assert msgs, f"partition {partition} is empty"
        for msg in msgs:
            user = json.loads(msg.value())["user_id"]
            assert msg.key() == user.encode()
            partition_of[msg.key()].add(partition)
        # Each partition holds its users' payments in the file's order, byte for byte.
        keys = {msg.key() for msg in msgs}
        expected = [line for line in lines if json.loads(line)["user_id"].encode() in keys]
        assert [msg.value() for msg in msgs] == expected
    assert all(len(parts) == 1 for parts in partition_of.values())


@pytest.mark.kafka
def test_paced_kafka_run_is_never_ahead_of_the_clock(kafka_bootstrap: str) -> None:
    from confluent_kafka import TIMESTAMP_CREATE_TIME

    from fraudcep_cli.generate import generate_to_kafka

    topic = f"fraudcep-generate-{uuid.uuid4().hex[:12]}"
    generator = PaymentGenerator(seed=4, rate=2000.0, scenarios_per_10k=0)
    before_ms = time.time_ns() // 1_000_000
    summary = generate_to_kafka(kafka_bootstrap, topic, generator, 400, pace=True, partitions=2)
    assert summary.events == summary.delivered == 400
    assert summary.elapsed_s >= (summary.last_ts or 0) / 1000 - (summary.first_ts or 0) / 1000

    messages = [m for msgs in _read_topic(kafka_bootstrap, topic).values() for m in msgs]
    assert len(messages) == 400
    for msg in messages:
        ts = json.loads(msg.value())["ts"]
        kind, created_ms = msg.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME
        assert ts >= before_ms
        assert created_ms >= ts - 1  # produced when the wall clock reached ts, not before


@pytest.mark.kafka
def test_refused_payments_exit_1(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fraudcep_kafka.topics import create_topic

    topic = f"fraudcep-generate-{uuid.uuid4().hex[:12]}"
    # The broker refuses record batches over 100 bytes: every payment fails.
    assert create_topic(kafka_bootstrap, topic, 1, config={"max.message.bytes": "100"}) == 1
    assert create_topic(kafka_bootstrap, topic, 5) == 1  # exists: kept as it is
    args = ["--bootstrap", kafka_bootstrap, "--topic", topic, "--no-pace", "--events", "20"]
    assert generate_cli(*args, "-X", "compression.type=none", "--quiet") == 1
    assert "delivery failed: 20 payment(s) failed" in capsys.readouterr().err
