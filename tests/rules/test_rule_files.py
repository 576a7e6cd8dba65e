"""The rule format: loading with positioned errors, the JSON Schema, and the round trip
spec -> Rule -> spec with identical alerts (against patterns built with Python lambdas)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import REPO

from fraudcep import ConfigurationError, Engine, EventError, Pattern, Rule
from fraudcep.rules import (
    Problem,
    RuleSpecError,
    dump_rules,
    format_duration,
    load_rules,
    parse_duration,
    pattern_to_spec,
    rule_schema,
    rule_to_spec,
)
from fraudcep.rules.limits import MAX_PROBLEMS, MAX_TEXT_SIZE
from fraudcep.testing.cases import HOLD_ALL, build_pattern, render_events
from fraudcep.testing.strategies import cases, pattern_specs

ROOT = REPO
VALIDATOR = jsonschema.Draft202012Validator(rule_schema())


def schema_ok(doc: Any) -> bool:
    return VALIDATOR.is_valid(doc)


# -- converting the differential case format into rule specs ---------------------------------


def expr(cond: dict[str, Any]) -> str:
    kind = cond["type"]
    if kind == "true":
        return "True"
    if kind == "kind":
        return f"kind == {json.dumps(cond['value'])}"
    if kind == "cmp":
        return f"value {cond['op']} {cond['value']}"
    if kind == "sum_lt":
        return f"value + sum({cond['stage']}.value) < {cond['limit']}"
    if kind == "not":
        return f"not ({expr(cond['cond'])})"
    return f" {kind} ".join(f"({expr(c)})" for c in cond["conds"])


def one_or_list(items: list[str]) -> str | list[str]:
    return items[0] if len(items) == 1 else items


def stage_spec(stage: dict[str, Any], first: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if stage.get("group") is not None:
        out["group"] = [stage_spec(s, i == 0) for i, s in enumerate(stage["group"])]
    else:
        out["name"] = stage["name"]
    if not first and stage["op"] != "followed_by":
        out["contiguity"] = stage["op"]
    steps = [(how, expr(c)) for how, c in stage.get("conditions") or ()]
    if steps:
        kinds = [h for h, _ in steps]
        if kinds == sorted(kinds, key=lambda h: h == "or"):
            out["where"] = one_or_list([t for h, t in steps if h == "where"])
            ors = [t for h, t in steps if h == "or"]
            if ors:
                out["or_where"] = one_or_list(ors)
        else:
            out["conditions"] = [{"where" if h == "where" else "or_where": t} for h, t in steps]
    if stage.get("until") is not None:
        out["until"] = expr(stage["until"])
    q = stage.get("quantifier") or {}
    kind = q.get("kind", "single")
    if kind == "times":
        low, high = q["from"], q.get("to", q["from"])
        out["times"] = low if low == high else [low, high]
    elif kind == "one_or_more" or (kind == "times_or_more" and q["from"] == 1):
        out["one_or_more"] = True
    elif kind == "times_or_more":
        out["times_or_more"] = q["from"]
    if q.get("optional"):
        out["optional"] = True
    if q.get("greedy"):
        out["greedy"] = True
    if q.get("inner") == "consecutive":
        out["consecutive"] = True
    elif q.get("inner") == "allow_combinations":
        out["allow_combinations"] = True
    windows = {w["type"]: w["ms"] for w in stage.get("within") or ()}
    fl, pc = windows.get("FIRST_AND_LAST"), windows.get("PREVIOUS_AND_CURRENT")
    if fl is not None and pc is not None:
        out["within"] = {
            "first_and_last": format_duration(fl),
            "previous_and_current": format_duration(pc),
        }
    elif fl is not None:
        out["within"] = format_duration(fl)
    elif pc is not None:
        out["within"] = format_duration(pc)
        out["within_type"] = "previous_and_current"
    return out


def rule_spec(case: dict[str, Any], rule_id: str = "r") -> dict[str, Any]:
    """The normal-form rule spec of a differential case's pattern."""
    stages = [stage_spec(s, i == 0) for i, s in enumerate(case["pattern"])]
    spec: dict[str, Any] = {"id": rule_id, "key": "user"}
    last = stages[-1]
    within = last.get("within")
    if isinstance(within, dict):
        spec["within"] = within["first_and_last"]
        last["within"] = within["previous_and_current"]
        last["within_type"] = "previous_and_current"
    elif within is not None and "within_type" not in last:
        spec["within"] = last.pop("within")
    skip = case.get("skip") or {"type": "no_skip"}
    if skip["type"] in ("skip_to_first", "skip_to_last"):
        spec["skip"] = {skip["type"]: skip["name"]}
    elif skip["type"] != "no_skip":
        spec["skip"] = skip["type"]
    spec["pattern"] = stages
    return spec


