"""``fraudcep generate``: synthetic payments with labelled fraud scenarios, to Kafka or a file.

The payments come from :class:`~fraudcep.payments.synthetic.PaymentGenerator`; scenario payments
carry ``scenario``/``scenario_id`` and ``--truth`` writes one JSON object per injected scenario,
so a detector's alerts can be scored against it (the end-to-end and load tests do).

With pacing (the default for Kafka) the stream runs in real time: event time is shifted so
the first payment's ``ts`` is the wall clock at the start (epoch ms), and each payment is
sent when the wall clock reaches its ``ts``. The stream then has the target rate and every
``ts`` is close to its send time, which is what latency measurements need. Without pacing
the payments go out as fast as possible with the generator's own timestamps.

The Python API (:func:`generate_to_file`, :func:`generate_to_kafka`, :func:`generate`) does
the same without argparse; ``confluent_kafka`` is imported only for Kafka output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol, TypeVar

import attrs

from fraudcep.payments.synthetic import (
    CARD_TESTING,
    SCENARIO_KINDS,
    Payment,
    PaymentGenerator,
    Scenario,
)

if TYPE_CHECKING:
    from fraudcep_kafka.payments_producer import PaymentProducer

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_TOPIC",
    "GenerateProgress",
    "GenerateSummary",
    "PaymentSink",
    "generate",
    "generate_to_file",
    "generate_to_kafka",
    "truth_record",
]

DESCRIPTION = (
    "Generate synthetic payments with injected, labelled fraud scenarios and write them to a "
    "Kafka topic (keyed by user_id) or to a JSON Lines file, at a target rate. With pacing "
    "(the default for Kafka) each payment is sent when the wall clock reaches its timestamp, "
    "the first timestamp being the start time; scenario payments can run up to 8 minutes "
    "of event time past the last background payment, and a paced run waits for them. "
    "Exit code 0 on success, 1 if payments could not be delivered, 2 for bad arguments."
)
DEFAULT_TOPIC: Final = "payments.raw"
DEFAULT_PARTITIONS: Final = 4
PROGRESS_EVERY_S: Final = 1.0
_FLUSH_TIMEOUT_S: Final = 60.0
_INTERRUPT_FLUSH_S: Final = 10.0
# Client settings an admin client needs too (to reach a secured cluster).
_SHARED_CONFIG_PREFIXES: Final = ("security.", "sasl.", "ssl.", "client.id")

_N = TypeVar("_N", int, float)


# -- the Python API ---------------------------------------------------------------------------


@attrs.frozen
class GenerateProgress:
    """A progress report, made about once a second during a run."""

    sent: int
    elapsed_s: float
    #: Payments per second since the previous report.
    rate: float
    #: Scenarios whose payments have all been sent.
    scenarios: int
    #: Paced runs: how late the last payment went out, and the worst since the last report.
    behind_ms: float | None = None
    max_behind_ms: float | None = None


@attrs.frozen
class GenerateSummary:
    """What a run sent."""

    events: int
    #: The injected scenarios, with timestamps as sent (shifted when paced).
    scenarios: tuple[Scenario, ...]
    elapsed_s: float
    paced: bool
    #: Added to every generator timestamp (0 without pacing).
    offset_ms: int
    first_ts: int | None
    last_ts: int | None
    #: Paced runs: the latest any payment went out after its timestamp.
    max_behind_ms: float | None = None
    #: Kafka runs: payments of this run the broker acknowledged.
    delivered: int | None = None

    @property
    def rate(self) -> float:
        """Achieved payments per second of wall-clock time."""
        return self.events / self.elapsed_s if self.elapsed_s > 0 else math.inf


class PaymentSink(Protocol):
    """Where :func:`generate` sends payments."""

    def send(self, payment: Payment, /) -> None:
        """Send one payment."""

    def idle(self, seconds: float, /) -> None:
        """Wait ``seconds`` before the next payment is due: flush output, serve I/O."""


ProgressCallback = Callable[[GenerateProgress], None]


def truth_record(scenario: Scenario) -> dict[str, Any]:
    """The ground-truth JSON object of ``scenario``.

    ``key`` is the value the expected default rule partitions by (``card_id`` for
    card testing, ``user_id`` otherwise): the ``key`` of the alert that should catch it.
    """
    return {
        "scenario_id": scenario.scenario_id,
        "kind": scenario.kind,
        "expected_rule": scenario.expected_rule,
        "key": scenario.card_id if scenario.kind == CARD_TESTING else scenario.user_id,
        "user_id": scenario.user_id,
        "card_id": scenario.card_id,
        "start_ts": scenario.start_ts,
        "end_ts": scenario.end_ts,
        "payment_ids": list(scenario.payment_ids),
    }


def _dumps(value: Mapping[str, Any]) -> str:
    # The same encoding as PaymentProducer's message values: a file and a topic written
    # from the same seed hold the same bytes.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@attrs.define
class _Progress:
    """Calls ``callback`` about every ``PROGRESS_EVERY_S`` with the rate since the last call."""

    callback: ProgressCallback | None
    started: float
    last_at: float
    last_sent: int = 0
    max_behind_ms: float = 0.0

    def seconds_to_next(self, now: float) -> float:
        return self.last_at + PROGRESS_EVERY_S - now if self.callback else math.inf

    def tick(self, now: float, sent: int, scenarios: int, behind_ms: float | None) -> None:
        if behind_ms is not None and behind_ms > self.max_behind_ms:
            self.max_behind_ms = behind_ms
        if self.callback is None or now - self.last_at < PROGRESS_EVERY_S:
            return
        rate = (sent - self.last_sent) / (now - self.last_at)
        self.callback(
            GenerateProgress(
                sent=sent,
                elapsed_s=now - self.started,
                rate=rate,
                scenarios=scenarios,
                behind_ms=behind_ms,
                max_behind_ms=None if behind_ms is None else self.max_behind_ms,
            )
        )
        self.last_at, self.last_sent, self.max_behind_ms = now, sent, 0.0


def generate(
    generator: PaymentGenerator,
    n: int,
    sink: PaymentSink,
    *,
    pace: bool = False,
    truth: IO[str] | None = None,
    on_progress: ProgressCallback | None = None,
) -> GenerateSummary:
    """Send the ``n`` payments of ``generator`` to ``sink``; paced in real time if ``pace``.

    ``truth`` gets each scenario's :func:`truth_record` (a JSON line) as soon as its last
    payment is sent, so an interrupted run still has the truth of what it sent.
    ``elapsed_s`` of the summary stops at the last send (the sink may still buffer).
    """
    stream = generator.payments(n)
    perf_counter = time.perf_counter
    started = perf_counter()
    progress = _Progress(on_progress, started, started)
    max_behind = 0.0
    sent = 0
    offset = 0
    first_ts: int | None = None
    last_ts: int | None = None
    due = 0  # paced: the (shifted) ts the schedule has reached; never goes back
    wall0_ms = 0.0  # paced: wall clock (epoch ms) at perf_counter() == mono0
    mono0 = 0.0
    behind_ms: float | None = None
    scenarios: list[Scenario] = []
    for payment in stream:
        if pace:
            if first_ts is None:
                wall0_ms = time.time_ns() / 1e6
                mono0 = perf_counter()
                offset = int(wall0_ms) - payment["ts"]
            payment = payment.copy()
            payment["ts"] += offset
            # Out-of-order payments (jitter) go out at once, as late arrivals do; the
            # schedule itself stays monotonic so "behind" measures the sender's lag.
            due = max(due, payment["ts"])
            while True:
                now = perf_counter()
                ahead_s = (due - wall0_ms) / 1000 - (now - mono0)
                if ahead_s <= 0:
                    break
                # Keep reporting during long gaps (the scenario tail can be minutes).
                progress.tick(now, sent, len(scenarios), behind_ms)
                sink.idle(min(ahead_s, progress.seconds_to_next(now)))
            behind_ms = -ahead_s * 1000
            max_behind = max(max_behind, behind_ms)
        else:
            now = perf_counter()
        sink.send(payment)
        sent += 1
        ts = payment["ts"]
        if first_ts is None:
            first_ts = ts
        last_ts = ts if last_ts is None else max(last_ts, ts)
        if "scenario_id" in payment:
            done = stream.scenarios
            for scenario in done[len(scenarios) :]:
                if offset:
                    scenario = attrs.evolve(
                        scenario,
                        start_ts=scenario.start_ts + offset,
                        end_ts=scenario.end_ts + offset,
                    )
                scenarios.append(scenario)
                if truth is not None:
                    truth.write(_dumps(truth_record(scenario)) + "\n")
                    truth.flush()
        progress.tick(now, sent, len(scenarios), behind_ms)
    return GenerateSummary(
        events=sent,
        scenarios=tuple(scenarios),
        elapsed_s=perf_counter() - started,
        paced=pace,
        offset_ms=offset,
        first_ts=first_ts,
        last_ts=last_ts,
        max_behind_ms=max_behind if pace else None,
    )


@attrs.define
class _FileSink:
    """JSON Lines; flushed whenever the paced schedule waits, so readers see it live."""

    out: IO[str]

    def send(self, payment: Payment) -> None:
        self.out.write(_dumps(payment) + "\n")

    def idle(self, seconds: float) -> None:
        self.out.flush()
        time.sleep(seconds)


@attrs.define
class _KafkaSink:
    """A :class:`PaymentProducer`; waits serve its delivery reports."""

    producer: PaymentProducer

    def send(self, payment: Payment) -> None:
        self.producer.send(payment)

    def idle(self, seconds: float) -> None:
        if seconds >= 0.001:
            self.producer.poll(seconds)
        else:  # librdkafka waits in whole ms: poll(<1 ms) would spin
            self.producer.poll(0)
            time.sleep(seconds)


PathOrFile = IO[str] | str | os.PathLike[str]


@contextmanager
def _opened(target: PathOrFile | None) -> Iterator[IO[str] | None]:
    """``target`` as an open text file: paths are created (with parents), ``-`` is stdout."""
    if target is None or not isinstance(target, str | os.PathLike):
        yield target
        if target is not None:
            target.flush()
        return
    if str(target) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        yield file


def generate_to_file(
    out: PathOrFile,
    generator: PaymentGenerator,
    n: int,
    *,
    pace: bool = False,
    truth: PathOrFile | None = None,
    on_progress: ProgressCallback | None = None,
) -> GenerateSummary:
    """Write ``n`` payments as JSON Lines to ``out`` (a path, ``"-"`` for stdout, or a file).

    Unpaced by default: a file is usually read after the fact.
    """
    with _opened(out) as file, _opened(truth) as truth_file:
        assert file is not None
        summary = generate(
            generator, n, _FileSink(file), pace=pace, truth=truth_file, on_progress=on_progress
        )
    return summary


def generate_to_kafka(
    producer_or_bootstrap: PaymentProducer | str,
    topic: str,
    generator: PaymentGenerator,
    n: int,
    *,
    pace: bool = True,
    partitions: int | None = None,
    producer_config: Mapping[str, Any] | None = None,
    truth: PathOrFile | None = None,
    on_progress: ProgressCallback | None = None,
    flush_timeout: float = _FLUSH_TIMEOUT_S,
) -> GenerateSummary:
    """Send ``n`` payments to ``topic``, keyed by ``user_id``; paced by default.

    Given a bootstrap address, makes a :class:`PaymentProducer` (with ``producer_config``)
    and, when ``partitions`` is set, first creates the topic with that many partitions if it
    does not exist. Given a producer, uses it (its topic must be ``topic``). Waits for every
    delivery: raises :class:`fraudcep_kafka.payments_producer.DeliveryError` if any failed.
    ``elapsed_s`` of the summary includes that wait.
    """
    from fraudcep_kafka.payments_producer import PaymentProducer
    from fraudcep_kafka.topics import create_topic

    if isinstance(producer_or_bootstrap, str):
        if partitions is not None:
            create_topic(
                producer_or_bootstrap,
                topic,
                partitions,
                client_config=_shared_config(producer_config or {}),
            )
        producer = PaymentProducer(producer_or_bootstrap, topic, config=producer_config)
    else:
        producer = producer_or_bootstrap
        if partitions is not None or producer_config is not None:
            raise ValueError("partitions and producer_config need a bootstrap address")
        if producer.topic != topic:
            raise ValueError(f"the producer writes to {producer.topic!r}, not {topic!r}")
    started = time.perf_counter()
    delivered_before = producer.delivered
    with _opened(truth) as truth_file:
        try:
            summary = generate(
                generator,
                n,
                _KafkaSink(producer),
                pace=pace,
                truth=truth_file,
                on_progress=on_progress,
            )
        except KeyboardInterrupt:
            # Deliver what was sent (best effort) so the topic matches the truth file.
            with _suppressed():
                producer.flush(_INTERRUPT_FLUSH_S)
            raise
    delivered = producer.flush(flush_timeout) - delivered_before
    return attrs.evolve(summary, elapsed_s=time.perf_counter() - started, delivered=delivered)


@contextmanager
def _suppressed() -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # reported, then the interrupt goes on
        print(f"while stopping: {exc}", file=sys.stderr)


def _shared_config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k.startswith(_SHARED_CONFIG_PREFIXES)}


# -- the command ------------------------------------------------------------------------------


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except ``None`` (options that are simply off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _number(
    kind: Callable[[str], _N], low: float, *, inclusive: bool = True
) -> Callable[[str], _N]:
    """An argparse ``type``: a finite number of ``kind`` at least (or above) ``low``."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < low or (not inclusive and value == low):
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _config_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stream = parser.add_argument_group("the stream")
    stream.add_argument(
        "--events",
        type=_number(int, 1),
        default=10_000,
        metavar="N",
        help="payments to send in total (background and scenario payments)",
    )
    stream.add_argument(
        "--users", type=_number(int, 2), default=10_000, metavar="N", help="distinct users"
    )
    stream.add_argument("--seed", type=int, default=7, help="random seed: same seed, same stream")
    stream.add_argument(
        "--scenarios-per-10k",
        type=_number(float, 0),
        default=5.0,
        metavar="K",
        help="expected fraud scenarios started per 10,000 background payments",
    )
    stream.add_argument(
        "--kinds",
        nargs="+",
        choices=SCENARIO_KINDS,
        metavar="KIND",
        help=f"scenario kinds to inject (default: all of {', '.join(SCENARIO_KINDS)})",
    )
    stream.add_argument(
        "--rate",
        type=_number(float, 0, inclusive=False),
        default=1000.0,
        metavar="R",
        help="background payments per second (of wall-clock time when paced, else of "
        "event time); scenario payments come on top",
    )
    stream.add_argument(
        "--jitter-ms",
        type=_number(int, 0),
        default=0,
        metavar="MS",
        help="bounded out-of-orderness: payments arrive up to MS ms behind later ones",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--pace",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send each payment when the wall clock reaches its timestamp, the first "
        "timestamp being the start time (default: on for Kafka, off for files)",
    )
    timing.add_argument(
        "--start-ts",
        type=int,
        default=None,
        metavar="MS",
        help="without pacing: event time (epoch ms) the stream starts from "
        f"(default: {PaymentGenerator().start_ts})",
    )
    output = parser.add_argument_group("output (one of --out and --bootstrap)")
    where = output.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out", metavar="FILE", help="write JSON Lines to FILE ('-' for standard output)"
    )
    where.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="send to Kafka via this bootstrap server"
    )
    output.add_argument("--topic", default=DEFAULT_TOPIC, help="Kafka topic")
    output.add_argument(
        "--partitions",
        type=_number(int, 1),
        default=DEFAULT_PARTITIONS,
        metavar="N",
        help="partitions of the topic if it has to be created (an existing topic is kept)",
    )
    output.add_argument(
        "-X",
        "--producer-config",
        type=_config_pair,
        action="append",
        metavar="KEY=VALUE",
        help="librdkafka producer setting, e.g. -X linger.ms=20 (repeatable)",
    )
    output.add_argument(
        "--truth",
        metavar="FILE",
        help="write the ground truth to FILE: one JSON object per injected scenario "
        "(scenario_id, kind, expected_rule, key, user_id, card_id, start_ts, end_ts, "
        "payment_ids), as soon as its last payment is sent",
    )
    output.add_argument("--quiet", action="store_true", help="no progress lines, summary only")


