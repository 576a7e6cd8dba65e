"""``fraudcep run``: the exactly-once Kafka runner (see ``docs/kafka.md``).

Stop signals: :func:`catch_stop_signals` runs first thing in :func:`fraudcep_cli.main.main`,
before anything heavy is imported, and remembers a SIGTERM or SIGINT until the runner's own
handlers take over; a stop requested before the runner started ends it with exit code 0
without connecting to Kafka. A supervisor that must never see the default action (killed by
the signal) in the interpreter's own start-up, before the first line of fraudcep runs, can
start the process with SIGTERM blocked: the handler unblocks it once it is installed, and a
signal that arrived in between is then delivered to it. This module imports only the
standard library at the top.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

DESCRIPTION = (
    "Detect fraud in the payments of a Kafka topic, exactly once: a consumer group reads "
    "the input topic, runs the rules on every partition's payments and commits alerts "
    "(and dead letters) together with the input offsets in Kafka transactions. Engine "
    "state is checkpointed so that restarts and rebalances lose and repeat nothing. "
    "Every option can also be set as FRAUDCEP_<OPTION> in the environment or as "
    "<option> in a TOML config file (--config); flags win over the environment, which "
    "wins over the file. Stops gracefully on SIGTERM/SIGINT."
)
CONFIG_ENV = "FRAUDCEP_CONFIG"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_BAD_CONFIG = 2

_stop_requests: list[int] = []
"""Stop signals received before the runner's own handlers were installed."""


def catch_stop_signals() -> None:
    """Remember SIGTERM and SIGINT from now on (see the module docstring), and unblock them
    in case the process was started with them blocked. Only from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def remember(signum: int, _frame: FrameType | None) -> None:
        _stop_requests.append(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, remember)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def stop_requested() -> int | None:
    """The first stop signal :func:`catch_stop_signals` caught, if any."""
    return _stop_requests[0] if _stop_requests else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fraudcep_kafka.config import OPTIONS

    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML file with options (top level or a [runner] table; env {CONFIG_ENV})",
    )
    for option in OPTIONS:
        default = option.default
        shown = {
            "instance_id": "the host name",
            "rules": "the packaged default rules",
            "sink": "none",
            "lists": "none",
        }.get(option.name, default)
        # --checkpoint reads as naturally as --checkpoints beside --sink: accept both.
        aliases = ["--checkpoint"] if option.name == "checkpoints" else []
        parser.add_argument(
            option.flag,
            *aliases,
            dest=option.name,
            default=None,
            action="append" if option.repeatable else "store",
            metavar=option.metavar or option.name.upper(),
            help=f"{option.help} [env {option.env}; default: {shown}]",
        )


def run(args: argparse.Namespace) -> int:
    """Build the runner and run it; the exit code (0 after a stop, 2 for a bad configuration,
    or the runner's: see :meth:`fraudcep_kafka.runner.Runner.run`)."""
    import logging

    from fraudcep import FraudcepError
    from fraudcep_kafka import logs
    from fraudcep_kafka.config import OPTIONS, from_sources
    from fraudcep_kafka.runner import EXIT_OK, Runner

    log = logging.getLogger("fraudcep.runner")
    flags = {option.name: getattr(args, option.name) for option in OPTIONS}
    config_file = args.config or os.environ.get(CONFIG_ENV) or None
    try:
        config = from_sources(flags, config_file=config_file)
        logs.configure(config.log_level, config.log_format)
        early = stop_requested()
        if early is not None:
            log.info("stop requested before the runner was built", extra=logs.fields(signal=early))
            return EXIT_OK
        runner = Runner(config)
    except (FraudcepError, OSError) as exc:
        print(f"fraudcep run: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    runner.install_signal_handlers()
    early = stop_requested()
    if early is not None:  # while it was being built: it stops before it connects
        log.info("stop requested before the runner started", extra=logs.fields(signal=early))
        runner.stop()
    return runner.run()
