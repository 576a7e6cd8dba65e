"""The documentation's examples are doctests: they run here, so the docs stay true."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
from support.paths import REPO

DOCS = REPO / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if ">>> " in p.read_text())


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_in_docs_run_as_written(page: Path) -> None:
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
        verbose=False,
    )
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) in {page.name} do not hold"


def test_every_page_with_examples_is_checked() -> None:
    assert {p.name for p in PAGES} >= {"concepts.md", "patterns.md", "semantics.md"}
