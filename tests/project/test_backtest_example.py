"""examples/backtest_month.py runs: a small month (two days) into a temporary folder."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import REPO

pytest.importorskip("pyarrow")
pytest.importorskip("matplotlib")

ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "adapters"), str(REPO / "tests")]),
}


def run(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=REPO, env=env
    )


def test_backtest_example_writes_the_lake_labels_variant_and_report(tmp_path: Path) -> None:
    out = tmp_path / "month"
    example = str(REPO / "examples" / "backtest_month.py")
    result = run(example, "--days", "2", "--no-open", "--out", str(out))
    assert result.returncode == 0, result.stderr

    hours = sorted((out / "lake" / "payments").glob("dt=*/hour=*"))
    assert len(hours) == 48
    assert all(any(h.glob("*.parquet")) for h in hours)
    labels = (out / "labels.csv").read_text().splitlines()
    assert labels[0] == "payment_id" and len(labels) > 1
    assert "version: 2" in (out / "rules-variant.yaml").read_text()
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")

    data = json.loads((out / "backtest.json").read_text())
    assert data["payments"] > 30_000 and data["late_payments"] == 0
    assert data["fraud_payments"] == len(labels) - 1
    for rule_set in ("rules", "baseline_rules"):
        ids = {r["rule_id"] for r in data[rule_set]}
        assert {"high-value-3-in-5m", "card-testing", "geo-hop", "(all rules)"} <= ids
        for rule in data[rule_set]:
            if rule["alerts"]:
                assert rule["precision"] is not None and rule["recall"] is not None
    versions = {r["rule_id"]: r["version"] for r in data["rules"]}
    baseline_versions = {r["rule_id"]: r["version"] for r in data["baseline_rules"]}
    assert versions["geo-hop"] == 2 and baseline_versions["geo-hop"] == 1
    comparison = {c["rule_id"]: c for c in data["comparison"]}
    assert set(comparison) == {"high-value-3-in-5m", "card-testing", "geo-hop"}
    assert all(c["in_candidate"] and c["in_baseline"] for c in comparison.values())
    assert "geo-hop" in result.stdout and "precision" in result.stdout
    assert f"report: {(out / 'report.html').resolve()}" in result.stdout

    # The command line it prints gives the same figures.
    line = result.stdout.splitlines().index("the same from the command line:") + 1
    command = shlex.split(result.stdout.splitlines()[line])
    assert command[:2] == ["fraudcep", "backtest"]
    cli_json = tmp_path / "cli.json"
    args = command[2:]
    args[args.index("--json") + 1] = str(cli_json)
    args[args.index("--report") + 1] = str(tmp_path / "cli.html")
    cli = run("-m", "fraudcep_cli", "backtest", *args)
    assert cli.returncode == 0, cli.stderr
    cli_data = json.loads(cli_json.read_text())
    for key in ("payments", "fraud_payments", "rules", "baseline_rules", "comparison"):
        assert cli_data[key] == data[key], key


def test_backtest_example_refuses_a_used_folder(tmp_path: Path) -> None:
    (tmp_path / "lake" / "payments").mkdir(parents=True)
    (tmp_path / "lake" / "payments" / "old.parquet").write_bytes(b"")
    example = str(REPO / "examples" / "backtest_month.py")
    result = run(example, "--days", "0.01", "--no-open", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "not empty" in result.stderr


def test_backtest_example_opens_no_browser_without_a_terminal(tmp_path: Path) -> None:
    # A browser (webbrowser honours BROWSER) that leaves a mark when it is started.
    marker = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\n")
    browser.chmod(0o755)
    example = str(REPO / "examples" / "backtest_month.py")
    out = tmp_path / "out"
    result = run(example, "--days", "0.05", "--out", str(out), env={**ENV, "BROWSER": str(browser)})
    assert result.returncode == 0, result.stderr
    assert f"report: {(out / 'report.html').resolve()}" in result.stdout
    assert not marker.exists()