def run(rule: Rule, events: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    engine = Engine([rule], timestamp="ts", max_out_of_orderness=HOLD_ALL)
    matches: list[Any] = []
    for event in events:
        matches.extend(render_events(a.events) for a in engine.process(event))
    matches.extend(render_events(a.events) for a in engine.flush())
    timeouts = [(t.timeout_ts, render_events(t.events)) for t in engine.drain_timeouts()]
    return matches, timeouts


# -- properties ------------------------------------------------------------------------------


@st.composite
def extras(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    """Add the fields the case format lacks: metadata and quantifier windows."""
    spec = json.loads(json.dumps(spec))
    if draw(st.booleans()):
        spec["description"] = draw(
            st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)
        )
    if draw(st.booleans()):
        spec["version"] = draw(st.integers(0, 9))
    if draw(st.booleans()):
        spec["enabled"] = False
    if draw(st.booleans()):
        spec["key"] = "account.user"

    def visit(stages: list[dict[str, Any]]) -> None:
        for stage in stages:
            quantified = any(k in stage for k in ("times", "times_or_more", "one_or_more"))
            if quantified and draw(st.integers(0, 3)) == 0:
                stage["window"] = "1ms"  # never longer than a FIRST_AND_LAST window
            if "group" in stage:
                visit(stage["group"])

    visit(spec["pattern"])
    ordered: dict[str, Any] = {
        k: spec[k]
        for k in ("id", "description", "version", "enabled", "key", "within", "skip", "pattern")
        if k in spec
    }
    return ordered


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern_specs(malformed=0).flatmap(lambda case: extras(rule_spec(case))))
def test_spec_rule_spec_is_the_identity(spec: dict[str, Any]) -> None:
    assert schema_ok([spec]), list(VALIDATOR.iter_errors([spec]))
    for text in (json.dumps([spec]), yaml.safe_dump([spec], sort_keys=False)):
        (definition,) = load_rules(text)
        assert definition.spec == spec
        body = {k: v for k, v in spec.items() if k not in ("description", "version", "enabled")}
        assert rule_to_spec(definition.rule) == body
        assert load_rules(dump_rules([definition], "json"))[0].spec == spec
        assert load_rules(dump_rules([definition], "yaml"))[0].spec == spec


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(malformed=0))
def test_rules_from_specs_find_the_same_alerts_as_python_patterns(case: dict[str, Any]) -> None:
    spec = rule_spec(case)
    (definition,) = load_rules(json.dumps([spec]))
    events = [{**e, "user": "u"} for e in case["events"]]
    direct = Rule("r", build_pattern(case), key="user")
    assert run(definition.rule, events) == run(direct, events)
    rebuilt = load_rules(dump_rules([definition]))[0].rule
    assert run(rebuilt, events) == run(direct, events)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern_specs(malformed=100))
def test_the_loader_refuses_exactly_what_the_python_api_refuses(case: dict[str, Any]) -> None:
    spec = rule_spec(case)
    try:
        Rule("r", build_pattern(case), key="user")
        refused = False
    except (ValueError, TypeError):
        refused = True
    try:
        load_rules(json.dumps([spec]))
        loaded = True
    except RuleSpecError as exc:
        loaded = False
        assert all(p.line >= 1 and p.column >= 1 for p in exc.problems)
    assert loaded != refused, spec


# -- examples --------------------------------------------------------------------------------


