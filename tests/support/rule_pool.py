"""A pool of rules over small synthetic events (``t`` the kind, ``k`` the key) covering every
contiguity, skip strategy and window type, for snapshot and restore tests."""

from __future__ import annotations

import textwrap
from typing import Any

import msgspec

# The rules live in source text so that a separate Python process can build the very same rules.
RULES_SOURCE = textwrap.dedent(
    """
    from fraudcep import Pattern, Rule, SkipStrategy, WithinType


    def kind(*kinds):
        wanted = frozenset(kinds)
        return lambda e: e["t"] in wanted


    def rule_pool():
        return [
            Rule(
                "ab-within",
                Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b")).within(12),
                key="k",
            ),
            Rule(
                "a2-c-skip-past",
                Pattern.begin("a", skip=SkipStrategy.skip_past_last_event())
                .where(kind("a"))
                .times(2)
                .followed_by("c")
                .where(kind("c"))
                .within(20),
                key="k",
            ),
            Rule(
                "b-not-c",
                Pattern.begin("b").where(kind("b")).not_followed_by("c").where(kind("c"))
                .within(7),
                key="k",
            ),
            Rule(
                "ab-plus-skip-first",
                Pattern.begin("a", skip=SkipStrategy.skip_to_first("b"))
                .where(kind("a"))
                .followed_by("b")
                .where(kind("b"))
                .one_or_more()
                .followed_by("c")
                .where(kind("c"))
                .within(4, WithinType.PREVIOUS_AND_CURRENT),
                key=lambda e: (e["k"], e["t"] != "d"),
            ),
            Rule(
                "any-b-c",
                Pattern.begin("b").where(kind("b")).followed_by_any("c").where(kind("c"))
                .within(30),
                key="k",
            ),
        ]


    def make_rules(names=None):
        pool = rule_pool()
        if names is None:
            return pool
        return [r for r in pool if r.id in names]
    """
)
_NAMESPACE: dict[str, Any] = {}
exec(RULES_SOURCE, _NAMESPACE)
make_rules = _NAMESPACE["make_rules"]
POOL_IDS = [r.id for r in make_rules()]

#: The engine options the snapshot tests run the pool with.
OPTIONS: dict[str, Any] = {"timestamp": "ts", "max_out_of_orderness": 3}


def contents(blob: bytes) -> tuple[Any, dict[Any, Any]]:
    """A format-2 snapshot's engine part and its key records by (group, key), for comparing
    two snapshots whatever the order of their records."""
    _link, engine_part, records, removed = msgspec.msgpack.decode(
        blob[52:], ext_hook=lambda code, data: (code, bytes(data))
    )
    assert removed == []
    return engine_part, {(group, repr(key)): record for group, key, record in records}
