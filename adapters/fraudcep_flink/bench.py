"""The fraudcep job against the floor PyFlink sets, on the same Kafka topic (docs/performance.md).

The stream: generated payments (:class:`~fraudcep.payments.synthetic.PaymentGenerator`,
5,000 users by default) written to a Kafka topic as the Kafka runner reads them (value: the
payment's JSON, key: its ``user_id``). ``produce`` writes it; it needs ``confluent_kafka``,
so it runs in the main virtualenv (PyFlink is imported only by the other commands)::

    python -m fraudcep_flink.bench produce --bootstrap H:P --topic T -n 100000

The other commands run in the Flink virtualenv, one job per process, thread mode, bounded
sources (:func:`~fraudcep_flink.kafka_io.record_source` to the topic's end offsets):

- ``floor``: records → ``key_by`` the record's key (the user id the producer set; decoding
  the key bytes is all the parsing it does) → a ``KeyedProcessFunction`` with one
  ``ValueState`` read and write per event → nothing downstream but a marker every
  ``--every`` events (collected);
- ``job``: the full job (:func:`fraudcep_flink.job.build_job`, default rules, no rules
  topic, alerts and dead letters to the throwaway topics ``<topic>.alerts`` and
  ``<topic>.dlq`` that ``produce`` makes, exactly-once sink, checkpoints every second);
- ``startup``: a three-element map job: the wall time from before the environment is made
  to its first result, and the part of it making the environment takes.

``floor`` and ``job`` print the wall time of ``execute`` (the graph built, the mini-cluster
started, the topic read to its end, the job finished): that includes start-up and shut-down.
The rate without them is taken two ways: by difference, the same command on a topic of N
payments and on one of a few N0, ``(N - N0) / (T(N) - T(N0))`` (``compare`` does that,
alternating the runs and repeating them); and from markers, the wall clock every ``--every``
events of the keyed function (the job's: a subclass of its ``Keyed`` counting elements, two
per payment with the default rules), the rate between the first and the last marker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["compare", "floor", "job", "produce", "startup"]

USERS = 5_000
SEED = 3


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def produce(
    bootstrap: str, topic: str, n: int, *, partitions: int = 1, users: int = USERS,
    seed: int = SEED, jitter_ms: int = 0,
) -> int:  # fmt: skip
    """Write ``n`` generated payments to a new ``topic`` (main virtualenv: confluent_kafka)."""
    from confluent_kafka import Producer

    from fraudcep.payments.synthetic import PaymentGenerator
    from fraudcep_kafka.topics import create_topics

    # the job's outputs (the broker may not create topics on demand): throwaway topics
    topics: dict[str, tuple[int, dict[str, str]]] = {topic: (partitions, {})}
    topics.update({f"{topic}.alerts": (1, {}), f"{topic}.dlq": (1, {})})
    create_topics({"bootstrap.servers": bootstrap}, topics)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    gen = PaymentGenerator(seed=seed, users=users, jitter_ms=jitter_ms)
    count = 0
    for payment in gen.payments(n):
        key = str(payment["user_id"]).encode()
        value = json.dumps(payment, separators=(",", ":")).encode()
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        count += 1
    if producer.flush(60) != 0 or failures:
        raise RuntimeError(f"producing to {topic} failed: {failures[:3]}")
    return count


def _floor_function(every: int) -> Any:
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import ValueStateDescriptor

    class CountPerKey(KeyedProcessFunction):  # type: ignore[misc]
        """One ValueState read and one write per event; a wall-clock marker every ``every``."""

        def open(self, runtime_context: RuntimeContext) -> None:
            self.state = runtime_context.get_state(
                ValueStateDescriptor("n", Types.PICKLED_BYTE_ARRAY())
            )
            self.seen = 0

        def process_element(self, value: Any, ctx: Any) -> Iterator[str]:
            n = self.state.value() or 0
            self.state.update(n + 1)
            self.seen += 1
            if self.seen % every == 0:
                yield f"{self.seen} {time.time()}"

    return CountPerKey()


def _environment(parallelism: int, extra: dict[str, str] | None) -> Any:
    from fraudcep_flink.environment import local_environment

    return local_environment(parallelism=parallelism, thread_mode=True, extra=extra)


def floor(
    bootstrap: str, topic: str, *, parallelism: int = 1, every: int = 10_000,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The floor on ``topic``: the wall time of its ``execute`` and its markers' rate."""
    from pyflink.common import Types, WatermarkStrategy

    from fraudcep_flink.kafka_io import record_source

    env = _environment(parallelism, extra)
    source = record_source(bootstrap, topic, group_id=f"bench-{uuid.uuid4().hex}",
                           bounded=True, starting="earliest")  # fmt: skip
    started = time.monotonic()
    out = (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "payments")
        .key_by(lambda r: r.key.decode(), key_type=Types.STRING())
        .process(_floor_function(every), output_type=Types.STRING())
    )
    with out.execute_and_collect("fraudcep-bench-floor") as results:
        marks = [tuple(float(x) for x in line.split()) for line in results]
    wall = time.monotonic() - started
    result: dict[str, Any] = {"what": "floor", "topic": topic, "p": parallelism,
                              "wall_s": round(wall, 2), "markers": len(marks)}  # fmt: skip
    if parallelism == 1 and len(marks) >= 2:
        (n0, t0), (n1, t1) = marks[0], marks[-1]
        result["marker_rate"] = round((n1 - n0) / (t1 - t0))
    return result


