"""The documentation's option tables are the code's: each table between
``<!-- options: ... -->`` and ``<!-- end options -->`` is what
:func:`fraudcep.runtime.options.options_table` makes of the options it names, and every
option of the runtime kit's table is listed for the runner and the Lambda detector (the
Flink job lists its own whole table)."""

from __future__ import annotations

import re

import pytest
from support.paths import REPO

from fraudcep.runtime import ENGINE_OPTIONS
from fraudcep.runtime.options import Option, options_table
from fraudcep_aws.lambda_detector import DETECTOR_OPTIONS
from fraudcep_flink.config import OPTIONS as FLINK_OPTIONS

DOCS = REPO / "docs"
TABLE = re.compile(r"<!-- options: (.+?) -->\n(.*?)<!-- end options -->", re.DOTALL)
SOURCES: dict[str, tuple[Option, ...]] = {
    "fraudcep.runtime.ENGINE_OPTIONS": ENGINE_OPTIONS,
    "fraudcep_aws.lambda_detector.DETECTOR_OPTIONS (its own)": tuple(
        o for o in DETECTOR_OPTIONS if o not in ENGINE_OPTIONS
    ),
    "fraudcep_flink.config.OPTIONS": FLINK_OPTIONS,
}


def tables(page: str) -> list[tuple[str, str]]:
    return TABLE.findall((DOCS / page).read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", ["kafka.md", "aws.md", "flink.md"])
def test_option_tables_in_the_docs_are_made_from_the_code(page: str) -> None:
    found = tables(page)
    assert found, f"{page} has no generated option table"
    for source, text in found:
        assert source in SOURCES, f"{page}: unknown option table {source!r}"
        expected = options_table(SOURCES[source])
        assert text == expected, (
            f"{page}: the table of {source} is out of date; replace it with:\n{expected}"
        )


def test_both_runtimes_document_every_shared_option_and_the_detectors_own() -> None:
    assert "fraudcep.runtime.ENGINE_OPTIONS" in dict(tables("kafka.md"))
    aws = dict(tables("aws.md"))
    assert set(aws) == set(SOURCES) - {"fraudcep_flink.config.OPTIONS"}
    listed = "".join(aws.values())
    for option in DETECTOR_OPTIONS:
        assert f"`{option.env}`" in listed, option.name
    assert "`FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS`" in listed  # the alias, said to be one
