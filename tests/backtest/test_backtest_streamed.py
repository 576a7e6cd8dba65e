"""A JSON Lines or CSV file read as a stream and sorted within a window (``--sort-window``):
the same alerts as the file read whole when no payment is further out of place than the
window; one that is further is counted late and warned about, never lost silently; the
batches come before the whole file is read (a damaged end is only met after them); files
above the size limit are streamed by default."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import pytest
from test_backtest import DEFAULT_RULES, backtest, payments, write_jsonl

import fraudcep_backtest.sources as sources
from fraudcep_backtest import SourceError, open_source

MINUTE = 60_000


def shuffled_within(
    rows: list[dict[str, Any]], span_ms: int, seed: int = 3
) -> list[dict[str, Any]]:
    """``rows`` (in ts order) with each run of ``span_ms`` of event time shuffled: no payment
    is more than ``span_ms`` from its place in time."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    chunk: list[dict[str, Any]] = []
    for row in rows:
        if chunk and row["ts"] - chunk[0]["ts"] >= span_ms:
            rng.shuffle(chunk)
            out += chunk
            chunk = []
        chunk.append(row)
    rng.shuffle(chunk)
    return out + chunk


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    names = sorted({k for r in rows for k in r})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(tmp_path: Path, source: Path, *extra: str) -> tuple[Any, dict[str, Any]]:
    out = tmp_path / f"{source.name}-{len(extra)}.json"
    result, data = backtest(
        str(DEFAULT_RULES), "--payments", str(source), "--json", str(out), "--json-alerts", *extra
    )
    assert result.returncode == 0, result.stderr
    assert data is not None
    return result, data


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_a_stream_sorted_within_the_window_gives_the_whole_files_alerts(
    tmp_path: Path, kind: str
) -> None:
    rows = shuffled_within(payments(5000), 10 * MINUTE)
    assert [r["ts"] for r in rows] != sorted(r["ts"] for r in rows)
    write = write_jsonl if kind == "jsonl" else write_csv
    source = write(tmp_path / f"payments.{kind}", rows)
    _, whole = run(tmp_path, source)
    assert len(whole["alerts"]) > 20
    result, streamed = run(tmp_path, source, "--sort-window", "15m", "--block-bytes", "65536")
    assert "as a stream, sorted within 15m" in result.stderr
    assert streamed["late_payments"] == 0 and streamed["payments"] == len(rows)
    assert streamed["alerts"] == whole["alerts"]  # the same alerts, in the same order
    assert streamed["rules"] == whole["rules"]


def test_a_payment_further_out_of_place_than_the_window_is_counted_late(tmp_path: Path) -> None:
    rows = payments(3000)
    moved = rows.pop(100)  # now read 40 minutes' worth of payments later
    later = next(i for i, r in enumerate(rows) if r["ts"] > moved["ts"] + 40 * MINUTE)
    rows.insert(later, moved)
    source = write_jsonl(tmp_path / "payments.jsonl", rows)
    _, whole = run(tmp_path, source)
    assert whole["late_payments"] == 0
    result, streamed = run(tmp_path, source, "--sort-window", "15m", "--block-bytes", "65536")
    assert streamed["late_payments"] == 1 and streamed["payments"] == len(rows)
    assert "1 payment(s) came later" in result.stderr
    assert streamed["warnings"]


def test_a_file_in_order_streams_with_a_window_of_zero(tmp_path: Path) -> None:
    rows = payments(3000)
    source = write_jsonl(tmp_path / "payments.jsonl", rows)
    _, whole = run(tmp_path, source)
    _, streamed = run(tmp_path, source, "--sort-window", "0", "--block-bytes", "65536")
    assert streamed["alerts"] == whole["alerts"] and streamed["late_payments"] == 0


def test_batches_come_before_the_whole_file_is_read(tmp_path: Path) -> None:
    rows = payments(4000)
    source = write_jsonl(tmp_path / "payments.jsonl", rows)
    with source.open("a", encoding="utf-8") as handle:
        handle.write('{"payment_id": "broken", "ts": \n')
    whole = open_source(str(source))
    with pytest.raises(SourceError, match="not JSON Lines"):
        next(whole.batches())
    streamed = open_source(str(source), sort_window=MINUTE, block_bytes=65_536)
    batches = streamed.batches()
    first = next(batches)  # released before the damaged end was parsed
    assert first.num_rows > 0
    seen = first.num_rows
    with pytest.raises(SourceError, match="not JSON Lines"):
        for batch in batches:
            seen += batch.num_rows
    assert 0 < seen < len(rows)


def test_a_large_file_is_streamed_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_jsonl(tmp_path / "payments.jsonl", payments(500))
    assert open_source(str(source)).sort_window is None
    monkeypatch.setattr(sources, "STREAM_ABOVE_BYTES", 1024)
    assert open_source(str(source)).sort_window == sources.DEFAULT_SORT_WINDOW
    assert open_source(str(source), sort_window=5).sort_window == 5
    with pytest.raises(SourceError, match="must be 0 or more"):
        open_source(str(source), sort_window=-1)


def test_a_bad_sort_window_is_a_command_line_error(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "payments.jsonl", payments(10))
    result, _ = backtest(str(DEFAULT_RULES), "--payments", str(source), "--sort-window", "soon")
    assert result.returncode == 2 and "--sort-window" in result.stderr
