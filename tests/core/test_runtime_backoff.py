"""The runtime kit's one back-off policy: capped exponential waits with full jitter, at most
``max_attempts`` tries, no wait past the deadline; rand, sleep and clock injected."""

from __future__ import annotations

import random

import attrs
import pytest

from fraudcep.runtime import Backoff


def test_ceilings_double_from_the_base_up_to_the_cap() -> None:
    policy = Backoff(base_s=0.1, cap_s=2.0)
    assert [policy.ceiling(n) for n in range(7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    )
    assert policy.ceiling(10_000) == 2.0  # no overflow far past the cap
    with pytest.raises(ValueError, match="retry must be >= 0"):
        policy.ceiling(-1)


def test_full_jitter_draws_each_wait_from_zero_to_its_ceiling() -> None:
    draws = iter([0.0, 0.5, 0.999])
    policy = Backoff(base_s=0.1, cap_s=2.0, rand=lambda: next(draws))
    assert policy.delay(3) == 0.0
    assert policy.delay(3) == pytest.approx(0.4)
    assert policy.delay(10) == pytest.approx(1.998)
    seeded = random.Random(7)
    sampled = Backoff(base_s=0.1, cap_s=2.0, rand=seeded.random)
    for retry in range(12):
        waits = [sampled.delay(retry) for _ in range(200)]
        ceiling = sampled.ceiling(retry)
        assert all(0.0 <= w < ceiling for w in waits)
        # spread over the whole window, not bunched at one end
        assert min(waits) < 0.1 * ceiling and max(waits) > 0.9 * ceiling
    assert Backoff(base_s=1.0, cap_s=30.0, jitter=False).delay(2) == 4.0


def test_max_attempts_counts_every_try_and_progress_starts_the_count_again() -> None:
    policy = Backoff(base_s=0.01, cap_s=0.04, max_attempts=3, rand=lambda: 0.5)
    retries = policy.start()
    assert retries.failed() == pytest.approx(0.005)
    assert retries.failed() == pytest.approx(0.01)
    assert retries.failed() is None  # the third try failed: no fourth
    assert retries.failures == 3
    retries.progressed()
    assert retries.failed() == pytest.approx(0.005)
    assert not Backoff(max_attempts=None).gives_up(10**9)


def test_no_retry_after_the_deadline_and_no_wait_past_it() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    policy = Backoff(
        base_s=1.0,
        cap_s=8.0,
        max_attempts=None,
        deadline_s=5.0,
        jitter=False,
        sleep=sleep,
        clock=lambda: now[0],
    )
    retries = policy.start()
    while (wait := retries.failed()) is not None:
        retries.wait(wait)
    assert slept == [1.0, 2.0, 2.0]  # the third wait is cut to the deadline
    assert now[0] - 100.0 == pytest.approx(5.0)
    assert retries.failures == 4
    assert policy.gives_up(1, elapsed_s=5.0) and not policy.gives_up(1, elapsed_s=4.9)


def test_policies_are_values_and_refuse_nonsense() -> None:
    assert Backoff() == Backoff(rand=lambda: 0.0, sleep=lambda s: None)  # callables aside
    assert attrs.evolve(Backoff(), cap_s=1.0) != Backoff()
    for bad in ({"base_s": -1.0}, {"cap_s": float("nan")}, {"max_attempts": 0}, {"deadline_s": -1}):
        with pytest.raises(ValueError):
            Backoff(**bad)  # type: ignore[arg-type]
