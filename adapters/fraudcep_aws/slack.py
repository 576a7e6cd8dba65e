"""Slack incoming-webhook messages for alerts: Block Kit layout and a sender that retries.

The sender uses only the standard library (the Lambda runtime has no ``requests``). It
honours Slack's rate limiting -- a 429 answer's ``Retry-After`` seconds are waited, up to a
bound, because sending sooner only earns another 429 -- and retries server errors and broken
connections with exponential back-off. Other 4xx answers (a revoked or mistyped webhook, a
payload Slack refuses) fail at once: repeating the same request cannot fix them.

The webhook URL is a secret (it is the credential): it never appears in errors or reprs.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from fraudcep.errors import ConfigurationError, FraudcepError
from fraudcep.runtime import Backoff
from fraudcep_aws.alert_text import amounts, key_text, shorten, time_window
from fraudcep_aws.stream_event import StreamAlert

__all__ = [
    "MAX_RETRY_AFTER_S",
    "SLACK_RETRY",
    "SlackError",
    "SlackWebhook",
    "check_webhook_url",
    "slack_message",
]

HEADER_LIMIT: Final = 150  # characters of a header block's plain_text
FIELD_LIMIT: Final = 2000  # characters of one section field
TEXT_LIMIT: Final = 3000  # characters of the fallback text we send (Slack allows more)
SLACK_RETRY: Final = Backoff(base_s=0.5, cap_s=8.0, max_attempts=5)
"""How hard one message is retried before the alert is reported as failed: 5 requests, the
first included; the wait before retry n is drawn from [0, min(8, 0.5 * 2**n)) seconds."""
MAX_RETRY_AFTER_S: Final = 30.0
"""A 429 asking for a longer wait fails at once: the stream retries the record later."""


class SlackError(FraudcepError):
    """A message Slack did not accept, after the retries that could help."""


def _escape(text: str) -> str:
    """Slack mrkdwn control characters, escaped as Slack asks (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return "`" + _escape(text.replace("`", "'")) + "`"


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": shorten(f"*{label}*\n{value}", FIELD_LIMIT)}


def slack_message(alert: StreamAlert) -> dict[str, Any]:
    """The webhook payload: a header, the facts as section fields, a context line, and the
    plain ``text`` that notifications and clients without Block Kit show."""
    count = len(alert.payments())
    fields = [
        _field("Rule", f"{_code(alert.rule_id)} v{alert.rule_version}"),
        _field("Key", _code(key_text(alert))),
        _field("Amounts", _escape(amounts(alert))),
        _field("Payments", str(count)),
        _field("Time window (event time)", _escape(time_window(alert))),
        _field("Alert id", _code(alert.alert_id)),
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": shorten(f"Fraud alert: {alert.rule_id}", HEADER_LIMIT),
                "emoji": True,
            },
        },
        {"type": "section", "fields": fields},
    ]
    if alert.source:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": shorten(f"source: {_escape(alert.source)}", 2000)}
                ],
            }
        )
    text = (
        f"Fraud alert {alert.rule_id} for key {key_text(alert)}: {count} payment(s), "
        f"{amounts(alert)}, {time_window(alert)}; alert {alert.alert_id}"
    )
    return {"text": shorten(_escape(text), TEXT_LIMIT), "blocks": blocks}


def check_webhook_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL, else :class:`ConfigurationError` (which
    does not repeat the URL: it may be a real credential with a typo)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigurationError(
            "the Slack webhook is not an http(s) URL "
            f"(it starts with {url.strip()[:8]!r}; expected https://hooks.slack.com/services/...)"
        )
    return url.strip()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date, or garbage: fall back to back-off
    return seconds if seconds >= 0 and seconds == seconds else None


@attrs.define
class SlackWebhook:
    """Posts messages to one incoming webhook."""

    url: str = attrs.field(repr=False, converter=check_webhook_url)
    retry: Backoff = SLACK_RETRY
    """Back-off between requests of one message (its ``max_attempts``: requests in all)."""
    max_retry_after_s: float = MAX_RETRY_AFTER_S
    timeout_s: float = 10.0

    def post(
        self, payload: dict[str, Any], *, may_wait: Callable[[float], bool] = lambda s: True
    ) -> int:
        """Send ``payload``; returns the number of requests it took. ``may_wait(seconds)``
        says whether there is time left to wait that long before a retry.

        Raises :class:`SlackError` when Slack refuses the message, or when the retries (or
        the time) run out."""
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        retries = self.retry.start()
        while True:
            status, retry_after, detail = self._send(body)
            if 200 <= status < 300:
                return retries.failures + 1
            last = f"HTTP {status} {detail}".strip() if status else detail
            asked: float | None = None
            if status == 429:
                asked = _retry_after(retry_after)
                if asked is not None and asked > self.max_retry_after_s:
                    raise SlackError(
                        f"rate limited: Slack asks to wait {asked:g}s, more than the "
                        f"{self.max_retry_after_s:g}s a delivery waits"
                    )
            elif status != 0 and status < 500:
                raise SlackError(f"Slack refused the message: {last}")
            wait = retries.failed()
            if wait is None:
                raise SlackError(f"gave up after {retries.failures} attempt(s): {last}")
            wait = wait if asked is None else asked
            if not may_wait(wait):
                raise SlackError(f"{last}; no time left to wait {wait:.1f}s and retry")
            retries.wait(wait)

    def _send(self, body: bytes) -> tuple[int, str | None, str]:
        """(status, Retry-After, short detail); status 0 when no answer came."""
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                answer.read(1024)
                return int(answer.status), None, ""
        except urllib.error.HTTPError as exc:
            try:
                text = exc.read(200).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                text = ""
            finally:
                exc.close()
            return exc.code, exc.headers.get("Retry-After"), shorten(" ".join(text.split()), 200)
        except urllib.error.URLError as exc:
            return 0, None, f"no answer: {_reason(exc.reason)}"
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            return 0, None, f"no answer: {_reason(exc)}"


def _reason(reason: object) -> str:
    """An error's text without any URL (the webhook URL is a credential)."""
    if isinstance(reason, BaseException):
        text = f"{type(reason).__name__}: {reason}"
    else:
        text = str(reason)
    return " ".join(word for word in text.split() if "://" not in word)
