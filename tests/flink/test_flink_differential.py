"""Differential test: the engine, and the reference matcher, against Flink CEP 2.3 itself.

``FRAUDCEP_DIFF_CASES`` cases (default 2000) are drawn deterministically (seed
``FRAUDCEP_DIFF_SEED``, default 1729) with :func:`fraudcep.testing.random_case` — every
operator, quantifier, window type, group patterns, all skip strategies, a few malformed
patterns — and run with a single final watermark, as a bounded input is. Then
``FRAUDCEP_DIFF_LIVE_CASES`` more (default 500) are drawn the same way and run as a live stream:
their events are spread over up to three keys and every event is followed by a watermark
(random out-of-orderness), so windows close, pending ``not_followed_by`` matches come out and
late events are dropped while the input goes on. All of them, and the fixed regression cases of
``tests/differential/regression-cases.jsonl``, are written to a JSON Lines file and run through
the Flink harness (``tests/differential/run-harness.sh``, or ``java -jar
$FRAUDCEP_FLINK_HARNESS`` when the harness is already built). Then every case runs through
:func:`fraudcep.testing.run_case`:

* the engine must give exactly Flink's result: the same matches in the same order, the same
  timeouts in the same order, and an error exactly when Flink rejects the pattern; for a live
  case, per key (Flink emits what several keys produce at one watermark in its timers' order),
  and each match and timeout after the same input event;
* where the engine's timers differ from Flink's on purpose (docs/semantics.md, "Deliberate
  differences" (a); :func:`flink_operator.timers_differ`), fraudcep's NFA driven by Flink's
  own timer policy (:func:`flink_operator.run_with_flink_timers`) must give Flink's result
  instead;
* the reference matcher must give Flink's result up to the order Flink leaves to its priority
  queue, for every case inside its subset (single final watermark, one key).

Cases on which Flink hit the harness's own limits (``"limit: ..."``) are not compared, nor
patterns fraudcep refuses on purpose where Flink misbehaves (``DOCUMENTED_REFUSALS``, see
docs/semantics.md); they must stay rare. The harness's limits (20,000 matches or timeouts,
10 s per case) can be raised with ``FRAUDCEP_DIFF_MAX_MATCHES`` and ``FRAUDCEP_DIFF_TIMEOUT_MS``
(read by the harness itself), for a larger run where big outputs are compared too::

    FRAUDCEP_DIFF_CASES=5000 FRAUDCEP_DIFF_SEED=7 FRAUDCEP_DIFF_MAX_MATCHES=1000000 \
    FRAUDCEP_DIFF_TIMEOUT_MS=120000 pytest -m flink tests/flink/test_flink_differential.py

With ``FRAUDCEP_DIFF_SAVE=1`` the cases and Flink's results are kept under
``tests/differential/corpus/``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.flink_operator import run_with_flink_timers, timers_differ
from support.paths import DIFFERENTIAL

from fraudcep import MalformedPatternError
from fraudcep.testing import (
    ReferenceLimitError,
    UnsupportedPatternError,
    build_pattern,
    check_result,
    compare,
    random_case,
    run_case,
    unsupported,
)
from fraudcep.testing.cases import per_key
from fraudcep.testing.strategies import DEFAULT_MAX_EVENTS

pytestmark = [pytest.mark.flink, pytest.mark.timeout(3600)]

DIFFERENTIAL = DIFFERENTIAL
CASES = int(os.environ.get("FRAUDCEP_DIFF_CASES", "2000"))
LIVE_CASES = int(os.environ.get("FRAUDCEP_DIFF_LIVE_CASES", "500"))
SEED = int(os.environ.get("FRAUDCEP_DIFF_SEED", "1729"))
MAX_EVENTS = int(os.environ.get("FRAUDCEP_DIFF_MAX_EVENTS", str(DEFAULT_MAX_EVENTS)))
SHOWN = 20
REGRESSIONS = DIFFERENTIAL / "regression-cases.jsonl"
KEYS = ("k0", "k1", "k2")
OUT_OF_ORDERNESS = (0, 0, 1, 2, 3, 5, 8)

Case = dict[str, Any]
Results = dict[Any, dict[str, Any]]


def generate(count: int, seed: int) -> list[Case]:
    """The cases of one run: the same ``count`` cases for the same ``seed``."""
    rng = random.Random(seed)
    return [random_case(rng, f"s{seed}-{i}", max_events=MAX_EVENTS) for i in range(count)]


def generate_live(count: int, seed: int) -> list[Case]:
    """``count`` cases run as a live stream: keyed events, a watermark after every event.

    Drawn from their own generator, so the cases of :func:`generate` stay the same.
    """
    rng = random.Random(f"live-{seed}")
    out = []
    for i in range(count):
        case = random_case(rng, f"s{seed}-live{i}", max_events=MAX_EVENTS)
        keys = KEYS[: rng.randint(1, len(KEYS))]
        case["events"] = [dict(e, key=rng.choice(keys)) for e in case["events"]]
        case["watermarks"] = {"out_of_orderness": rng.choice(OUT_OF_ORDERNESS)}
        out.append(case)
    return out


def regression_cases() -> list[Case]:
    """The fixed cases: each a difference once found, with Flink's result next to it."""
    return [json.loads(line) for line in REGRESSIONS.read_text().splitlines() if line.strip()]


