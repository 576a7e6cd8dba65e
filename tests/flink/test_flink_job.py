"""The PyFlink job (``python -m fraudcep_flink run``, what ``fraudcep flink run`` starts) on a
local mini-cluster in thread mode, between topics of a real Kafka broker:

- its committed alerts (read_committed) are the core engine's on the same stream, id for
  id and byte for byte, each once, at parallelism 1 and 2, with out-of-order input;
- malformed records are dead letters with the Kafka runner's reason codes and headers;
- a task failure mid-stream: Flink restores its checkpoint, every alert is still there once;
- live rules through the rules topic: a rule added (keyed differently from every file rule),
  replaced, disabled, as docs/flink.md describes; late payments and payments a rule cannot
  key are dead letters.

Each job takes seconds to start (a JVM and a mini-cluster): these run in the Flink tier of
scripts/test.sh (skipped without the Flink virtualenv, a failure in CI).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.flink_job import check_alerts, core_alerts, headers, job_args, make_topics, payments
from support.kafka_runner import Job, produce, read_topic, wait_until
from support.pyflink import run_module, start_module

from fraudcep import Engine
from fraudcep.payments.default_rules import default_rules
from fraudcep.payments.payment import InvalidRecord, decode_payment
from fraudcep.rules import load_rules

pytestmark = [pytest.mark.pyflink, pytest.mark.kafka]

MALFORMED: list[bytes] = [
    b"not json",
    b"",
    b'{"payment_id": "x"}',
    b"[1, 2]",
    b"\xff\xfe\x00garbage",
    b'{"payment_id":"p","user_id":"u","card_id":"c","merchant":"m","country":"DE",'
    b'"amount":-5,"currency":"EUR","status":"approved","ts":1}',
]


def run_bounded(job: Job, tmp_path: Path, **options: Any) -> str:
    """Run the job to the end of its input; returns the mini-cluster's log."""
    logs = tmp_path / f"flink-log-{job.tag}"
    done = run_module(
        "fraudcep_flink", *job_args(job, bounded="true", **options), cwd=tmp_path,
        flink_log_dir=logs,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    return "".join(f.read_text(errors="replace") for f in logs.glob("*.log"))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_the_job_commits_the_core_engines_alerts_and_dead_letters_malformed_records(
    parallelism: int, kafka_bootstrap: str, tmp_path: Path
) -> None:
    job = Job(kafka_bootstrap, tmp_path, partitions=1)
    make_topics(job)
    stream = payments(seed=parallelism, n=3000, jitter=2000)
    want = core_alerts(stream, bound=2000)
    assert len(want) > 5
    records: list[tuple[bytes | None, bytes | None]] = [
        (p["user_id"].encode(), json.dumps(p).encode()) for p in stream
    ]
    bad_at = {}
    for i, value in enumerate(MALFORMED):
        at = 100 + i * 400
        records.insert(at, (b"k%d" % i, value))
        bad_at[at] = value
    produce(kafka_bootstrap, job.input_topic, records)

    run_bounded(job, tmp_path, parallelism=parallelism, max_out_of_orderness="2s")

    check_alerts(job, want)
    dead = read_topic(kafka_bootstrap, job.dlq_topic)
    assert len(dead) == len(MALFORMED)
    for msg in dead:
        h = headers(msg)
        offset = int(h["fraudcep.offset"])
        assert offset in bad_at
        assert msg.value() == bad_at[offset] and msg.key() == records[offset][0]
        with pytest.raises(InvalidRecord) as info:
            decode_payment(bad_at[offset])
        assert h["fraudcep.reason"].decode() == info.value.reason
        assert h["fraudcep.topic"].decode() == job.input_topic
        assert h["fraudcep.partition"] == b"0"
        assert int(h["fraudcep.timestamp"]) > 0


def test_event_time_is_kept_per_partition(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Three partitions read by one source subtask, no disorder allowed: each partition is in
    time order (payments keyed by user), the partitions are not in step with each other. The
    watermarks are the source's, per partition (as the runner keeps event time), so no
    payment is late and the alerts are the core engine's; made after decoding, per reader,
    the interleaved partitions made about half of the payments late."""
    job = Job(kafka_bootstrap, tmp_path, partitions=3)
    make_topics(job, rules=False)
    stream = payments(seed=5, n=4000, jitter=0)
    want = core_alerts(stream, bound=0)
    assert len(want) > 5
    produce(kafka_bootstrap, job.input_topic,
            [(p["user_id"].encode(), json.dumps(p).encode()) for p in stream])  # fmt: skip
    run_bounded(job, tmp_path, rules_topic="off", lists_topic="off", max_out_of_orderness="0")
    dead = read_topic(kafka_bootstrap, job.dlq_topic)
    assert [headers(m)["fraudcep.reason"] for m in dead] == []
    check_alerts(job, want)


MARKER = {
    "id": "marker",
    "version": 1,
    "key": "user_id",
    "pattern": [{"name": "a", "where": "amount == 4242"}],
}


def test_a_task_failure_restores_the_checkpoint_and_keeps_alerts_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The keyed function fails once, two thirds into the input: the job restarts from its
    last checkpoint, keyed state and broadcast state (the rules topic's rule, read long
    before: its source does not read it again) restored, and commits every alert once,
    the topic rule's on the last payments included."""
    job = Job(kafka_bootstrap, tmp_path, partitions=1)
    make_topics(job)
    produce(kafka_bootstrap, job.rules_topic, [(b"marker", json.dumps(MARKER).encode())])
    stream = payments(seed=11, n=12000, jitter=2000)
    last = max(p["ts"] for p in stream)
    tail = [
        {**stream[0], "payment_id": f"m{i}", "user_id": f"mu{i}", "amount": 4242,
         "ts": last + 10_000 + i}
        for i in range(3)
    ]  # fmt: skip
    (topic_rule,) = load_rules(json.dumps(MARKER), source="m", rule_mapping=True)
    reference = Engine(
        [*default_rules(), topic_rule.rule], event_id="payment_id", max_out_of_orderness=2000
    )
    want = [*reference.process_many(stream + tail), *reference.flush()]
    assert len([a for a in want if a.rule_id == "marker"]) >= 3
    produce(kafka_bootstrap, job.input_topic,
            [(None, json.dumps(p).encode()) for p in stream + tail])  # fmt: skip
    flag = tmp_path / "failed"
    log = run_bounded(
        job,
        tmp_path,
        max_out_of_orderness="2s",
        fail_after=16000,  # keyed elements: two key groups per payment
        fail_flag=str(flag),
    )
    assert flag.exists(), "the failure was injected"
    assert "injected failure" in log
    assert re.search(r"Restoring job \S+ from Checkpoint \d+", log), "restored a checkpoint"
    check_alerts(job, want)


RULES = """
rules:
  - id: big_payment
    version: 1
    key: user_id
    pattern:
      - name: a
        where: amount > 5000
"""


def small_pair(version: int, limit: int, enabled: bool = True) -> bytes:
    return json.dumps(
        {
            "id": "small_pair",
            "version": version,
            "enabled": enabled,
            "key": "card_id",
            "pattern": [
                {"name": "a", "where": f"amount < {limit}"},
                {"name": "b", "where": f"amount < {limit}", "contiguity": "followed_by"},
            ],
            "within": "1m",
        }
    ).encode()


class Feed:
    """Payments with event time one second apart, each user and card new."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.ts = 1_700_000_000_000
        self.n = 0

    def payment(self, amount: float, card: str, **extra: Any) -> dict[str, Any]:
        self.n += 1
        self.ts += 1000
        return {
            "payment_id": f"p{self.n}",
            "user_id": f"u{self.n}",
            "card_id": card,
            "merchant": "m1",
            "country": "DE",
            "amount": amount,
            "currency": "EUR",
            "status": "approved",
            "ts": self.ts,
            **extra,
        }

    def send(self, *batch: dict[str, Any]) -> None:
        produce(self.job.bootstrap, self.job.input_topic,
                [(None, json.dumps(p).encode()) for p in batch])  # fmt: skip

    def pair(self, amount: float) -> str:
        """Two payments of ``amount`` on a new card, then a big one that moves event time."""
        card = f"c{self.n}"
        self.send(self.payment(amount, card), self.payment(amount, card))
        return card


def alerts_now(job: Job) -> list[dict[str, Any]]:
    out = []
    for msg in read_topic(job.bootstrap, job.alerts_topic, timeout=60):
        doc = json.loads(msg.value())
        doc["version_header"] = headers(msg)["fraudcep.rule_version"].decode()
        out.append(doc)
    return out


def publish(job: Job, rule_id: str, value: bytes | None) -> None:
    produce(job.bootstrap, job.rules_topic, [(rule_id.encode(), value)])


def until_alert(job: Job, feed: Feed, amount: float, check: Any, what: str) -> None:
    """Send pairs of ``amount`` until an alert satisfies ``check`` (a rule change reaches
    the job at some point after it is published: Flink does not order the two streams)."""
    found: list[Any] = []

    def seen() -> bool:
        feed.pair(amount)
        feed.send(feed.payment(9000, "cx"))  # event time moves on: windows close
        found[:] = [a for a in alerts_now(job) if check(a)]
        return bool(found)

    wait_until(seen, 240, what)


def test_live_rule_changes_late_payments_and_unkeyable_payments(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    job = Job(kafka_bootstrap, tmp_path, partitions=1)
    make_topics(job)
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(RULES)
    log = tmp_path / "job.log"
    process = start_module(
        "fraudcep_flink",
        *job_args(job, rules=str(rule_file), checkpoint_interval="300ms"),
        cwd=tmp_path,
        log=log,
        flink_log_dir=tmp_path / "flink-log",
    )
    try:
        feed = Feed(job)
        # the file's rule from the start
        until_alert(job, feed, 10, lambda a: a["rule_id"] == "big_payment", "a file rule alert")

        # added: keyed by card_id, which no file rule is
        publish(job, "small_pair", small_pair(1, 10))
        until_alert(job, feed, 5, lambda a: a["rule_id"] == "small_pair", "the added rule")
        v1 = [a for a in alerts_now(job) if a["rule_id"] == "small_pair"]
        assert {a["version_header"] for a in v1} == {"1"}
        assert all(e["amount"] < 10 for a in v1 for es in a["events"].values() for e in es)

        # replaced: version 2 matches amounts under 20
        publish(job, "small_pair", small_pair(2, 20))
        until_alert(
            job, feed, 15, lambda a: a["rule_id"] == "small_pair" and a["rule_version"] == 2,
            "version 2 of the rule",
        )  # fmt: skip
        v2 = [a for a in alerts_now(job) if a.get("rule_version") == 2]
        assert {a["version_header"] for a in v2} == {"2"}

        # disabled, then a marker rule published after it: once the marker alerts, the
        # disable has been taken (one partition, in order), and pairs give no alert
        publish(job, "small_pair", small_pair(3, 20, enabled=False))
        publish(job, "marker", json.dumps({
            "id": "marker", "version": 1, "key": "user_id",
            "pattern": [{"name": "a", "where": "amount == 7777"}],
        }).encode())  # fmt: skip
        until_alert(job, feed, 7777, lambda a: a["rule_id"] == "marker", "the marker rule")
        before = {a["alert_id"] for a in alerts_now(job)}
        cards = [feed.pair(5), feed.pair(15)]
        last = feed.payment(9000, "cz")
        feed.send(last, feed.payment(1, "cz2"))
        wait_until(
            lambda: any(last["payment_id"] in json.dumps(a) for a in alerts_now(job)),
            240,
            "the payment after the pairs to alert",
        )
        new = [a for a in alerts_now(job) if a["alert_id"] not in before]
        assert not [a for a in new if a["rule_id"] == "small_pair"], "disabled: no alerts"
        assert cards

        # a payment at or below the watermark: dead letter 'late'
        old = feed.payment(5, "late-card")
        old["ts"] = 1_600_000_000_000
        feed.send(old)
        # a rule keyed by a field payments may lack: those payments are 'bad_event'
        publish(job, "by_device", json.dumps({
            "id": "by_device", "version": 1, "key": "device_id",
            "pattern": [{"name": "a", "where": "amount > 0"}],
        }).encode())  # fmt: skip

        def reasons() -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {}
            for m in read_topic(kafka_bootstrap, job.dlq_topic, timeout=60):
                out.setdefault(headers(m)["fraudcep.reason"].decode(), []).append(m)
            return out

        wait_until(lambda: "late" in reasons(), 240, "the late payment's dead letter")
        late = reasons()["late"]
        assert [json.loads(m.value())["payment_id"] for m in late] == [old["payment_id"]]

        def unkeyable() -> bool:
            feed.send(feed.payment(3, "nodev"))
            return "bad_event" in reasons()

        wait_until(unkeyable, 240, "a payment without device_id to be dead-lettered")
        assert b"device_id" in headers(reasons()["bad_event"][0])["fraudcep.detail"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
    # the job's functions log to the task manager's log
    text = "".join(f.read_text(errors="replace") for f in (tmp_path / "flink-log").glob("*.log"))
    assert f"rules changed by {job.rules_topic}[0]@0" in text
