"""What the record-batch path (:mod:`fraudcep.engine.columnar`) reads of an engine before a
batch: a read-only view, so that the path never reaches into the engine's attributes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from fraudcep.engine.rule import Rule
    from fraudcep.nfa.matcher import KeyState, Matcher

__all__ = ["EngineView", "RuleView"]


@attrs.frozen
class RuleView:
    """A rule in force: its matcher, its keys with state, and its keys with buffered events."""

    rule: Rule
    matcher: Matcher
    keys: Mapping[Hashable, KeyState]
    pending: Mapping[Hashable, int]


@attrs.frozen
class EngineView:
    """The engine's clocks and rules, as they are before a batch."""

    auto_event_time: bool
    """Event time with the watermark following the timestamps (the only mode the batch path
    speeds up; the others take the rows one by one)."""
    timestamp: str | None
    """The field holding the timestamp, or None when it is read by a function."""
    lag: int
    """``max_out_of_orderness + 1``: the watermark is the highest timestamp minus this."""
    watermark: int
    max_ts: int
    forced_watermarks: int
    rules: tuple[RuleView, ...]
