"""Backtest: a month of labelled payments, the default rules against a variant of them.

1. Generates a month of synthetic payments (:class:`fraudcep.payments.synthetic.PaymentGenerator`)
   with injected fraud scenarios, and writes them as the S3 sink's Parquet lake,
   ``payments/dt=YYYY-MM-DD/hour=HH/*.parquet``, with the sink's own columns
   (:mod:`fraudcep_aws.parquet_schema`), and the scenarios' payment ids as ``labels.csv``.
2. Writes ``rules-variant.yaml``: the default rules with ``geo-hop`` at version 2, its
   amount threshold lowered from 1500 to 1000.
3. Backtests the variant with the default rules as the baseline, through the library
   (:func:`fraudcep_backtest.run_backtest`), writes ``backtest.json`` and ``report.html``,
   prints a summary and the ``fraudcep backtest`` command that does the same, and opens the
   report in a browser (unless ``--no-open``, or when there is no terminal or no browser).

Run with ``python examples/backtest_month.py`` after ``scripts/bootstrap.sh`` (it needs the
``backtest`` extra: pyarrow and matplotlib). Everything goes under ``--out``
(``out/backtest-month`` by default). See docs/backtest.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
import webbrowser
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fraudcep.payments.default_rules import DEFAULT_RULES_FILE, GEO_HOP
from fraudcep.payments.synthetic import Payment, PaymentGenerator
from fraudcep.rules import load_rule_file
from fraudcep_aws.parquet import file_name, fresh_start
from fraudcep_aws.parquet_schema import HOUR_MS, hour_path, payments_batch
from fraudcep_backtest import open_source, read_labels, run_backtest
from fraudcep_backtest.report import write_html

DAY_MS = 24 * HOUR_MS
#: 2026-11-01T00:00:00Z: the month starts at midnight UTC.
START_TS = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
#: The variant's geo-hop threshold (the default rule's is 1500).
VARIANT_THRESHOLD = 500
#: The variant's geo-hop window (the default rule's is 10m).
VARIANT_WITHIN = "1h"


def write_lake(root: Path, payments: Iterable[Payment], partitions: int = 2) -> int:
    """Write ``payments`` (in timestamp order) as the S3 sink's lake under ``root``.

    As the sink files them: each payment under the UTC hour of its ``ts``, one file per
    input partition and hour (the payments are spread over ``partitions`` partitions of a
    ``payments`` topic by user, as a keyed producer would), named as a fresh partition's
    first range. The sink itself uploads to S3; here the same columns go to local files.
    """
    written = 0
    hour: int | None = None
    rows: dict[int, list[tuple[int, Payment]]] = defaultdict(list)
    offsets = [0] * partitions

    def flush() -> None:
        if hour is None:
            return
        folder = root / hour_path(hour)
        folder.mkdir(parents=True, exist_ok=True)
        for partition, records in sorted(rows.items()):
            batch = payments_batch(records, "payments", partition)
            name = file_name("payments", partition, fresh_start(records[0][0]))
            pq.write_table(pa.Table.from_batches([batch]), folder / name, compression="zstd")
        rows.clear()

    for payment in payments:
        payment_hour = payment["ts"] // HOUR_MS
        if payment_hour != hour:
            flush()
            hour = payment_hour
        partition = zlib.crc32(payment["user_id"].encode()) % partitions
        rows[partition].append((offsets[partition], payment))
        offsets[partition] += 1
        written += 1
    flush()
    return written


def write_variant(path: Path) -> None:
    """The default rules with geo-hop's threshold lowered, as version 2."""
    rules = yaml.safe_load(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))
    for rule in rules:
        if rule["id"] == GEO_HOP:
            rule["version"] = 2
            rule["description"] = (
                f"a payment over {VARIANT_THRESHOLD}, then another over {VARIANT_THRESHOLD} "
                f"in a different country, within {VARIANT_WITHIN}"
            )
            rule["within"] = VARIANT_WITHIN
            for stage in rule["pattern"]:
                stage["where"] = stage["where"].replace("1500", str(VARIANT_THRESHOLD))
    text = "# The default rules, geo-hop with a lower threshold (examples/backtest_month.py).\n"
    path.write_text(text + yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def can_open_browser() -> bool:
    if not sys.stdout.isatty():
        return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=30, help="days of event time (30)")
    parser.add_argument(
        "--rate", type=float, default=0.2, help="background payments per second (0.2)"
    )
    parser.add_argument("--users", type=int, default=5_000, help="users (5000)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (7)")
    parser.add_argument("--out", default="out/backtest-month", help="output folder")
    parser.add_argument("--no-open", action="store_true", help="do not open the report")
    args = parser.parse_args(argv)
    out = Path(args.out)
    lake = out / "lake" / "payments"
    labels_csv = out / "labels.csv"
    variant = out / "rules-variant.yaml"
    report, json_out = out / "report.html", out / "backtest.json"
    if lake.exists() and any(lake.iterdir()):
        print(f"{lake} is not empty; give another --out", file=sys.stderr)
        return 1
    lake.mkdir(parents=True, exist_ok=True)

    # 1. A month of payments with labelled fraud, as the sink's lake.
    started = time.perf_counter()
    n = int(args.days * DAY_MS / 1000 * args.rate)
    generator = PaymentGenerator(
        seed=args.seed, users=args.users, rate=args.rate, start_ts=START_TS
    )
    stream = generator.payments(n)
    count = write_lake(lake, stream)
    scenarios = stream.scenarios
    with labels_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["payment_id"])
        for scenario in scenarios:
            writer.writerows([payment_id] for payment_id in scenario.payment_ids)
    fraud = sum(len(s.payment_ids) for s in scenarios)
    print(
        f"generated {count:,} payments over {args.days:g} days, {len(scenarios)} fraud "
        f"scenarios ({fraud} payments) in {time.perf_counter() - started:.1f} s: {lake}"
    )

    # 2. The variant of the default rules.
    write_variant(variant)

    # 3. The backtest: the variant, with the default rules as the baseline.
    result = run_backtest(
        load_rule_file(variant),
        open_source(str(lake)).batches(),
        labels=read_labels(str(labels_csv)),
        baseline=load_rule_file(DEFAULT_RULES_FILE),
        source=str(lake),
    )
    with json_out.open("w", encoding="utf-8") as handle:
        json.dump(result.to_json(alerts=False), handle, indent=1, default=str)
        handle.write("\n")
    write_html(result, str(report))

    print(f"backtest of {result.payments:,} payments in {result.seconds:.2f} s")
    baseline = {s.rule_id: s for s in result.baseline_rules or ()}
    print(f"{'rule':<31} {'version':>7} {'alerts':>7} {'precision':>9} {'recall':>7}")
    for stats in result.rules:
        for who, s in (("variant", stats), ("baseline", baseline.get(stats.rule_id))):
            if s is None:
                continue
            version = "" if s.version is None else str(s.version)
            name = f"{s.rule_id} ({who})"
            print(
                f"{name:<31} {version:>7} {s.alerts:>7} {percent(s.precision):>9} "
                f"{percent(s.recall):>7}"
            )
    for c in result.comparison or ():
        if c.alerts_only_candidate or c.alerts_only_baseline:
            print(
                f"{c.rule_id}: the variant adds {c.alerts_only_candidate} alert(s) "
                f"({c.payments_only_candidate} payments, {c.fraud_only_candidate} of them fraud) "
                f"and drops {c.alerts_only_baseline} ({c.payments_only_baseline} payments, "
                f"{c.fraud_only_baseline} fraud)"
            )
        else:
            print(f"{c.rule_id}: the same alerts in both")
    command = [
        "fraudcep", "backtest", str(variant), "--payments", str(lake),
        "--labels", str(labels_csv), "--baseline", str(DEFAULT_RULES_FILE),
        "--report", str(report), "--json", str(json_out),
    ]  # fmt: skip
    print("the same from the command line:")
    print("  " + shlex.join(command))
    print(f"report: {report.resolve()}")
    if not args.no_open and can_open_browser():
        webbrowser.open(report.resolve().as_uri())
    return 0


if __name__ == "__main__":
    sys.exit(main())
