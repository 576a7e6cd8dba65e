"""The shadow report's HTML page rendered by headless Chromium: a report of a shadow rule
against the live rule it is paired with, with labels, shows a page with its three plots
(alerts per day, caught vs good flagged, live vs shadow) in the report's colours, one below
the other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.browser import chromium, screenshot

pytest.importorskip("pyarrow")
pytest.importorskip("matplotlib")

from test_backtest_browser import (
    BOTH,
    CAUGHT,
    FIRST_LINE,
    GOOD_FLAGGED,
    ONLY_BASELINE,
    ONLY_CANDIDATE,
    pixels_of,
)

from fraudcep import Engine
from fraudcep.payments.synthetic import PaymentGenerator
from fraudcep.rules import load_rules
from fraudcep.runtime.output_records import alert_value
from fraudcep_backtest.report import render_shadow_html
from fraudcep_backtest.shadow import compare_shadow

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1200, 5000
CANDIDATE = """\
- id: big-next
  mode: shadow
  key: user_id
  pattern: [{name: p, where: amount > 300 and amount < 2000}]
"""
BASELINE = "- {id: big, key: user_id, pattern: [{name: p, where: amount > 900}]}"


def test_the_shadow_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    chromium()  # skipped (failed in CI) at once without the browser
    # two days and more of payments: the alerts-per-day plot has lines, not single points
    generator = PaymentGenerator(seed=5, rate=0.02, scenarios_per_10k=300, safe_noise=False)
    rows = [dict(p) for p in generator.payments(4000)]
    fraud = [r["payment_id"] for r in rows if "scenario" in r][::2]
    engine = Engine([load_rules(CANDIDATE)[0].rule, load_rules(BASELINE)[0].rule], timestamp="ts")
    records = [json.loads(alert_value(a)) for a in engine.process_many(rows) + engine.flush()]
    result = compare_shadow(
        [r for r in records if "mode" not in r],
        [r for r in records if r.get("mode") == "shadow"],
        pairs={"big-next": "big"},
        labels=fraud,
    )
    html = tmp_path / "shadow.html"
    html.write_text(render_shadow_html(result), encoding="utf-8")
    png = tmp_path / "shadow.png"
    screenshot(html, png, width=WIDTH, height=HEIGHT)
    image = mpimg.imread(png)
    assert image.shape[:2] == (HEIGHT, WIDTH)
    rgb = image[:, :, :3] * (255 if image.dtype.kind == "f" else 1)
    not_white = np.any(rgb < 245, axis=2)
    assert not_white.mean() > 0.03, f"a blank page: {not_white.mean():.1%} of it is not white"
    assert not not_white[-200:].any(), "the report is longer than the screenshot"

    def median_row(colour: tuple[int, int, int], name: str, across: int = 20) -> float:
        ys = np.nonzero(pixels_of(image, colour).sum(axis=1) >= across)[0]
        runs = np.split(ys, np.nonzero(np.diff(ys) > 1)[0] + 1)
        ys = np.concatenate([r for r in runs if len(r) >= 5] or [ys[:0]])
        assert len(ys) > 10, f"{name} ({colour}) is not on the page"
        return float(np.median(ys))

    per_day = median_row(FIRST_LINE, "the alerts-per-day lines", across=2)
    caught = median_row(CAUGHT, "caught")
    good = median_row(GOOD_FLAGGED, "good flagged")
    sides = [
        median_row(ONLY_BASELINE, "only live"),
        median_row(BOTH, "both"),
        median_row(ONLY_CANDIDATE, "only shadow"),
    ]
    assert per_day < min(caught, good) and max(caught, good) < min(sides)