def harness_command(cases_file: Path) -> list[str]:
    if shutil.which("java") is None:
        pytest.skip("java is not on PATH (the Flink harness needs Java 17)")
    jar = os.environ.get("FRAUDCEP_FLINK_HARNESS")
    if jar:
        return ["java", "-jar", jar, str(cases_file)]
    if shutil.which("mvn") is None:
        pytest.skip("mvn is not on PATH (needed to build the Flink harness)")
    return ["bash", str(DIFFERENTIAL / "run-harness.sh"), str(cases_file)]


def run_flink(cases: list[Case], workdir: Path) -> Results:
    cases_file = workdir / "cases.jsonl"
    cases_file.write_text("".join(json.dumps(c) + "\n" for c in cases))
    done = subprocess.run(
        harness_command(cases_file), capture_output=True, text=True, timeout=3000, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"the Flink harness failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    results = {}
    for line in done.stdout.splitlines():
        if line.strip():
            result = json.loads(line)
            results[result["id"]] = result
    missing = [c["id"] for c in cases if c["id"] not in results]
    assert not missing, f"the harness gave no result for {len(missing)} cases: {missing[:5]}"
    return results


def save_corpus(cases: list[Case], results: Results) -> None:
    corpus = DIFFERENTIAL / "corpus"
    corpus.mkdir(exist_ok=True)
    stem = f"seed{SEED}-n{len(cases)}"
    (corpus / f"cases-{stem}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    (corpus / f"flink-{stem}.jsonl").write_text(
        "".join(json.dumps(results[c["id"]]) + "\n" for c in cases)
    )


@pytest.fixture(scope="module")
def flink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Case], Results]]:
    cases = regression_cases() + generate(CASES, SEED) + generate_live(LIVE_CASES, SEED)
    results = run_flink(cases, tmp_path_factory.mktemp("flink"))
    if os.environ.get("FRAUDCEP_DIFF_SAVE") == "1":
        save_corpus(cases, results)
    yield cases, results


#: Messages of the patterns fraudcep refuses while Flink accepts them and then loops forever or
#: fails at run time (docs/semantics.md, "Deliberate differences").
DOCUMENTED_REFUSALS = (
    "looping group whose stages are all optional",
    "optional greedy loop with until()",
)


def documented_refusal(ours: Any) -> bool:
    error = ours.get("error") if isinstance(ours, dict) else None
    return bool(error) and any(text in error for text in DOCUMENTED_REFUSALS)


