"""One back-off policy for every retry loop of every runtime.

A :class:`Backoff` says how long to wait before each retry and when to give up:
exponential (``base_s * 2**retry``) up to ``cap_s``, with full jitter (a wait drawn evenly
from ``[0, that)``, so that clients that failed together do not come back together), at most
``max_attempts`` tries and no wait past ``deadline_s`` after the first try. ``jitter=False``
waits the whole ceiling each time, for a single client whose waits must add up to a known
time. ``rand``, ``sleep`` and ``clock`` are injectable, so tests run without waiting.

:meth:`Backoff.start` begins one sequence of tries (:class:`Retries`), which counts the
failures and answers the wait before the next try, or None when the policy gives up. A
caller that keeps its own count (a failure per loop iteration, say) asks :meth:`Backoff.delay`
and :meth:`Backoff.gives_up` directly. Nothing here does I/O but the injected ``sleep``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import attrs

__all__ = ["Backoff", "Retries"]

_MAX_DOUBLINGS = 62  # 2.0**62 is still a float; beyond it the cap has long been reached
_GE0 = attrs.validators.ge(0.0)  # NaN fails it too


def _attempts(_instance: object, _attribute: object, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"max_attempts must be >= 1 or None, got {value}")


@attrs.frozen
class Backoff:
    """Exponential back-off with full jitter, a cap, at most ``max_attempts`` tries and a
    deadline (see the module docstring)."""

    base_s: float = attrs.field(default=0.05, validator=_GE0)
    """The ceiling of the first retry's wait; it doubles with each retry."""
    cap_s: float = attrs.field(default=5.0, validator=_GE0)
    """No wait is longer."""
    max_attempts: int | None = attrs.field(default=10, validator=_attempts)
    """Tries in all, the first included (None: no limit)."""
    deadline_s: float | None = attrs.field(default=None, validator=attrs.validators.optional(_GE0))
    """Seconds after the first try past which no retry is started and no wait reaches
    (None: no limit)."""
    jitter: bool = True
    """Full jitter: each wait is drawn evenly from ``[0, ceiling)``; False: the ceiling."""
    rand: Callable[[], float] = attrs.field(default=random.random, eq=False, repr=False)
    """A number in ``[0, 1)`` per wait."""
    sleep: Callable[[float], object] = attrs.field(default=time.sleep, eq=False, repr=False)
    clock: Callable[[], float] = attrs.field(default=time.monotonic, eq=False, repr=False)
    """Seconds, for the deadline (monotonic)."""

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (0-based):
        ``min(cap_s, base_s * 2**retry)``."""
        if retry < 0:
            raise ValueError(f"retry must be >= 0, got {retry}")
        return min(self.cap_s, self.base_s * 2.0 ** min(retry, _MAX_DOUBLINGS))

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (0-based): drawn from
        ``[0, ceiling(retry))``, or the ceiling itself without jitter."""
        ceiling = self.ceiling(retry)
        return ceiling * self.rand() if self.jitter else ceiling

    def gives_up(self, failures: int, elapsed_s: float = 0.0) -> bool:
        """Whether no try follows ``failures`` failed tries in a row, ``elapsed_s`` seconds
        after the first."""
        return (self.max_attempts is not None and failures >= self.max_attempts) or (
            self.deadline_s is not None and elapsed_s >= self.deadline_s
        )

    def start(self) -> Retries:
        """A new sequence of tries, starting now."""
        return Retries(self, self.clock())


@attrs.define
class Retries:
    """One sequence of tries under a :class:`Backoff`."""

    policy: Backoff
    started: float
    """When the first try started (the policy's clock)."""
    failures: int = 0
    """Failed tries in a row."""

    @property
    def elapsed_s(self) -> float:
        return self.policy.clock() - self.started

    def failed(self) -> float | None:
        """Count a failed try: the seconds to wait before the next one, or None when the
        policy gives up (``max_attempts`` failures in a row, or the deadline passed). A wait
        never reaches past the deadline."""
        self.failures += 1
        elapsed = self.elapsed_s
        policy = self.policy
        if policy.gives_up(self.failures, elapsed):
            return None
        wait = policy.delay(self.failures - 1)
        if policy.deadline_s is not None:
            wait = min(wait, policy.deadline_s - elapsed)
        return wait

    def progressed(self) -> None:
        """A try did part of the work: the failures in a row count from 0 again (the
        deadline still counts from the first try)."""
        self.failures = 0

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` with the policy's ``sleep``."""
        self.policy.sleep(seconds)