def _marked_keyed_class() -> Any:
    """The job's keyed function, writing a wall-clock marker to a file every ``every``
    elements (a payment is one element per key group). Made on first use (``produce`` runs
    without PyFlink) and kept as this module's ``MarkedKeyed`` (see :func:`__getattr__`), so
    that it is pickled by reference, as the job's own functions are."""
    from fraudcep_flink.job import Keyed

    class MarkedKeyed(Keyed):
        def __init__(self, config: Any, path: str, every: int) -> None:
            super().__init__(config)
            self.path = path
            self.every = every

        def open(self, runtime_context: Any) -> None:
            super().open(runtime_context)
            self.marked = 0
            self.marks = open(self.path, "a")  # noqa: SIM115 (closed in close)

        def close(self) -> None:
            self.marks.close()
            super().close()

        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            self.marked += 1
            if self.marked % self.every == 0:
                self.marks.write(f"{self.marked} {time.time()}\n")
                self.marks.flush()
            out: Iterator[Any] = super().process_element(value, ctx)
            return out

    MarkedKeyed.__module__ = __name__
    MarkedKeyed.__qualname__ = "MarkedKeyed"
    return MarkedKeyed


def __getattr__(name: str) -> Any:
    if name == "MarkedKeyed":
        cls = globals()["MarkedKeyed"] = _marked_keyed_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def job(
    bootstrap: str, topic: str, *, parallelism: int = 1, extra: dict[str, str] | None = None,
    max_out_of_orderness: int = 0, every: int = 10_000,
) -> dict[str, Any]:  # fmt: skip
    """The full job on ``topic`` (default rules): the wall time of its ``execute``, and at
    parallelism 1 the rate of keyed elements between the first and the last marker."""
    import tempfile

    import fraudcep_flink.job as job_module
    from fraudcep_flink.config import JobConfig
    from fraudcep_flink.job import build_job

    tag = uuid.uuid4().hex[:12]
    config = JobConfig(
        bootstrap=bootstrap,
        group_id=f"bench-{tag}",
        input_topic=topic,
        alerts_topic=f"{topic}.alerts",  # made by produce
        dead_letter_topic=f"{topic}.dlq",
        rules_topic=None,
        lists_topic=None,
        parallelism=parallelism,
        bounded=True,
        transactional_id_prefix=f"bench-{tag}",
        max_out_of_orderness=max_out_of_orderness,
    )
    env = _environment(parallelism, {"restart-strategy.type": "none", **(extra or {})})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "marks")
        plain = job_module.Keyed
        # by its module's name, not __main__'s (python -m): pickled by reference
        from fraudcep_flink.bench import MarkedKeyed

        # build_job makes its keyed function by this name: the marked one for this graph
        job_module.Keyed = lambda c: MarkedKeyed(c, path, every)  # type: ignore[assignment,misc]
        try:
            started = time.monotonic()
            build_job(env, config)
            env.execute(f"fraudcep-bench-job {topic}")
            wall = time.monotonic() - started
        finally:
            job_module.Keyed = plain  # type: ignore[misc]
        with open(path) as f:
            marks = [tuple(float(x) for x in line.split()) for line in f]
    result: dict[str, Any] = {"what": "job", "topic": topic, "p": parallelism,
                              "wall_s": round(wall, 2), "markers": len(marks)}  # fmt: skip
    if parallelism == 1 and len(marks) >= 2:
        (n0, t0), (n1, t1) = marks[0], marks[-1]
        result["marker_rate"] = round((n1 - n0) / (t1 - t0) / 2)  # payments: 2 elements each
        result["marker_elements_rate"] = round((n1 - n0) / (t1 - t0))
    return result


