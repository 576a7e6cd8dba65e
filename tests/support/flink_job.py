"""What the tests of the PyFlink job share, on a mini-cluster (tests/flink/test_flink_job.py)
or on a session cluster (tests/flink/test_flink_cluster.py): its topics and options, a
generated payment stream, the core engine's alerts on it, and the check that the job's
committed alerts are those, byte for byte."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fraudcep import Alert, Engine
from fraudcep.payments.default_rules import default_rules
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep.runtime.output_records import alert_value
from fraudcep_kafka.topics import COMPACTED, create_topics
from support.kafka_runner import Job, produce, read_topic, wait_until
from support.pyflink import start_module

__all__ = [
    "LiveFeed",
    "check_alerts",
    "core_alerts",
    "headers",
    "job_args",
    "job_log",
    "make_topics",
    "payments",
    "running_job",
]


def make_topics(job: Job, *, rules: bool = True) -> None:
    """The job's topics; the input has ``job.partitions`` partitions, the others one (with
    ``rules``, the rules and lists topics, compacted)."""
    topics: dict[str, tuple[int, dict[str, str]]] = {
        job.input_topic: (job.partitions, {}),
        job.alerts_topic: (1, {}),
        job.shadow_alerts_topic: (1, {}),
        job.dlq_topic: (1, {}),
    }
    if rules:
        topics[job.rules_topic] = (1, dict(COMPACTED))
        topics[job.lists_topic] = (1, dict(COMPACTED))
    create_topics({"bootstrap.servers": job.bootstrap}, topics)


def job_args(job: Job, **options: Any) -> list[str]:
    """``run`` and the job's options for ``job``'s topics (``options`` over the defaults
    here; ``max_out_of_orderness="2s"`` is ``--max-out-of-orderness 2s``)."""
    settings: dict[str, Any] = {
        "bootstrap": job.bootstrap,
        "group-id": job.group,
        "input-topic": job.input_topic,
        "alerts-topic": job.alerts_topic,
        "shadow-alerts-topic": job.shadow_alerts_topic,
        "dead-letter-topic": job.dlq_topic,
        "rules-topic": job.rules_topic,
        "lists-topic": job.lists_topic,
        "transactional-id-prefix": f"tx-{job.tag}",
        "checkpoint-interval": "500ms",
        "idle-timeout": "1s",
    }
    settings.update({k.replace("_", "-"): v for k, v in options.items()})
    args = ["run"]
    for key, value in settings.items():
        args += [f"--{key}", str(value)]
    return args


def payments(seed: int, n: int, jitter: int) -> list[dict[str, Any]]:
    gen = PaymentGenerator(
        seed=seed, users=200, jitter_ms=jitter, safe_noise=False, scenarios_per_10k=50
    )
    return [dict(p) for p in gen.payments(n)]


def core_alerts(stream: list[dict[str, Any]], bound: int) -> list[Alert]:
    engine = Engine(default_rules(), event_id="payment_id", max_out_of_orderness=bound)
    return [*engine.process_many(stream), *engine.flush()]


def headers(msg: Any) -> dict[str, bytes]:
    return dict(msg.headers() or [])


def check_alerts(job: Job, want: list[Alert]) -> None:
    """The alerts topic (read_committed) holds ``want``, each once, as the runner writes
    them (its JSON byte for byte, the rule and version headers)."""
    got = read_topic(job.bootstrap, job.alerts_topic)
    by_id = {a.alert_id: a for a in want}
    ids = [m.key().decode() for m in got]
    assert len(ids) == len(set(ids)), "no alert twice"
    missing, extra = sorted(set(by_id) - set(ids)), sorted(set(ids) - set(by_id))
    assert not missing and not extra, (
        f"{len(missing)} alerts missing, {len(extra)} not the core engine's: "
        f"missing {[by_id[i] for i in missing][:5]}, extra {extra[:5]}; dead letters "
        f"{[headers(m).get('fraudcep.reason') for m in read_topic(job.bootstrap, job.dlq_topic)]}"
    )
    for msg in got:
        alert = by_id[msg.key().decode()]
        assert msg.value() == alert_value(alert)  # the runner's JSON, byte for byte
        assert headers(msg) == {
            "fraudcep.rule": alert.rule_id.encode(),
            "fraudcep.rule_version": str(alert.rule_version).encode(),
            "fraudcep.mode": alert.mode.encode(),
        }


@contextlib.contextmanager
def running_job(job: Job, workdir: Path, **options: Any) -> Iterator[Path]:
    """The job on ``job``'s topics (unbounded, ``options`` over :func:`job_args`'), in the
    background for the ``with`` block; yields the mini-cluster's log directory (where the
    job's functions log: :func:`job_log`). Stopped with SIGTERM afterwards."""
    logs = workdir / f"flink-log-{job.tag}"
    process = start_module(
        "fraudcep_flink", *job_args(job, **options), cwd=workdir,
        log=workdir / f"job-{job.tag}.log", flink_log_dir=logs,
    )  # fmt: skip
    try:
        yield logs
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def job_log(logs: Path) -> str:
    """What the job's functions logged so far (the task manager's log)."""
    return "".join(f.read_text(errors="replace") for f in logs.glob("*.log"))


class LiveFeed:
    """Payments to a running job, event time one second apart, each with a new user; a
    payment's alerts come once event time passes it, so :meth:`until` sends a later one
    (on a card of its own) after each."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.ts = 1_700_000_000_000
        self.n = 0

    def payment(self, card: str, amount: float = 10, **extra: Any) -> dict[str, Any]:
        self.n += 1
        self.ts += 1000
        return {
            "payment_id": f"p{self.n}", "user_id": f"u{self.n}", "card_id": card,
            "merchant": "m1", "country": "DE", "amount": amount, "currency": "EUR",
            "status": "approved", "ts": self.ts, **extra,
        }  # fmt: skip

    def send(self, *batch: dict[str, Any]) -> None:
        produce(self.job.bootstrap, self.job.input_topic,
                [(None, json.dumps(p).encode()) for p in batch])  # fmt: skip

    def alerts(self, topic: str | None = None) -> list[dict[str, Any]]:
        """The alerts committed to ``topic`` (default: the job's alerts topic) so far."""
        msgs = read_topic(self.job.bootstrap, topic or self.job.alerts_topic, timeout=60)
        return [json.loads(m.value()) for m in msgs]

    def until(
        self,
        make: Callable[[], list[dict[str, Any]]],
        check: Callable[[dict[str, Any]], bool],
        what: str,
        *,
        topic: str | None = None,
        timeout: float = 240,
    ) -> list[dict[str, Any]]:
        """Send ``make()``'s payments (and a later one) until an alert of ``topic`` satisfies
        ``check`` (a change published to the rules or lists topic reaches the job some time
        after: Flink does not order it against the payments); returns those alerts."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            self.send(*make(), self.payment("tick"))
            found[:] = [a for a in self.alerts(topic) if check(a)]
            return bool(found)

        wait_until(seen, timeout, what)
        return found
