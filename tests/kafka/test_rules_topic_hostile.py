"""Hostile records on the rules topic, against the real broker: a record that cannot be loaded,
whatever the reason, is refused, logged with its key, partition and offset, and counted in
``fraudcep_rule_records_rejected_total``; the runner keeps the rules it had, takes the good
changes that follow, and starts even when bad records are on the topic from the beginning
(or a version older than the one it ran was published while it was down).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.kafka_runner import (
    Job,
    RunnerProcess,
    payment_records,
    produce,
    read_topic,
    wait_until,
)

from fraudcep_kafka.topics import COMPACTED, create_topics

pytestmark = pytest.mark.kafka

RULE_ID = "tiny-twice"
GOOD_RULE = {
    "id": RULE_ID,
    "version": 1,
    "key": "user_id",
    "within": "1m",
    "skip": "skip_past_last_event",
    "pattern": [{"name": "tiny", "where": "amount < 1.5", "times": 2}],
}


def billion_laughs() -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, name in enumerate("bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join(["*" + "abcdefghi"[level]] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


def huge_version() -> bytes:
    spec = json.dumps({**GOOD_RULE, "version": 0})
    return spec.replace('"version": 0', '"version": ' + "9" * 5_000).encode()


OLDER = {**GOOD_RULE, "version": 0}
HUGE_TIMES = [{"name": "tiny", "where": "amount < 1.5", "times": 10**12}]
# present before the runner starts: start-up reads them
BAD_AT_START: list[tuple[bytes | None, bytes | None]] = [
    (RULE_ID.encode(), b"- &r {id: tiny-twice, key: user_id, pattern: [*r]}\n"),
    (RULE_ID.encode(), huge_version()),
    (b"laughs", billion_laughs()),
]
# published to a running runner that already runs the good rule
BAD_LATER: list[tuple[bytes | None, bytes | None]] = [
    (RULE_ID.encode(), json.dumps({**GOOD_RULE, "version": 2, "pattern": HUGE_TIMES}).encode()),
    (RULE_ID.encode(), b"[" * 100_000 + b"]" * 100_000),
    (RULE_ID.encode(), json.dumps({**GOOD_RULE, "version": 3}).encode("utf-16")),
    (b"", json.dumps({**GOOD_RULE, "version": 4}).encode()),  # the key names no rule
    (RULE_ID.encode(), b"{id: tiny-twice, key: !!python/object/apply:os.system [id]}"),
]


@pytest.fixture
def job(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Job]:
    j = Job(kafka_bootstrap, tmp_path)
    j.create_input()
    create_topics({"bootstrap.servers": kafka_bootstrap}, {j.rules_topic: (1, COMPACTED)})
    yield j


def rejected(runner: RunnerProcess) -> float:
    """``fraudcep_rule_records_rejected_total`` from the runner's metrics endpoint."""
    [url] = [x["url"] for x in runner.log_lines() if x.get("msg") == "metrics endpoint up"]
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    match = re.search(r"^fraudcep_rule_records_rejected_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def rejections(runner: RunnerProcess) -> list[dict[str, Any]]:
    return [x for x in runner.log_lines() if x.get("msg") == "rejected rules record"]


def wait_rejected(runner: RunnerProcess, count: int) -> None:
    def done() -> bool:
        assert runner.process.poll() is None, runner.tail()
        return len(rejections(runner)) >= count and rejected(runner) >= count

    wait_until(done, 180, f"{count} rejected rules records")


def alerts(job: Job) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in read_topic(job.bootstrap, job.alerts_topic)]


def test_bad_rule_records_are_refused_counted_and_survive_restarts(job: Job) -> None:
    produce(job.bootstrap, job.rules_topic, BAD_AT_START)
    runner = job.start()
    try:
        runner.wait_logged("partitions assigned")
        wait_rejected(runner, len(BAD_AT_START))
        produce(
            job.bootstrap, job.rules_topic, [(RULE_ID.encode(), json.dumps(GOOD_RULE).encode())]
        )
        runner.wait_logged("rules applied", count=job.partitions)  # one line per partition
        produce(job.bootstrap, job.rules_topic, BAD_LATER)
        total = len(BAD_AT_START) + len(BAD_LATER)
        wait_rejected(runner, total)
        base = {"user_id": "u-hostile", "card_id": "c-1", "merchant": "m1", "country": "DE",
                "currency": "EUR", "status": "approved"}  # fmt: skip
        payments = [
            {**base, "payment_id": f"p-{i}", "amount": 1.0, "ts": 1_700_000_000_000 + i}
            for i in range(2)
        ]
        produce(job.bootstrap, job.input_topic, payment_records(payments))
        wait_until(lambda: len(alerts(job)) >= 1, 120, "the alert of the rule it kept")
        [alert] = alerts(job)
        assert alert["rule_id"] == RULE_ID
        assert rejected(runner) == total
        logged = rejections(runner)
    finally:
        assert runner.terminate() == 0, runner.tail()
    assert [x["offset"] for x in logged] == [0, 1, 2, 4, 5, 6, 7, 8]
    assert {x["partition"] for x in logged} == {0}
    assert [x["key"] for x in logged][-2:] == [repr(""), repr(RULE_ID)]
    reasons = [x["error"] for x in logged]
    for reason, part in zip(
        reasons,
        ["YAML anchors", "more than 32 characters", "YAML anchors", "from 1 to 1,000",
         "nested more than 32", "UTF-8", "must hold exactly that rule", "YAML tags"],
        strict=True,
    ):  # fmt: skip
        assert part in reason, (part, reason)
    # published while no runner runs: an older version than the checkpoints' rules
    produce(job.bootstrap, job.rules_topic, [(RULE_ID.encode(), json.dumps(OLDER).encode())])
    # a restart reads the whole topic again: the same refusals, and the good rule
    again = job.start("r2")
    try:
        again.wait_logged("partitions assigned")
        wait_rejected(again, total + 1)
        assert rejected(again) == total + 1
        assert "version 0 is older than version 1" in rejections(again)[-1]["error"]
        loaded = [x for x in again.log_lines() if x.get("msg") == "rules loaded"]
        assert RULE_ID in loaded[0]["rules"]
    finally:
        assert again.terminate() == 0, again.tail()
