"""Shadow rules in the PyFlink job, on a local mini-cluster between topics of a real broker:
a shadow rule's alerts go to the shadow alerts topic only, a live rule's to the alerts topic
only, both exactly once through the one transactional sink; a new version of the rule with
``mode: live`` published to the rules topic (a promotion) sends its later alerts to the
alerts topic, with no restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.flink_job import LiveFeed, headers, job_log, make_topics, running_job
from support.kafka_runner import Job, produce, read_topic

pytestmark = [pytest.mark.pyflink, pytest.mark.kafka]

RULES = """
rules:
  - id: big
    version: 1
    key: user_id
    pattern:
      - name: p
        where: amount > 5000
  - id: watch
    version: 1
    mode: shadow
    key: user_id
    pattern:
      - name: p
        where: amount > 3000
"""


def watch(version: int, mode: str) -> bytes:
    return json.dumps({
        "id": "watch", "version": version, "mode": mode, "key": "user_id",
        "pattern": [{"name": "p", "where": "amount > 3000"}],
    }).encode()  # fmt: skip


def paid(alert: dict[str, Any]) -> str:
    return str(alert["events"]["p"][0]["payment_id"])


def records(job: Job, topic: str) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    return [(json.loads(m.value()), headers(m)) for m in read_topic(job.bootstrap, topic)]


def test_shadow_alerts_go_to_their_topic_until_a_promotion(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    job = Job(kafka_bootstrap, tmp_path, partitions=1)
    make_topics(job)
    (tmp_path / "rules.yaml").write_text(RULES)
    with running_job(
        job, tmp_path, rules=tmp_path / "rules.yaml", checkpoint_interval="300ms"
    ) as logs:
        feed = LiveFeed(job)
        feed.until(
            lambda: [feed.payment("c1", amount=6000)], lambda a: a["rule_id"] == "big",
            "the live rule's alert",
        )  # fmt: skip
        live, shadow = records(job, job.alerts_topic), records(job, job.shadow_alerts_topic)
        assert {a["rule_id"] for a, _ in live} == {"big"}
        assert {a["rule_id"] for a, _ in shadow} == {"watch"}
        assert all("mode" not in a and h["fraudcep.mode"] == b"live" for a, h in live)
        assert all(a["mode"] == "shadow" and h["fraudcep.mode"] == b"shadow" for a, h in shadow)
        # one payment, two alerts: made together, committed in the same transaction (the
        # shadow topic, read after, may hold later ones too)
        assert {paid(a) for a, _ in live} <= {paid(a) for a, _ in shadow}

        # a mode change keeping the version is refused; the next version promotes the rule
        produce(kafka_bootstrap, job.rules_topic, [(b"watch", watch(1, "live"))])
        produce(kafka_bootstrap, job.rules_topic, [(b"watch", watch(2, "live"))])
        promoted = feed.until(
            lambda: [feed.payment("c2", amount=4000)],
            lambda a: a["rule_id"] == "watch", "the promoted rule's alert on the alerts topic",
        )  # fmt: skip
        assert all(a["rule_version"] == 2 and "mode" not in a for a in promoted)
        text = job_log(logs)
    live, shadow = records(job, job.alerts_topic), records(job, job.shadow_alerts_topic)
    assert all(a["rule_version"] == 1 and a["mode"] == "shadow" for a, _ in shadow)
    assert {(a["rule_id"], h["fraudcep.mode"]) for a, h in live} == {
        ("big", b"live"), ("watch", b"live")
    }  # fmt: skip
    ids = [a["alert_id"] for a, _ in live + shadow]
    assert len(ids) == len(set(ids)), "every alert once, in one topic"
    assert f"rejected rules record {job.rules_topic}[0]@0" in text
    assert "a change of mode is a new version" in text
