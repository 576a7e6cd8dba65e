"""The keyed, event-time engine (:mod:`.engine`) running rules (:mod:`.rule`) over its state
(:mod:`.state`), and the codec that writes that state as per-key records (:mod:`.codec`;
format 1 is read by :mod:`.snapshot_v1`)."""

from __future__ import annotations

from fraudcep.engine.engine import Engine, EngineStats, TimeMode
from fraudcep.engine.rule import Rule

__all__ = ["Engine", "EngineStats", "Rule", "TimeMode"]
