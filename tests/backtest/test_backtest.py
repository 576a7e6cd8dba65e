"""``fraudcep backtest``: the same alerts as ``fraudcep rules test`` on the same payments (JSON
Lines, and the same payments as the S3 sink's hive-partitioned Parquet), partition pruning,
labels, the baseline comparison, the JSON and HTML outputs and bad input. Real files in tmp
dirs, the command run as a process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support.paths import REPO

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyarrow.csv")
pytest.importorskip("matplotlib")

from fraudcep.payments.synthetic import PaymentGenerator  # noqa: E402
from fraudcep_aws.parquet_schema import payments_batch  # noqa: E402
from fraudcep_backtest.report import anchor  # noqa: E402

DEFAULT_RULES = REPO / "fraudcep" / "payments" / "default_rules.yaml"
#: 2024-01-01 22:30 UTC: the payments cross midnight, so two days and several hours.
START = 1_704_148_200_000
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "adapters"), str(REPO / "tests")]),
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudcep_cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=ENV,
    )


def payments(n: int = 6000) -> list[dict[str, Any]]:
    generator = PaymentGenerator(
        seed=11, rate=0.5, scenarios_per_10k=120, start_ts=START, safe_noise=False
    )
    return [dict(p) for p in generator.payments(n)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_lake(root: Path, rows: list[dict[str, Any]], files_per_hour: int = 2) -> Path:
    """The payments as the S3 sink lays them out: dt=/hour= by ts, the project's columns,
    several files per hour (one per input partition: payments spread round robin)."""
    hours: dict[tuple[str, str], list[list[tuple[int, dict[str, Any]]]]] = defaultdict(
        lambda: [[] for _ in range(files_per_hour)]
    )
    for offset, row in enumerate(rows):
        moment = datetime.fromtimestamp(row["ts"] / 1000, UTC)
        key = (moment.strftime("%Y-%m-%d"), moment.strftime("%H"))
        hours[key][offset % files_per_hour].append((offset, row))
    for (dt, hour), parts in hours.items():
        folder = root / f"dt={dt}" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        for number, records in enumerate(parts):
            if records:
                batch = payments_batch(records, "payments", number)
                pq.write_table(
                    pa.Table.from_batches([batch]), folder / f"payments-{number}.parquet"
                )
    (root / "_intents").mkdir(exist_ok=True)
    (root / "_intents" / "payments.json").write_text("{}")  # the sink's bookkeeping: skipped
    return root


def rules_test_alerts(rules: Path, events: Path) -> list[dict[str, Any]]:
    result = cli(
        "rules", "test", str(rules), "--events", str(events), "--event-id", "payment_id", "--json"
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return [line["alert"] for line in lines if "alert" in line]


def backtest(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    out = Path(args[args.index("--json") + 1]) if "--json" in args else None
    result = cli("backtest", *args)
    data = json.loads(out.read_text()) if out is not None and result.returncode == 0 else None
    return result, data


def canonical(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(a, sort_keys=True) for a in alerts)


def test_same_alerts_as_rules_test_from_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = payments()
    events = write_jsonl(tmp_path / "payments.jsonl", rows)
    lake = write_lake(tmp_path / "lake", rows)
    expected = rules_test_alerts(DEFAULT_RULES, events)
    assert len(expected) > 20  # the scenarios and some accidental matches
    for source in (events, lake):
        out = tmp_path / f"{source.name}.json"
        result, data = backtest(
            str(DEFAULT_RULES), "--payments", str(source), "--json", str(out), "--json-alerts"
        )
        assert result.returncode == 0, result.stderr
        assert data is not None
        assert data["payments"] == len(rows)
        assert data["late_payments"] == 0
        if source == events:  # the same order too: the file is in event-time order
            assert data["alerts"] == expected
        assert canonical(data["alerts"]) == canonical(expected)
        counts = {r["rule_id"]: r["alerts"] for r in data["rules"] if r["rule_id"] != "(all rules)"}
        summary = counts_of(expected)
        assert counts == {rid: summary.get(rid, 0) for rid in counts}


def counts_of(alerts: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for alert in alerts:
        out[alert["rule_id"]] += 1
    return dict(out)


def test_from_to_prunes_partitions_and_cuts_on_ts(tmp_path: Path) -> None:
    rows = payments(3000)
    lake = write_lake(tmp_path / "lake", rows)
    # A damaged file in an hour outside --from/--to: never opened.
    junk = lake / "dt=2020-01-01" / "hour=00"
    junk.mkdir(parents=True)
    (junk / "broken.parquet").write_bytes(b"not parquet at all")
    start, end = "2024-01-01T23:10:00", "2024-01-02T00:00:00"
    out = tmp_path / "cut.json"
    result, data = backtest(
        str(DEFAULT_RULES),
        "--payments",
        str(lake),
        "--from",
        start,
        "--to",
        end,
        "--json",
        str(out),
        "--json-alerts",
    )
    assert result.returncode == 0, result.stderr
    assert data is not None
    low = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp() * 1000)
    high = int(datetime.fromisoformat(end).replace(tzinfo=UTC).timestamp() * 1000)
    inside = [r for r in rows if low <= r["ts"] < high]
    assert 0 < len(inside) < len(rows)
    assert data["payments"] == len(inside)
    assert data["first_ts"] >= low and data["last_ts"] < high
    expected = rules_test_alerts(DEFAULT_RULES, write_jsonl(tmp_path / "inside.jsonl", inside))
    assert canonical(data["alerts"]) == canonical(expected)
    # Without the cut, the damaged file is read and named.
    result, _ = backtest(str(DEFAULT_RULES), "--payments", str(lake))
    assert result.returncode == 1
    assert "broken.parquet" in result.stderr


BIG = """\
- id: big
  version: 2
  key: user_id
  within: 1m
  pattern:
    - name: a
      where: amount > {threshold}
