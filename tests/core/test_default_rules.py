"""The default rules over the synthetic stream alert exactly the injected scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudcep import Engine
from fraudcep.payments.default_rules import (
    DEFAULT_RULE_IDS,
    default_rule_definitions,
    default_rules,
)
from fraudcep.payments.synthetic import EXPECTED_RULE, PaymentGenerator, match_alerts
from fraudcep.rules import dump_rules, load_rules, rule_to_spec
from fraudcep_cli.main import main


def test_rule_ids() -> None:
    assert DEFAULT_RULE_IDS == ("high-value-3-in-5m", "card-testing", "geo-hop")
    assert set(EXPECTED_RULE.values()) == set(DEFAULT_RULE_IDS)
    assert len(default_rules()) == 3


@pytest.mark.parametrize("jitter_ms", [0, 2_500])
def test_default_rules_alert_exactly_the_scenarios(jitter_ms: int) -> None:
    generator = PaymentGenerator(seed=21, users=2_000, rate=50.0, jitter_ms=jitter_ms)
    stream = generator.payments(30_000)
    engine = Engine(default_rules(), timestamp="ts", max_out_of_orderness=jitter_ms)
    alerts = engine.process_many(stream)
    alerts += engine.flush()
    detection = match_alerts(alerts, stream.scenarios)
    assert len(stream.scenarios) > 5
    assert detection.missed == ()
    assert detection.unexpected == ()
    assert engine.drain_late() == []


def test_default_rules_are_the_rule_file() -> None:
    definitions = default_rule_definitions()
    assert [d.id for d in definitions] == list(DEFAULT_RULE_IDS)
    assert [rule_to_spec(r) for r in default_rules()] == [rule_to_spec(d.rule) for d in definitions]
    assert load_rules(dump_rules(definitions)) == definitions


def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "alerts.jsonl"
    code = main(["demo", "--events", "20000", "--users", "1000", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "result             OK" in printed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records
    for record in records:
        assert {"alert_id", "rule_id", "key", "first_ts", "last_ts", "events"} <= record.keys()
        assert record["rule_id"] in DEFAULT_RULE_IDS
        assert record["first_ts"] <= record["last_ts"]
