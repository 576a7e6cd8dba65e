"""The shadow report (fraudcep_backtest.shadow): shadow rules' alert records against the live
rules', on a hand-computed case; a shadow report of the alerts an engine made with the
candidate in shadow and the baseline live gives the numbers ``backtest --baseline`` gives for
the same payments; records reduced to ids give the same report; mixed-up inputs and bad
records are refused; the HTML page is self-contained."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("matplotlib")

from fraudcep import Engine
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep.rules import load_rules
from fraudcep.runtime.output_records import alert_value
from fraudcep_backtest import run_backtest
from fraudcep_backtest.report import render_shadow_html
from fraudcep_backtest.shadow import (
    ALL_LIVE,
    AlertRecordError,
    compare_shadow,
    slim_record,
)

DAY = 86_400_000


def alert(
    rule: str, ids: list[str], ts: int, *, shadow: bool = False, version: int = 1, key: str = "k"
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "alert_id": f"{rule}-{'-'.join(ids)}",
        "rule_id": rule,
        "rule_version": version,
        "key": key,
        "first_ts": ts,
        "last_ts": ts,
        "emitted_at": ts,
        "events": {"p": [{"payment_id": i, "ts": ts, "amount": 1} for i in ids]},
    }
    if shadow:
        record["mode"] = "shadow"
    return record


LIVE = [
    alert("huge", ["p1"], 1 * DAY),
    alert("huge", ["p2"], 1 * DAY + 5),
    alert("geo", ["p9"], 2 * DAY),
]
SHADOW = [
    alert("big", ["p2"], 1 * DAY + 5, shadow=True, version=3),
    alert("big", ["p3"], 1 * DAY + 9, shadow=True, version=3),
    alert("big", ["p4"], 5 * DAY, shadow=True, version=3),  # outside the range below
]


def test_a_pair_on_a_hand_computed_case() -> None:
    result = compare_shadow(
        LIVE, SHADOW, pairs={"big": "huge"}, labels=["p3", "p1", "p7"], start=0, end=3 * DAY
    )
    assert (result.alerts_read, result.alerts_outside) == (6, 1)
    (c,) = result.comparison
    assert c.rule_id == "big vs huge"
    assert (c.alerts_candidate, c.alerts_baseline, c.alerts_both) == (2, 2, 1)  # p2: same match
    assert (c.payments_only_candidate, c.payments_only_baseline, c.payments_both) == (1, 1, 1)
    assert (c.fraud_only_candidate, c.fraud_only_baseline) == (1, 1)  # p3 / p1
    assert c.examples_only_candidate == ("p3",) and c.examples_only_baseline == ("p1",)
    shadow = {s.rule_id: s for s in result.shadow_rules}
    big = shadow["big"]
    assert (big.version, big.alerts, big.payments_flagged) == (3, 2, 2)
    assert (big.fraud_caught, big.good_flagged) == (1, 1)
    assert big.precision == 0.5 and big.recall == pytest.approx(1 / 3)  # over all 3 labels
    live = {s.rule_id: s for s in result.live_rules}
    assert (live["huge"].alerts, live["geo"].alerts) == (2, 1)
    assert result.fraud_labels == 3 and result.warnings == ()
    data = json.loads(json.dumps(result.to_json()))
    assert data["pairs"] == {"big": "huge"} and data["comparison"][0]["payments_both"] == 1


def test_an_unpaired_shadow_rule_is_measured_against_every_live_rule() -> None:
    result = compare_shadow(LIVE, SHADOW)
    (c,) = result.comparison
    assert c.rule_id == f"big vs {ALL_LIVE}"
    assert (c.payments_only_candidate, c.payments_only_baseline, c.payments_both) == (2, 2, 1)
    assert c.fraud_only_candidate is None  # no labels


def test_a_pair_without_shadow_alerts_is_warned_about() -> None:
    result = compare_shadow(LIVE, [], pairs={"nope": "huge"})
    assert result.warnings and "nope" in result.warnings[0]
    (c,) = result.comparison
    assert not c.in_candidate and c.alerts_baseline == 2


def test_mixed_up_inputs_and_bad_records_are_refused() -> None:
    with pytest.raises(AlertRecordError, match="live alert"):
        compare_shadow([], LIVE)
    with pytest.raises(AlertRecordError, match="shadow alert"):
        compare_shadow(SHADOW, [])
    for bad in ({"rule_id": "x"}, {**LIVE[0], "events": []}, {**LIVE[0], "first_ts": "x"}):
        with pytest.raises(AlertRecordError):
            slim_record(bad, "payment_id", "ts")


def test_slim_records_give_the_same_report() -> None:
    full = compare_shadow(LIVE, SHADOW, pairs={"big": "huge"}, labels=["p3"])
    slim = compare_shadow(
        [slim_record(r, "payment_id", "ts") for r in LIVE],
        [slim_record(r, "payment_id", "ts") for r in SHADOW],
        pairs={"big": "huge"},
        labels=["p3"],
    )
    assert slim.to_json() == full.to_json()
    assert len(json.dumps(slim_record(LIVE[0], "payment_id", "ts"))) < len(json.dumps(LIVE[0]))


CANDIDATE = """\
- id: big-next
  version: 1
  mode: shadow
  key: user_id
  within: 10m
  pattern:
    - name: a
      where: amount > 60
    - name: b
      followed_by: true
      where: amount > 60
