"""What an engine reports besides alerts, collected by the runtime that runs it.

An engine hands its side outputs to callbacks (or keeps them until drained); a runtime wants
them per batch, to dead-letter late events, report condition failures and overflows, and
count timeouts. :class:`SideOutputs` is that collector, for every runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from fraudcep.alert import ConditionFailure, LateEvent, Overflow, TimedOutMatch

__all__ = ["SideOutputs"]


@attrs.define(eq=False)
class SideOutputs:
    """Late events, condition failures, overflows and timeouts since the last :meth:`clear`.

    Timeouts are counted; they are kept too when ``keep_timeouts`` is set."""

    keep_timeouts: bool = False
    late: list[LateEvent] = attrs.Factory(list)
    errors: list[ConditionFailure] = attrs.Factory(list)
    overflows: list[Overflow] = attrs.Factory(list)
    timeouts: list[TimedOutMatch] = attrs.Factory(list)
    timeout_count: int = 0

    def callbacks(self) -> dict[str, Callable[[Any], None]]:
        """The engine's ``on_*`` keyword arguments that feed this collector."""
        return {
            "on_late": self.late.append,
            "on_error": self.errors.append,
            "on_overflow": self.overflows.append,
            "on_timeout": self._timeout,
        }

    def _timeout(self, match: TimedOutMatch) -> None:
        self.timeout_count += 1
        if self.keep_timeouts:
            self.timeouts.append(match)

    def __bool__(self) -> bool:
        return bool(self.late or self.errors or self.overflows or self.timeout_count)

    def clear(self) -> None:
        self.late.clear()
        self.errors.clear()
        self.overflows.clear()
        self.timeouts.clear()
        self.timeout_count = 0
