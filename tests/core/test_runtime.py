"""The runtime kit: one option table with one syntax for every runtime, typed engine options,
the side-output collector and rule reconciliation that reports a refusal instead of raising."""

from __future__ import annotations

import pytest

from fraudcep import ConfigurationError, Engine
from fraudcep.rules import load_rules
from fraudcep.runtime import (
    ENGINE_OPTIONS,
    EngineOptions,
    SideOutputs,
    options_from_env,
    reconcile,
    refusal,
)
from fraudcep.runtime.options import options_table

RULES = """
- id: big-twice
  version: 2
  key: user_id
  within: 10ms
  pattern:
    - {name: a, where: amount > 100}
    - {name: b, where: amount > 100}
"""


def test_environment_names_and_durations_are_the_same_for_every_runtime() -> None:
    values = options_from_env(
        ENGINE_OPTIONS,
        {"FRAUDCEP_MAX_OUT_OF_ORDERNESS": "5m", "FRAUDCEP_EVENT_ID_FIELD": "off", "OTHER": "x"},
    )
    assert values == {"max_out_of_orderness": 300_000, "event_id_field": None}
    # the Lambda's older name is still read, with the same syntax
    assert options_from_env(ENGINE_OPTIONS, {"FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS": "250"}) == {
        "max_out_of_orderness": 250
    }
    with pytest.raises(ConfigurationError, match="both set"):
        options_from_env(
            ENGINE_OPTIONS,
            {"FRAUDCEP_MAX_OUT_OF_ORDERNESS": "1s", "FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS": "1"},
        )
    with pytest.raises(ConfigurationError, match="max_record_failures: must be > 0"):
        options_from_env(ENGINE_OPTIONS, {"FRAUDCEP_MAX_RECORD_FAILURES": "0"})
    with pytest.raises(ConfigurationError, match="an integer"):
        options_from_env(ENGINE_OPTIONS, {"FRAUDCEP_MAX_BUFFERED_EVENTS": "9" * 5000})


def test_a_bad_state_key_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigurationError) as raised:
        options_from_env(ENGINE_OPTIONS, {"FRAUDCEP_STATE_KEY": "short-secret"})
    assert "short-secret" not in str(raised.value)
    options = EngineOptions.from_values(
        options_from_env(ENGINE_OPTIONS, {"FRAUDCEP_STATE_KEY": "a" * 32})
    )
    assert "a" * 32 not in repr(options)


def test_engine_options_and_side_outputs_make_an_engine_that_reports_per_batch() -> None:
    rules = [d.rule for d in load_rules(RULES)]
    options = EngineOptions.from_values({"max_out_of_orderness": 0, "unrelated": 1})
    outputs = SideOutputs(keep_timeouts=True)
    engine = Engine(rules, **options.engine_kwargs(**outputs.callbacks()))
    payment = {"payment_id": "p1", "user_id": "u", "amount": 500, "ts": 100}
    engine.process_many([payment, {**payment, "payment_id": "p2", "ts": 5}])
    assert [late.event["payment_id"] for late in outputs.late] == ["p2"]
    engine.process({**payment, "payment_id": "p3", "ts": 200})
    assert outputs.timeout_count == 1 and outputs.timeouts[0].key == "u"
    assert outputs
    outputs.clear()
    assert not outputs


def test_reconcile_applies_changes_and_reports_a_refused_one() -> None:
    definitions = load_rules(RULES)
    engine = Engine([], timestamp="ts")
    done = reconcile(engine, definitions)
    assert done.changes == ("added big-twice v2",) and done.refused is None
    older = load_rules(RULES.replace("version: 2", "version: 1"))
    refused = reconcile(engine, older)
    assert not refused.changed and "older than the running version 2" in (refused.refused or "")
    assert engine.rule_versions() == {"big-twice": 2}


def test_refusal_tells_without_changing_and_as_loaded_keeps_file_versions() -> None:
    engine = Engine([], timestamp="ts")
    reconcile(engine, load_rules(RULES))
    older = load_rules(RULES.replace("version: 2", "version: 1"))
    assert "older than the running version 2" in (refusal(engine, older) or "")
    assert refusal(engine, load_rules(RULES)) is None
    assert engine.rule_versions() == {"big-twice": 2}
    # a rule without a version whose spec changed is counted up by a running engine; an
    # engine that hands its state to engines made from the file keeps the file's version
    unversioned = RULES.replace("  version: 2\n", "")
    counted = Engine([], timestamp="ts")
    reconcile(counted, load_rules(unversioned))
    changed = load_rules(unversioned.replace("amount > 100", "amount > 200"))
    assert reconcile(counted, changed).changed and counted.rule_versions() == {"big-twice": 2}
    loaded = Engine([], timestamp="ts")
    reconcile(loaded, load_rules(unversioned))
    done = reconcile(loaded, changed, as_loaded=True)
    assert done.changed and loaded.rule_versions() == {"big-twice": 1}


def test_options_table_lists_every_name_and_alias() -> None:
    table = options_table(ENGINE_OPTIONS)
    for option in ENGINE_OPTIONS:
        assert f"| `{option.name}` | `{option.env}`" in table
    assert "`FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS`" in table
    assert table.count("\n") == len(ENGINE_OPTIONS) + 2
