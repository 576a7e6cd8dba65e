"""The corpus of hostile rule files: each one must get ``FILE:LINE:COLUMN: message`` lines
and exit code 1 from ``fraudcep rules validate``, quickly, and never a traceback.

``python tests/hostile_rules/generate.py`` rewrites the committed files (every file of at most
:data:`COMMITTED_MAX_BYTES`) and ``expected.json``, which maps each file to a piece of the
message it must get. Larger files are made by the test itself from :func:`corpus`, so the
repository stays small.

Categories (directories): encoding, nesting, aliases, integers, unhashable, quantifiers,
tags, key_paths, identifiers, nul, long_keys, limits, yaml, expressions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMITTED_MAX_BYTES = 32 * 1024

Entry = tuple[str, bytes, str]  # path under HERE, content, expected part of the message

GOOD_STAGE = "{name: a, where: amount > 1000}"


def rule(extra: str = "", *, key: str = "user_id", stage: str = GOOD_STAGE, rid: str = "r") -> str:
    """A one-rule YAML file in flow style, ``extra`` added to the rule's fields."""
    more = f", {extra}" if extra else ""
    return f"- {{id: {rid}, key: {key}, within: 5m, pattern: [{stage}]{more}}}\n"


def stage_rule(stage_fields: str) -> str:
    """A rule whose second stage has ``stage_fields``."""
    return rule(stage=f"{GOOD_STAGE}, {{name: b, {stage_fields}}}")


def json_rule(**fields: object) -> str:
    spec: dict[str, object] = {
        "id": "r",
        "key": "user_id",
        "within": "5m",
        "pattern": [{"name": "a", "where": "amount > 1000"}],
    }
    spec.update(fields)
    return json.dumps([spec], ensure_ascii=False)


def json_stage_rule(**fields: object) -> str:
    stage: dict[str, object] = {"name": "b"}
    stage.update(fields)
    return json_rule(pattern=[{"name": "a", "where": "amount > 1000"}, stage])


def text(path: str, content: str, expected: str) -> Entry:
    return (path, content.encode("utf-8"), expected)


def encoding() -> Iterator[Entry]:
    good = rule()
    good_json = json_rule()
    for name, bom, codec in (
        ("utf16le_bom", b"\xff\xfe", "utf-16-le"),
        ("utf16be_bom", b"\xfe\xff", "utf-16-be"),
    ):
        yield (f"encoding/{name}.yaml", bom + good.encode(codec), "UTF-16")
        yield (f"encoding/{name}.json", bom + good_json.encode(codec), "UTF-16")
    yield ("encoding/utf16le_no_bom.yaml", good.encode("utf-16-le"), "NUL")
    yield ("encoding/utf16be_no_bom.json", good_json.encode("utf-16-be"), "NUL")
    yield ("encoding/utf32le_bom.yaml", b"\xff\xfe\x00\x00" + good.encode("utf-32-le"), "UTF-32")
    yield (
        "encoding/utf32be_bom.json",
        b"\x00\x00\xfe\xff" + good_json.encode("utf-32-be"),
        "UTF-32",
    )
    yield (
        "encoding/latin1.yaml",
        rule(rid="r\u00e8gle").encode("latin-1"),
        "not UTF-8 (byte 0xe8)",
    )
    yield ("encoding/latin1.json", json_rule(id="r\u00e8gle").encode("latin-1"), "not UTF-8")
    yield ("encoding/cp1252_quotes.yaml", "- {id: “r”}\n".encode("cp1252"), "not UTF-8 (byte 0x93)")
    yield ("encoding/lone_continuation.yaml", good.encode() + b"# \x80\n", "not UTF-8 (byte 0x80)")
    yield ("encoding/overlong_nul.yaml", b"- {id: r\xc0\x80}\n", "not UTF-8 (byte 0xc0)")
    yield ("encoding/encoded_surrogate.yaml", b"- {id: \xed\xa0\x80}\n", "not UTF-8 (byte 0xed)")
    yield ("encoding/truncated_sequence.yaml", good.encode() + b"# \xe2\x82", "not UTF-8")
    yield ("encoding/invalid_byte_ff.json", b'[{"id": "\xff"}]', "not UTF-8 (byte 0xff)")
    yield ("encoding/gb18030.yaml", rule(rid="\u89c4\u5219").encode("gb18030"), "not UTF-8")
    yield (
        "encoding/bom_then_bad_rule.yaml",
        b"\xef\xbb\xbf" + rule(key="__class__").encode(),
        "key",
    )
    yield (
        "encoding/bom_json_bad.json",
        b"\xef\xbb\xbf" + json_rule(version=-1).encode(),
        "version",
    )
    yield ("encoding/bom_then_utf16.yaml", b"\xef\xbb\xbf" + good.encode("utf-16-le"), "NUL")


