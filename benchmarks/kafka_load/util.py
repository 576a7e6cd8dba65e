"""Small helpers: logging, option types, CPU time and load of processes and the machine."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any, Final

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def duration_ms(text: str) -> int:
    """``5ms``, ``1s`` or a bare number of milliseconds."""
    text = text.strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)?", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 10ms or 1s, got {text!r}")
    value = float(match.group(1)) * (1000 if match.group(2) == "s" else 1)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return round(value)


def int_list(text: str) -> list[int]:
    try:
        scaled = text.lower().replace("k", "e3").replace("m", "e6")
        values = [int(float(x)) for x in scaled.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers: {text!r}")
    return values


def duration_list(text: str) -> list[int]:
    return [duration_ms(x) for x in text.split(",") if x.strip()]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux ``/proc``), None when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_seconds(pid: int) -> float:
    """CPU time of the live processes ``pid`` started (the runner's compaction worker)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            total += cpu_seconds(int(child)) or 0.0
    return total


def machine_busy_seconds() -> float:
    """CPU seconds spent on all cores, by anything (``/proc/stat``: all but idle and iowait)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": loadavg(),
    }