def test_the_example_file_loads_and_follows_the_schema() -> None:
    text = (ROOT / "examples" / "rules.yaml").read_text()
    assert schema_ok(yaml.safe_load(text))
    definitions = load_rules(text, source="examples/rules.yaml")
    assert [d.id for d in definitions] == ["high-value-3-in-5m", "card-testing"]
    high, card = definitions
    assert high.version == 1 and high.enabled and high.description
    assert high.spec["within"] == "5m" and high.spec["skip"] == "skip_past_last_event"
    assert card.spec["pattern"][1] == {
        "name": "big",
        "where": "amount > 500 and merchant != small[0].merchant",
    }
    events = [
        {"ts": i * 1000, "card_id": "c", "amount": a, "status": s, "merchant": m, "user_id": "u"}
        for i, (a, s, m) in enumerate(
            [(1, "declined", "x"), (2, "declined", "x"), (3, "declined", "x"), (900, "ok", "y")]
        )
    ]
    engine = Engine([d.rule for d in definitions], timestamp="ts")
    alerts = [a for e in events for a in engine.process(e)] + list(engine.flush())
    assert [(a.rule_id, len(a.events["small"])) for a in alerts] == [("card-testing", 3)]


def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(rule_schema())
    assert rule_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# -- errors ----------------------------------------------------------------------------------

BAD = """\
- id: one
  key: user_id
  within: 5x
  pattern:
    - name: a
      where: amount >> 3
      times: 0
    - name: b
      contiguity: nxt
      where: "amount > 1"
      greedy: yes
- id: one
  key: k
  pattern:
    - name: a
      wher: x > 1
- key: k
  pattern: []
"""


def test_every_problem_is_reported_with_its_position() -> None:
    with pytest.raises(RuleSpecError) as info:
        load_rules(BAD, source="bad.yaml")
    found = [(p.rule_id, p.field, p.line, p.column) for p in info.value.problems]
    assert found == [
        ("one", "within", 3, 11),
        ("one", "pattern[0].where", 6, 14),
        ("one", "pattern[0].times", 7, 14),
        ("one", "pattern[1].contiguity", 9, 19),
        ("one", "id", 12, 7),
        ("one", "pattern[0].wher", 16, 7),
        ("#3", "", 17, 3),
        ("#3", "pattern", 18, 12),
    ]
    messages = [p.message for p in info.value.problems]
    assert "did you mean 'where'" in messages[5]
    assert "duplicate rule id" in messages[4]
    assert str(info.value.problems[0]).startswith("bad.yaml:3:11: rule 'one' within: ")
    assert not schema_ok(yaml.safe_load(BAD))


def test_builder_errors_point_at_the_field_that_caused_them() -> None:
    text = """\
- id: g
  key: k
  pattern:
    - name: a
      where: x > 1
      times: [1, 3]
      allow_combinations: true
      greedy: true
"""
    with pytest.raises(RuleSpecError) as info:
        load_rules(text)
    (problem,) = info.value.problems
    assert (problem.field, problem.line, problem.column) == ("pattern[0].greedy", 8, 7)
    assert "allow_combinations" in problem.message


def test_json_files_report_positions_too() -> None:
    text = '[\n  {"id": "j", "key": "k",\n   "pattern": [{"name": "a", "times": -1}]}\n]\n'
    with pytest.raises(RuleSpecError) as info:
        load_rules(text, source="r.json")
    (problem,) = info.value.problems
    assert (problem.field, problem.line, problem.column) == ("pattern[0].times", 3, 39)
    with pytest.raises(RuleSpecError) as info:
        load_rules('[{"id": "j",}]', source="r.json")
    assert "bad JSON" in info.value.problems[0].message


@pytest.mark.parametrize(
    "doc",
    [
        [],
        [{"id": "x", "key": "k", "pattern": [{"name": "a", "next": True}]}],
        [
            {
                "id": "x",
                "key": "k",
                "pattern": [{"name": "a"}, {"group": [{"name": "b"}], "where": "x > 1"}],
            }
        ],
        [{"id": "x", "key": "k", "pattern": [{"name": "a", "window": "5s"}]}],
        [{"id": "x", "key": "k", "pattern": [{"name": "a", "times": 2, "one_or_more": True}]}],
        [{"id": "x", "key": "k", "within": "0s", "pattern": [{"name": "a"}]}],
        [{"id": "x", "key": "k", "skip": "skip_everything", "pattern": [{"name": "a"}]}],
        [{"id": "x", "pattern": [{"name": "a"}]}],
        [{"id": "x", "key": "k", "pattern": [{"name": "a", "colour": "red"}]}],
        [
            {
                "id": "x",
                "key": "k",
                "within_type": "previous_and_current",
                "pattern": [{"name": "a"}],
            }
        ],
    ],
)
def test_invalid_files_are_refused_by_schema_and_loader(doc: Any) -> None:
    assert not schema_ok(doc)
    with pytest.raises(RuleSpecError):
        load_rules(json.dumps(doc))


