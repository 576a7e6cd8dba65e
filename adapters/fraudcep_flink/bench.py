"""What PyFlink itself costs: the floor the adapter is measured against (docs/flink.md).

``python -m fraudcep_flink.bench floor``: generated payments (a bounded collection, pickled)
→ ``key_by(user_id)`` → a trivial ``KeyedProcessFunction`` that reads and writes one
``ValueState`` per event (a counter), at parallelism 1 (one slot), thread mode. The function
emits a marker with the wall clock every ``--every`` events; the rate is taken between the
first and the last marker, so the job's start-up and the source's warm-up are not in it.

``python -m fraudcep_flink.bench startup``: the wall time of a job of three elements, from
before the environment is made (the JVM and the mini-cluster start) to its last result, and
the part of it that making the environment takes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from fraudcep_flink.environment import local_environment

__all__ = ["CountPerKey", "floor", "startup"]


class CountPerKey(KeyedProcessFunction):  # type: ignore[misc]
    """One ValueState read and one write per event; a wall-clock marker every ``every``."""

    def __init__(self, every: int) -> None:
        self.every = every

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(
            ValueStateDescriptor("n", Types.PICKLED_BYTE_ARRAY())
        )
        self.seen = 0

    def process_element(self, value: Any, ctx: Any) -> Iterator[str]:
        n = self.state.value() or 0
        self.state.update(n + 1)
        self.seen += 1
        if self.seen % self.every == 0:
            yield json.dumps({"seen": self.seen, "t": time.time()})


def floor(n: int, every: int, thread_mode: bool = True) -> dict[str, Any]:
    from fraudcep.payments.synthetic import PaymentGenerator

    payments = [dict(p) for p in PaymentGenerator(seed=3, users=5000).payments(n)]
    env = local_environment(parallelism=1, thread_mode=thread_mode)
    started = time.monotonic()
    out = (
        env.from_collection(payments)
        .key_by(lambda p: p["user_id"], key_type=Types.STRING())
        .process(CountPerKey(every), output_type=Types.STRING())
    )
    with out.execute_and_collect("fraudcep-bench-floor") as results:
        marks = [json.loads(line) for line in results]
    wall = time.monotonic() - started
    first, last = marks[0], marks[-1]
    rate = (last["seen"] - first["seen"]) / (last["t"] - first["t"])
    return {
        "what": "floor",
        "mode": "thread" if thread_mode else "process",
        "events": n,
        "events_per_s": round(rate),
        "job_wall_s": round(wall, 1),
    }


def startup() -> dict[str, Any]:
    t0 = time.monotonic()
    env = local_environment(parallelism=1)
    t1 = time.monotonic()
    out = env.from_collection([1, 2, 3], type_info=Types.INT()).map(
        lambda x: x + 1, output_type=Types.INT()
    )
    with out.execute_and_collect("fraudcep-bench-startup") as results:
        got = sorted(results)
    t2 = time.monotonic()
    assert got == [2, 3, 4], got
    return {"what": "startup", "environment_s": round(t1 - t0, 1), "total_s": round(t2 - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["floor", "startup"])
    parser.add_argument("-n", type=int, default=200_000, help="payments (floor)")
    parser.add_argument("--every", type=int, default=10_000, help="marker interval (floor)")
    parser.add_argument("--process-mode", action="store_true", help="floor in process mode")
    args = parser.parse_args(argv)
    if args.what == "floor":
        result = floor(args.n, args.every, thread_mode=not args.process_mode)
    else:
        result = startup()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
