"""``fraudcep rules validate --lists`` and ``fraudcep rules test --lists``: named lists read from
files, a rule naming a missing list refused, alerts showing the list versions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.paths import REPO

FRAUDCEP = Path(sys.executable).parent / "fraudcep"

RULES = """
- id: blocked-card
  key: card_id
  pattern:
    - name: pay
      where: card_id in lists.blocked_cards or prefix_in(bin, lists.risky_bins)
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FRAUDCEP), "rules", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def files(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "blocked_cards.txt").write_text("# cards\nc1\nc2\n")
    (lists / "risky_bins.csv").write_text("411111,test bin\n52,\n")
    return rules, lists


def test_validate_with_and_without_the_lists(tmp_path: Path) -> None:
    rules, lists = files(tmp_path)
    ok = cli("validate", str(rules), "--lists", str(lists))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "ok: 1 rule(s) in 1 file(s)"
    missing = cli("validate", str(rules), "--lists", str(lists / "risky_bins.csv"))
    assert missing.returncode == 1
    assert f"{rules}:6:25: rule 'blocked-card' pattern[0].where: unknown list 'blocked_cards'" in (
        missing.stdout
    )
    assert "known lists: risky_bins" in missing.stdout
    none = cli("validate", str(rules))
    assert none.returncode == 1 and "no lists are loaded" in none.stdout
    unreadable = cli("validate", str(rules), "--lists", str(tmp_path / "absent.txt"))
    assert unreadable.returncode == 1 and "cannot read the lists" in unreadable.stdout


def test_rules_test_shows_the_list_versions(tmp_path: Path) -> None:
    rules, lists = files(tmp_path)
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                {"id": 1, "ts": 1, "card_id": "c1", "bin": "999"},
                {"id": 2, "ts": 2, "card_id": "c9", "bin": "5200"},
                {"id": 3, "ts": 3, "card_id": "c9", "bin": "999"},
            ]
        )
    )
    result = cli("test", str(rules), "--events", str(events), "--lists", str(lists), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    alerts = [r["alert"] for r in records if "alert" in r]
    assert [a["events"]["pay"] for a in alerts] == [[1], [2]]
    assert alerts[0]["lists"] == {"blocked_cards": 1, "risky_bins": 1}
    text = cli("test", str(rules), "--events", str(events), "--lists", str(lists))
    assert "lists.blocked_cards@1 lists.risky_bins@1" in text.stdout