# -- the API ---------------------------------------------------------------------------------


def test_conditions_in_any_order_round_trip() -> None:
    from fraudcep.rules.expressions import compile_expression

    def c(text: str) -> Any:
        return compile_expression(text)

    pattern = (
        Pattern.begin("a")
        .where(c("x > 1"))
        .or_where(c("y > 1"))
        .where(c("z > 1"))
        .followed_by("b")
        .or_where(c("x < 0"))
    )
    spec = pattern_to_spec(pattern)
    assert spec == [
        {
            "name": "a",
            "conditions": [{"where": "x > 1"}, {"or_where": "y > 1"}, {"where": "z > 1"}],
        },
        {"name": "b", "where": "x < 0"},
    ]
    rule = Rule("r", pattern, key="k")
    (definition,) = load_rules(json.dumps([rule_to_spec(rule)]))
    assert pattern_to_spec(definition.rule.pattern) == spec
    assert schema_ok([rule_to_spec(rule)])


def test_patterns_with_python_conditions_have_no_spec() -> None:
    pattern = Pattern.begin("a").where(lambda e: e["x"] > 1)
    with pytest.raises(ConfigurationError, match="fraudcep_source"):
        pattern_to_spec(pattern)
    with pytest.raises(ConfigurationError, match="callable"):
        rule_to_spec(Rule("r", Pattern.begin("a"), key=lambda e: e["k"]))


def test_dotted_keys_read_nested_fields() -> None:
    (definition,) = load_rules(
        "- id: d\n  key: account.id\n  pattern:\n    - name: a\n      where: x > 1\n"
    )
    engine = Engine([definition.rule], timestamp="ts")
    alerts = list(engine.process({"ts": 1, "x": 2, "account": {"id": "acc-1"}}))
    alerts += engine.flush()
    assert [a.key for a in alerts] == ["acc-1"]
    assert rule_to_spec(definition.rule)["key"] == "account.id"


def test_the_issue_shorthand_and_mapping_forms() -> None:
    text = """
rules:
  - id: m
    key: k
    within: {first_and_last: 60000, previous_and_current: 10s}
    pattern:
      - name: a
        where: [x > 1, y > 1]
        times: [0, 2]
      - name: b
        next: true
        where: x > 2
"""
    (definition,) = load_rules(text)
    assert definition.spec["within"] == "1m"
    assert definition.spec["pattern"] == [
        {"name": "a", "where": ["x > 1", "y > 1"], "times": [1, 2], "optional": True},
        {
            "name": "b",
            "contiguity": "next",
            "where": "x > 2",
            "within": "10s",
            "within_type": "previous_and_current",
        },
    ]


def test_an_injected_compiler_is_used() -> None:
    seen: list[tuple[str, tuple[str, ...], str, int, int]] = []

    def compiler(
        source: str, *, stages: Any, rule_id: str, field: str, line: int, column: int
    ) -> Any:
        seen.append((source, tuple(stages), field, line, column))

        def condition(event: Any) -> bool:
            return True

        condition.fraudcep_source = source  # type: ignore[attr-defined]
        return condition

    load_rules(
        '- id: r\n  key: k\n  pattern:\n    - name: a\n      where: "anything at all"\n'
        "    - name: b\n      until: |\n        more\n      one_or_more: true\n",
        compiler=compiler,
    )
    assert seen == [
        ("anything at all", ("a", "b"), "pattern[0].where", 5, 15),
        ("more\n", ("a", "b"), "pattern[1].until", 8, 9),
    ]


