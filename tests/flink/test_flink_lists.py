"""Named lists in the PyFlink job, on a local mini-cluster between topics of a real broker:
the ``--lists`` files from the start, live changes through the lists topic (alerts carry
the new version), a bad lists record rejected while the job goes on, and a rule naming a
list the job lacks refused (at start: exit code 2; from the rules topic: rejected, and
taken once the list arrives); a restored job has the lists topic's entries from broadcast
state."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from support.flink_job import LiveFeed, job_args, job_log, make_topics, payments, running_job
from support.kafka_runner import Job, produce, wait_until
from support.pyflink import run_module

pytestmark = [pytest.mark.pyflink]

RULES = """
rules:
  - id: blocked
    version: 1
    key: card_id
    pattern:
      - name: p
        where: card_id in lists.blocked_cards
"""

VIP = {
    "id": "vip",
    "version": 1,
    "key": "card_id",
    "pattern": [{"name": "p", "where": "card_id in lists.vip_cards and amount > 100"}],
}


def on_card(card: str) -> Any:
    return lambda a: card_of(a) == card


def card_of(alert: dict[str, Any]) -> str:
    return str(alert["events"]["p"][0]["card_id"])


@pytest.mark.kafka
@pytest.mark.parametrize("parallelism", [1, 2])
def test_lists_from_files_and_the_lists_topic(
    parallelism: int, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """At parallelism 2 the cards' keys are spread over two instances of each function,
    each of which takes every lists record."""
    job = Job(kafka_bootstrap, tmp_path, partitions=1)
    make_topics(job)
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "blocked_cards.txt").write_text("# blocked\nc-blocked\n")
    with running_job(
        job, tmp_path, rules=tmp_path / "rules.yaml", lists=tmp_path / "lists",
        checkpoint_interval="300ms", parallelism=parallelism,
    ) as logs:  # fmt: skip
        feed = LiveFeed(job)
        # the file's list from the start; alerts carry its version
        first = feed.until(
            lambda: [feed.payment("c-other"), feed.payment("c-blocked")],
            on_card("c-blocked"), "an alert on the blocked card",
        )  # fmt: skip
        assert {a["rule_id"] for a in first} == {"blocked"}
        assert all(a["lists"] == {"blocked_cards": 1} for a in first)
        assert not [a for a in feed.alerts() if on_card("c-other")(a)]

        # a bad record is rejected (the list as it was), the next one replaces the list
        new_cards = [f"c-new-{i}" for i in range(6)]
        produce(kafka_bootstrap, job.lists_topic, [(b"blocked_cards", b'["c-new", ')])
        produce(kafka_bootstrap, job.lists_topic,
                [(b"blocked_cards", json.dumps(new_cards).encode())])  # fmt: skip

        def all_new() -> bool:
            feed.send(*[feed.payment(card) for card in new_cards], feed.payment("tick"))
            return {card_of(a) for a in feed.alerts()} >= set(new_cards)

        wait_until(all_new, 240, "alerts on every newly blocked card")
        second = [a for a in feed.alerts() if card_of(a) in new_cards]
        assert all(a["lists"] == {"blocked_cards": 2} for a in second)
        # the old entry no longer alerts: a later payment on a new one does, not it
        old = feed.payment("c-blocked")
        feed.send(old)
        new = feed.until(
            lambda: [feed.payment("c-new-0")],
            lambda a: card_of(a) == "c-new-0" and a["first_ts"] > old["ts"], "a later alert",
        )  # fmt: skip
        assert new and not [a for a in feed.alerts() if old["payment_id"] in json.dumps(a)]

        # a rules-topic rule naming a list the job lacks is rejected...
        produce(kafka_bootstrap, job.rules_topic, [(b"vip", json.dumps(VIP).encode())])
        wait_until(lambda: "rejected rules record" in job_log(logs), 240, "the refusal")
        assert "(waits for list vip_cards)" in job_log(logs)
        # ... and taken once the lists topic brings the list
        produce(kafka_bootstrap, job.lists_topic, [(b"vip_cards", b"c-vip\n")])
        vip = feed.until(
            lambda: [feed.payment("c-vip", amount=500)],
            lambda a: a["rule_id"] == "vip", "the rule waiting for its list to alert",
        )  # fmt: skip
        assert all(a["lists"] == {"vip_cards": 1} for a in vip)
        text = job_log(logs)
    assert f"rejected lists record {job.lists_topic}[0]@0" in text
    assert f"list blocked_cards changed by {job.lists_topic}[0]@1: version 2" in text
    assert "taken after list vip_cards changed" in text
    # every alert once (the sink is exactly once) and each with the versions it saw
    ids = [a["alert_id"] for a in feed.alerts()]
    assert len(ids) == len(set(ids))


def test_a_rule_file_naming_a_missing_list_is_refused_at_start(tmp_path: Path) -> None:
    """Checked on the client before the job is built: exit code 2 and the problem."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "other.txt").write_text("x\n")
    job = Job("127.0.0.1:1", tmp_path)  # never reached
    args = job_args(job, rules=tmp_path / "rules.yaml", lists=tmp_path / "other.txt")
    done = run_module("fraudcep_flink", *args, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-3000:])
    assert "blocked_cards" in done.stderr and "fraudcep flink run:" in done.stderr
    missing = run_module(
        "fraudcep_flink", *job_args(job, lists=tmp_path / "nowhere.txt"), cwd=tmp_path, timeout=300
    )
    assert missing.returncode == 2 and "nowhere.txt" in missing.stderr, missing.stderr[-3000:]


@pytest.mark.kafka
def test_a_restored_job_has_the_lists_topics_entries(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The keyed function fails once, two thirds into the input: the job restarts from its
    last checkpoint, where the lists source does not read the lists record again; the list
    comes back from broadcast state, so the payments after the failure are judged by the
    topic's entries, not the file's."""
    job = Job(kafka_bootstrap, tmp_path, partitions=1)
    make_topics(job)
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "blocked_cards.txt").write_text("blocked-1\n")
    produce(kafka_bootstrap, job.lists_topic, [(b"blocked_cards", b'["blocked-2"]')])
    stream = payments(seed=3, n=9000, jitter=0)
    last = max(p["ts"] for p in stream)
    tail = [
        {**stream[0], "payment_id": f"t{i}", "card_id": f"blocked-{1 + i % 2}", "ts": last + i}
        for i in range(1, 7)
    ]
    produce(kafka_bootstrap, job.input_topic,
            [(None, json.dumps(p).encode()) for p in stream + tail])  # fmt: skip
    flag = tmp_path / "failed"
    logs = tmp_path / "flink-log"
    args = job_args(
        job, bounded="true", rules=tmp_path / "rules.yaml", lists=tmp_path / "blocked_cards.txt",
        fail_after=6000, fail_flag=flag,
    )  # fmt: skip
    done = run_module("fraudcep_flink", *args, cwd=tmp_path, flink_log_dir=logs)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    text = job_log(logs)
    assert flag.exists() and "injected failure" in text
    assert re.search(r"Restoring job \S+ from Checkpoint \d+", text), "restored a checkpoint"
    alerts = LiveFeed(job).alerts()
    assert sorted(a["events"]["p"][0]["payment_id"] for a in alerts) == ["t1", "t3", "t5"]
    assert all(a["lists"] == {"blocked_cards": 2} for a in alerts)
    for log in logs.glob("*.log"):  # the record was taken once, before the failure
        text = log.read_text(errors="replace")
        restored = re.search(r"Restoring job \S+ from Checkpoint", text)
        if restored is not None:
            assert text.rfind("list blocked_cards changed by") < restored.start()
