"""``fraudcep run`` handles SIGTERM from its first instruction: whenever the signal comes
during start-up (right after the process is spawned, while it imports, connects, joins the
group) or later, the runner stops and exits 0, never by the default action (exit -15)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.kafka_runner import Job, RunnerProcess, payment_records, produce, wait_until

from fraudcep.payments.synthetic import PaymentGenerator

pytestmark = pytest.mark.kafka

STOP_MESSAGES = {
    "stop requested before the runner was built",
    "stop requested before the runner started",
    "stopped while starting",
    "runner stopped",
}


@pytest.fixture
def job(kafka_bootstrap: str, tmp_path: Path) -> Job:
    j = Job(kafka_bootstrap, tmp_path)
    j.create_input()
    return j


def _logged(message: str) -> Callable[[RunnerProcess], None]:
    def wait(runner: RunnerProcess) -> None:
        runner.wait_logged(message)

    return wait


def _after(seconds: float) -> Callable[[RunnerProcess], None]:
    def wait(_runner: RunnerProcess) -> None:
        time.sleep(seconds)  # a point in the start-up, not a wait for a condition

    return wait


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(_after(0.0), id="right-after-spawn"),
        pytest.param(_after(0.03), id="interpreter-start"),
        pytest.param(_after(0.15), id="imports"),
        pytest.param(_after(0.5), id="building"),
        pytest.param(_after(1.5), id="connecting"),
        pytest.param(_logged("rules loaded"), id="rules-loaded"),
        pytest.param(_logged("runner started"), id="started"),
        pytest.param(_logged("partitions assigned"), id="assigned"),
    ],
)
def test_sigterm_at_any_point_of_the_start_exits_0(
    job: Job, moment: Callable[[RunnerProcess], None]
) -> None:
    runner = job.start()
    moment(runner)
    runner.process.send_signal(signal.SIGTERM)
    code = runner.process.wait(180)
    lines = runner.log_lines()
    assert code == 0, runner.tail()
    assert not any("Traceback" in str(x.get("msg", "")) for x in lines), runner.tail()
    assert STOP_MESSAGES & {x.get("msg") for x in lines}, runner.tail()


def test_sigterm_twice_while_working_exits_0_once_committed(job: Job) -> None:
    payments, _ = PaymentGenerator(seed=31, users=200).generate(3_000)
    produce(job.bootstrap, job.input_topic, payment_records(payments))
    runner = job.start()
    wait_until(
        lambda: (
            any(x.get("msg") == "partitions assigned" for x in runner.log_lines())
            or runner.process.poll() is not None
        ),
        180,
        "the partitions",
    )
    runner.process.send_signal(signal.SIGTERM)
    runner.process.send_signal(signal.SIGTERM)  # a second request changes nothing
    assert runner.process.wait(180) == 0, runner.tail()
    assert any(x.get("msg") == "runner stopped" for x in runner.log_lines()), runner.tail()