def _usage_error(message: str) -> int:
    print(f"fraudcep generate: error: {message}", file=sys.stderr)
    return 2


def _print_progress(delivered: Callable[[], int | None]) -> ProgressCallback:
    def report(progress: GenerateProgress) -> None:
        line = (
            f"progress: {progress.sent:,} sent, {progress.rate:,.0f}/s, "
            f"{progress.scenarios} scenarios"
        )
        acked = delivered()
        if acked is not None:
            line += f", {acked:,} delivered"
        if progress.behind_ms is not None:
            line += (
                f", behind schedule {progress.behind_ms:.1f} ms "
                f"(max {progress.max_behind_ms or 0.0:.1f} ms)"
            )
        print(line, file=sys.stderr, flush=True)

    return report


def print_summary(summary: GenerateSummary, destination: str, out: IO[str]) -> None:
    by_kind = Counter(scenario.kind for scenario in summary.scenarios)
    kinds = ", ".join(f"{by_kind[kind]} {kind}" for kind in SCENARIO_KINDS if by_kind[kind])
    span = ""
    if summary.first_ts is not None and summary.last_ts is not None:
        span = f" (event time {summary.first_ts}..{summary.last_ts}, "
        span += f"{(summary.last_ts - summary.first_ts) / 1000:,.1f} s)"
    lines = [
        "--- summary",
        f"events      {summary.events:,}{span}",
        f"scenarios   {len(summary.scenarios)}" + (f" ({kinds})" if kinds else ""),
        f"elapsed     {summary.elapsed_s:.2f} s ({summary.rate:,.0f} payments/s achieved)",
    ]
    if summary.paced:
        lines.append(
            f"paced       ts shifted by {summary.offset_ms:+,} ms, at most "
            f"{summary.max_behind_ms or 0.0:.1f} ms behind schedule"
        )
    if summary.delivered is not None:
        lines.append(f"delivered   {summary.delivered:,}")
    lines.append(f"written to  {destination}")
    print("\n".join(lines), file=out, flush=True)


