"""After-match skip strategies: which partial matches survive once a match is emitted."""

from __future__ import annotations

import enum

import attrs


class SkipKind(enum.Enum):
    NO_SKIP = "no_skip"
    SKIP_TO_NEXT = "skip_to_next"
    SKIP_PAST_LAST_EVENT = "skip_past_last_event"
    SKIP_TO_FIRST = "skip_to_first"
    SKIP_TO_LAST = "skip_to_last"


@attrs.frozen
class SkipStrategy:
    """Flink's ``AfterMatchSkipStrategy``; build one with the class methods."""

    kind: SkipKind
    stage: str | None = None

    @classmethod
    def no_skip(cls) -> SkipStrategy:
        """Every match is emitted; nothing is discarded (the default)."""
        return cls(SkipKind.NO_SKIP)

    @classmethod
    def skip_to_next(cls) -> SkipStrategy:
        """Discard partial matches that started with the same event as the emitted match."""
        return cls(SkipKind.SKIP_TO_NEXT)

    @classmethod
    def skip_past_last_event(cls) -> SkipStrategy:
        """Discard partial matches that started inside the emitted match."""
        return cls(SkipKind.SKIP_PAST_LAST_EVENT)

    @classmethod
    def skip_to_first(cls, stage: str) -> SkipStrategy:
        """Discard partial matches that started before the first event of ``stage``."""
        return cls(SkipKind.SKIP_TO_FIRST, _stage_name(stage))

    @classmethod
    def skip_to_last(cls, stage: str) -> SkipStrategy:
        """Discard partial matches that started before the last event of ``stage``."""
        return cls(SkipKind.SKIP_TO_LAST, _stage_name(stage))

    @property
    def skips(self) -> bool:
        """True for every strategy but NO_SKIP (matches are then emitted in start order)."""
        return self.kind is not SkipKind.NO_SKIP

    def __str__(self) -> str:
        return self.kind.value if self.stage is None else f"{self.kind.value}({self.stage})"


def _stage_name(stage: str) -> str:
    if not isinstance(stage, str) or not stage:
        raise TypeError(f"a skip strategy needs a stage name, got {stage!r}")
    return stage
