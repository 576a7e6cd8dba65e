"""Percentiles and CDFs of measured latencies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values."""
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Count, mean, p50, p90, p99, p99.9 and max (rounded to 0.01)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 2),
        "p50": round(quantile(ordered, 0.50), 2),
        "p90": round(quantile(ordered, 0.90), 2),
        "p99": round(quantile(ordered, 0.99), 2),
        "p999": round(quantile(ordered, 0.999), 2),
        "max": round(ordered[-1], 2),
    }


def cdf_points(values: Sequence[float], points: int = 200) -> list[float]:
    """The values at quantiles 0, 1/points, ..., 1 (enough to draw the CDF again)."""
    ordered = sorted(values)
    if not ordered:
        return []
    return [round(quantile(ordered, i / points), 2) for i in range(points + 1)]
