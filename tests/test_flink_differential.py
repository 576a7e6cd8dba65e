"""Differential test: the engine, and the reference matcher, against Flink CEP 2.3 itself.

``FRAUDCEP_DIFF_CASES`` cases (default 2000) are drawn deterministically (seed
``FRAUDCEP_DIFF_SEED``) with :func:`fraudcep.testing.random_case` — every operator,
quantifier, window type, group patterns, all skip strategies, a few malformed patterns —
written to a JSON Lines file and run through the Flink harness
(``tests/differential/run-harness.sh``, or ``java -jar $FRAUDCEP_FLINK_HARNESS`` when the
harness is already built). Then every case runs through :func:`fraudcep.testing.run_case`:

* the engine must give exactly Flink's result: the same matches in the same order, the same
  timeouts in the same order, and an error exactly when Flink rejects the pattern;
* the reference matcher must give Flink's result up to the order Flink leaves to its priority
  queue, for every case inside its subset.

Cases on which Flink hit the harness's own limits (``"limit: ..."``) are not compared, nor
patterns fraudcep refuses on purpose where Flink misbehaves (``DOCUMENTED_REFUSALS``, see
docs/semantics.md); they must stay rare. With
``FRAUDCEP_DIFF_SAVE=1`` the cases and Flink's results are kept under
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

pytestmark = [pytest.mark.flink, pytest.mark.timeout(3600)]

DIFFERENTIAL = Path(__file__).resolve().parent / "differential"
CASES = int(os.environ.get("FRAUDCEP_DIFF_CASES", "2000"))
SEED = int(os.environ.get("FRAUDCEP_DIFF_SEED", "1729"))
SHOWN = 20

Case = dict[str, Any]
Results = dict[Any, dict[str, Any]]


def generate(count: int, seed: int) -> list[Case]:
    """The cases of one run: the same ``count`` cases for the same ``seed``."""
    rng = random.Random(seed)
    return [random_case(rng, f"s{seed}-{i}") for i in range(count)]


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
    cases = generate(CASES, SEED)
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


def test_engine_matches_flink(flink: tuple[list[Case], Results]) -> None:
    cases, results = flink
    failures = []
    skipped = refused = 0
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
            diff = compare(ours, theirs)
        if diff:
            failures.append((case, ours, theirs, diff))
    if failures:
        pytest.fail(report("the engine", failures), pytrace=False)
    assert skipped < len(cases) // 20, f"{skipped} cases hit the harness limits"
    assert refused < len(cases) // 100, f"{refused} cases were refused on purpose"


def test_reference_matches_flink(flink: tuple[list[Case], Results]) -> None:
    cases, results = flink
    failures = []
    compared = 0
    for case in cases:
        theirs = results[case["id"]]
        if limited(theirs):
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
    assert compared > len(cases) // 2, f"only {compared} cases were inside the subset"