def nesting() -> Iterator[Entry]:
    for depth in (33, 1_000, 5_000):
        yield text(f"nesting/yaml_flow_lists_{depth}.yaml", "[" * depth + "]" * depth, "nest")
        yield text(f"nesting/json_lists_{depth}.json", "[" * depth + "]" * depth, "nest")
        nested = '{"a":' * depth + "1" + "}" * depth
        yield text(f"nesting/json_objects_{depth}.json", nested, "nest")
    yield text("nesting/yaml_flow_maps_3000.yaml", "{a: " * 3000 + "1" + "}" * 3000, "nest")
    block = "".join("  " * i + "- \n" for i in range(150))
    yield text("nesting/yaml_block_lists_150.yaml", block, "nest")
    block_maps = "".join("  " * i + "a:\n" for i in range(150)) + "  " * 150 + "b\n"
    yield text("nesting/yaml_block_maps_150.yaml", block_maps, "nest")
    groups = GOOD_STAGE
    for _ in range(20):
        groups = f"{{group: [{groups}]}}"
    yield text("nesting/groups_20_deep.yaml", rule(stage=groups), "nest")
    deep_where = "[" * 40 + "amount > 1" + "]" * 40
    yield text("nesting/where_list_40_deep.yaml", stage_rule(f"where: {deep_where}"), "nest")
    yield text(
        "nesting/json_in_where_5000.json",
        json_stage_rule(where=json.loads("[" * 30 + "]" * 30)).replace(
            "[]", "[" * 5000 + "]" * 5000
        ),
        "nest",
    )


def aliases() -> Iterator[Entry]:
    yield text("aliases/recursive_rule.yaml", "- &r {id: r, key: k, pattern: [*r]}\n", "anchors")
    yield text("aliases/recursive_list.yaml", "&a [*a]\n", "anchors")
    yield text("aliases/recursive_mapping.yaml", "&m {rules: *m}\n", "anchors")
    yield text("aliases/recursive_stage.yaml", rule(stage="&s {name: a, group: [*s]}"), "anchors")
    laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[level]
        laughs.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    yield text("aliases/billion_laughs.yaml", "\n".join(laughs) + "\n", "anchors")
    bomb = "- &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in range(1, 12):
        bomb += f"- &a{level} [" + ", ".join([f"*a{level - 1}" if level > 1 else "*a"] * 10) + "]\n"
    yield text("aliases/bomb_in_list.yaml", bomb, "anchors")
    inside = "[" + ", ".join(["*w"] * 50) + "]"
    yield text(
        "aliases/bomb_in_where.yaml",
        "- {id: r, key: k, pattern: [{name: a, where: &w [amount > 1, amount > 2]}, "
        f"{{name: b, where: {inside}}}]}}\n",
        "anchors",
    )
    yield text("aliases/alias_of_id.yaml", "- {id: &i r, key: *i, pattern: [{name: a}]}\n", "&i")
    yield text("aliases/undefined_alias.yaml", "- {id: *nope, key: k}\n", "aliases (*nope)")
    yield text("aliases/merge_key.yaml", "- {<<: *base, id: r}\n", "aliases (*base)")
    yield text("aliases/anchor_only.yaml", "- &x " + rule().removeprefix("- "), "anchors (&x)")
    yield text("aliases/alias_as_key.yaml", "- {&k id: r, *k : s}\n", "anchors (&k)")


