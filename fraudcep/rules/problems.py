"""What is wrong with a rule file, and where: problems with positions, collected and raised
together, and the bound on how many are collected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from fraudcep.errors import FraudcepError
from fraudcep.rules.limits import MAX_PROBLEMS


@attrs.frozen
class Problem:
    """One thing wrong with a rule file, and where it is (1-based line and column)."""

    source: str
    rule_id: str | None
    field: str
    line: int
    column: int
    message: str
    missing_list: str | None = None
    """The named list an expression names and the lists given lack, when that is the
    problem (a runtime whose lists arrive later may load the file again then)."""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}:"
        rule = "" if self.rule_id is None else f" rule {self.rule_id!r}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}{rule}{field} {self.message}"


class RuleSpecError(FraudcepError, ValueError):
    """A rule file with problems; ``problems`` lists all of them, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = sorted(problems, key=lambda p: (p.line, p.column))
        count = len(self.problems)
        head = "\n".join(str(p) for p in self.problems[:20])
        more = f"\n... and {count - 20} more" if count > 20 else ""
        super().__init__(f"{count} problem(s) in rule file:\n{head}{more}")


class TooManyProblems(Exception):
    """The problem list is full, or a limit of the whole file is reached: stop checking."""


def add_problem(problems: list[Problem], problem: Problem) -> None:
    problems.append(problem)
    if len(problems) >= MAX_PROBLEMS:
        problems.append(
            attrs.evolve(problem, message=f"more than {MAX_PROBLEMS:,} problems: stopped here")
        )
        raise TooManyProblems


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (values in messages come from the file)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"
