"""Running ``fraudcep_flink`` jobs from the tests: they need the Flink virtualenv
(``scripts/flink-setup.sh``), the main environment has no PyFlink. Without it the tests are
skipped, except in CI (``CI`` set), where scripts/test.sh makes it and a missing one fails."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.paths import REPO


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def flink_python() -> str:
    """The Flink virtualenv's interpreter (``FRAUDCEP_FLINK_PYTHON``, else .venv-flink)."""
    python = os.environ.get("FRAUDCEP_FLINK_PYTHON") or str(REPO / ".venv-flink/bin/python")
    if not Path(python).is_file():
        _missing(f"no Flink virtualenv ({python}); run scripts/flink-setup.sh")
    return python


def flink_jars() -> str:
    """The directory of the connector jars (``FRAUDCEP_FLINK_JARS``, else the newest cached)."""
    given = os.environ.get("FRAUDCEP_FLINK_JARS")
    if given and Path(given).is_dir():
        return given
    cache = Path(
        os.environ.get("FRAUDCEP_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fraudcep"
    )
    found = sorted(p for p in cache.glob("flink-jars-*") if (p / ".resolved").is_file())
    if not found:
        _missing("no Flink connector jars; run scripts/flink-setup.sh")
    return str(found[-1])


def run_module(
    module: str, *args: str, cwd: Path, timeout: float = 600, flink_log_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` in the Flink virtualenv, the work tree on its path; the
    mini-cluster's own log goes to ``flink_log_dir`` (default: PyFlink's ``log/``)."""
    return subprocess.run(
        [flink_python(), "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=flink_env(flink_log_dir),
    )


def flink_env(flink_log_dir: Path | None = None) -> dict[str, str]:
    """The environment a Flink-virtualenv subprocess runs with (work tree, jars, and where
    the mini-cluster logs: the job's Python functions log there)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "adapters")])
    env["FRAUDCEP_FLINK_JARS"] = flink_jars()
    env["PYTHONUNBUFFERED"] = "1"
    if flink_log_dir is not None:
        flink_log_dir.mkdir(parents=True, exist_ok=True)
        env["FLINK_LOG_DIR"] = str(flink_log_dir)
    return env


def start_module(
    module: str, *args: str, cwd: Path, log: Path, flink_log_dir: Path | None = None
) -> subprocess.Popen[bytes]:
    """``python -m module args`` in the Flink virtualenv, in the background, its output to
    ``log`` (a long-running job; the caller stops it); the mini-cluster's own log (where the
    job's Python functions log) goes to ``flink_log_dir``."""
    env = flink_env(flink_log_dir)
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            [flink_python(), "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )
    finally:
        handle.close()


CLUSTER_SCRIPT = REPO / "scripts" / "flink-cluster.sh"


def flink_bin() -> Path:
    """The directory of Flink's distribution scripts (``flink``, ``jobmanager.sh``...) in the
    Flink virtualenv's PyFlink."""
    done = subprocess.run(
        [flink_python(), "-c", "import os, pyflink; print(os.path.dirname(pyflink.__file__))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return Path(done.stdout.strip()) / "bin"


@contextlib.contextmanager
def flink_cluster(directory: Path, timeout: float = 300) -> Iterator[str]:
    """A session cluster of ``scripts/flink-cluster.sh`` under ``directory`` for the ``with``
    block; yields its REST address (host:port). Stopped afterwards, also when the block or
    the start fails (the script's log files stay in ``directory/log``)."""
    env = dict(os.environ)
    env["FRAUDCEP_FLINK_PYTHON"] = flink_python()
    script = ["bash", str(CLUSTER_SCRIPT)]
    try:
        started = subprocess.run(
            [*script, "start", "--dir", str(directory)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
        assert started.returncode == 0, started.stderr[-5000:]
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(
            [*script, "stop", "--dir", str(directory)],
            capture_output=True,
            timeout=120,
            check=False,
            env=env,
        )


def flink_run(
    address: str, *args: str, cwd: Path, timeout: float = 600, log_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``flink run -m ADDRESS`` of the job module ``fraudcep_flink`` with ``args`` (``run
    --cluster ...``), attached (it returns when the job ends), as docs/flink.md gives it:
    the connector jars with ``-C`` (the client builds the job with them; the task managers
    load them from the same paths), the virtualenv's python for the client and the job. The
    work tree goes on the client's path; the cluster's task managers have it on theirs."""
    jars = sorted(Path(flink_jars()).glob("*.jar"))
    python = flink_python()
    command = [str(flink_bin() / "flink"), "run", "-m", address]
    for jar in jars:
        command += ["-C", jar.resolve().as_uri()]
    command += ["-pym", "fraudcep_flink", "-pyexec", python, "-pyclientexec", python, *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=flink_env(log_dir),
    )