def integers() -> Iterator[Entry]:
    for digits in (33, 4_300, 4_301, 5_000, 20_000):
        yield text(
            f"integers/version_{digits}_digits.yaml", rule(f"version: {'9' * digits}"), "integer"
        )
        yield text(
            f"integers/version_{digits}_digits.json",
            json_rule(version=0).replace('"version": 0', f'"version": {"9" * digits}'),
            "number",
        )
    yield text("integers/version_2_63.yaml", rule(f"version: {2**63}"), "from 0 to")
    yield text("integers/version_negative_huge.yaml", rule(f"version: -{'9' * 40}"), "integer")
    yield text("integers/version_hex_huge.yaml", rule(f"version: 0x{'f' * 40}"), "integer")
    yield text("integers/version_octal_huge.yaml", rule(f"version: 0o{'7' * 40}"), "integer")
    yield text("integers/version_binary_huge.yaml", rule(f"version: 0b{'1' * 400}"), "integer")
    yield text(
        "integers/version_sexagesimal.yaml", rule("version: " + ":".join(["59"] * 3000)), "integer"
    )
    yield text("integers/version_underscores.yaml", rule("version: 1" + "_000" * 30), "integer")
    yield text(
        "integers/version_float_huge.json",
        json_rule().replace('"id"', '"version": 1e400, "id"'),
        "version",
    )
    yield text(
        "integers/within_ms_huge.yaml", rule().replace("within: 5m", f"within: {10**30}"), "within"
    )
    yield text(
        "integers/within_days_huge.yaml",
        rule().replace("within: 5m", f"within: {'9' * 25}d"),
        "within",
    )
    yield text(
        "integers/within_just_over.yaml",
        rule().replace("within: 5m", "within: 3651d"),
        "at most 3650d",
    )
    yield text("integers/window_huge.yaml", stage_rule(f"times: 2, window: {10**40}"), "")
    yield text("integers/times_4301_digits.yaml", stage_rule(f"times: {'1' * 4301}"), "integer")
    yield text("integers/times_huge.json", json_stage_rule(times=10**20), "times")


def unhashable() -> Iterator[Entry]:
    cases = {
        "contiguity_list": stage_rule("contiguity: [next]"),
        "contiguity_map": stage_rule("contiguity: {next: true}"),
        "within_type_map": rule("within_type: {a: 1}"),
        "within_type_list": rule("within_type: [first_and_last]"),
        "stage_within_type_map": stage_rule("within: 1m, within_type: {x: [1]}"),
        "skip_list": rule("skip: [skip_to_next]"),
        "skip_named_list": rule("skip: {skip_to_first: [a]}"),
        "skip_named_map": rule("skip: {skip_to_last: {a: 1}}"),
        "times_map": stage_rule("times: {low: 1}"),
        "times_nested_list": stage_rule("times: [[1], [2]]"),
        "one_or_more_list": stage_rule("one_or_more: [true]"),
        "next_map": stage_rule("next: {a: 1}"),
        "id_list": rule().replace("id: r", "id: [r]"),
        "id_map": rule().replace("id: r", "id: {r: 1}"),
        "key_list": rule(key="[user_id]"),
        "name_map": rule(stage="{name: {a: 1}}"),
        "where_map": stage_rule("where: {amount: 1}"),
        "enabled_list": rule("enabled: [true]"),
        "within_map_of_lists": rule().replace("within: 5m", "within: {first_and_last: [5m]}"),
        "conditions_map_value": stage_rule("conditions: [{where: {a: 1}}]"),
    }
    for name, content in cases.items():
        yield text(f"unhashable/{name}.yaml", content, "rule 'r'" if "id_" not in name else "id")


