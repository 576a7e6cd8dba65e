"""The backtest's HTML report: one self-contained file (inline CSS, plots as inline SVG drawn
by matplotlib, no script, no reference to anything outside the file), so that it opens
without a network and can be kept as a CI artefact or mailed."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from fraudcep_backtest.backtest import ALL_RULES, BacktestResult, Comparison, RuleStats
from fraudcep_backtest.shadow import ShadowResult

__all__ = ["anchor", "render_html", "render_shadow_html", "write_html"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
.warning { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.5em; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
.muted { color: #666; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: float | int | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{100 * value:.1f} %"
    return f"{value:,}"


def anchor(rule_id: str) -> str:
    """The HTML id of a rule's section: ``rule-`` and the id, other characters than letters,
    digits, ``-``, ``_`` and ``.`` as ``_`` (``(all rules)`` is ``rule-_all_rules_``)."""
    return "rule-" + re.sub(r"[^A-Za-z0-9_.-]", "_", rule_id)


def _rule_table(stats: RuleStats, prefix: str = "") -> str:
    rows = [
        ("alerts", _num(stats.alerts)),
        ("distinct keys", _num(stats.distinct_keys)),
        ("payments flagged", _num(stats.payments_flagged)),
    ]
    if stats.fraud_caught is not None:
        rows += [
            ("fraud payments caught", _num(stats.fraud_caught)),
            ("good payments flagged", _num(stats.good_flagged)),
            ("precision (payments)", _num(stats.precision, percent=True)),
            ("recall (payments)", _num(stats.recall, percent=True)),
        ]
    days = stats.alerts_per_day
    if days:
        rows.append(
            ("alerts per day (mean over days with alerts)", f"{stats.alerts / len(days):.1f}")
        )
    body = "".join(f'<tr><td class="name">{_e(k)}</td><td>{v}</td></tr>' for k, v in rows)
    version = "" if stats.version is None else f" <span class='muted'>v{stats.version}</span>"
    day_rows = "".join(
        f'<tr><td class="name">{_e(d)}</td><td>{n:,}</td></tr>' for d, n in days.items()
    )
    day_table = (
        f'<details><summary>alerts per day</summary><table><tr><th class="name">day (UTC)</th>'
        f"<th>alerts</th></tr>{day_rows}</table></details>"
        if days
        else ""
    )
    return (
        f'<section class="rule" id="{prefix}{_e(anchor(stats.rule_id))}">'
        f"<h3>{_e(stats.rule_id)}{version}</h3>"
        f"<table>{body}</table>{day_table}</section>"
    )


def _comparison_table(
    rows: Sequence[Comparison], labelled: bool, sides: tuple[str, str] = ("baseline", "candidate")
) -> str:
    base, cand = sides
    heads = [
        "rule",
        f"alerts ({cand})",
        f"alerts ({base})",
        f"alerts only {cand}",
        f"alerts only {base}",
        f"payments only {cand}",
        f"payments only {base}",
        "payments both",
    ]
    if labelled:
        heads += [f"fraud only {cand}", f"fraud only {base}"]
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in heads), "</tr>"]
    for c in rows:
        name = (
            c.rule_id
            + ("" if c.in_baseline else " (new)")
            + ("" if c.in_candidate else " (removed)")
        )
        cells: list[int | None] = [
            c.alerts_candidate,
            c.alerts_baseline,
            c.alerts_only_candidate,
            c.alerts_only_baseline,
            c.payments_only_candidate,
            c.payments_only_baseline,
            c.payments_both,
        ]
        if labelled:
            cells += [c.fraud_only_candidate, c.fraud_only_baseline]
        out.append(f'<tr><td class="name">{_e(name)}</td>')
        out.extend(f"<td>{_num(v)}</td>" for v in cells)
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _svg(figure: Any) -> str:
    """A matplotlib figure as SVG markup to put inline: no XML prolog, DOCTYPE, metadata or
    namespace declarations (HTML needs none, and so the file names no URL at all)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    return text


