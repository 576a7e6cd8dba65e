"""``fraudcep rules validate`` on the corpus of hostile rule files (``tests/hostile_rules``):
every file gets ``FILE:LINE:COLUMN: message`` lines naming what is wrong and exit code 1 —
never a traceback, a hang or a memory blow-up.

Most files run through the command's main function in this process (fast); a few run through
the installed command in a subprocess. The time limits are generous guards against hangs, not
speed assertions.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import TESTS

from fraudcep_cli.main import main

HERE = TESTS
CORPUS = HERE / "hostile_rules"
FRAUDCEP = Path(sys.executable).parent / "fraudcep"

sys.path.insert(0, str(CORPUS))
from generate import committed, corpus  # noqa: E402

ENTRIES = {path: (content, expected) for path, content, expected in corpus()}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed corpus, plus the large files written out for this run."""
    out = tmp_path_factory.mktemp("hostile_rules")
    for path, (content, _) in ENTRIES.items():
        if not committed((path, content, "")):
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(content)
    return out


def file_of(path: str, corpus_dir: Path) -> Path:
    content, _ = ENTRIES[path]
    return CORPUS / path if committed((path, content, "")) else corpus_dir / path


def check_output(file: Path, expected: str, code: int, out: str, err: str) -> None:
    lines = out.splitlines()
    assert code == 1, out
    assert "Traceback" not in out + err
    assert "cannot check the file" not in out, out  # the command's last-resort answer
    assert lines and re.fullmatch(r"\d+ problem\(s\) in 1 file\(s\)", lines[-1]), out
    for line in lines[:-1]:
        match = re.match(rf"{re.escape(str(file))}:(\d+):(\d+): \S", line)
        assert match is not None, line
        assert int(match.group(1)) >= 1 and int(match.group(2)) >= 1, line
    assert expected in out, out


def test_the_corpus_has_every_category_and_the_committed_files_are_current() -> None:
    categories = {path.split("/")[0] for path in ENTRIES}
    assert categories >= {
        "encoding",
        "nesting",
        "aliases",
        "integers",
        "unhashable",
        "quantifiers",
        "tags",
        "key_paths",
        "identifiers",
        "nul",
        "long_keys",
        "limits",
    }
    assert len(ENTRIES) >= 100
    on_disk = {
        str(p.relative_to(CORPUS))
        for p in CORPUS.rglob("*")
        if p.is_file() and p.parent != CORPUS and "__pycache__" not in p.parts
    }
    kept = {path for path, (content, _) in ENTRIES.items() if committed((path, content, ""))}
    assert on_disk == kept, "run tests/hostile_rules/generate.py"
    for path in kept:
        assert (CORPUS / path).read_bytes() == ENTRIES[path][0], path
    expected = json.loads((CORPUS / "expected.json").read_text())
    assert expected == {path: part for path, (_, part) in ENTRIES.items()}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", sorted(ENTRIES))
def test_every_hostile_file_is_refused_with_positions(
    path: str, corpus_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = file_of(path, corpus_dir)
    code = main(["rules", "validate", str(file)])
    captured = capsys.readouterr()
    check_output(file, ENTRIES[path][1], code, captured.out, captured.err)


SUBPROCESS_SAMPLE = [
    "aliases/billion_laughs.yaml",
    "encoding/utf16le_bom.yaml",
    "integers/version_5000_digits.yaml",
    "nesting/json_lists_5000.json",
    "quantifiers/times_10_12.yaml",
    "tags/python_object_apply.yaml",
    "limits/too_large.yaml",
]


@pytest.mark.timeout(180)
def test_a_sample_through_the_installed_command(corpus_dir: Path) -> None:
    for path in SUBPROCESS_SAMPLE:
        file = file_of(path, corpus_dir)
        result = subprocess.run(
            [str(FRAUDCEP), "rules", "validate", str(file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        check_output(file, ENTRIES[path][1], result.returncode, result.stdout, result.stderr)
        assert result.stderr == ""


def test_json_output_gives_positions_too(
    corpus_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(file_of(path, corpus_dir)) for path in SUBPROCESS_SAMPLE]
    assert main(["rules", "validate", "--json", *files]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert not doc["ok"] and doc["rules"] == 0
    assert {p["file"] for p in doc["problems"]} == set(files)
    assert all(p["line"] >= 1 and p["column"] >= 1 for p in doc["problems"])