def quantifiers() -> Iterator[Entry]:
    yield text("quantifiers/times_10_12.yaml", stage_rule(f"times: {10**12}"), "from 1 to 1,000")
    yield text("quantifiers/times_1001.yaml", stage_rule("times: 1001"), "from 1 to 1,000")
    yield text(
        "quantifiers/times_or_more_10_12.yaml", stage_rule(f"times_or_more: {10**12}"), "1,000"
    )
    yield text("quantifiers/times_or_more_1001.yaml", stage_rule("times_or_more: 1001"), "1,000")
    yield text("quantifiers/range_1_million.yaml", stage_rule("times: [1, 1000000]"), "1,000")
    yield text("quantifiers/range_0_10_9.yaml", stage_rule(f"times: [0, {10**9}]"), "1,000")
    yield text("quantifiers/range_both_over.yaml", stage_rule("times: [1001, 1002]"), "1,000")
    yield text("quantifiers/range_negative.yaml", stage_rule("times: [-1, 5]"), "from 0 to")
    group = "{group: [{name: g1}, {name: g2, times: 1000}], times: 1000}"
    yield text("quantifiers/group_product.yaml", rule(stage=f"{GOOD_STAGE}, {group}"), "unrolls to")
    nested = "{group: [{group: [{name: x, times: 100}], times: 100}], times: 100}"
    yield text(
        "quantifiers/nested_group_product.yaml", rule(stage=f"{GOOD_STAGE}, {nested}"), "unrolls"
    )
    yield text("quantifiers/times_json_huge.json", json_stage_rule(times=10**15), "1,000")
    yield text("quantifiers/range_json_huge.json", json_stage_rule(times=[1, 10**15]), "1,000")
    yield text("quantifiers/times_or_more_json.json", json_stage_rule(times_or_more=10**9), "1,000")
    many = ", ".join(f"{{name: s{i}, times: 1000}}" for i in range(11))
    yield text("quantifiers/eleven_stages_of_1000.yaml", rule(stage=many), "unrolls to")


def tags() -> Iterator[Entry]:
    cases = {
        "python_object_apply": (
            "key: !!python/object/apply:os.system [echo hacked]",
            "!!python/object/apply",
        ),
        "python_name": ("key: !!python/name:os.system", "!!python/name"),
        "python_module": ("description: !!python/module:os", "!!python/module"),
        "binary": ("description: !!binary aGVsbG8=", "!!binary"),
        "str_tag": ("description: !!str text", "!!str"),
        "int_tag": ("version: !!int '5'", "!!int"),
        "local_tag": ("description: !local text", "!local"),
        "non_specific_tag": ("description: ! text", "tags"),
        "verbatim_tag": ("description: !<tag:yaml.org,2002:str> text", "!!str"),
        "map_tag": ("within: !!map {first_and_last: 5m}", "!!map"),
        "set_tag": ("description: !!set {a, b}", "!!set"),
        "omap_tag": ("description: !!omap [a: 1]", "!!omap"),
        "timestamp_tag": ("description: !!timestamp 2001-12-14", "!!timestamp"),
        "tag_on_stage": ("pattern: !!seq [{name: a}]", "!!seq"),
    }
    for name, (field, expected) in cases.items():
        content = "- id: r\n  key: user_id\n  pattern: [{name: a}]\n  " + field + "\n"
        if field.startswith("pattern"):
            content = "- id: r\n  key: user_id\n  " + field + "\n"
        yield text(f"tags/{name}.yaml", content, expected)
    directive = (
        "%TAG !e! tag:example.com,2000:app/\n---\n- {id: r, key: !e!user k, pattern: [{name: a}]}\n"
    )
    yield text("tags/tag_directive.yaml", directive, "tag:example.com")


def key_paths() -> Iterator[Entry]:
    cases = {
        "dunder_class": "__class__",
        "dunder_globals": "__globals__",
        "dunder_chain": "user_id.__class__.__init__.__globals__",
        "leading_underscore": "_private",
        "nested_underscore": "account._secret",
        "dunder_dict": "__dict__",
        "cyrillic_a": "\u0430mount",
        "cyrillic_nested": "account.\u0456d",
        "fullwidth": "\uff55ser_id",
        "greek": "\u03baey",
        "hyphen": "user-id",
        "starts_with_digit": "1user",
        "empty_part": "account..id",
        "leading_dot": ".id",
        "trailing_dot": "'account.'",
        "space": "'user id'",
        "too_long": "a" * 201,
        "accented_letter": "user_\u00edd",
    }
    for name, key in cases.items():
        yield text(f"key_paths/{name}.yaml", rule(key=key), "key")
    yield text("key_paths/dunder.json", json_rule(key="__class__"), "key")
    yield text("key_paths/nul.json", json_rule(key="user\u0000id"), "key")


