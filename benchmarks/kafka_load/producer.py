"""The paced producer: a process of its own (``bench_kafka_runner.py _produce ...``) that
sends payments in real time for ``--duration`` seconds and prints a JSON summary.

Each payment's ``ts`` is the wall clock (epoch ms) at which it is due to be sent
(``PaymentGenerator`` paced by ``fraudcep_cli.generate.generate``). From the delivery reports
it measures two stages of every record: ``schedule`` (due → handed to the client, how late
the producer itself runs on a busy machine) and ``to_broker`` (handed to the client → the
broker appended it, the record's ``LogAppendTime``: linger, the produce request and the
broker's append; only when the topic uses LogAppendTime)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import resource
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Producer

from fraudcep_cli.generate import GenerateProgress, generate
from fraudcep_kafka.payments_producer import DEFAULT_PRODUCER_CONFIG

from .stats import cdf_points, summarize
from .workload import Workload

MODE = "_produce"


class _Deadline(Exception):
    pass


class TimedProducer:
    """Sends payments keyed by ``user_id`` (as ``PaymentProducer`` does) and keeps, per
    delivered record, the time from due to sent and from sent to the broker's append."""

    def __init__(self, bootstrap: str, topic: str, config: dict[str, Any]) -> None:
        self.topic = topic
        self._producer = Producer(
            {**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap, **config}
        )
        self.sent = self.delivered = self.failed = 0
        self.schedule_ms: list[float] = []
        self.to_broker_ms: list[float] = []
        self.errors: list[str] = []

    def send(self, payment: dict[str, Any]) -> None:
        key = str(payment["user_id"]).encode()
        value = json.dumps(payment, separators=(",", ":")).encode()
        due = payment["ts"]
        while True:
            sent = time.time() * 1000
            try:
                self._producer.produce(
                    self.topic,
                    value,
                    key,
                    on_delivery=functools.partial(self._on, due, sent),
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1
        self._producer.poll(0)

    def _on(self, due: int, sent: float, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(err.str())
            return
        self.delivered += 1
        self.schedule_ms.append(sent - due)
        ts_type, ts = msg.timestamp()
        if ts_type == TIMESTAMP_LOG_APPEND_TIME:
            self.to_broker_ms.append(ts - sent)

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return int(self._producer.flush(timeout))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"bench_kafka_runner.py {MODE}")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--big-fraction", type=float, required=True)
    parser.add_argument("--scenarios-per-10k", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--linger-ms", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=0.0, help="s not in the stage summary")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    workload = Workload(args.users, args.big_fraction, args.scenarios_per_10k, args.seed)
    config = dict(kv.split("=", 1) for kv in args.config)
    producer = TimedProducer(args.bootstrap, args.topic, {"linger.ms": args.linger_ms, **config})
    behind: list[float] = []
    first_ts: list[int] = []
    deadline = [math.inf]

    class Sink:
        def send(self, payment: Any) -> None:
            now = time.perf_counter()
            if not first_ts:
                first_ts.append(payment["ts"])
                deadline[0] = now + args.duration
            elif now >= deadline[0]:
                raise _Deadline
            producer.send(payment)

        def idle(self, seconds: float) -> None:
            if seconds >= 0.001:
                producer.poll(seconds)
            else:
                producer.poll(0)
                time.sleep(seconds)

    def progress(p: GenerateProgress) -> None:
        if p.max_behind_ms is not None:
            behind.append(p.max_behind_ms)

    n = int(args.rate * args.duration * 2) + 1000  # more than the deadline lets through
    started = time.perf_counter()
    with contextlib.suppress(_Deadline):
        generate(workload.generator(args.rate), n, Sink(), pace=True, on_progress=progress)
    sending = time.perf_counter() - started
    left = producer.flush(60)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    skip = round(args.rate * args.warmup)  # deliveries come in send order per partition
    stages = {
        "schedule": producer.schedule_ms[skip:],
        "to_broker": producer.to_broker_ms[skip:],
    }
    summary = {
        "sent": producer.sent,
        "delivered": producer.delivered,
        "failed": producer.failed,
        "undelivered": left,
        "errors": producer.errors,
        "seconds": round(sending, 3),
        "rate": round(producer.sent / sending, 1) if sending else None,
        "first_ts": first_ts[0] if first_ts else None,
        "max_behind_ms_per_second": [round(b, 1) for b in behind],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "stages_ms": {
            name: {**summarize(values), "cdf_ms": cdf_points(values)}
            for name, values in stages.items()
        },
    }
    print(json.dumps(summary), flush=True)
    return 0
