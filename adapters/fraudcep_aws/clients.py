"""boto3 clients with the settings every fraudcep AWS adapter shares.

The endpoint comes from the caller, else from boto3's own ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_<SERVICE>`` variables, so one code path serves AWS, LocalStack and
moto. Retries use botocore's ``standard`` mode (exponential back-off with jitter, throttling
errors included); adapters add their own loop only where AWS reports partial success in a
200 answer (unprocessed items, failed entries).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config

DEFAULT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=32,  # the adapters write from small thread pools
)


@functools.cache
def _session() -> Any:
    return boto3.session.Session()


def client(service: str, *, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A client of ``service``; ``endpoint_url``/``region`` override the environment's."""
    return _session().client(
        service, endpoint_url=endpoint_url, region_name=region, config=DEFAULT_CONFIG
    )


def location_options(
    query: str, *, where: str, parameters: Sequence[str], error: Callable[[str], Exception]
) -> dict[str, str]:
    """The ``name=value`` options of a sink or store URL's query, checked: only known names,
    each once, and ``endpoint_url`` an http(s) URL. ``error`` builds the exception, whose
    message starts with ``where`` (what the URL is for, and the URL)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise error(f"{where}: bad query string: {exc}") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in parameters:
            known = ", ".join(parameters) or "none"
            raise error(f"{where}: unknown parameter {name!r} (known: {known})")
        if name in options:
            raise error(f"{where}: parameter {name!r} given twice")
        options[name] = value
    endpoint = options.get("endpoint_url")
    if endpoint and (urlsplit(endpoint).scheme not in ("http", "https") or "://" not in endpoint):
        raise error(f"{where}: endpoint_url must be an http(s) URL, got {endpoint!r}")
    return options
