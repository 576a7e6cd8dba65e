"""The PyFlink job on a standalone session cluster (``scripts/flink-cluster.sh``: a
JobManager and a TaskManager with two slots, on 127.0.0.1), submitted with ``flink run ...
run --cluster`` as docs/flink.md gives it: two bounded jobs one after the other on the same
cluster (parallelism 1, then 2) commit the core engine's alerts on their generated streams,
and the cluster's REST API lists both as finished.

The cluster takes ~15 s to start, each job ~10-20 s: this runs in the Flink tier of
scripts/test.sh (skipped without the Flink virtualenv, a failure in CI).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from support.flink_job import check_alerts, core_alerts, job_args, make_topics, payments
from support.kafka_runner import Job, produce
from support.pyflink import flink_cluster, flink_run

pytestmark = [pytest.mark.pyflink, pytest.mark.kafka]


def rest(address: str, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=30) as response:
        doc = json.load(response)
    assert isinstance(doc, dict)
    return doc


def test_flink_run_on_a_session_cluster_commits_the_core_engines_alerts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with flink_cluster(tmp_path / "cluster") as address:
        assert address.startswith("127.0.0.1:")
        overview = rest(address, "/overview")
        assert overview["taskmanagers"] == 1 and overview["slots-total"] == 2
        for parallelism in (1, 2):
            job = Job(kafka_bootstrap, tmp_path, partitions=1)
            make_topics(job)
            stream = payments(seed=20 + parallelism, n=3000, jitter=2000)
            want = core_alerts(stream, bound=2000)
            assert len(want) > 5
            produce(kafka_bootstrap, job.input_topic,
                    [(p["user_id"].encode(), json.dumps(p).encode()) for p in stream])  # fmt: skip
            # idle timeout 1 s (job_args'): at parallelism 2 the one partition leaves a
            # source subtask without a split, which (bounded) finishes at once with the
            # end-of-time watermark; with idleness on a bounded input the other subtask,
            # marked idle before its first records, let that watermark run ahead downstream
            # and the keyed engines took every payment as late (4 runs in 6 here, before)
            args = job_args(job, bounded="true", max_out_of_orderness="2s",
                            parallelism=parallelism)  # fmt: skip
            done = flink_run(
                address, *args, "--cluster", cwd=tmp_path, log_dir=tmp_path / "client-log"
            )
            assert done.returncode == 0, (done.stdout[-5000:], done.stderr[-5000:])
            assert "has finished" in done.stdout, done.stdout[-3000:]
            check_alerts(job, want)
        jobs = rest(address, "/jobs/overview")["jobs"]
        assert isinstance(jobs, list)
        assert sorted(j["state"] for j in jobs) == ["FINISHED", "FINISHED"]
