"""``fraudcep run`` with a shadow rule against the real broker: its alerts go to the shadow
alerts topic only (marked in the record and its headers), a live rule's to the alerts topic;
the alert counter is per rule and mode; promoting the rule (a new version with ``mode: live``
on the rules topic) sends its next alerts to the alerts topic, with no restart; a promotion
that keeps the version is rejected and changes nothing. ``fraudcep shadow report`` then reads
both topics and measures the shadow rule against the live rule it is paired with."""

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

from fraudcep.rules import load_rules
from fraudcep_kafka.rules_topic import publish_rules

pytestmark = pytest.mark.kafka

LIVE_RULE = {
    "id": "huge",
    "version": 1,
    "key": "card_id",
    "pattern": [{"name": "p", "where": "amount > 1000"}],
}
SHADOW_RULE = {
    "id": "big",
    "version": 1,
    "mode": "shadow",
    "key": "card_id",
    "pattern": [{"name": "p", "where": "amount > 100"}],
}
BASE = {"user_id": "u-1", "merchant": "m1", "country": "DE", "currency": "EUR",
        "status": "approved"}  # fmt: skip


@pytest.fixture
def job(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Job]:
    j = Job(kafka_bootstrap, tmp_path)
    j.create_input()
    yield j


def _records(job: Job, topic: str) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    return [
        (json.loads(m.value()), dict(m.headers() or [])) for m in read_topic(job.bootstrap, topic)
    ]


def _payment_ids(records: list[tuple[dict[str, Any], dict[str, bytes]]]) -> list[str]:
    return sorted(r["events"]["p"][0]["payment_id"] for r, _ in records)


def _pay(job: Job, payment_id: str, amount: float) -> None:
    """A payment of now (a quiet partition's event time follows the clock)."""
    now = int(time.time() * 1000)
    payment = {**BASE, "card_id": f"card-{payment_id}", "payment_id": payment_id,
               "amount": amount, "ts": now}  # fmt: skip
    produce(job.bootstrap, job.input_topic, payment_records([payment]))


def _samples(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fraudcep_alerts_total{"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _publish(job: Job, rule: dict[str, Any]) -> None:
    publish_rules(job.bootstrap, job.rules_topic, load_rules(json.dumps({"rules": [rule]})))


def test_shadow_alerts_go_to_their_topic_and_a_promotion_needs_no_restart(job: Job) -> None:
    rules = job.workdir / "rules.json"
    rules.write_text(json.dumps({"rules": [LIVE_RULE, SHADOW_RULE]}))
    runner = job.start(rules=str(rules))
    try:
        url = runner.metrics_url()
        runner.wait_logged("partitions assigned")
        _pay(job, "p-small", 50)
        _pay(job, "p-mid", 500)
        _pay(job, "p-huge", 5000)
        wait_until(
            lambda: (
                len(_records(job, job.shadow_alerts_topic)) >= 2
                and len(_records(job, job.alerts_topic)) >= 1
            ),
            120,
            "the shadow and live alerts",
        )
        shadow = _records(job, job.shadow_alerts_topic)
        live = _records(job, job.alerts_topic)
        assert _payment_ids(shadow) == ["p-huge", "p-mid"]
        assert {r["rule_id"] for r, _ in shadow} == {"big"}
        assert all(r["mode"] == "shadow" for r, _ in shadow)
        assert all(h["fraudcep.mode"] == b"shadow" for _, h in shadow)
        assert _payment_ids(live) == ["p-huge"]
        ((record, headers),) = live
        assert record["rule_id"] == "huge" and "mode" not in record
        assert headers["fraudcep.mode"] == b"live"
        counts = _samples(url)
        assert counts['fraudcep_alerts_total{mode="shadow",rule="big"}'] == 2
        assert counts['fraudcep_alerts_total{mode="live",rule="huge"}'] == 1

        # a promotion that keeps the version: rejected, the rule stays in shadow
        _publish(job, {**SHADOW_RULE, "mode": "live"})
        wait_until(
            lambda: (
                runner.logged("rejected rules record") is not None
                or runner.logged("rule change refused") is not None
            ),
            120,
            "the same-version promotion rejected",
        )
        # the promotion: version 2, mode live, through the rules topic
        _publish(job, {**SHADOW_RULE, "version": 2, "mode": "live"})
        runner.wait_logged("rules applied")
        _pay(job, "p-after", 700)
        wait_until(lambda: len(_records(job, job.alerts_topic)) >= 2, 120, "the promoted alert")
        shadow = _records(job, job.shadow_alerts_topic)
        live = _records(job, job.alerts_topic)
        counts = _samples(url)
    finally:
        code = runner.terminate()
    assert code == 0, runner.tail()
    assert _payment_ids(shadow) == ["p-huge", "p-mid"]  # nothing more in shadow
    promoted = [r for r, _ in live if r["rule_id"] == "big"]
    assert [(r["rule_version"], r["events"]["p"][0]["payment_id"]) for r in promoted] == [
        (2, "p-after")
    ]
    assert "mode" not in promoted[0]
    assert counts['fraudcep_alerts_total{mode="live",rule="big"}'] == 1
    assert counts['fraudcep_alerts_total{mode="shadow",rule="big"}'] == 2

    # the shadow report over both topics: big (shadow, v1) against huge (live)
    out, html = job.workdir / "shadow.json", job.workdir / "shadow.html"
    done = _cli(
        "shadow", "report", "--bootstrap", job.bootstrap, "--alerts-topic", job.alerts_topic,
        "--shadow-alerts-topic", job.shadow_alerts_topic, "--pair", "big=huge",
        "--json", str(out), "--report", str(html),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["alerts_read"] == 4
    shadow_rules = {r["rule_id"]: r for r in data["shadow_rules"]}
    assert (shadow_rules["big"]["alerts"], shadow_rules["big"]["version"]) == (2, 1)
    live_rules = {r["rule_id"]: r for r in data["live_rules"]}
    assert (live_rules["huge"]["alerts"], live_rules["big"]["alerts"]) == (1, 1)
    (pair,) = data["comparison"]
    assert pair["rule_id"] == "big vs huge"
    assert (pair["payments_only_candidate"], pair["payments_only_baseline"]) == (1, 0)
    assert (pair["payments_both"], pair["alerts_both"]) == (1, 1)
    assert pair["examples_only_candidate"] == ["p-mid"]
    assert "big vs huge" in html.read_text(encoding="utf-8")
    assert "big vs huge: payments +1 only shadow, -0 only live, 1 both" in done.stdout

    missing = _cli("shadow", "report", "--bootstrap", job.bootstrap, "--alerts-topic",
                   f"missing-{job.tag}", "--timeout", "30")  # fmt: skip
    assert missing.returncode == 1 and f"missing-{job.tag}" in missing.stderr
    bad_pair = _cli("shadow", "report", "--bootstrap", job.bootstrap, "--pair", "big")
    assert bad_pair.returncode == 2 and "SHADOW=LIVE" in bad_pair.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudcep_cli", *args],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
