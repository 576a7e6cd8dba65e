"""The runner's ``/metrics`` page, read with prometheus_client's parser, and what the load
test takes from it: counters, histograms (whole, or between two scrapes) and estimated
quantiles."""

from __future__ import annotations

import math
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .util import log

Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Sample name (``fraudcep_alerts_total``, ``..._bucket``) → (labels, value) of each sample."""


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def scrape(url: str) -> Samples:
    """The samples on a ``/metrics`` page; empty (and a message) when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        log(f"  cannot scrape {url}: {exc}")
        return {}
    return parse(text)


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def window(before: Samples, after: Samples, name: str) -> Samples:
    """The samples of histogram ``name`` between two scrapes (``after`` minus ``before``)."""
    out: Samples = {}
    for suffix in ("_bucket", "_count", "_sum"):
        earlier = {_key(labels): v for labels, v in before.get(name + suffix, [])}
        out[name + suffix] = [
            (labels, value - earlier.get(_key(labels), 0.0))
            for labels, value in after.get(name + suffix, [])
        ]
    return out


def select(samples: Samples, name: str, **labels: str) -> Samples:
    """Histogram ``name``'s samples of the child with ``labels`` (e.g. ``stage="commit"``)."""
    return {
        name + suffix: [
            (lb, v)
            for lb, v in samples.get(name + suffix, [])
            if all(lb.get(k) == want for k, want in labels.items())
        ]
        for suffix in ("_bucket", "_count", "_sum")
    }


def _cumulative(samples: Samples, name: str) -> list[tuple[float, float]]:
    buckets: dict[float, float] = {}
    for labels, value in samples.get(name + "_bucket", []):
        le = float(labels["le"])
        buckets[le] = buckets.get(le, 0.0) + value
    return sorted(buckets.items())


def highest_bucket_ms(samples: Samples, name: str) -> float | None:
    """The upper bound (ms) of the highest non-empty bucket of histogram ``name``: the
    longest observation is at most this (and above the bucket before)."""
    top = None
    previous = 0.0
    for le, cum in _cumulative(samples, name):
        if cum > previous:
            top = le
        previous = cum
    return None if top is None else top * 1000


def sample_sum(samples: Samples, name: str) -> float:
    """A counter (``name_total``) or gauge, summed over its labels."""
    return sum(value for _labels, value in samples.get(name + "_total", samples.get(name, [])))


def histogram(samples: Samples, name: str) -> dict[str, Any]:
    """Count, mean and bucket-interpolated quantiles (ms) of a Prometheus histogram, and the
    share of observations at or below each bucket bound (``share_le_ms``: a CDF)."""
    bounds = _cumulative(samples, name)
    count = sum(v for _l, v in samples.get(name + "_count", []))
    total = sum(v for _l, v in samples.get(name + "_sum", []))
    out: dict[str, Any] = {"count": int(count)}
    if not count:
        return out
    out["mean_ms"] = round(total / count * 1000, 3)

    def estimate(q: float) -> float:
        target = q * count
        prev_le, prev_cum = 0.0, 0.0
        for le, cum in bounds:
            if cum >= target:
                if math.isinf(le):
                    return prev_le * 1000  # beyond the last finite bucket: a lower bound
                share = (target - prev_cum) / (cum - prev_cum) if cum > prev_cum else 1.0
                return (prev_le + (le - prev_le) * share) * 1000
            prev_le, prev_cum = le, cum
        return prev_le * 1000

    for q, key in ((0.5, "p50_ms"), (0.9, "p90_ms"), (0.99, "p99_ms")):
        out[key] = round(estimate(q), 2)
    out["max_at_most_ms"] = highest_bucket_ms(samples, name)
    out["share_le_ms"] = {
        f"{le * 1000:g}": round(cum / count, 4) for le, cum in bounds if not math.isinf(le)
    }
    return out
