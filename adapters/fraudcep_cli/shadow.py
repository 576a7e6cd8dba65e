"""``fraudcep shadow report``: what the shadow rules flagged against what the live rules
flagged, from the alerts and shadow alerts topics, as the backtest reports a candidate
against a baseline (docs/rules.md, "Shadow rules").

Exit codes: 0 done; 1 an input or output cannot be used (a topic missing or not readable
to its end, labels unreadable, mixed-up topics, a report not writable); 2 a bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from fraudcep.runtime.output_records import SHADOW_ALERTS_TOPIC

DESCRIPTION = (
    "Read the alerts topic and the shadow alerts topic of running `fraudcep run` (or PyFlink) "
    "jobs to their current end and report, per shadow rule, what it flagged against the live "
    "rule it is a candidate for (--pair SHADOW=LIVE) or every live rule: alerts, payments "
    "flagged by one side only, with --labels fraud caught and precision/recall. The same "
    "numbers as `fraudcep backtest --baseline`, after deployment. Exit codes: 0 done, 1 an "
    "input or output cannot be used, 2 bad command line."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="shadow_command", metavar="ACTION", required=True)
    report = sub.add_parser(
        "report",
        help="shadow rules' alerts against the live rules' (HTML and JSON)",
        description=DESCRIPTION,
    )
    report.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    report.add_argument("--alerts-topic", default="fraud.alerts", help="the live alerts topic")
    report.add_argument(
        "--shadow-alerts-topic", default=SHADOW_ALERTS_TOPIC, help="the shadow alerts topic"
    )
    report.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="SHADOW=LIVE",
        help="compare shadow rule SHADOW with live rule LIVE (repeatable); an unpaired shadow "
        "rule is compared with every live rule",
    )
    report.add_argument(
        "--from", dest="start", metavar="TIME", help="first event time (YYYY-MM-DD or ISO, UTC)"
    )
    report.add_argument(
        "--to", dest="end", metavar="TIME", help="end of event time, excluded (YYYY-MM-DD or ISO)"
    )
    report.add_argument(
        "--labels", metavar="LABELS", help="fraud payment ids (.csv/.parquet/.jsonl)"
    )
    report.add_argument("--report", metavar="HTML", help="write the HTML report there")
    report.add_argument("--json", metavar="JSON", help="write the results as JSON there")
    report.add_argument("--timestamp", default="ts", help="event-time field of the payments")
    report.add_argument("--event-id", default="payment_id", help="payment id field")
    report.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to read each topic to its end"
    )
    report.set_defaults(handler=run_report)


def _pairs(given: list[str], err: IO[str]) -> dict[str, str] | None:
    pairs: dict[str, str] = {}
    for text in given:
        shadow, sep, live = text.partition("=")
        if not sep or not shadow.strip() or not live.strip():
            print(f"fraudcep shadow report: --pair {text!r}: expected SHADOW=LIVE", file=err)
            return None
        if shadow.strip() in pairs:
            print(f"fraudcep shadow report: --pair: {shadow.strip()!r} paired twice", file=err)
            return None
        pairs[shadow.strip()] = live.strip()
    return pairs


def run_report(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    try:
        from fraudcep_backtest import SourceError, parse_time, read_labels
        from fraudcep_backtest.shadow import AlertRecordError, compare_shadow, slim_record
        from fraudcep_kafka.alerts_topic import read_alerts
    except ImportError as exc:  # pragma: no cover - depends on the installation
        print(f"fraudcep shadow report needs pyarrow: pip install 'fraudcep[backtest]' ({exc})",
              file=err)  # fmt: skip
        return 1
    pairs = _pairs(args.pair, err)
    if pairs is None:
        return 2
    try:
        start = None if args.start is None else parse_time(args.start)
        end = None if args.end is None else parse_time(args.end)
    except ValueError as exc:
        print(f"fraudcep shadow report: --from/--to: {exc}", file=err)
        return 2
    if start is not None and end is not None and start >= end:
        print("fraudcep shadow report: --from must be before --to", file=err)
        return 2
    try:
        labels = None if args.labels is None else read_labels(args.labels, args.event_id)
    except (OSError, ValueError, SourceError) as exc:
        print(f"fraudcep shadow report: --labels: {exc}", file=err)
        return 1
    read: dict[str, list[dict[str, Any]]] = {}
    for topic in (args.alerts_topic, args.shadow_alerts_topic):
        kept: list[dict[str, Any]] = []

        def keep(record: dict[str, Any], kept: list[dict[str, Any]] = kept) -> None:
            kept.append(slim_record(record, args.event_id, args.timestamp))

        try:
            skipped = read_alerts(args.bootstrap, topic, keep, timeout_s=args.timeout)
        except Exception as exc:  # a missing topic, a broker not reachable in time
            print(f"fraudcep shadow report: {topic}: {exc}", file=err)
            return 1
        if skipped:
            print(f"warning: {topic}: {skipped} record(s) that are not alerts skipped", file=err)
        read[topic] = kept
    try:
        result = compare_shadow(
            read[args.alerts_topic],
            read[args.shadow_alerts_topic],
            pairs=pairs,
            labels=labels,
            start=start,
            end=end,
            id_field=args.event_id,
            ts_field=args.timestamp,
            source=f"{args.bootstrap}: {args.alerts_topic}, {args.shadow_alerts_topic}",
        )
    except AlertRecordError as exc:
        print(f"fraudcep shadow report: {exc} (are the topics the right way round?)", file=err)
        return 1
    for warning in result.warnings:
        print(f"warning: {warning}", file=err)
    _summary(result, out)
    try:
        for output in (args.json, args.report):
            if output is not None:
                Path(output).parent.mkdir(parents=True, exist_ok=True)
        if args.json is not None:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump(result.to_json(), handle, indent=1, default=str)
                handle.write("\n")
        if args.report is not None:
            from fraudcep_backtest.report import render_shadow_html

            Path(args.report).write_text(render_shadow_html(result), encoding="utf-8")
    except OSError as exc:
        print(f"fraudcep shadow report: cannot write: {exc}", file=err)
        return 1
    return 0


def _summary(result: Any, out: IO[str]) -> None:
    print(
        f"-- {result.alerts_read:,} alert(s) read, {result.alerts_outside:,} outside the range",
        file=out,
    )
    for side, rules in (("shadow", result.shadow_rules), ("live", result.live_rules)):
        for stats in rules:
            line = (
                f"{side} {stats.rule_id}: {stats.alerts} alert(s), "
                f"{stats.payments_flagged} payment(s) flagged"
            )
            if stats.fraud_caught is not None:
                line += f", {stats.fraud_caught} fraud caught, {stats.good_flagged} good flagged"
            print(line, file=out)
    for c in result.comparison:
        print(
            f"{c.rule_id}: payments +{c.payments_only_candidate} only shadow, "
            f"-{c.payments_only_baseline} only live, {c.payments_both} both",
            file=out,
        )
