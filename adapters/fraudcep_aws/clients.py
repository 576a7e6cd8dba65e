"""boto3 clients with the settings every fraudcep AWS adapter shares.

The endpoint comes from the caller, else from boto3's own ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_<SERVICE>`` variables, so one code path serves AWS, LocalStack and
moto. Retries use botocore's ``standard`` mode (exponential back-off with jitter, throttling
errors included); adapters add their own loop only where AWS reports partial success in a
200 answer (unprocessed items, failed entries).
"""

from __future__ import annotations

import functools
from typing import Any

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
