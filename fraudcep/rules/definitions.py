"""The values of rules as data: a rule definition, the spec it came from, the expression
compiler a loader takes, and the path and position types the reader and checker share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

from fraudcep.engine.rule import Rule

Spec = dict[str, Any]
Path_ = tuple[str | int, ...]
Position = tuple[int, int]


class ExpressionCompiler(Protocol):
    """``fraudcep.rules.expressions.compile_expression``'s signature."""

    def __call__(
        self,
        source: str,
        *,
        stages: Sequence[str],
        rule_id: str,
        field: str,
        line: int,
        column: int,
    ) -> Callable[..., Any]: ...


@attrs.frozen
class RuleDefinition:
    """A loaded rule: its metadata, its normalised spec and the compiled :class:`Rule`."""

    id: str
    version: int | None
    enabled: bool
    description: str | None
    spec: Spec = attrs.field(eq=False)
    rule: Rule = attrs.field(eq=False)

    @property
    def mode(self) -> str:
        """``"live"`` or ``"shadow"`` (the compiled rule's; see docs/rules.md)."""
        return self.rule.mode
