"""``fraudcep backtest``: run rules over historical payments (the Parquet lake the S3 sink
writes, JSON Lines or CSV), measure them against fraud labels and a baseline version of the
rules, and report (JSON, and a self-contained HTML page). See docs/backtest.md.

Needs pyarrow (``pip install 'fraudcep[backtest]'``); the HTML report also needs matplotlib.
"""

from fraudcep_backtest.backtest import (
    ALL_RULES,
    SCHEMA_VERSION,
    AlertRecord,
    BacktestResult,
    Comparison,
    RuleStats,
    run_backtest,
)
from fraudcep_backtest.labels import read_labels
from fraudcep_backtest.sources import Source, SourceError, open_source, parse_time

__all__ = [
    "ALL_RULES",
    "SCHEMA_VERSION",
    "AlertRecord",
    "BacktestResult",
    "Comparison",
    "RuleStats",
    "Source",
    "SourceError",
    "open_source",
    "parse_time",
    "read_labels",
    "run_backtest",
]
