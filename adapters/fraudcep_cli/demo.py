"""``fraudcep demo``: the default rules over a synthetic payment stream.

Generates payments with labelled fraud scenarios (:mod:`fraudcep.payments.synthetic`), runs them
through an :class:`fraudcep.Engine` with :func:`fraudcep.payments.default_rules.default_rules`,
prints and writes the alerts, and checks them against the injected scenarios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO, Any

import attrs

from fraudcep import Alert, Engine, LateEvent, Rule, TimedOutMatch
from fraudcep.payments.default_rules import DEFAULT_RULE_IDS, default_rules
from fraudcep.payments.synthetic import (
    Detection,
    Payment,
    PaymentGenerator,
    PaymentStream,
    match_alerts,
)

DESCRIPTION = (
    "Run the default fraud rules over a deterministic synthetic payment stream with "
    "injected fraud scenarios. Exit code 0 when every scenario raised an alert and "
    "nothing else did, 1 otherwise."
)
BATCH = 1024
PROGRESS_EVERY_S = 1.0
LISTED = 10  # missed scenarios / unexpected alerts listed in the summary


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=_positive_int, default=200_000, help="payments")
    parser.add_argument("--users", type=_positive_int, default=10_000, help="distinct users")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generator")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="payments per second of event time"
    )
    parser.add_argument(
        "--jitter-ms",
        type=_non_negative_int,
        default=0,
        help="bounded out-of-orderness of the stream (also the engine's allowance)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out/alerts.jsonl"), help="alerts as JSON Lines"
    )
    parser.add_argument("--quiet", action="store_true", help="no line per alert")


@attrs.define
class _Progress:
    """Reports progress on stderr about once a second."""

    started: float
    last_report: float = 0.0

    def maybe_report(self, events: int, alerts: int) -> None:
        now = time.perf_counter()
        if now - self.last_report >= PROGRESS_EVERY_S:
            self.last_report = now
            rate = events / max(now - self.started, 1e-9)
            print(
                f"progress: {events:,} events, {rate:,.0f} events/s, {alerts} alerts",
                file=sys.stderr,
                flush=True,
            )


@attrs.define
class _Counters:
    """Side channels of the engine, counted rather than kept."""

    timeouts: int = 0
    late: int = 0

    def on_timeout(self, match: TimedOutMatch) -> None:
        self.timeouts += 1

    def on_late(self, event: LateEvent) -> None:
        self.late += 1


@attrs.define
class _Run:
    """What one run produced."""

    events: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    alerts: list[Alert] = attrs.Factory(list)
    elapsed_s: float = 0.0
    engine_s: float = 0.0  # of elapsed_s, the time spent inside the engine


def build_engine(rules: list[Rule], jitter_ms: int, counters: _Counters) -> Engine:
    return Engine(
        rules,
        timestamp="ts",
        event_id="payment_id",
        max_out_of_orderness=jitter_ms,
        on_timeout=counters.on_timeout,
        on_late=counters.on_late,
    )


def _batches(stream: Iterator[Payment], size: int) -> Iterator[list[Payment]]:
    while batch := list(islice(stream, size)):
        yield batch


def process_stream(engine: Engine, stream: PaymentStream, out: IO[str], quiet: bool) -> _Run:
    """Feed ``stream`` to ``engine`` in batches, then flush; emit each alert as it comes."""
    run = _Run()
    started = time.perf_counter()
    progress = _Progress(started=started, last_report=started)
    for batch in _batches(stream, BATCH):
        run.events += len(batch)
        if run.first_ts is None:
            run.first_ts = batch[0]["ts"]
        run.last_ts = max(batch[-1]["ts"], run.last_ts or batch[-1]["ts"])
        entered = time.perf_counter()
        alerts = engine.process_many(batch)
        run.engine_s += time.perf_counter() - entered
        _emit(alerts, run, out, quiet)
        progress.maybe_report(run.events, len(run.alerts))
    entered = time.perf_counter()
    alerts = engine.flush()
    run.engine_s += time.perf_counter() - entered
    _emit(alerts, run, out, quiet)
    run.elapsed_s = time.perf_counter() - started
    return run


def _emit(alerts: Sequence[Alert], run: _Run, out: IO[str], quiet: bool) -> None:
    for alert in alerts:
        run.alerts.append(alert)
        out.write(json.dumps(alert_record(alert), default=_jsonable) + "\n")
        if not quiet:
            print(format_alert(alert))


def alert_record(alert: Alert) -> dict[str, Any]:
    """The JSON Lines record of ``alert``."""
    return {
        "alert_id": alert.alert_id,
        "rule_id": alert.rule_id,
        "key": alert.key,
        "first_ts": alert.first_ts,
        "last_ts": alert.last_ts,
        "emitted_at": alert.emitted_at,
        "events": {stage: list(events) for stage, events in alert.events.items()},
    }


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _clock(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def _field(event: object, name: str) -> Any:
    return event.get(name) if isinstance(event, Mapping) else getattr(event, name, None)


def format_alert(alert: Alert) -> str:
    """One short line: rule, key, amounts, time span and the scenario label, if any."""
    events = [event for stage in alert.events.values() for event in stage]
    amounts = ",".join(f"{_field(event, 'amount'):.2f}" for event in events)
    labels = sorted({str(_field(event, "scenario_id")) for event in events})
    span_s = (alert.last_ts - alert.first_ts) / 1000
    return (
        f"ALERT {alert.rule_id:<19} key={alert.key} amounts={amounts} "
        f"{_clock(alert.first_ts)}..{_clock(alert.last_ts)} ({span_s:.1f}s) "
        f"[{' '.join(labels)}]"
    )


def print_summary(
    run: _Run, rule_ids: Sequence[str], detection: Detection[Alert], counters: _Counters, out: Path
) -> None:
    by_rule = Counter(alert.rule_id for alert in run.alerts)
    injected = len(detection.detected) + len(detection.missed)
    event_time_s = ((run.last_ts or 0) - (run.first_ts or 0)) / 1000
    rate = run.events / max(run.elapsed_s, 1e-9)
    engine_rate = run.events / max(run.engine_s, 1e-9)
    lines = [
        "--- summary",
        f"events             {run.events:,} ({event_time_s:,.1f} s of event time)",
        f"alerts             {len(run.alerts)}",
        *(f"  {rule_id:<24}{by_rule[rule_id]}" for rule_id in rule_ids),
        f"scenarios          {injected} injected, {len(detection.detected)} detected, "
        f"{len(detection.missed)} missed",
        f"unexpected alerts  {len(detection.unexpected)}",
        f"late events        {counters.late}",
        f"timed-out matches  {counters.timeouts}",
        f"elapsed            {run.elapsed_s:.2f} s ({rate:,.0f} events/s)",
        f"  in the engine    {run.engine_s:.2f} s ({engine_rate:,.0f} events/s)",
        f"alerts written to  {out}",
    ]
    lines += [
        f"  missed {s.scenario_id} {s.kind} user={s.user_id} card={s.card_id}"
        for s in detection.missed[:LISTED]
    ]
    lines += [f"  unexpected {format_alert(a)}" for a in detection.unexpected[:LISTED]]
    verdict = "OK: every injected scenario alerted, nothing else"
    lines.append(f"result             {verdict if detection.ok else 'FAIL'}")
    print("\n".join(lines))


def run(args: argparse.Namespace) -> int:
    """The ``demo`` subcommand."""
    generator = PaymentGenerator(
        seed=args.seed, users=args.users, rate=args.rate, jitter_ms=args.jitter_ms
    )
    rules = default_rules()
    counters = _Counters()
    engine = build_engine(rules, args.jitter_ms, counters)
    stream = generator.payments(args.events)
    print(f"rules: {', '.join(DEFAULT_RULE_IDS)}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as out:
        result = process_stream(engine, stream, out, args.quiet)
    detection = match_alerts(result.alerts, stream.scenarios)
    print_summary(result, DEFAULT_RULE_IDS, detection, counters, args.out)
    return 0 if detection.ok else 1
