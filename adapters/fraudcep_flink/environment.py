"""A PyFlink execution environment in thread mode, set up from the running interpreter.

Thread mode runs the Python functions inside the TaskManager's JVM (through pemja) instead of
in separate Python worker processes; it is several times faster here than process mode. What
it needs, set by :func:`local_environment` itself:

- ``python.executable`` (and ``python.client.executable``): the interpreter of the Flink
  virtualenv, not the ``python`` on PATH (pemja asks it where libpython is);
- ``PYTHONPATH`` in the environment of the JVM that PyFlink starts: the embedded interpreter
  does not see the virtualenv's site-packages (nor the work tree a .pth file adds), so every
  directory of this interpreter's ``sys.path`` outside the base installation goes there.

Jars (the Kafka connector) are added with ``pipeline.jars``: ``FRAUDCEP_FLINK_JARS`` (what
``scripts/flink-setup.sh`` prints) or ``jar_dir``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["flink_environment", "local_environment", "python_path"]


def python_path() -> list[str]:
    """The directories the embedded interpreter needs: this interpreter's ``sys.path`` less
    the base installation's own (the standard library, which it finds by itself)."""
    base = (os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix))
    out: list[str] = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        if real.startswith(base) and not real.startswith(os.path.realpath(sys.prefix)):
            continue
        if real not in out:
            out.append(real)
    return out


def local_environment(
    *,
    parallelism: int = 1,
    thread_mode: bool = True,
    jar_dir: str | os.PathLike[str] | None = None,
    watermark_interval_ms: int | None = None,
    extra: dict[str, str] | None = None,
) -> Any:
    """A ``StreamExecutionEnvironment`` (a local mini-cluster when run outside a cluster)."""
    path = python_path()
    old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in path]
    os.environ["PYTHONPATH"] = os.pathsep.join(path + old)

    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.execution-mode", "thread" if thread_mode else "process")
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    jars_from = jar_dir if jar_dir is not None else os.environ.get("FRAUDCEP_FLINK_JARS")
    if jars_from:
        jars = sorted(Path(jars_from).glob("*.jar"))
        if jars:
            config.set_string("pipeline.jars", ";".join(j.resolve().as_uri() for j in jars))
    if watermark_interval_ms is not None:
        config.set_string("pipeline.auto-watermark-interval", f"{watermark_interval_ms} ms")
    for name, value in (extra or {}).items():
        config.set_string(name, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(parallelism)
    return env


def flink_environment(
    *,
    parallelism: int = 1,
    thread_mode: bool = True,
    local: bool = True,
    restart_attempts: int = 3,
    extra: dict[str, str] | None = None,
) -> Any:
    """The job's environment. ``local``: a mini-cluster set up from this interpreter (see
    :func:`local_environment`); otherwise the one ``flink run`` hands the job, where the
    cluster's configuration says which Python the task managers run (``python.executable``,
    see docs/flink.md) and only the execution mode is set here. Failed tasks restart from the
    last checkpoint up to ``restart_attempts`` times, 1 s apart."""
    settings = {
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": str(restart_attempts),
        "restart-strategy.fixed-delay.delay": "1 s",
        **(extra or {}),
    }
    if local:
        return local_environment(parallelism=parallelism, thread_mode=thread_mode, extra=settings)
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.execution-mode", "thread" if thread_mode else "process")
    for name, value in settings.items():
        config.set_string(name, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(parallelism)
    return env
