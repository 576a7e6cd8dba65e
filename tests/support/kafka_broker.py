"""A real Apache Kafka broker for tests.

:func:`kafka_bootstrap` is a session-scoped pytest fixture giving a ``host:port`` bootstrap
address: ``FRAUDCEP_KAFKA_BOOTSTRAP`` when it is set (a broker started elsewhere, e.g. by
``scripts/kafka.sh start``), otherwise a single-node broker that ``scripts/kafka.sh``
starts in a temporary directory on first use and stops at the end of the session (also
when tests fail or the session is interrupted). Only tests that request the fixture start a
broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.paths import REPO

ENV_VAR = "FRAUDCEP_KAFKA_BOOTSTRAP"
SCRIPT = REPO / "scripts" / "kafka.sh"
# The first start resolves the broker jars with Maven, which can take a few minutes.
START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 60


def _run(command: str, directory: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # The readiness check in kafka.sh uses confluent_kafka: give it this interpreter.
    env = {**os.environ, "FRAUDCEP_PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), command, "--dir", str(directory)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@contextmanager
def running_broker(directory: Path) -> Iterator[str]:
    """Start a broker under *directory*, yield its bootstrap address, stop it on exit."""
    try:
        proc = _run("start", directory, START_TIMEOUT_S)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(
                f"scripts/kafka.sh start failed (exit {proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}\n(logs in {directory}/logs)"
            )
        yield lines[-1].strip()
    finally:
        stopped = _run("stop", directory, STOP_TIMEOUT_S)
        if stopped.returncode != 0:
            print(f"scripts/kafka.sh stop failed:\n{stopped.stderr}", file=sys.stderr)


def restart_broker(directory: Path) -> None:
    """Stop the broker under *directory* and start it again with its data (same address)."""
    proc = _run("restart", directory, START_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/kafka.sh restart failed (exit {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker (see the module docstring)."""
    given = os.environ.get(ENV_VAR, "").strip()
    if given:
        yield given
        return
    with (
        tempfile.TemporaryDirectory(prefix="fraudcep-kafka-") as tmp,
        running_broker(Path(tmp)) as address,
    ):
        yield address
