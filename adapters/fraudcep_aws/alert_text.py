"""How an alert reads to a person: the short facts every notification shows, and the e-mail.

Slack, e-mail and logs show the same facts (rule, key, amounts, time window, alert id), so
they are worded once here. Everything shown is bounded in length: the matched payments come
from outside, and one odd record must not make a message too long to send.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from fraudcep_aws.stream_event import StreamAlert

__all__ = ["amounts", "email_body", "email_subject", "key_text", "shorten", "time_window"]

MAX_AMOUNTS_SHOWN: Final = 8
MAX_KEY_CHARS: Final = 200


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def key_text(alert: StreamAlert) -> str:
    """The key as people know it: a string key as is, anything else as compact JSON."""
    key = alert.key
    text = key if isinstance(key, str) else json.dumps(key, separators=(",", ":"), default=str)
    return shorten(" ".join(text.split()), MAX_KEY_CHARS)


def _amount(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def amounts(alert: StreamAlert) -> str:
    """The matched payments' amounts and, per currency, their total: ``"2,500.00 EUR +
    3,100.00 EUR = 5,600.00 EUR"``; ``"n/a"`` when no event has a numeric ``amount``."""
    shown: list[str] = []
    totals: dict[str, Decimal] = defaultdict(Decimal)
    count = 0
    for payment in alert.payments():
        if not isinstance(payment, dict):
            continue
        value = _amount(payment.get("amount"))
        if value is None:
            continue
        currency = shorten(str(payment.get("currency", "")).strip(), 8)
        count += 1
        totals[currency] += value
        if len(shown) < MAX_AMOUNTS_SHOWN:
            shown.append(f"{_money(value)} {currency}".strip())
    if not count:
        return "n/a"
    text = " + ".join(shown)
    if count > len(shown):
        text += f" + {count - len(shown)} more"
    if count > 1:
        text += " = " + ", ".join(
            f"{_money(total)} {currency}".strip() for currency, total in sorted(totals.items())
        )
    return text


def _iso(ms: int) -> str:
    try:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(ms: int) -> str:
    seconds = max(ms, 0) // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s" if seconds else f"{max(ms, 0)} ms"


def time_window(alert: StreamAlert) -> str:
    """``"2024-05-01T10:00:00Z → 2024-05-01T10:04:10Z (4m 10s)"`` (event time, UTC)."""
    return (
        f"{_iso(alert.first_ts)} → {_iso(alert.last_ts)} "
        f"({_duration(alert.last_ts - alert.first_ts)})"
    )


def email_subject(alert: StreamAlert) -> str:
    """One line, at most 200 characters (SES refuses line breaks in a subject)."""
    count = len(alert.payments())
    subject = f"[fraudcep] {alert.rule_id}: key {key_text(alert)}, {count} payment(s)"
    return shorten(" ".join(subject.split()), 200)


def email_body(alert: StreamAlert) -> str:
    """The alert's facts, then every matched payment as JSON, stage by stage."""
    lines = [
        f"Fraud alert from rule {alert.rule_id} (version {alert.rule_version})",
        "",
        f"Key:       {key_text(alert)}",
        f"Amounts:   {amounts(alert)}",
        f"Window:    {time_window(alert)}",
        f"Alert id:  {alert.alert_id}",
    ]
    if alert.detected_at is not None:
        lines.append(f"Detected:  {_iso(alert.detected_at)}")
    if alert.source:
        lines.append(f"Source:    {alert.source}")
    lines += ["", "Matched events:"]
    for stage, events in alert.events.items():
        lines.append(f"  {stage}:")
        lines += [
            "    " + shorten(json.dumps(event, sort_keys=True, default=str), 2000)
            for event in events
        ]
    return "\n".join(lines) + "\n"