def identifiers() -> Iterator[Entry]:
    for name, digits in (
        ("fullwidth", "\uff15"),
        ("arabic_indic", "\u0663"),
        ("devanagari", "\u0969"),
        ("thai", "\u0e55"),
    ):
        yield text(
            f"identifiers/within_{name}_digits.yaml", rule().replace("5m", f"{digits}m"), "within"
        )
    yield text("identifiers/within_fullwidth.json", json_rule(within="\uff15m"), "within")
    yield text(
        "identifiers/window_fullwidth.yaml", stage_rule("times: 2, window: \uff130s"), "window"
    )
    yield text("identifiers/times_fullwidth_string.yaml", stage_rule("times: '\uff13'"), "times")
    yield text("identifiers/id_rtl_override.yaml", rule(rid='"r\u202eevil"'), "id")
    yield text("identifiers/id_zero_width_space.yaml", rule(rid='"r\u200bx"'), "id")
    yield text("identifiers/id_newline.yaml", rule(rid='"a\\nb"'), "id")
    yield text("identifiers/id_bell.yaml", rule(rid='"a\\ab"'), "id")
    yield text("identifiers/id_too_long.yaml", rule(rid="r" * 201), "longer than 200")
    yield text("identifiers/id_null.yaml", rule(rid="null"), "id: must be a non-empty string")
    yield text("identifiers/id_tilde.yaml", rule(rid="~"), "id: must be a non-empty string")
    yield text("identifiers/id_empty.json", json_rule(id=""), "id: must be a non-empty string")
    yield text("identifiers/stage_name_bidi.yaml", rule(stage='{name: "a\u202eb"}'), "name")
    yield text("identifiers/stage_name_null.yaml", rule(stage="{name: null}"), "name")


def nul() -> Iterator[Entry]:
    yield ("nul/raw_nul.yaml", rule().encode().replace(b"id: r", b"id: r\x00x"), "NUL")
    yield ("nul/raw_nul.json", json_rule().encode().replace(b'"r"', b'"r\x00"'), "NUL")
    yield text("nul/escaped_nul_in_id.yaml", rule(rid='"a\\0b"'), "id: must not hold")
    yield text("nul/escaped_nul_in_id.json", json_rule(id="a\u0000b"), "id: must not hold")
    yield text("nul/escaped_nul_in_name.yaml", rule(stage='{name: "a\\0"}'), "name: must not hold")
    yield ("nul/nul_at_start.yaml", b"\x00" + rule().encode(), "NUL")


def long_keys() -> Iterator[Entry]:
    for size in (1_025, 5_000, 20_000):
        doc = json.loads(json_rule())
        doc[0]["k" * size] = 1
        yield text(f"long_keys/unknown_key_{size}.json", json.dumps(doc), "unknown field")
    doc = json.loads(json_rule())
    doc[0]["pattern"][0]["s" * 3000] = True
    yield text("long_keys/long_stage_key.json", json.dumps(doc), "unknown field")
    doc = json.loads(json_rule())
    doc[0]["within"] = {"x" * 4000: "5m"}
    yield text("long_keys/long_window_key.json", json.dumps(doc), "unknown window type")
    yield text("long_keys/long_yaml_key.yaml", rule(f"{'k' * 2000}: 1"), "")


def limits() -> Iterator[Entry]:
    yield text(
        "limits/too_large.yaml", rule() + "#" + "x" * (300 * 1024) + "\n", "larger than 262,144"
    )
    yield text(
        "limits/too_many_values.json", "[" + "1," * 100_001 + "1]", "more than 100,000 values"
    )
    yield text("limits/too_many_rules.yaml", "- {}\n" * 1_001, "more than 1,000 rules")
    stages = ", ".join(f"{{name: s{i}}}" for i in range(201))
    yield text("limits/too_many_stages_in_rule.yaml", rule(stage=stages), "more than 200 stages")
    ten = ", ".join(f"{{name: s{i}}}" for i in range(100))
    many_rules = "".join(rule(stage=ten, rid=f"r{i}") for i in range(11))
    yield text("limits/too_many_stages_in_file.yaml", many_rules, "more than 1,000 stages")
    wheres = "[" + ", ".join(f"v > {i}" for i in range(101)) + "]"
    yield text(
        "limits/too_many_conditions_in_stage.yaml", stage_rule(f"where: {wheres}"), "100 conditions"
    )
    many = "[" + ", ".join(f"v > {i}" for i in range(100)) + "]"
    stages_many = ", ".join(f"{{name: s{i}, where: {many}}}" for i in range(11))
    yield text(
        "limits/too_many_conditions_in_file.yaml", rule(stage=stages_many), "1,000 conditions"
    )
    long_expr = " or ".join(f"amount > {i}" for i in range(3_000))
    yield text(
        "limits/too_much_condition_text.yaml",
        "".join(
            rule(stage=f"{{name: a, where: {long_expr[:3900]}}}", rid=f"r{i}") for i in range(30)
        ),
        "characters of conditions",
    )
    bad_keys = ", ".join(f"zz{i}: 1" for i in range(1_200))
    yield text("limits/too_many_problems.yaml", rule(bad_keys), "more than 1,000 problems")


