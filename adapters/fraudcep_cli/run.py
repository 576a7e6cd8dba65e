"""``fraudcep run``: the exactly-once Kafka runner (see ``docs/kafka.md``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    from fraudcep import FraudcepError
    from fraudcep_kafka import logs
    from fraudcep_kafka.config import OPTIONS, from_sources
    from fraudcep_kafka.runner import Runner

    flags = {option.name: getattr(args, option.name) for option in OPTIONS}
    config_file = args.config or os.environ.get(CONFIG_ENV) or None
    try:
        config = from_sources(flags, config_file=config_file)
        logs.configure(config.log_level, config.log_format)
        runner = Runner(config)
    except (FraudcepError, OSError) as exc:
        print(f"fraudcep run: {exc}", file=sys.stderr)
        return 2
    runner.install_signal_handlers()
    return runner.run()