"""


def small_case(tmp_path: Path) -> tuple[Path, Path]:
    day = 86_400_000
    rows = [  # (id, amount, ts): p1, p2, p5 are fraud; p99 is a label of a payment not read
        ("p1", 200.0, START), ("p2", 300.0, START + 1), ("p3", 150.0, START + day),
        ("p4", 50.0, START + day + 1), ("p5", 20.0, START + day + 2), ("p6", 10.0, START + day + 3),
    ]  # fmt: skip
    events = [
        {"payment_id": i, "user_id": f"u{n}", "amount": a, "ts": t, "status": "approved"}
        for n, (i, a, t) in enumerate(rows)
    ]
    source = write_jsonl(tmp_path / "small.jsonl", events)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "payment_id,reason\np1,chargeback\np2,confirmed\np5,chargeback\np99,chargeback\n"
    )
    return source, labels


def test_labels_give_precision_and_recall_at_the_payment_level(tmp_path: Path) -> None:
    source, labels = small_case(tmp_path)
    rules = tmp_path / "big.yaml"
    rules.write_text(BIG.format(threshold=100))
    out = tmp_path / "out.json"
    result, data = backtest(
        str(rules), "--payments", str(source), "--labels", str(labels), "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert data is not None
    assert data["fraud_labels"] == 4 and data["fraud_payments"] == 3
    big = data["rules"][0]
    assert big["rule_id"] == "big" and big["version"] == 2
    # flagged p1 p2 p3: caught p1 p2, good p3; fraud read p1 p2 p5
    assert big["alerts"] == 3 and big["payments_flagged"] == 3 and big["distinct_keys"] == 3
    assert big["fraud_caught"] == 2 and big["good_flagged"] == 1
    assert big["precision"] == pytest.approx(2 / 3) and big["recall"] == pytest.approx(2 / 3)
    assert big["alerts_per_day"] == {"2024-01-01": 2, "2024-01-02": 1}
    assert "precision 66.7%, recall 66.7%" in result.stdout
    # Labels as Parquet and as JSON Lines give the same.
    ids = ["p1", "p2", "p5", "p99"]
    pq.write_table(pa.table({"payment_id": ids}), tmp_path / "labels.parquet")
    write_jsonl(tmp_path / "labels.jsonl", [{"payment_id": i} for i in ids])
    for other in ("labels.parquet", "labels.jsonl"):
        out2 = tmp_path / f"{other}.json"
        _, again = backtest(
            str(rules),
            "--payments",
            str(source),
            "--labels",
            str(tmp_path / other),
            "--json",
            str(out2),
        )
        assert again is not None and again["rules"] == data["rules"]


def test_baseline_comparison(tmp_path: Path) -> None:
    source, labels = small_case(tmp_path)
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(BIG.format(threshold=100))
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(
        BIG.format(threshold=250).replace("version: 2", "version: 1")
        + BIG.format(threshold=5).replace("id: big", "id: old")
    )
    out, html = tmp_path / "out.json", tmp_path / "report.html"
    result, data = backtest(
        str(candidate),
        "--payments",
        str(source),
        "--labels",
        str(labels),
        "--baseline",
        str(baseline),
        "--json",
        str(out),
        "--report",
        str(html),
    )
    assert result.returncode == 0, result.stderr
    assert data is not None
    by_rule = {c["rule_id"]: c for c in data["comparison"]}
    big = by_rule["big"]
    assert (big["alerts_candidate"], big["alerts_baseline"], big["alerts_both"]) == (3, 1, 1)
    assert (big["alerts_only_candidate"], big["alerts_only_baseline"]) == (2, 0)
    assert (big["payments_only_candidate"], big["payments_only_baseline"]) == (2, 0)
    assert big["payments_both"] == 1
    assert big["fraud_only_candidate"] == 1 and big["fraud_only_baseline"] == 0  # p1
    assert sorted(big["examples_only_candidate"]) == ["p1", "p3"]
    old = by_rule["old"]
    assert not old["in_candidate"] and old["in_baseline"]
    assert old["alerts_baseline"] == 6 and old["payments_only_baseline"] == 6
    assert [r["rule_id"] for r in data["baseline_rules"]] == ["big", "old", "(all rules)"]
    page = html.read_text(encoding="utf-8")
    assert page.count("<svg") == 3  # alerts per day, caught vs good flagged, baseline vs candidate
    for caption in ("alerts per day by rule", "caught vs good flagged", "baseline vs candidate"):
        assert caption in page


RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "schema_version", "source", "payments", "late_payments", "first_ts", "last_ts",
        "seconds", "fraud_labels", "fraud_payments", "disabled_rules", "rules",
        "baseline_rules", "comparison", "warnings", "alerts",
    ],
    "properties": {
        "schema_version": {"const": 1},
        "payments": {"type": "integer", "minimum": 0},
        "late_payments": {"type": "integer", "minimum": 0},
        "rules": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "rule_id", "version", "alerts", "distinct_keys", "payments_flagged",
                    "alerts_per_day", "fraud_caught", "good_flagged", "precision", "recall",
                ],
                "properties": {
                    "rule_id": {"type": "string"},
                    "alerts": {"type": "integer"},
                    "alerts_per_day": {
                        "type": "object",
                        "propertyNames": {"pattern": r"^\d{4}-\d\d-\d\d$"},
                        "additionalProperties": {"type": "integer"},
                    },
                    "precision": {"type": ["number", "null"]},
                    "recall": {"type": ["number", "null"]},
                },
            },
        },
        "comparison": {"type": ["array", "null"]},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "alerts": {"type": ["array", "null"]},
    },
}  # fmt: skip


def test_json_schema_and_self_contained_html(tmp_path: Path) -> None:
    rows = payments(3000)
    lake = write_lake(tmp_path / "lake", rows)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "payment_id\n" + "".join(f"{r['payment_id']}\n" for r in rows if "scenario" in r)
    )
    out, html = tmp_path / "out.json", tmp_path / "report.html"
    result, data = backtest(
        str(DEFAULT_RULES),
        "--payments",
        str(lake),
        "--labels",
        str(labels),
        "--json",
        str(out),
        "--report",
        str(html),
    )
    assert result.returncode == 0, result.stderr
    jsonschema.validate(data, RESULT_SCHEMA)
    assert data is not None and data["alerts"] is None  # without --json-alerts
    assert [r["rule_id"] for r in data["rules"]] == [
        "high-value-3-in-5m", "card-testing", "geo-hop", "(all rules)",
    ]  # fmt: skip
    page = html.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page)  # no file outside this one
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    for rule in data["rules"]:
        assert f'id="{anchor(rule["rule_id"])}"' in page
        assert f"<h3>{rule['rule_id']}" in page
    assert page.count("<svg") == 2  # alerts per day; caught vs good flagged (no baseline)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".html"] == ["report.html"]


def test_late_payments_are_counted_and_reported(tmp_path: Path) -> None:
    rows = payments(2000)
    lake = write_lake(tmp_path / "lake", rows, files_per_hour=1)
    # A payment of 22:xx filed under the next hour (the sink never does this): late.
    stray = dict(rows[0], payment_id="stray")
    later = sorted(p for p in lake.glob("dt=*/hour=*") if p.is_dir())[-1]
    pq.write_table(
        pa.Table.from_batches([payments_batch([(0, stray)], "payments", 9)]), later / "x.parquet"
    )
    out = tmp_path / "out.json"
    result, data = backtest(str(DEFAULT_RULES), "--payments", str(lake), "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert data is not None
    assert data["payments"] == len(rows) + 1 and data["late_payments"] == 1
    assert "warning: 1 payment(s) came later" in result.stderr
    assert data["warnings"]


JSONL = ["--payments", "{tmp}/payments.jsonl"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--payments", "{tmp}/missing.jsonl"], 1, "missing.jsonl: no such file or directory"),
        (["--payments", "{tmp}/payments.txt"], 1, "unknown format"),
        ([*JSONL, "--from", "2024-02-30"], 2, "--from/--to"),
        ([*JSONL, "--from", "2024-02-02", "--to", "2024-02-01"], 2, "before --to"),
        ([*JSONL, "--labels", "{tmp}/nolabels.csv"], 1, "nolabels.csv: no such file"),
        ([*JSONL, "--baseline", "{tmp}/bad.yaml"], 1, "the rules do not load"),
        ([*JSONL, "--out-of-orderness", "soon"], 2, "--out-of-orderness"),
        (["--payments", "{tmp}/broken.jsonl"], 1, "not JSON Lines payments"),
        ([*JSONL, "--json", "{tmp}/payments.jsonl/out.json"], 1, "cannot write"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    write_jsonl(tmp_path / "payments.jsonl", payments(50))
    (tmp_path / "payments.txt").write_text("hello\n")
    (tmp_path / "broken.jsonl").write_text('{"ts": 1}\n{"ts": \n')
    (tmp_path / "bad.yaml").write_text("- id: x\n  key: k\n  within: 5x\n  pattern: []\n")
    result = cli("backtest", str(DEFAULT_RULES), *(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_rules_that_do_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- id: x\n  key: k\n  within: 5x\n  pattern: []\n")
    events = write_jsonl(tmp_path / "payments.jsonl", payments(10))
    result = cli("backtest", str(bad), "--payments", str(events))
    assert result.returncode == 1
    assert "bad.yaml" in result.stderr and "do not load" in result.stderr


def test_csv_and_a_single_parquet_file_give_the_same_alerts(tmp_path: Path) -> None:
    rows = payments(3000)
    for row in rows:  # CSV has no room for the scenario fields' absence: drop them
        row.pop("scenario", None)
        row.pop("scenario_id", None)
    events = write_jsonl(tmp_path / "payments.jsonl", rows)
    expected = rules_test_alerts(DEFAULT_RULES, events)
    table = pa.Table.from_pylist(rows)
    csv = tmp_path / "payments.csv"
    pa.csv.write_csv(table, csv)
    single = tmp_path / "payments.parquet"
    pq.write_table(table, single)
    for source in (csv, single):
        out = tmp_path / f"{source.suffix}.json"
        result, data = backtest(
            str(DEFAULT_RULES), "--payments", str(source), "--json", str(out), "--json-alerts",
            "--progress", "always",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert data is not None and data["alerts"] == expected
        assert "payments 3,000" in result.stderr and "/s" in result.stderr  # the progress line
