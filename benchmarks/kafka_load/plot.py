"""The latency plots, drawn with matplotlib (the ``bench`` extra) from a results file."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .latency import STAGES, TARGET_P99_MS
from .stats import quantile

COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.hashsalt": "fraudcep", "svg.fonttype": "none"})
    return plt


def _plain(*axes: Any) -> None:
    """Log-scale ticks as plain numbers (20, not 2e1)."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    for axis in axes:
        axis.set_major_formatter(fmt)
        axis.set_minor_formatter(FuncFormatter(lambda _v, _pos: ""))


def _ok(run: dict[str, Any]) -> bool:
    return "error" not in run and bool(run.get("latency_ms", {}).get("count"))


def _cdf(stage: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(x ms, share) of a stage: its quantile points, or a histogram's buckets."""
    if stage.get("cdf_ms"):
        points = stage["cdf_ms"]
        return list(points), [i / (len(points) - 1) for i in range(len(points))]
    shares = stage.get("share_le_ms") or {}
    pairs = sorted((float(k), v) for k, v in shares.items())
    return [k for k, _ in pairs], [v for _, v in pairs]


def _note(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    runs = results.get("latency", {}).get("runs", [])
    loads = [r["loadavg_1m_at_start"] for r in runs if _ok(r) and "loadavg_1m_at_start" in r]
    load = (
        f"1-min load at the runs' start {min(loads):g}-{max(loads):g}"
        if loads
        else f"load at start {machine.get('loadavg_at_start', '?')}"
    )
    return (
        f"one runner process; {machine.get('cpus', '?')} cores shared by broker, producer, "
        f"runner, reader (and other work); {load}; {results.get('date', '')[:10]}"
    )


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)


def write_latency_plot(results: dict[str, Any], path: Path) -> None:
    """Left: p50/p90/p99 against the input rate (the ladder); right: the end-to-end CDF of
    each run at the base rate (one line per run)."""
    plt = _pyplot()
    latency = results["latency"]
    runs = [r for r in latency["runs"] if _ok(r)]
    ladder_ci, base_rate = latency["ladder_commit_interval_ms"], latency["rate"]
    ladder = sorted(
        (r for r in runs if r["commit_interval_ms"] == ladder_ci), key=lambda r: r["rate"]
    )
    sweep = sorted(
        (r for r in runs if r["rate"] == base_rate), key=lambda r: r["commit_interval_ms"]
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    rates = sorted({r["rate"] for r in ladder})
    for color, key in zip(COLORS, ("p50", "p90", "p99"), strict=False):
        best = [min(r["latency_ms"][key] for r in ladder if r["rate"] == x) for x in rates]
        left.plot(rates, best, color=color, label=f"{key} (best run)")
        for r in ladder:
            kept = r["runner_kept_up"] and r["producer_kept_pace"]
            left.plot(
                r["rate"], r["latency_ms"][key], "o", color=color, mfc=color if kept else "white"
            )
    left.axhline(
        TARGET_P99_MS, color="#999", ls="--", lw=1, label=f"target p99 {TARGET_P99_MS:g} ms"
    )
    left.set(
        yscale="log",
        xlabel="input rate (events/s)",
        ylabel="latency (ms, log scale)",
        title=f"Alert latency vs input rate (commit interval {ladder_ci} ms)",
    )
    left.set_xlim(0, max([base_rate, *rates]) * 1.1)
    left.grid(True, which="both", color="#e5e5e5")
    left.legend(loc="upper left", title="hollow: fell behind")
    _plain(left.yaxis)
    for i, r in enumerate(sweep):
        x, y = _cdf({"cdf_ms": r["cdf_ms"]})
        right.plot(
            x,
            y,
            color=COLORS[i % len(COLORS)],
            label=f"commit {r['commit_interval_ms']} ms, p99 {r['latency_ms']['p99']:g}",
        )
    right.axvline(TARGET_P99_MS, color="#999", ls="--", lw=1)
    right.set(
        xscale="log",
        xlabel="latency (ms, log scale)",
        ylabel="fraction of alerts",
        title=f"Latency CDF at {base_rate:,} events/s",
        ylim=(0, 1.01),
    )
    right.grid(True, which="both", color="#e5e5e5")
    right.legend(loc="lower right", fontsize=8)
    _plain(right.xaxis)
    fig.suptitle(_note(results), fontsize=8, color="#555")
    _save(fig, path)
    plt.close(fig)


def _median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    p99 = statistics.median_low([r["latency_ms"]["p99"] for r in runs])
    return next(r for r in runs if r["latency_ms"]["p99"] == p99)


def write_stages_plot(
    results: dict[str, Any], path: Path, baseline: dict[str, Any] | None = None
) -> None:
    """Left: the CDF of every stage of one run at the base rate (the one with the median
    p99); right: the end-to-end CDF of each run at the base rate, and of ``baseline``'s
    (dashed: e.g. before a change)."""
    plt = _pyplot()
    base_rate = results["latency"]["rate"]
    runs = [r for r in results["latency"]["runs"] if _ok(r) and r["rate"] == base_rate]
    runs = [r for r in runs if r.get("stages_ms")]
    if not runs:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    run = _median_run(runs)
    for i, (name, label) in enumerate(STAGES.items()):
        stage = run["stages_ms"].get(name, {})
        x, y = _cdf(stage)
        if not x:
            continue
        style = "-" if stage.get("cdf_ms") else "-."
        if name == "end_to_end":
            style = "-"
        right_label = f"{label}: p99 {stage.get('p99', '?')}"
        left.plot(
            [max(v, 0.05) for v in x],
            y,
            style,
            color=COLORS[i % len(COLORS)],
            lw=2.5 if name == "end_to_end" else 1.5,
            label=right_label,
            marker="" if stage.get("cdf_ms") else ".",
        )
    left.axvline(TARGET_P99_MS, color="#999", ls="--", lw=1)
    left.axhline(0.99, color="#ccc", lw=1)
    left.set(
        xscale="log",
        xlabel="ms (log scale)",
        ylabel="fraction",
        title=f"Stages, one run at {base_rate:,}/s, commit {run['commit_interval_ms']} ms\n"
        "(dash-dot, dots: the runner's histogram buckets)",
        ylim=(0, 1.01),
        xlim=(0.1, 1000),
    )
    left.grid(True, which="both", color="#e5e5e5")
    left.legend(loc="lower right", fontsize=7)
    _plain(left.xaxis)
    groups = [("after" if baseline else "all runs", runs, COLORS[0], "-")]
    if baseline:
        groups.append(("before", _baseline_runs(baseline), "#555", "--"))
    for label, source, color, style in groups:
        for r in source:  # each run, thin
            x, y = _cdf({"cdf_ms": r["cdf_ms"]})
            right.plot(x, y, style, color=color, lw=0.6, alpha=0.35)
        pooled = sorted(v for r in source for v in r["cdf_ms"])  # equal weight per run
        if pooled:
            p99s = sorted(r["latency_ms"]["p99"] for r in source)
            right.plot(
                pooled,
                [i / (len(pooled) - 1) for i in range(len(pooled))],
                style,
                color=color,
                lw=2.5,
                label=f"{label}, {len(source)} runs pooled: p99 {quantile(pooled, 0.99):.0f} "
                f"(runs {p99s[0]:.0f}-{p99s[-1]:.0f})",
            )
    right.axvline(TARGET_P99_MS, color="#999", ls="--", lw=1)
    right.axhline(0.99, color="#ccc", lw=1)
    right.set(
        xscale="log",
        xlabel="end-to-end latency (ms, log scale)",
        ylabel="fraction of alerts",
        title="End to end: each run (thin) and pooled",
        ylim=(0, 1.01),
    )
    right.grid(True, which="both", color="#e5e5e5")
    right.legend(loc="lower right", fontsize=7)
    _plain(right.xaxis)
    fig.suptitle(_note(results), fontsize=8, color="#555")
    _save(fig, path)
    plt.close(fig)


def _baseline_runs(baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    if baseline is None:
        return []
    rate = baseline["latency"]["rate"]
    return [r for r in baseline["latency"]["runs"] if _ok(r) and r["rate"] == rate]