def test_durations() -> None:
    assert [parse_duration(v) for v in ("500ms", "30s", "5m", "2h", "1d", 7)] == [
        500,
        30_000,
        300_000,
        7_200_000,
        86_400_000,
        7,
    ]
    assert [format_duration(v) for v in (500, 30_000, 90_000, 86_400_000)] == [
        "500ms",
        "30s",
        "90s",
        "1d",
    ]
    for bad in ("5", "5 weeks", 0, -1, True, 1.5):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_problem_rendering() -> None:
    p = Problem("f.yaml", "r", "pattern[0].where", 3, 9, "boom")
    assert str(p) == "f.yaml:3:9: rule 'r' pattern[0].where: boom"


# -- hostile input: limits, refusals and where they are reported ------------------------------


def problems_of(text: str, source: str = "<string>") -> list[Problem]:
    with pytest.raises(RuleSpecError) as info:
        load_rules(text, source=source)
    return info.value.problems


ONE = "- {id: r, key: user_id, pattern: [{name: a, where: amount > 1}]}\n"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("- &r {id: r, key: k, pattern: [*r]}\n", (1, 3), "YAML anchors (&r) are not allowed"),
        ("- {id: r, key: *k}\n", (1, 16), "YAML aliases (*k) are not allowed"),
        ("- {id: r, key: !!python/object/apply:os.system [ls]}\n", (1, 16), "'!!python/object"),
        ("- {id: !!str r}\n", (1, 8), "YAML tags ('!!str') are not allowed"),
        ("- {id: r, description: !custom x}\n", (1, 24), "YAML tags ('!custom')"),
        ("[" * 40 + "]" * 40, (1, 33), "nested more than 32 levels deep"),
        ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 40)), (33, 65), "nested more"),
        (ONE + "---\n" + ONE, (2, 1), "one YAML document"),
        ("- {version: " + "9" * 5_000 + ", id: r}\n", (1, 13), "more than 32 characters"),
    ],
)
def test_yaml_refusals_are_positioned(text: str, where: tuple[int, int], message: str) -> None:
    (problem,) = [p for p in problems_of(text) if message in p.message]
    assert (problem.line, problem.column) == where, problem
    assert message in problem.message, problem


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("[" * 5_000 + "]" * 5_000, (1, 33), "nested more than 32 levels deep"),
        ('{"a":' * 50 + "1" + "}" * 50, (1, 161), "nested more than 32 levels deep"),
        ('[{"id": "r", "version": ' + "9" * 5_000 + "}]", (1, 25), "more than 32 characters"),
        ('[{"id": "r",}]', (1, 13), "bad JSON: Expecting property name"),
        ('[{"id": "r"} x]', (1, 14), "bad JSON: Expecting ',' delimiter"),
        ('[{"id": NaN}]', (1, 9), "bad JSON: Expecting value"),
        ('[{"id": "r"}] []', (1, 15), "bad JSON: Extra data"),
        ('[{"id": "a\tb"}]', (1, 11), "bad JSON: Invalid control character"),
        ("[" + "1," * 100_001 + "1]", (1, 200_000), "more than 100,000 values"),
    ],
)
def test_json_refusals_are_positioned(text: str, where: tuple[int, int], message: str) -> None:
    (problem, *_) = problems_of(text, "r.json")
    assert (problem.line, problem.column) == where, problem
    assert message in problem.message, problem


def test_a_valid_json_file_with_long_keys_and_strings_is_read_as_json() -> None:
    spec = {"id": "r", "key": "user_id", "description": "d" * 5_000, "pattern": [{"name": "a"}]}
    (definition,) = load_rules(json.dumps([spec]), source="r.json")
    assert definition.description == "d" * 5_000
    text = json.dumps([{**spec, "k" * 2_000: 1}])
    (problem,) = problems_of(text, "r.json")
    assert problem.message.startswith("unknown field 'kkkk") and len(problem.message) < 120
    assert (problem.line, problem.column) == (1, text.index('"kkk') + 1)


printable = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**18), 10**18) | printable,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(printable, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from([None, 1, 2]))
def test_the_json_reader_reads_what_json_reads_with_yamls_positions(
    value: Any, indent: int | None
) -> None:
    from fraudcep.rules.reading import parse_document

    text = json.dumps(value, indent=indent, ensure_ascii=False)
    problems: list[Problem] = []
    as_json = parse_document(text, "v.json", problems)
    assert problems == [] and as_json is not None
    assert as_json.data == value
    as_yaml = parse_document(text, "v.yaml", problems)  # JSON is YAML: the same places
    assert problems == [] and as_yaml is not None
    assert (as_json.values, as_json.keys) == (as_yaml.values, as_yaml.keys)
    assert as_json.text_starts.items() <= as_yaml.text_starts.items()


