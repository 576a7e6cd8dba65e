"""Structured logs for the Lambda handlers: one JSON object per line on stdout.

CloudWatch Logs stores each line of a function's stdout as one event, so a JSON line can be
filtered on its fields (``alert_id``, ``channel``, ``sequence_number``) by metric filters and
Logs Insights without parsing text. Code logs with ``extra={"fields": {...}}``; the request
id of the current invocation is added to every line.

Metrics go the same way, as lines in CloudWatch's embedded metric format (EMF,
:func:`metric_line`): CloudWatch makes metrics of them (namespace :data:`METRICS_NAMESPACE`,
with the line's dimensions) with no PutMetricData call and no permission beyond the log
group's, and the line stays a searchable log event.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = [
    "LOGGER_NAME",
    "METRICS_NAMESPACE",
    "JsonFormatter",
    "configure",
    "emit_metrics",
    "metric_line",
    "request_id",
]

LOGGER_NAME: Final = "fraudcep"
METRICS_NAMESPACE: Final = "fraudcep"
"""The CloudWatch namespace of the handlers' metrics."""
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fraudcep_lambda_request_id", default=None
)
"""The ``aws_request_id`` of the invocation being handled (set by the handlers)."""

_MARK: Final = "_fraudcep_lambda_handler"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", <fields>}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            doc["request_id"] = current
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                doc.setdefault(str(key), value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure(level: str | None = None, stream: TextIO | None = None) -> None:
    """Send the ``fraudcep`` loggers to ``stream`` (default stdout) as JSON lines, once.

    ``level`` defaults to ``FRAUDCEP_LOG_LEVEL`` (else INFO). The loggers stop propagating to
    the root logger, where the Lambda runtime's own handler would print each line again."""
    logger = logging.getLogger(LOGGER_NAME)
    name = (level or os.environ.get("FRAUDCEP_LOG_LEVEL") or "INFO").upper()
    if name not in logging.getLevelNamesMapping():
        name = "INFO"
    logger.setLevel(name)
    if any(getattr(h, _MARK, False) for h in logger.handlers) and stream is None:
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _MARK, True)
    logger.handlers[:] = [h for h in logger.handlers if not getattr(h, _MARK, False)]
    logger.addHandler(handler)
    logger.propagate = False


def metric_line(
    dimensions: Mapping[str, str],
    values: Mapping[str, int | float],
    *,
    timestamp_ms: int,
    unit: str = "Count",
    namespace: str = METRICS_NAMESPACE,
) -> str:
    """One EMF line: the metrics ``values`` (name -> value, all in ``unit``) for the
    dimension values ``dimensions`` (name -> value, one dimension set), at ``timestamp_ms``."""
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit} for name in values],
                }
            ],
        },
        **dimensions,
        **values,
    }
    current = request_id.get()
    if current is not None:
        doc["request_id"] = current  # a property: searchable, not a dimension
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def emit_metrics(lines: Iterable[str], stream: TextIO | None = None) -> None:
    """Write EMF lines (:func:`metric_line`) to ``stream`` (default stdout) as they are:
    CloudWatch reads a line as EMF only when the whole line is the JSON object, so they do
    not go through a logger whose handler may prefix them."""
    out = stream or sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()
