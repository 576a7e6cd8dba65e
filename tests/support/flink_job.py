"""What the tests of the PyFlink job share, on a mini-cluster (tests/flink/test_flink_job.py)
or on a session cluster (tests/flink/test_flink_cluster.py): its topics and options, a
generated payment stream, the core engine's alerts on it, and the check that the job's
committed alerts are those, byte for byte."""

from __future__ import annotations

from typing import Any

from fraudcep import Alert, Engine
from fraudcep.payments.default_rules import default_rules
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep.runtime.output_records import alert_value
from fraudcep_kafka.topics import COMPACTED, create_topics
from support.kafka_runner import Job, read_topic

__all__ = ["check_alerts", "core_alerts", "headers", "job_args", "make_topics", "payments"]


def make_topics(job: Job, *, rules: bool = True) -> None:
    """The job's topics; the input has ``job.partitions`` partitions, the others one."""
    topics: dict[str, tuple[int, dict[str, str]]] = {
        job.input_topic: (job.partitions, {}),
        job.alerts_topic: (1, {}),
        job.dlq_topic: (1, {}),
    }
    if rules:
        topics[job.rules_topic] = (1, dict(COMPACTED))
    create_topics({"bootstrap.servers": job.bootstrap}, topics)


def job_args(job: Job, **options: Any) -> list[str]:
    """``run`` and the job's options for ``job``'s topics (``options`` over the defaults
    here; ``max_out_of_orderness="2s"`` is ``--max-out-of-orderness 2s``)."""
    settings: dict[str, Any] = {
        "bootstrap": job.bootstrap,
        "group-id": job.group,
        "input-topic": job.input_topic,
        "alerts-topic": job.alerts_topic,
        "dead-letter-topic": job.dlq_topic,
        "rules-topic": job.rules_topic,
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