def run(args: argparse.Namespace) -> int:
    """The ``generate`` subcommand."""
    kafka = args.bootstrap is not None
    pace: bool = kafka if args.pace is None else args.pace
    if pace and args.start_ts is not None:
        return _usage_error("--start-ts applies only without pacing (add --no-pace)")
    if not kafka and args.producer_config is not None:
        return _usage_error("--producer-config applies only with --bootstrap")
    # A dict: mypy reads the ``kinds`` parameter (an attrs converter) as Iterable[_T_co].
    options: dict[str, Any] = {
        "seed": args.seed,
        "users": args.users,
        "rate": args.rate,
        "scenarios_per_10k": args.scenarios_per_10k,
        "kinds": tuple(dict.fromkeys(args.kinds or SCENARIO_KINDS)),
        "jitter_ms": args.jitter_ms,
    }
    if args.start_ts is not None:
        options["start_ts"] = args.start_ts
    try:
        generator = PaymentGenerator(**options)
    except ValueError as exc:
        return _usage_error(str(exc))
    try:
        with ExitStack() as stack:
            try:
                truth = stack.enter_context(_opened(args.truth)) if args.truth else None
                out = stack.enter_context(_opened(args.out)) if args.out else None
            except OSError as exc:
                return _usage_error(f"cannot open {exc.filename}: {exc.strerror}")
            if kafka:
                return _run_kafka(args, generator, pace, truth)
            assert out is not None
            progress = None if args.quiet else _print_progress(lambda: None)
            summary = generate(
                generator, args.events, _FileSink(out), pace=pace, truth=truth, on_progress=progress
            )
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("output closed by its reader", file=sys.stderr)
        return 1
    print_summary(summary, "standard output" if args.out == "-" else args.out, sys.stderr)
    return 0


