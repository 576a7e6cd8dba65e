"""Fuzzing rule texts: random and mutated YAML and JSON rule files through ``load_rules``, and
the same texts as rules-topic records through ``parse_rule_record`` and ``RuleSet``, give rules
or the project's rule error — never another exception. Bounded: a seeded generator with a
fixed number of cases, and hypothesis with a fixed ``max_examples``.
"""

from __future__ import annotations

import contextlib
import json
import random
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import REPO

from fraudcep.payments.default_rules import DEFAULT_RULES_FILE
from fraudcep.rules import RuleSpecError, load_rules
from fraudcep.rules.checking import RULE_FIELDS, STAGE_FIELDS
from fraudcep.runtime.rule_records import RuleRecordError, RuleSet, parse_rule_record

ROOT = REPO
SEEDS = [
    (ROOT / "examples" / "rules.yaml").read_text(),
    DEFAULT_RULES_FILE.read_text(),
    json.dumps(yaml.safe_load((ROOT / "examples" / "rules.yaml").read_text()), indent=2),
    "- {id: r, key: account.id, within: {first_and_last: 5m, previous_and_current: 30s}, "
    "skip: {skip_to_last: a}, pattern: [{name: a, where: [x > 1, y < 2], times: [0, 3], "
    "greedy: true}, {group: [{name: g, until: z > 1, one_or_more: true}], next: true}]}\n",
    "rules:\n  - id: c\n    key: k\n    pattern:\n      - name: a\n        conditions:\n"
    "          - where: amount > 1\n          - or_where: |\n              amount < 0\n",
]
TOKENS = [
    "&a ", "*a", "!!python/object/apply:os.system [id]", "!x ", "[", "]", "{", "}", ":", ", ",
    "- ", "\n", "\n  ", "\t", "'", '"', "\\", "\x00", "\ufeff", "\u202e", "\uff15", "---\n",
    "? ", "<<: ", "~", "null", "true", "1e400", "9" * 40, "9" * 5_000, "0x" + "f" * 40,
    "1:2:3", "__class__", "\u0430mount", "times: 1000000", "times_or_more: 99999999",
    "[" * 60, "]" * 60, "{a: " * 40, "%TAG ! tag:x,2000:\n", "#", "5m", "\uff15m",
]  # fmt: skip


def mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        where = rng.randint(0, len(chars))
        what = rng.random()
        if what < 0.45:
            chars[where:where] = list(rng.choice(TOKENS))
        elif what < 0.7 and chars:
            del chars[where : where + rng.randint(1, 8)]
        elif what < 0.85 and chars:
            code = rng.choice([0, 9, 10, 32, 34, 39, 91, 123, rng.randint(0, 0x2FFF)])
            chars[min(where, len(chars) - 1)] = chr(code)
        else:
            start = rng.randint(0, max(0, len(chars) - 1))
            chars[where:where] = chars[start : start + rng.randint(1, 40)] * rng.randint(1, 3)
    return "".join(chars)


def load_or_refuse(text: str, source: str) -> None:
    try:
        load_rules(text, source=source)
    except RuleSpecError as exc:
        assert exc.problems, "a RuleSpecError names its problems"
        assert all(p.line >= 1 and p.column >= 1 for p in exc.problems)


def record_or_refuse(key: bytes | None, value: bytes) -> None:
    with contextlib.suppress(RuleRecordError):
        parse_rule_record(key, value, source="fuzz[0]@1")
    with contextlib.suppress(RuleRecordError):
        RuleSet([]).apply_record(key, value, source="fuzz[0]@2")


@pytest.mark.timeout(600)
def test_mutated_rule_files_and_records_load_or_are_refused() -> None:
    rng = random.Random(20_251_205)
    for case in range(1_500):
        seed = SEEDS[case % len(SEEDS)]
        text = mutate(seed, rng)
        load_or_refuse(text, rng.choice(["f.yaml", "f.json", "<string>"]))
        data = text.encode("utf-8", errors="surrogatepass")
        if rng.random() < 0.1:
            data = text.encode("utf-16", errors="surrogatepass")
        record_or_refuse(rng.choice([b"high-value-3-in-5m", b"r", b"", None, b"\xff"]), data)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.sampled_from(["5m", "0s", "3651d", "next", "x > 1", "amount >", "__class__", ""])
    | st.text(max_size=12)
)
field_names = st.sampled_from([*RULE_FIELDS, *STAGE_FIELDS, "rules", "bogus"]) | st.text(max_size=6)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(field_names, inner, max_size=6),
    max_leaves=30,
)
rule_like = st.lists(
    st.fixed_dictionaries(
        {"id": st.sampled_from(["r", "s"]), "key": st.sampled_from(["user_id", "a.b", "_x"])},
        optional={
            "pattern": st.lists(
                st.dictionaries(field_names, documents, max_size=5), min_size=0, max_size=4
            ),
            "within": documents,
            "version": documents,
            "skip": documents,
        },
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(documents, rule_like), st.sampled_from(["json", "yaml", "flow"]))
def test_random_documents_load_or_are_refused(doc: Any, form: str) -> None:
    if form == "json":
        text = json.dumps(doc, ensure_ascii=False)
    elif form == "yaml":
        text = yaml.safe_dump(doc, allow_unicode=True)
    else:
        text = yaml.safe_dump(doc, default_flow_style=True, allow_unicode=True, width=10**6)
    load_or_refuse(text, f"doc.{'json' if form == 'json' else 'yaml'}")
    load_or_refuse(text, "<string>")
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        record_or_refuse(str(doc[0].get("id")).encode(), json.dumps(doc[0]).encode())