def test_unhashable_values_where_names_are_expected_are_positioned_errors() -> None:
    found = problems_of(
        "- id: r\n  key: user_id\n  within: 5m\n  within_type: {a: 1}\n  pattern:\n"
        "    - {name: a}\n    - {name: b, contiguity: [next]}\n"
        "    - {name: c, within: 1m, within_type: [x]}\n"
    )
    assert [(p.field, p.line, p.column) for p in found] == [
        ("within_type", 4, 16),
        ("pattern[1].contiguity", 7, 29),
        ("pattern[2].within_type", 8, 42),
    ]


def test_null_names_ids_and_flags_are_errors_not_defaults() -> None:
    found = problems_of("- id: null\n  key: ~\n  enabled: null\n  pattern: [{name: null}]\n")
    assert [(p.rule_id, p.field, p.line) for p in found] == [
        ("#1", "id", 1),
        ("#1", "key", 2),
        ("#1", "enabled", 3),
        ("#1", "pattern[0].name", 4),
    ]
    assert all("got None" in p.message for p in found)


def test_ids_and_stage_names_refuse_control_and_invisible_characters_on_their_own_line() -> None:
    for text in ('"a\\0b"', '"a\\nb"', '"a\\u200bb"', '"a\\u202eb"', '"' + "x" * 201 + '"'):
        (problem,) = problems_of(
            f"- id: {text}\n  key: user_id\n  pattern:\n    - name: a\n      where: amount > 1\n"
        )
        assert (problem.rule_id, problem.field, problem.line) == ("#1", "id", 1), problem
        (problem,) = problems_of(f"- id: r\n  key: user_id\n  pattern:\n    - name: {text}\n")
        assert (problem.field, problem.line) == ("pattern[0].name", 4), problem
    (ok,) = load_rules("- {id: règle de Noël ✓, key: k, pattern: [{name: étape 1}]}\n")
    assert ok.id == "règle de Noël ✓"


@pytest.mark.parametrize(
    "key",
    [
        "__class__",
        "_private",
        "a.__globals__",
        "a._b",
        "\u0430mount",
        "\uff55ser",
        "user-id",
        "1a",
        "a..b",
    ],
)
def test_key_paths_follow_the_expression_languages_name_rules(key: str) -> None:
    (problem,) = problems_of(f"- {{id: r, key: '{key}', pattern: [{{name: a}}]}}\n")
    assert (problem.field, problem.line, problem.column) == ("key", 1, 16), problem


def test_dotted_keys_read_mapping_fields_and_data_attributes_only() -> None:
    class Account:
        id = "acc"

        def secret(self) -> str:  # pragma: no cover - never called
            return "no"

    class Event:
        ts = 1
        account = Account()

    (good,) = load_rules("- {id: r, key: account.id, pattern: [{name: a}]}\n")
    (method,) = load_rules("- {id: r, key: account.secret, pattern: [{name: a}]}\n")
    key = good.rule.key_function()
    assert key(Event()) == "acc" and key({"account": {"id": 7}}) == 7
    with pytest.raises(EventError):
        method.rule.key_function()(Event())
    with pytest.raises(EventError):
        load_rules("- {id: r, key: a.items, pattern: [{name: a}]}\n")[0].rule.key_function()(
            {"a": {"x": 1}}
        )


