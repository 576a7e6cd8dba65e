"""``fraudcep rules validate`` and ``rules test`` on a rule file with a shadow rule: the mode is
checked with its position, and a shadow rule's alerts say so (text and JSON) while a live
rule's are as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.paths import REPO

FRAUDCEP = Path(sys.executable).parent / "fraudcep"

RULES = """\
- id: big
  key: card_id
  pattern:
    - name: pay
      where: amount > 100
- id: big-next
  mode: shadow
  key: card_id
  pattern:
    - name: pay
      where: amount > 50
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FRAUDCEP), "rules", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_rules_test_marks_shadow_alerts(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                {"id": 1, "ts": 1, "card_id": "c1", "amount": 70},
                {"id": 2, "ts": 2, "card_id": "c2", "amount": 700},
            ]
        )
    )
    assert cli("validate", str(rules)).returncode == 0
    result = cli("test", str(rules), "--events", str(events), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [json.loads(x)["alert"] for x in result.stdout.splitlines() if '"alert"' in x]
    got = sorted((a["rule_id"], a["events"]["pay"], a.get("mode")) for a in alerts)
    assert got == [("big", [2], None), ("big-next", [1], "shadow"), ("big-next", [2], "shadow")]
    text = cli("test", str(rules), "--events", str(events)).stdout
    assert "big-next (shadow) key='c1'" in text and "big key='c2'" in text


def test_validate_refuses_an_unknown_mode_with_its_position(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("mode: shadow", "mode: silent"))
    result = cli("validate", str(rules))
    assert result.returncode == 1
    assert f"{rules}:7:9: rule 'big-next'" in result.stdout
    assert "mode" in result.stdout and "live, shadow" in result.stdout
