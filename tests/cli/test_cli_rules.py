"""``fraudcep rules validate`` and ``fraudcep rules test``, run as the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.paths import REPO

ROOT = REPO
FRAUDCEP = Path(sys.executable).parent / "fraudcep"
EXAMPLE = ROOT / "examples" / "rules.yaml"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FRAUDCEP), "rules", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_validate_accepts_the_example() -> None:
    result = cli("validate", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok: 2 rule(s) in 1 file(s)"


def test_validate_lists_every_problem_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- id: one\n  key: k\n  within: 5x\n  pattern:\n    - name: a\n"
        "      where: amount >> 3\n      times: 0\n"
    )
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "j",}]')
    result = cli("validate", str(EXAMPLE), str(bad), str(broken))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        f"{bad}:3:11: rule 'one' within: a duration must be like 500ms, 30s, 5m, 2h, 1d or "
        "an int of ms, got '5x'",
        f"{bad}:6:14: rule 'one' pattern[0].where: operator '>>' is not allowed",
        f"{bad}:7:14: rule 'one' pattern[0].times: must be an integer from 1 to 1,000, got 0",
    ]
    assert lines[3].startswith(f"{broken}:1:13: bad JSON")
    assert lines[-1] == "4 problem(s) in 3 file(s)"
    as_json = json.loads(cli("validate", "--json", str(bad)).stdout)
    assert not as_json["ok"] and len(as_json["problems"]) == 3
    assert as_json["problems"][0]["line"] == 3


def test_validate_reports_a_missing_file(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "cannot read" in result.stdout


EVENTS = [
    {"id": 1, "ts": 1000, "user_id": "u1", "card_id": "c1", "amount": 2500},
    {"id": 2, "ts": 2000, "user_id": "u1", "card_id": "c1", "amount": 3000},
    "not json",
    {"id": 3, "ts": 3000, "user_id": "u1", "card_id": "c1", "amount": 2100},
    {
        "id": 4,
        "ts": 4000,
        "card_id": "c2",
        "user_id": "u2",
        "amount": 1,
        "status": "declined",
        "merchant": "m1",
    },
    {
        "id": 5,
        "ts": 5000,
        "card_id": "c2",
        "user_id": "u2",
        "amount": 2,
        "status": "declined",
        "merchant": "m1",
    },
    {
        "id": 6,
        "ts": 6000,
        "card_id": "c2",
        "user_id": "u2",
        "amount": 3,
        "status": "declined",
        "merchant": "m1",
    },
    {"id": 7, "ts": 7000, "card_id": "c2", "user_id": "u2", "amount": 900, "merchant": "m9"},
    {"id": 8, "user_id": "u2"},
]


def write_events(path: Path) -> Path:
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in EVENTS) + "\n")
    return path


def test_test_prints_the_alerts_of_each_rule(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.jsonl")
    result = cli("test", str(EXAMPLE), "--events", str(events))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "high-value-3-in-5m key='u1' ts=1000..3000 first=[1, 2, 3]",
        "card-testing key='c2' ts=4000..7000 small=[4, 5, 6] big=[7]",
        "-- 7 event(s), 2 bad line(s), 0 late",
        "high-value-3-in-5m: 1 alert(s)",
        "card-testing: 1 alert(s)",
    ]
    assert f"{events}:3: bad JSON" in result.stderr
    assert f"{events}:9: event has no field 'ts'" in result.stderr


def test_test_json_output(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.jsonl")
    result = cli("test", str(EXAMPLE), "--events", str(events), "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["alert"]["events"] == {"first": [1, 2, 3]}
    assert records[-1]["summary"]["alerts"] == {"high-value-3-in-5m": 1, "card-testing": 1}
    assert records[-1]["summary"]["bad_lines"] == 2


def test_test_refuses_an_invalid_rule_file(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("- id: x\n  pattern: []\n")
    events = write_events(tmp_path / "events.jsonl")
    result = cli("test", str(rules), "--events", str(events))
    assert result.returncode == 1
    assert f"{rules}:" in result.stderr
