"""Load test of the exactly-once Kafka runner: throughput and alert latency, by stage.

Run: ``.venv/bin/python benchmarks/bench_kafka_runner.py [--bootstrap HOST:PORT] [options]``
(``--help``). The load test lives in ``benchmarks/kafka_load/`` (see its ``__init__.py`` for
what is measured); this script is its entry point, and the paced producer's
(``bench_kafka_runner.py _produce ...``, a process of its own).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_load import cli, producer

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == producer.MODE:
        sys.exit(producer.main(sys.argv[2:]))
    sys.exit(cli.main())