def _plots(
    all_rules: Sequence[RuleStats],
    fraud_payments: int | None,
    comparison: Sequence[Comparison] | None,
    sides: tuple[str, str] = ("baseline", "candidate"),
) -> list[tuple[str, str]]:
    """Alerts per day by rule; with labels caught vs good flagged; with a comparison the
    flagged payments of each side (``sides``: the names of the baseline and the candidate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = [s for s in all_rules if s.rule_id != ALL_RULES]
    plots: list[tuple[str, str]] = []
    days = sorted({d for s in rules for d in s.alerts_per_day})
    fig, ax = plt.subplots(figsize=(9, 3.6))
    if days:
        positions = {d: i for i, d in enumerate(days)}
        for stats in rules:
            points = [positions[d] for d in stats.alerts_per_day]
            ax.plot(points, list(stats.alerts_per_day.values()), marker="o", label=stats.rule_id)
        step = max(1, len(days) // 12)
        ax.set_xticks(range(0, len(days), step), days[::step], rotation=30, ha="right")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no alerts", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("alerts")
    ax.set_title("Alerts per day (UTC) by rule")
    plots.append(("alerts per day by rule", _svg(fig)))
    plt.close(fig)

    if fraud_payments is not None:
        fig, ax = plt.subplots(figsize=(9, 3.6))
        names = [s.rule_id for s in rules]
        xs = list(range(len(names)))
        width = 0.4
        ax.bar(
            [x - width / 2 for x in xs],
            [s.fraud_caught or 0 for s in rules],
            width,
            label="fraud payments caught",
            color="#2a7",
        )
        ax.bar(
            [x + width / 2 for x in xs],
            [s.good_flagged or 0 for s in rules],
            width,
            label="good payments flagged",
            color="#c44",
        )
        ax.set_xticks(list(xs), names, rotation=15, ha="right")
        ax.set_ylabel("payments")
        ax.set_title(f"Caught vs good flagged ({fraud_payments:,} fraud payments)")
        ax.legend(fontsize="small")
        plots.append(("caught vs good flagged", _svg(fig)))
        plt.close(fig)

    if comparison is not None:
        fig, ax = plt.subplots(figsize=(9, 3.6))
        rows = comparison
        names = [c.rule_id for c in rows]
        xs = list(range(len(names)))
        width = 0.27
        ax.bar(
            [x - width for x in xs],
            [c.payments_only_baseline for c in rows],
            width,
            label=f"only {sides[0]}",
            color="#888",
        )
        ax.bar(list(xs), [c.payments_both for c in rows], width, label="both", color="#58b")
        ax.bar(
            [x + width for x in xs],
            [c.payments_only_candidate for c in rows],
            width,
            label=f"only {sides[1]}",
            color="#e93",
        )
        ax.set_xticks(list(xs), names, rotation=15, ha="right")
        ax.set_ylabel("payments flagged")
        ax.set_title(f"{sides[0].capitalize()} vs {sides[1]}: flagged payments")
        ax.legend(fontsize="small")
        plots.append((f"{sides[0]} vs {sides[1]}", _svg(fig)))
        plt.close(fig)
    return plots


def _row(name: str, value: str) -> str:
    return f'<tr><td class="name">{_e(name)}</td><td>{value}</td></tr>'


def _page(title: str, body: Sequence[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{_e(title)}</h1>",
            *body,
            "</body></html>",
        ]
    )


def _figures(plots: Sequence[tuple[str, str]]) -> list[str]:
    return ["<h2>Plots</h2>"] + [
        f'<figure class="plot"><figcaption>{_e(name)}</figcaption>{svg}</figure>'
        for name, svg in plots
    ]


def render_html(result: BacktestResult, *, title: str = "fraudcep backtest") -> str:
    """The report as one HTML document."""
    labelled = result.fraud_payments is not None
    parts = [
        "<table>",
        _row("source", _e(result.source)),
        _row("payments read", f"{result.payments:,}"),
        _row("event time", f"{_when(result.first_ts)} to {_when(result.last_ts)}"),
        _row("late payments (dropped)", f"{result.late_payments:,}"),
    ]
    if labelled:
        parts.append(
            _row(
                "fraud labels / labelled payments read",
                f"{_num(result.fraud_labels)} / {_num(result.fraud_payments)}",
            )
        )
    if result.disabled_rules:
        parts.append(_row("disabled rules", _e(", ".join(result.disabled_rules))))
    parts.append("</table>")
    parts.extend(f'<p class="warning">{_e(w)}</p>' for w in result.warnings)
    parts.append("<h2>Rules</h2>")
    parts.extend(_rule_table(s) for s in result.rules)
    if result.comparison is not None and result.baseline_rules is not None:
        parts.append("<h2>Baseline vs candidate</h2>")
        parts.append(_comparison_table(result.comparison, labelled))
        parts.append("<h3>Baseline rules</h3>")
        parts.extend(_rule_table(s, "baseline-") for s in result.baseline_rules)
    parts += _figures(_plots(result.rules, result.fraud_payments, result.comparison))
    return _page(title, parts)


def write_html(result: BacktestResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_html(result))


def render_shadow_html(result: ShadowResult, *, title: str = "fraudcep shadow report") -> str:
    """The shadow report (:func:`fraudcep_backtest.shadow.compare_shadow`) as one HTML
    document, drawn like the backtest's: shadow rules in the place of the candidate, live
    rules in the place of the baseline."""
    labelled = result.fraud_labels is not None
    parts = [
        "<table>",
        _row("source", _e(result.source)),
        _row("event time (alerts' last payment)", f"{_when(result.start)} to {_when(result.end)}"),
        _row(
            "alerts read / outside the range", f"{result.alerts_read:,} / {result.alerts_outside:,}"
        ),
    ]
    if labelled:
        parts.append(_row("fraud labels", _num(result.fraud_labels)))
    if result.pairs:
        shown = ", ".join(f"{k} vs {v}" for k, v in result.pairs.items())
        parts.append(_row("pairs (shadow vs live)", _e(shown)))
    parts.append("</table>")
    parts.extend(f'<p class="warning">{_e(w)}</p>' for w in result.warnings)
    parts.append("<h2>Shadow vs live</h2>")
    parts.append(_comparison_table(result.comparison, labelled, sides=("live", "shadow")))
    parts.append("<h2>Shadow rules</h2>")
    parts.extend(_rule_table(s, "shadow-") for s in result.shadow_rules)
    parts.append("<h2>Live rules</h2>")
    parts.extend(_rule_table(s, "live-") for s in result.live_rules)
    shadow_rules = [s for s in result.shadow_rules if s.rule_id != ALL_RULES]
    rules = [attrs.evolve(s, rule_id=f"{s.rule_id} (shadow)") for s in shadow_rules]
    rules += result.live_rules
    fraud = result.fraud_labels
    parts += _figures(_plots(rules, fraud, result.comparison, sides=("live", "shadow")))
    return _page(title, parts)
