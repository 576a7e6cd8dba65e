"""A real AWS-protocol endpoint for tests: moto's standalone server over HTTP.

:func:`aws_endpoint` is a session-scoped pytest fixture giving the endpoint URL:
``FRAUDCEP_AWS_ENDPOINT`` when it is set (a server started elsewhere, e.g. by
``scripts/moto.sh start``), otherwise a server that ``scripts/moto.sh`` starts in a temporary
directory on first use and stops at the end of the session. Clients reach it through boto3's
``endpoint_url``, the way a user points the same code at LocalStack or AWS; nothing is
patched in-process. The fixture also sets dummy credentials and a region when none are set,
so that boto3 signs requests (moto accepts any signature).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.paths import REPO

ENV_VAR = "FRAUDCEP_AWS_ENDPOINT"
SCRIPT = REPO / "scripts" / "moto.sh"
REGION = "us-east-1"


def _run(command: str, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FRAUDCEP_PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), command, "--dir", str(directory)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _dummy_credentials() -> None:
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", REGION),
    ):
        os.environ.setdefault(name, value)


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """Endpoint URL of a moto server (see the module docstring)."""
    _dummy_credentials()
    given = os.environ.get(ENV_VAR, "").strip()
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="fraudcep-moto-") as tmp:
        directory = Path(tmp)
        proc = _run("start", directory)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(
                f"scripts/moto.sh start failed (exit {proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        try:
            yield lines[-1].strip()
        finally:
            _run("stop", directory)


def client(endpoint: str, service: str) -> Any:
    """A boto3 client of *service* at the test endpoint."""
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def unique(prefix: str) -> str:
    """A resource name no other test uses (the server is shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
