"""The payment stream, and writing it to the input topic ahead of a run (a backlog, or live
state to preload)."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep_kafka.payments_producer import PaymentProducer

from .harness import BenchJob, Offsets

BULK_PRODUCER_CONFIG = {"linger.ms": 50, "batch.size": 1_000_000}


@dataclass(frozen=True)
class Workload:
    """``PaymentGenerator``'s default background without its guards (``safe_noise=False``)
    and with more payments over 2000 (``big_fraction``) among fewer users, so that the
    default rules fire tens of times per second from the first seconds on (its injected
    scenarios span 20 s to 8 minutes of event time each: almost no alerts in a 20 s run)."""

    users: int
    big_fraction: float
    scenarios_per_10k: float
    seed: int

    def generator(self, rate: float) -> PaymentGenerator:
        return PaymentGenerator(
            seed=self.seed,
            users=self.users,
            rate=rate,
            big_fraction=self.big_fraction,
            scenarios_per_10k=self.scenarios_per_10k,
            safe_noise=False,
        )

    def describe(self, partitions: int) -> dict[str, Any]:
        return {
            "generator": "fraudcep.payments.synthetic.PaymentGenerator",
            "users": self.users,
            "big_fraction": self.big_fraction,
            "scenarios_per_10k": self.scenarios_per_10k,
            "safe_noise": False,
            "seed": self.seed,
            "partitions": partitions,
            "rules": "default (fraudcep/payments/default_rules.yaml)",
        }


def produce_backlog(job: BenchJob, workload: Workload, events: int) -> dict[str, Any]:
    """Write ``events`` payments as fast as possible (event time: 10,000 per second)."""
    producer = PaymentProducer(job.bootstrap, job.input_topic, config=BULK_PRODUCER_CONFIG)
    started = time.perf_counter()
    for payment in workload.generator(10_000).payments(events):
        producer.send(payment)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    delivered = producer.delivered
    del producer
    gc.collect()  # the client (a reference cycle through its callbacks) goes now, not later
    return {"events": delivered, "seconds": round(elapsed, 2)}


def preload_state(job: BenchJob, keys: int, offsets: Offsets, timeout: float) -> dict[str, Any]:
    """Give the runner ``keys`` users of live state: one payment over 2000 for each of as
    many users of their own (``pre-0000000``...), with the wall clock as event time, which
    leaves two live partial matches per user (``high-value-3-in-5m`` and ``geo-hop``, open
    for 5 and 10 minutes: longer than the run); wait until its group committed them all."""
    producer = PaymentProducer(job.bootstrap, job.input_topic, config=BULK_PRODUCER_CONFIG)
    started = time.perf_counter()
    for i in range(keys):
        producer.send(
            {
                "payment_id": f"pre-{i}",
                "user_id": f"pre-{i:07d}",
                "card_id": f"pre-c{i:07d}",
                "merchant": "m-pre",
                "country": "DE",
                "amount": 2500.0,
                "currency": "EUR",
                "status": "approved",
                "ts": int(time.time() * 1000),
            }
        )
    producer.flush(300)
    produced = time.perf_counter() - started
    del producer
    gc.collect()
    end = offsets.end()
    deadline = time.monotonic() + timeout
    while offsets.committed() < end:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the runner did not take the {keys:,}-key preload in time")
        time.sleep(0.25)
    return {
        "keys": keys,
        "produce_s": round(produced, 1),
        "committed_after_s": round(time.perf_counter() - started, 1),
    }