"""
BASELINE = """\
- id: big
  version: 4
  key: user_id
  within: 10m
  pattern:
    - name: a
      where: amount > 900
    - name: b
      followed_by: true
      where: amount > 900
"""


def test_shadow_alerts_answer_what_the_backtest_baseline_answers() -> None:
    """The alerts a runtime would write for the candidate in shadow next to the live rule,
    through the shadow report, give the backtest's comparison of the same two rules on the
    same payments (paired by id: the backtest compares by rule id)."""
    import pyarrow as pa

    generator = PaymentGenerator(seed=5, rate=2.0, scenarios_per_10k=300, safe_noise=False)
    rows = [dict(p) for p in generator.payments(4000)]
    labels = [r["payment_id"] for r in rows if "scenario" in r]
    candidate, baseline = load_rules(CANDIDATE), load_rules(BASELINE)
    engine = Engine([candidate[0].rule, baseline[0].rule], timestamp="ts")
    records = [json.loads(alert_value(a)) for a in engine.process_many(rows) + engine.flush()]
    live = [r for r in records if "mode" not in r]
    shadow = [r for r in records if r.get("mode") == "shadow"]
    assert live and shadow and len(live) + len(shadow) == len(records)
    report = compare_shadow(live, shadow, pairs={"big-next": "big"}, labels=labels)

    renamed = load_rules(CANDIDATE.replace("id: big-next", "id: big"))
    table = pa.Table.from_pylist(rows)
    result = run_backtest(renamed, table.to_batches(), baseline=baseline, labels=labels)
    (expected,) = result.comparison or ()
    (got,) = report.comparison
    fields = [
        "alerts_candidate", "alerts_baseline", "alerts_both", "alerts_only_candidate",
        "alerts_only_baseline", "payments_only_candidate", "payments_only_baseline",
        "payments_both", "fraud_only_candidate", "fraud_only_baseline",
    ]  # fmt: skip
    assert {f: getattr(got, f) for f in fields} == {f: getattr(expected, f) for f in fields}
    # and the case says something: the candidate flags payments, fraud among them, that the
    # live rule does not, and the two share most matches
    assert got.payments_only_candidate > 0 and (got.fraud_only_candidate or 0) > 0
    assert got.alerts_both > 0 and got.alerts_only_baseline > 0
    shadow_stats = {s.rule_id: s for s in report.shadow_rules}["big-next"]
    backtest_stats = {s.rule_id: s for s in result.rules}["big"]
    assert (shadow_stats.alerts, shadow_stats.payments_flagged, shadow_stats.fraud_caught) == (
        backtest_stats.alerts,
        backtest_stats.payments_flagged,
        backtest_stats.fraud_caught,
    )


def test_the_html_page_is_self_contained() -> None:
    result = compare_shadow(LIVE, SHADOW, pairs={"big": "huge"}, labels=["p3"])
    page = render_shadow_html(result)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert page.count("<svg") == 3  # per day, caught vs good flagged, live vs shadow
    for text in ("Shadow vs live", "big vs huge", "big (shadow)", "only shadow", "only live"):
        assert text in page
    assert "(all rules) (shadow)" not in page  # the plots have the rules, not their sum
