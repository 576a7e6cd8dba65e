"""``fraudcep_backtest.run_backtest`` on Arrow batches made here: late payments counted, the
result's JSON, the same alerts as the engine's ``process_many``."""

from __future__ import annotations

import json

import pytest

pa = pytest.importorskip("pyarrow")

from fraudcep import Engine  # noqa: E402
from fraudcep.rules import load_rules  # noqa: E402
from fraudcep_backtest import ALL_RULES, AlertRecord, run_backtest  # noqa: E402

RULES = """
- id: two-big
  key: user_id
  within: 1m
  pattern:
    - name: a
      where: amount > 100
      times: 2
"""


def rows() -> list[dict[str, object]]:
    return [
        {
            "payment_id": f"p{i}",
            "user_id": f"u{i % 3}",
            "amount": 50.0 + 40 * (i % 5),
            "ts": 1_000 * i,
        }
        for i in range(60)
    ]


def test_alerts_are_those_of_process_many_and_json_round_trips() -> None:
    definitions = load_rules(RULES)
    data = rows()
    batches = pa.Table.from_pylist(data).to_batches(max_chunksize=7)
    result = run_backtest(definitions, batches, labels=["p3", "p4", "p999"])
    engine = Engine([d.rule for d in definitions], timestamp="ts")
    expected = engine.process_many(data) + engine.flush()  # flushed at the end, as rules test
    assert list(result.alerts) == [AlertRecord.of(a, "payment_id", "ts") for a in expected]
    assert result.payments == 60 and result.late_payments == 0
    assert result.fraud_labels == 3 and result.fraud_payments == 2
    out = json.loads(json.dumps(result.to_json()))
    assert [r["rule_id"] for r in out["rules"]] == ["two-big", ALL_RULES]
    assert out["rules"][0]["alerts"] == len(expected) > 0


def test_payments_going_backwards_are_counted_late_and_warned() -> None:
    definitions = load_rules(RULES)
    data = rows()
    late = [dict(data[5], payment_id="back")]  # 24 s behind the highest read
    batches = [pa.Table.from_pylist(part).to_batches()[0] for part in (data[:30], late, data[30:])]
    result = run_backtest(definitions, batches)
    assert result.payments == 61 and result.late_payments == 1
    assert result.warnings and "1 payment(s) came later" in result.warnings[0]
    allowed = run_backtest(definitions, batches, out_of_orderness=30_000)
    assert allowed.late_payments == 0 and not allowed.warnings