def yaml_oddities() -> Iterator[Entry]:
    cases = {
        "two_documents": (rule() + "---\n" + rule(), "one YAML document"),
        "empty": ("", "no rules"),
        "only_comments": ("# nothing here\n", "no rules"),
        "null_document": ("~\n", "non-empty list of rules"),
        "scalar_document": ("hello\n", "non-empty list of rules"),
        "complex_key": ("- {? [a, b] : c, id: r}\n", "mapping key must be a string"),
        "duplicate_key": (rule("id: s"), "duplicate key 'id'"),
        "key_null": (rule(key="null"), "key: must be a non-empty string"),
        "enabled_null": (rule("enabled: null"), "enabled: must be true or false"),
        "bad_timestamp": (rule("version: 2001-13-45"), "bad value"),
        "tab_indent": ("- id: r\n\tkey: k\n", "bad YAML"),
        "unclosed_flow": ("- {id: r, key: [\n", "bad YAML"),
        "unclosed_quote": ('- {id: "r}\n', "bad YAML"),
        "stray_document_end": ("...\n...\n- x\n", ""),
        "merge_key_inline": (
            "- {<<: {id: r}, key: k, pattern: [{name: a}]}\n",
            "unknown field '<<'",
        ),
    }
    for name, (content, expected) in cases.items():
        yield text(f"yaml/{name}.yaml", content, expected)
    yield text("yaml/json_trailing_data.json", json_rule() + " []", "Extra data")
    yield text("yaml/json_nan.json", json_rule().replace('"5m"', "NaN"), "bad JSON")
    yield text(
        "yaml/json_duplicate_key.json",
        json_rule().replace('"id": "r"', '"id": "r", "id": "s"'),
        "duplicate key",
    )
    yield text(
        "yaml/json_raw_control_char.json", json_rule(id="r").replace('"r"', '"r\t"'), "bad JSON"
    )


def expressions() -> Iterator[Entry]:
    cases = {
        "escape_dunder": "().__class__.__bases__[0].__subclasses__()",
        "import": "__import__('os').system('id')",
        "lambda": "(lambda: 1)()",
        "huge_power": "9 ** 9 ** 9 ** 9",
        "long_string": "'" + "x" * 5_000 + "' == merchant",
    }
    for name, expression in cases.items():
        content = rule(stage=f"{{name: a, where: {json.dumps(expression)}}}")
        yield text(f"expressions/{name}.yaml", content, "where")


def corpus() -> list[Entry]:
    """Every hostile file: (path under this directory, content, expected message part)."""
    out: list[Entry] = []
    for make in (
        encoding,
        nesting,
        aliases,
        integers,
        unhashable,
        quantifiers,
        tags,
        key_paths,
        identifiers,
        nul,
        long_keys,
        limits,
        yaml_oddities,
        expressions,
    ):
        out.extend(make())
    paths = [p for p, _, _ in out]
    assert len(paths) == len(set(paths)), "corpus paths must be unique"
    return out


def committed(entry: Entry) -> bool:
    return len(entry[1]) <= COMMITTED_MAX_BYTES


def write(root: Path = HERE) -> None:
    """Rewrite the committed files and ``expected.json`` under ``root``."""
    entries = corpus()
    for path, content, _ in entries:
        if committed((path, content, "")):
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    expected = {path: part for path, _, part in entries}
    (root / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
