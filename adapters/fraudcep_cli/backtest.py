"""``fraudcep backtest``: run rules over historical payments and report how they do.

Exit codes: 0 done (warnings, such as late payments, go to stderr and into the report);
1 an input cannot be used (the payments, the labels or a rule file: missing, unknown
format, unreadable, rules that do not load) or an output cannot be written; 2 a bad command
line (a bad ``--from``/``--to`` or duration, a missing option). See docs/backtest.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from fraudcep.rules import (
    RuleDefinition,
    RuleSpecError,
    format_duration,
    load_rule_file,
    parse_duration,
)

DESCRIPTION = (
    "Run the enabled rules of RULES over historical payments (the Parquet dataset the S3 "
    "sink writes, with dt=/hour= partitions, a Parquet file, JSON Lines or CSV), in "
    "event-time order, and report per rule: alerts, distinct keys, payments flagged, alerts "
    "per day; with --labels (payment ids known to be fraud) fraud caught, good payments "
    "flagged, precision and recall; with --baseline what each version alerts on that the "
    "other does not. Exit codes: 0 done, 1 an input or output cannot be used, 2 bad "
    "command line."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rules", metavar="RULES", help="rule file (.yaml/.json): the candidate")
    parser.add_argument(
        "--payments",
        required=True,
        metavar="SOURCE",
        help="payments: a Parquet dataset directory (dt=/hour= partitions) or file, .jsonl, "
        ".csv, or s3://bucket/prefix",
    )
    parser.add_argument(
        "--format", choices=("parquet", "jsonl", "csv"), help="SOURCE's format (default: guessed)"
    )
    parser.add_argument(
        "--labels", metavar="LABELS", help="fraud payment ids (.csv/.parquet/.jsonl)"
    )
    parser.add_argument("--baseline", metavar="RULES", help="rule file to compare with")
    parser.add_argument(
        "--from", dest="start", metavar="TIME", help="first event time (YYYY-MM-DD or ISO, UTC)"
    )
    parser.add_argument(
        "--to", dest="end", metavar="TIME", help="end of event time, excluded (YYYY-MM-DD or ISO)"
    )
    parser.add_argument("--report", metavar="HTML", help="write the HTML report there")
    parser.add_argument("--json", metavar="JSON", help="write the results as JSON there")
    parser.add_argument(
        "--json-alerts",
        action="store_true",
        help="put every alert (rule, key, times, payment ids) in the JSON too",
    )
    parser.add_argument("--timestamp", default="ts", help="event-time field")
    parser.add_argument("--event-id", default="payment_id", help="payment id field")
    parser.add_argument(
        "--out-of-orderness", default="0", help="allowed disorder: a duration like 5s, or ms"
    )
    parser.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3 endpoint override, e.g. http://127.0.0.1:5000 for a local S3 server "
        "(default: AWS_ENDPOINT_URL, else AWS's)",
    )
    parser.add_argument(
        "--sort-window",
        metavar="DURATION",
        help="stream a JSON Lines or CSV file and sort it within this much event time (e.g. "
        "1h; 0 for a file already in order); default: read it whole, or stream with 1h when "
        "it is larger than 512 MiB",
    )
    parser.add_argument("--batch-rows", type=int, default=65_536, help=argparse.SUPPRESS)
    parser.add_argument("--block-bytes", type=int, default=4 << 20, help=argparse.SUPPRESS)
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress line on stderr (auto: when stderr is a terminal)",
    )


class Progress:
    """One line on stderr, rewritten at most every ``interval`` seconds: payments read, rate,
    and (when the total is known, from Parquet metadata) percentage and ETA."""

    def __init__(self, stream: IO[str], total: int | None, interval: float = 0.25) -> None:
        self.stream, self.total, self.interval = stream, total, interval
        self.started = time.perf_counter()
        self.shown = 0.0
        self.width = 0

    def __call__(self, done: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.shown < self.interval:
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        text = f"payments {done:,}"
        if self.total:
            text += f" / {self.total:,} ({100 * done / self.total:.0f} %)"
        text += f"  {rate:,.0f}/s"
        if self.total and not final and rate > 0:
            left = max(self.total - done, 0) / rate
            text += f"  ETA {int(left) // 60}:{int(left) % 60:02d}"
        elif final:
            text += f"  in {elapsed:.1f} s"
        self.stream.write("\r" + text.ljust(self.width))
        self.width = len(text)
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _rules(path: str, err: IO[str], what: str) -> list[RuleDefinition] | None:
    try:
        return load_rule_file(path)
    except OSError as exc:
        print(f"{what} {path}: cannot read: {exc.strerror or exc}", file=err)
    except RuleSpecError as exc:
        for problem in exc.problems:
            print(str(problem), file=err)
        print(f"{what} {path}: the rules do not load", file=err)
    return None


def run(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    try:
        from fraudcep_backtest import (
            SourceError,
            open_source,
            parse_time,
            read_labels,
            run_backtest,
        )
    except ImportError as exc:  # pragma: no cover - depends on the installation
        print(
            f"fraudcep backtest needs pyarrow: pip install 'fraudcep[backtest]' ({exc})", file=err
        )
        return 1
    try:
        start = None if args.start is None else parse_time(args.start)
        end = None if args.end is None else parse_time(args.end)
    except ValueError as exc:
        print(f"fraudcep backtest: --from/--to: {exc}", file=err)
        return 2
    if start is not None and end is not None and start >= end:
        print("fraudcep backtest: --from must be before --to", file=err)
        return 2
    try:
        disorder = parse_duration(args.out_of_orderness) if args.out_of_orderness != "0" else 0
    except ValueError as exc:
        print(f"fraudcep backtest: --out-of-orderness: {exc}", file=err)
        return 2
    try:
        window = None if args.sort_window is None else _window(args.sort_window)
    except ValueError as exc:
        print(f"fraudcep backtest: --sort-window: {exc}", file=err)
        return 2
    rules = _rules(args.rules, err, "RULES")
    if rules is None:
        return 1
    baseline = None
    if args.baseline is not None:
        baseline = _rules(args.baseline, err, "--baseline")
        if baseline is None:
            return 1
    try:
        labels = None if args.labels is None else read_labels(args.labels, args.event_id)
        source = open_source(
            args.payments,
            format=args.format,
            ts_field=args.timestamp,
            start=start,
            end=end,
            batch_rows=args.batch_rows,
            s3_endpoint=args.s3_endpoint,
            sort_window=window,
            block_bytes=args.block_bytes,
        )
        if source.sort_window is not None:
            print(
                f"reading {args.payments} as a stream, sorted within "
                f"{format_duration(source.sort_window) if source.sort_window else '0 (in order)'}",
                file=err,
            )
        show = args.progress == "always" or (args.progress == "auto" and err.isatty())
        progress = Progress(err, source.total) if show else None
        result = run_backtest(
            rules,
            source.batches(),
            labels=labels,
            baseline=baseline,
            ts_field=args.timestamp,
            id_field=args.event_id,
            out_of_orderness=disorder,
            source=args.payments,
            progress=progress,
        )
        if progress is not None:
            progress(result.payments, final=True)
    except SourceError as exc:
        print(f"fraudcep backtest: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"fraudcep backtest: cannot read: {exc}", file=err)
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
                json.dump(result.to_json(alerts=args.json_alerts), handle, indent=1, default=str)
                handle.write("\n")
        if args.report is not None:
            from fraudcep_backtest.report import write_html

            write_html(result, args.report)
    except OSError as exc:
        print(f"fraudcep backtest: cannot write: {exc}", file=err)
        return 1
    return 0


def _window(text: str) -> int:
    return 0 if text.strip() == "0" else parse_duration(text)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _summary(result: Any, out: IO[str]) -> None:
    print(
        f"-- {result.payments:,} payment(s), {result.late_payments} late, {result.seconds:.2f} s",
        file=out,
    )
    for stats in result.rules:
        line = (
            f"{stats.rule_id}: {stats.alerts} alert(s), {stats.distinct_keys} key(s), "
            f"{stats.payments_flagged} payment(s) flagged"
        )
        if stats.fraud_caught is not None:
            line += (
                f", {stats.fraud_caught} fraud caught, {stats.good_flagged} good flagged, "
                f"precision {_percent(stats.precision)}, recall {_percent(stats.recall)}"
            )
        print(line, file=out)
    for rule_id in result.disabled_rules:
        print(f"{rule_id}: disabled", file=out)
    for c in result.comparison or ():
        print(
            f"{c.rule_id} vs baseline: {c.alerts_only_candidate} alert(s) only in the candidate, "
            f"{c.alerts_only_baseline} only in the baseline; payments "
            f"+{c.payments_only_candidate} -{c.payments_only_baseline}",
            file=out,
        )