def _run_kafka(
    args: argparse.Namespace, generator: PaymentGenerator, pace: bool, truth: IO[str] | None
) -> int:
    try:
        from confluent_kafka import KafkaException

        from fraudcep_kafka.payments_producer import DeliveryError, PaymentProducer
        from fraudcep_kafka.topics import create_topic
    except ImportError as exc:
        print(
            f"Kafka output needs confluent-kafka ({exc}): pip install 'fraudcep[kafka]'",
            file=sys.stderr,
        )
        return 1
    config = dict(args.producer_config or [])
    try:
        producer = PaymentProducer(args.bootstrap, args.topic, config=config)
    except KafkaException as exc:
        return _usage_error(f"bad producer configuration: {exc}")
    try:
        partitions = create_topic(
            args.bootstrap, args.topic, args.partitions, client_config=_shared_config(config)
        )
    except (KafkaException, TimeoutError) as exc:
        print(f"cannot create topic {args.topic} on {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    if partitions != args.partitions:
        print(
            f"note: topic {args.topic} already exists with {partitions} partitions",
            file=sys.stderr,
        )
    progress = None if args.quiet else _print_progress(lambda: producer.delivered)
    try:
        summary = generate_to_kafka(
            producer,
            args.topic,
            generator,
            args.events,
            pace=pace,
            truth=truth,
            on_progress=progress,
        )
    except DeliveryError as exc:
        print(f"delivery failed: {exc}", file=sys.stderr)
        return 1
    destination = f"topic {args.topic} ({partitions} partitions) at {args.bootstrap}"
    print_summary(summary, destination, sys.stderr)
    return 0