def startup() -> dict[str, Any]:
    """A three-element job: time to its first result, and to the environment."""
    from pyflink.common import Types

    t0 = time.monotonic()
    env = _environment(1, None)
    t1 = time.monotonic()
    out = env.from_collection([1, 2, 3], type_info=Types.INT()).map(
        lambda x: x + 1, output_type=Types.INT()
    )
    first = None
    got = []
    with out.execute_and_collect("fraudcep-bench-startup") as results:
        for x in results:
            if first is None:
                first = time.monotonic()
            got.append(x)
    t2 = time.monotonic()
    assert sorted(got) == [2, 3, 4], got
    assert first is not None
    return {"what": "startup", "environment_s": round(t1 - t0, 2),
            "first_result_s": round(first - t0, 2), "total_s": round(t2 - t0, 2)}  # fmt: skip


def _run_one(args: Sequence[str]) -> dict[str, Any]:
    """One measurement in a process of its own (a fresh JVM and mini-cluster)."""
    load = _loadavg()
    done = subprocess.run([sys.executable, "-m", "fraudcep_flink.bench", *args],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench {' '.join(args)} failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_before"] = load
    result["load_after"] = _loadavg()
    return result


def compare(
    what: str, bootstrap: str, big: str, n: int, small: str, n0: int, *, repeat: int = 2,
    parallelism: int = 1, options: Sequence[str] = (),
) -> list[dict[str, Any]]:  # fmt: skip
    """``repeat`` times: ``what`` on ``small`` (N0 payments), then on ``big`` (N): the rate
    ``(N - N0) / (T(N) - T(N0))`` of each pair."""
    out = []
    for _ in range(repeat):
        common = ["--bootstrap", bootstrap, "-p", str(parallelism), *options]
        t_small = _run_one([what, "--topic", small, *common])
        t_big = _run_one([what, "--topic", big, *common])
        rate = (n - n0) / (t_big["wall_s"] - t_small["wall_s"])
        row = {"what": what, "p": parallelism, "n": n, "n0": n0, "T_n": t_big["wall_s"],
               "T_n0": t_small["wall_s"], "payments_per_s": round(rate),
               "load": [t_small["load_before"], t_big["load_after"]]}  # fmt: skip
        if "marker_rate" in t_big:
            row["marker_rate"] = t_big["marker_rate"]
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def _extra(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("what", choices=["produce", "floor", "job", "startup", "compare"])
    parser.add_argument("--bootstrap", default=os.environ.get("FRAUDCEP_KAFKA_BOOTSTRAP",
                                                              "127.0.0.1:9092"))  # fmt: skip
    parser.add_argument("--topic", help="the payments topic (produce, floor, job, compare: N)")
    parser.add_argument("-n", type=int, default=100_000, help="payments (produce, compare)")
    parser.add_argument("--small", help="compare: the topic of N0 payments")
    parser.add_argument("--n0", type=int, default=5_000, help="compare: payments in --small")
    parser.add_argument("--of", choices=["floor", "job"], default="floor", help="compare what")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=1, help="produce: partitions")
    parser.add_argument("-p", type=int, default=1, help="parallelism")
    parser.add_argument("--every", type=int, default=10_000, help="floor: marker interval")
    parser.add_argument("--max-out-of-orderness", type=int, default=0, help="job: ms")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="Flink configuration (floor, job)")  # fmt: skip
    args = parser.parse_args(argv)
    extra = _extra(args.conf)
    result: Any
    if args.what == "produce":
        result = {"produced": produce(args.bootstrap, args.topic, args.n,
                                      partitions=args.partitions)}  # fmt: skip
    elif args.what == "floor":
        result = floor(args.bootstrap, args.topic, parallelism=args.p, every=args.every,
                       extra=extra)  # fmt: skip
    elif args.what == "job":
        result = job(args.bootstrap, args.topic, parallelism=args.p, extra=extra,
                     max_out_of_orderness=args.max_out_of_orderness,
                     every=args.every)  # fmt: skip
    elif args.what == "startup":
        result = startup()
    else:
        options = [f"--conf={c}" for c in args.conf]
        options.append(f"--every={args.every}")
        if args.of == "job":
            options.append(f"--max-out-of-orderness={args.max_out_of_orderness}")
        result = compare(args.of, args.bootstrap, args.topic, args.n, args.small, args.n0,
                         repeat=args.repeat, parallelism=args.p, options=options)  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