@pytest.mark.parametrize(
    "within", ["\uff15m", "\u0663m", "\u0969s", "5m\n", "1" * 19 + "ms", "3651d", 10**20]
)
def test_durations_take_ascii_digits_and_a_bounded_size_only(within: Any) -> None:
    (problem,) = problems_of(json.dumps([{"id": "r", "key": "k", "within": within,
                                          "pattern": [{"name": "a"}]}]), "r.json")  # fmt: skip
    assert problem.field == "within"
    assert parse_duration("3650d") == 3_650 * 86_400_000


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("version", 2**63 - 1, True),
        ("version", 2**63, False),
        ("times", 1_000, True),
        ("times", 1_001, False),
        ("times", [0, 1_000], True),
        ("times", [1, 1_001], False),
        ("times_or_more", 1_000, True),
        ("times_or_more", 10**12, False),
    ],
)
def test_integer_limits(field: str, value: Any, ok: bool) -> None:
    spec: dict[str, Any] = {"id": "r", "key": "k", "pattern": [{"name": "a"}]}
    if field == "version":
        spec["version"] = value
    else:
        spec["pattern"][0][field] = value
    doc = json.dumps([spec])
    assert schema_ok([spec]) == ok
    if ok:
        load_rules(doc)
    else:
        (problem,) = problems_of(doc)
        assert "from" in problem.message and "to" in problem.message, problem


def test_rule_file_encodings(tmp_path: Path) -> None:
    from fraudcep.rules import load_rule_file

    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + ONE.encode())
    assert [d.id for d in load_rule_file(bom)] == ["r"]
    bom_json = tmp_path / "bom.json"
    bom_json.write_bytes(b"\xef\xbb\xbf" + b'[{"id": "r", "key": "k", "pattern": [{"name": "a"}]}]')
    assert [d.id for d in load_rule_file(bom_json)] == ["r"]
    cases = {
        "utf16.yaml": (b"\xff\xfe" + ONE.encode("utf-16-le"), (1, 1), "a UTF-16 file"),
        "utf16.json": (b"\xfe\xff" + b"[]".decode().encode("utf-16-be"), (1, 1), "a UTF-16"),
        "utf32.yaml": (b"\xff\xfe\x00\x00" + ONE.encode("utf-32-le"), (1, 1), "a UTF-32"),
        "bare16.yaml": (ONE.encode("utf-16-le"), (1, 2), "a NUL character"),
        "latin1.yaml": ("- {id: r}\n- {id: règle}\n".encode("latin-1"), (2, 9), "byte 0xe8"),
        "big.yaml": (b"#" * (MAX_TEXT_SIZE + 1), (1, 1), "larger than 262,144 bytes"),
    }
    for name, (data, where, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(RuleSpecError) as info:
            load_rule_file(path)
        (problem,) = info.value.problems
        assert (problem.source, problem.line, problem.column) == (str(path), *where), name
        assert message in problem.message, (name, problem)


def test_file_limits_stop_reading_with_one_problem() -> None:
    many_rules = "".join(f"- {{id: r{i}, key: k, pattern: [{{name: a}}]}}\n" for i in range(1_001))
    (problem,) = problems_of(many_rules)
    assert (problem.line, problem.message) == (1_001, "more than 1,000 rules in one file")
    stages = ", ".join(f"{{name: s{i}}}" for i in range(100))
    eleven = "".join(f"- {{id: r{i}, key: k, pattern: [{stages}]}}\n" for i in range(11))
    (problem,) = problems_of(eleven)
    assert (problem.rule_id, problem.field) == ("r10", "pattern[0]")
    assert problem.message == "more than 1,000 stages in one file"
    unknown = ", ".join(f"x{i}: 1" for i in range(2_000))
    found = problems_of(f"- {{id: r, key: k, pattern: [{{name: a}}], {unknown}}}\n")
    assert len(found) == MAX_PROBLEMS + 1
    assert found[-1].message == "more than 1,000 problems: stopped here"


def test_a_rule_mapping_is_one_rule_when_asked_for() -> None:
    text = "{id: r, key: k, pattern: [{name: a}]}"
    assert [d.id for d in load_rules(text, rule_mapping=True)] == ["r"]
    found = problems_of(text)  # without rule_mapping: a mapping is {rules: [...]}
    assert ("id", "unknown top-level field (expected rules)") in [
        (p.field, p.message) for p in found
    ]
    (problem,) = problems_of_mapping("{id: r, key: k, extra: 1, pattern: [{name: a}]}")
    assert (problem.rule_id, problem.field, problem.line, problem.column) == ("r", "extra", 1, 17)


def problems_of_mapping(text: str) -> list[Problem]:
    with pytest.raises(RuleSpecError) as info:
        load_rules(text, rule_mapping=True)
    return info.value.problems
