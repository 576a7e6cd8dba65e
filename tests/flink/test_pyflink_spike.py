"""The PyFlink spike (``fraudcep_flink.spike``) on a local mini-cluster in thread mode: the
engine in a keyed broadcast function, its state in keyed ``ValueState``, driven by Flink's
watermarks and event-time timers, gives the core engine's alerts id for id.

It runs in the Flink virtualenv (``scripts/flink-setup.sh``; ``FRAUDCEP_FLINK_PYTHON``, else
``.venv-flink/bin/python``) as a subprocess: the main environment has no PyFlink. Without that
virtualenv the test is skipped, except in CI (``CI`` set), where scripts/test.sh makes it and a
missing one is a failure. Each job takes seconds of start-up (a JVM and a mini-cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.pyflink


def flink_python() -> str:
    python = os.environ.get("FRAUDCEP_FLINK_PYTHON") or str(REPO / ".venv-flink/bin/python")
    if not Path(python).is_file():
        message = f"no Flink virtualenv ({python}); run scripts/flink-setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.mark.parametrize("parallelism", [1, 2])
def test_spike_gives_the_core_engines_alerts(parallelism: int, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "adapters")])
    done = subprocess.run(
        [
            flink_python(),
            "-m",
            "fraudcep_flink.spike",
            "-n",
            "4000",
            "--parallelism",
            str(parallelism),
            "--jitter-ms",
            "2000",
            "--bound-ms",
            "2000",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert done.stdout.strip(), f"no result (exit {done.returncode}):\n{done.stderr[-4000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"], result
    assert done.returncode == 0, done.stderr[-4000:]
    assert result["core_alerts"] > 5, result
    # watermarks and timers closed windows while the input went on, not only the final one
    assert result["alerts_before_final_watermark"] > 0, result
    assert result["late"] == 0, result
