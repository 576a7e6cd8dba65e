"""``fraudcep run`` with named lists against the real broker: the ``--lists`` files, live
changes through the lists topic (the next payments are judged against the new entries and
their alerts carry the new version), bad list records (rejected and counted, the runner goes
on), and rules naming a list the runner lacks (refused at start, or rejected from the rules
topic)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.kafka_runner import Job, payment_records, produce, read_topic, wait_until
from support.paths import REPO

from fraudcep_kafka.lists_topic import publish_list

pytestmark = pytest.mark.kafka

RULE = {
    "id": "blocked-card",
    "version": 1,
    "key": "card_id",
    "pattern": [{"name": "p", "where": "card_id in lists.blocked_cards"}],
}
BASE = {"user_id": "u-1", "merchant": "m1", "country": "DE", "currency": "EUR",
        "status": "approved", "amount": 10.0}  # fmt: skip


@pytest.fixture
def job(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Job]:
    j = Job(kafka_bootstrap, tmp_path)
    j.create_input()
    yield j


def _files(job: Job, rule: dict[str, Any] = RULE) -> tuple[Path, Path]:
    rules = job.workdir / "rules.json"
    rules.write_text(json.dumps({"rules": [rule]}))
    lists = job.workdir / "lists"
    lists.mkdir(exist_ok=True)
    (lists / "blocked_cards.txt").write_text("# cards\nc-blocked\n")
    return rules, lists


def _alerts(job: Job) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in read_topic(job.bootstrap, job.alerts_topic)]


def _pay(job: Job, card: str, n: int) -> None:
    """A payment of now: a quiet partition's event time follows the clock (idle timeout), so
    a payment of the past would be late."""
    now = int(time.time() * 1000)
    payment = {**BASE, "card_id": card, "payment_id": f"{card}-{n}", "ts": now}
    produce(job.bootstrap, job.input_topic, payment_records([payment]))


def _sample(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def test_lists_from_files_and_live_changes_through_the_topic(job: Job) -> None:
    rules, lists = _files(job)
    runner = job.start(rules=str(rules), lists=str(lists))
    try:
        url = runner.metrics_url()
        runner.wait_logged("partitions assigned")
        loaded = runner.wait_for("lists loaded")
        assert loaded["lists"] == {"blocked_cards": 1}
        _pay(job, "c-fine", 0)
        _pay(job, "c-blocked", 1)
        wait_until(lambda: len(_alerts(job)) >= 1, 120, "the blocked card's alert")
        [first] = _alerts(job)
        assert first["events"]["p"][0]["payment_id"] == "c-blocked-1"
        assert first["lists"] == {"blocked_cards": 1}

        # a bad record: rejected, counted, the list as it was, the runner goes on
        produce(job.bootstrap, job.lists_topic, [(b"blocked_cards", b'["c-later", ')])
        wait_until(
            lambda: _sample(url, "fraudcep_list_records_rejected_total") == 1,
            120,
            "the bad list record rejected",
        )
        assert runner.logged("rejected lists record") is not None

        # a rules-topic record naming a list the runner lacks: rejected like any bad rule
        missing = {
            **RULE,
            "id": "other",
            "pattern": [{"name": "p", "where": "card_id in lists.nope"}],
        }
        produce(job.bootstrap, job.rules_topic, [(b"other", json.dumps(missing).encode())])
        wait_until(
            lambda: _sample(url, "fraudcep_rule_records_rejected_total") == 1,
            120,
            "the rule naming a missing list rejected",
        )

        publish_list(job.bootstrap, job.lists_topic, "blocked_cards", ["c-later"])
        runner.wait_logged("list changed")
        assert _sample(url, "fraudcep_list_changes_total") == 1
        _pay(job, "c-blocked", 2)  # no longer blocked
        _pay(job, "c-later", 3)
        wait_until(lambda: len(_alerts(job)) >= 2, 120, "the new entry's alert")
        alerts = _alerts(job)
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    by_payment = {a["events"]["p"][0]["payment_id"]: a for a in alerts}  # partitions: any order
    assert sorted(by_payment) == ["c-blocked-1", "c-later-3"]
    assert by_payment["c-later-3"]["lists"] == {"blocked_cards": 2}


def test_a_list_from_the_topic_is_read_at_start_and_after_a_restart(job: Job) -> None:
    rules, lists = _files(job)
    published = job.workdir / "published.txt"
    published.write_text("# from the topic\nc-topic\n")
    done = subprocess.run(
        [sys.executable, "-m", "fraudcep_cli", "lists", "publish", "blocked_cards",
         str(published), "--bootstrap", job.bootstrap, "--topic", job.lists_topic],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 entry" in done.stdout
    runner = job.start(rules=str(rules), lists=str(lists))
    try:
        runner.wait_logged("partitions assigned")
        assert runner.wait_for("lists loaded")["lists"] == {"blocked_cards": 2}
        _pay(job, "c-blocked", 0)
        _pay(job, "c-topic", 1)
        wait_until(lambda: len(_alerts(job)) >= 1, 120, "the topic entry's alert")
        alerts = _alerts(job)
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    assert [a["events"]["p"][0]["payment_id"] for a in alerts] == ["c-topic-1"]
    assert alerts[0]["lists"] == {"blocked_cards": 2}

    # restarted: the checkpoints' rules name the list, and restore against the lists
    runner = job.start(rules=str(rules), lists=str(lists))
    try:
        runner.wait_logged("partition restored")
        _pay(job, "c-topic", 2)
        wait_until(lambda: len(_alerts(job)) >= 2, 120, "the alert after the restart")
        alerts = _alerts(job)
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    assert sorted(a["events"]["p"][0]["payment_id"] for a in alerts) == ["c-topic-1", "c-topic-2"]
    assert not [x for x in runner.problems() if "checkpoint" in x.get("msg", "")], runner.tail()


def test_a_rule_naming_a_missing_list_is_refused_at_start(job: Job) -> None:
    rules, _ = _files(job)
    args = job.runner_args("r1", rules=str(rules))  # no --lists
    done = subprocess.run(
        [sys.executable, "-m", "fraudcep_cli", *args],
        capture_output=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr.decode()
    assert "blocked_cards" in done.stderr.decode()
