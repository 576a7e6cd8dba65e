"""Load test of the exactly-once Kafka runner (``fraudcep run``): throughput and alert latency.

Run: ``.venv/bin/python benchmarks/bench_kafka_runner.py [--bootstrap HOST:PORT] [options]``
(``--help`` lists the options; docs/performance.md says what was measured with them).
Without ``--bootstrap`` a single-node broker is started with ``scripts/kafka.sh`` (in a
temporary directory) and stopped at the end. Each measurement runs ONE runner process
(``python -m fraudcep_cli run``, default rules, ``--log-format json``) with its own group and
topics, started and watched with the Kafka tests' harness (``tests/support/kafka_runner.py``);
the runner's ``/metrics`` endpoint is found in its log ("metrics endpoint up").

1. Sustained throughput (:mod:`.throughput`). ``--events`` payments (default 500,000) are
   written to a fresh 4-partition topic first, keyed by ``user_id``; then the runner starts
   and the group's committed offsets are polled (``Consumer.committed()`` on a consumer of
   the runner's group id that never subscribes, so it does not join the group). The rate is
   the events committed between the first committed progress and the moment the committed
   offsets reach the end of every partition, divided by that time.
2. Alert latency at a paced input rate (:mod:`.latency`). A separate producer process
   (:mod:`.producer`, so that producing does not share an interpreter with the measuring
   loop) sends payments in real time: each payment's ``ts`` is the wall clock (epoch ms) at
   which it is due to be sent. A ``read_committed`` consumer of the alerts topic takes each
   alert's latency as its receive time minus the largest ``ts`` of its events. The latency
   is broken down by stage (:data:`.latency.STAGES`): the producer's lateness against its
   schedule and its produce → broker append time (delivery reports; the input topic uses
   ``LogAppendTime``, so a record's timestamp is when the broker appended it), the runner's
   broker append → fetch, fetch → engine, engine → produce and produce → commit histograms
   (``fraudcep_fetch_delay_seconds``, ``fraudcep_alert_stage_seconds``), and the reader's
   alert produce → receive time. Runs are made at ``--rate`` for each of
   ``--commit-intervals`` (``--repeat`` times), then at each rate of ``--ladder`` until the
   runner (or the producer) cannot keep up.
3. State size (``--state-keys 1k,1M``): a latency run after the runner was given that many
   keys of live state (one payment over 2000 for each of as many users of their own), with
   the loop's checkpoint pauses during the preload and the run apart, and the restore time
   after it (:mod:`.latency`).

Results go to ``--json`` (default ``benchmarks/results/kafka_runner.json``) and the plots
(:mod:`.plot`, matplotlib: ``pip install -e '.[bench]'``) to ``--svg`` (default
``docs/img/kafka-runner-latency.svg``) and, for the stages, ``--stages-svg``;
``--plot-only FILE`` redraws them from a results file.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The Kafka tests' harness (tests/support) is shared with the tests.
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