def limited(result: dict[str, Any]) -> bool:
    """Flink ran out of the harness's time or match budget: nothing to compare."""
    return str(result.get("error") or "").startswith("limit:")


def report(what: str, failures: list[tuple[Case, Any, dict[str, Any], list[str]]]) -> str:
    lines = [f"{len(failures)} case(s) where {what} differs from Flink CEP 2.3"]
    for case, ours, theirs, diff in failures[:SHOWN]:
        lines += [
            "",
            f"== case {case['id']}",
            f"skip:    {json.dumps(case['skip'])}",
            f"pattern: {json.dumps(case['pattern'])}",
            f"events:  {json.dumps(case['events'])}",
            f"ours:    {json.dumps(ours)}",
            f"flink:   {json.dumps(theirs)}",
            *diff,
        ]
    if len(failures) > SHOWN:
        lines.append(f"... and {len(failures) - SHOWN} more")
    return "\n".join(lines)


def compare_with_flink(case: Case, ours: Any, theirs: dict[str, Any]) -> list[str]:
    """The differences between a result of ours and Flink's (per key for a keyed case)."""
    events = case.get("events") or ()
    return compare(per_key(ours, events), per_key(theirs, events))


def test_engine_matches_flink(flink: tuple[list[Case], Results]) -> None:
    cases, results = flink
    failures = []
    skipped = refused = by_timers = 0
    for case in cases:
        theirs = results[case["id"]]
        if limited(theirs):
            skipped += 1
            continue
        try:
            ours: Any = run_case(case)
        except Exception as exc:
            ours = f"run_case raised {type(exc).__name__}: {exc}"
            diff = [ours]
        else:
            if documented_refusal(ours):
                refused += 1
                continue
            if timers_differ(case):
                # the engine's timers differ from Flink's on purpose: its NFA, driven by
                # Flink's timers, must still give Flink's result
                by_timers += 1
                ours = run_with_flink_timers(case)
            diff = compare_with_flink(case, ours, theirs)
        if diff:
            failures.append((case, ours, theirs, diff))
    if failures:
        pytest.fail(report("the engine", failures), pytrace=False)
    assert skipped < len(cases) // 20, f"{skipped} cases hit the harness limits"
    assert refused < len(cases) // 100, f"{refused} cases were refused on purpose"
    assert by_timers < len(cases) // 5, f"{by_timers} cases were checked with Flink's timers"


def test_harness_gives_the_recorded_results(flink: tuple[list[Case], Results]) -> None:
    """The fixed cases still give the results recorded from Flink (regression-results.jsonl),
    which tests/flink/test_flink_regressions.py checks fraudcep against without Java."""
    _, results = flink
    recorded = [
        json.loads(line)
        for line in (DIFFERENTIAL / "regression-results.jsonl").read_text().splitlines()
        if line.strip()
    ]
    assert [c["id"] for c in regression_cases()] == [r["id"] for r in recorded]
    for expected in recorded:
        assert results[expected["id"]] == expected


def test_reference_matches_flink(flink: tuple[list[Case], Results]) -> None:
    cases, results = flink
    failures = []
    compared = 0
    held = sum(1 for case in cases if case.get("watermarks") is None)
    for case in cases:
        theirs = results[case["id"]]
        if limited(theirs) or case.get("watermarks") is not None:
            continue  # the reference matches one key's events, all at the end of the input
        if len({json.dumps(e.get("key")) for e in case.get("events") or ()}) > 1:
            continue
        try:
            if unsupported(build_pattern(case)) is not None:
                continue
        except (MalformedPatternError, TypeError, ValueError):
            pass  # rejected by the builder: the reference must report an error too
        try:
            diff = check_result(case, theirs)
        except (UnsupportedPatternError, ReferenceLimitError):
            continue
        compared += 1
        if diff:
            failures.append((case, "(reference)", theirs, diff))
    if failures:
        pytest.fail(report("the reference matcher", failures), pytrace=False)
    assert compared > held // 2, f"only {compared} of {held} cases were inside the subset"
