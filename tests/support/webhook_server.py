"""A local HTTP server standing in for Slack's incoming webhook.

It records every request it receives and answers with what the test asks for: ``200 ok``
by default, or a queue of scripted failures (``429`` with ``Retry-After``, ``500``) served
first. Bound to 127.0.0.1 on a free port; :func:`webhook` is the pytest fixture.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import pytest


@attrs.define
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define(eq=False)
class Webhook:
    """What the stand-in received, and what it will answer next."""

    url: str = ""
    received: list[Received] = attrs.Factory(list)
    failures: list[tuple[int, dict[str, str]]] = attrs.Factory(list)
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def fail_next(self, status: int, times: int = 1, **headers: str) -> None:
        """Answer the next *times* requests with *status* (and *headers*)."""
        with self.lock:
            self.failures.extend([(status, headers)] * times)

    def messages(self) -> list[Any]:
        """The JSON bodies of the requests answered with 200."""
        with self.lock:
            return [r.json() for r in self.received if r.headers.get("x-answered") == "200"]


def _handler(hook: Webhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with hook.lock:
                status, extra = hook.failures.pop(0) if hook.failures else (200, {})
                headers = {k.lower(): v for k, v in self.headers.items()}
                headers["x-answered"] = str(status)
                hook.received.append(Received(self.path, headers, body))
            payload = b"ok" if status == 200 else b"rate_limited" if status == 429 else b"error"
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A fresh Slack webhook stand-in for one test."""
    hook = Webhook()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hook))
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
