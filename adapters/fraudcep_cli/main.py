"""Entry point of the ``fraudcep`` command: argument parsing and dispatch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from fraudcep_cli import demo, generate, rules, run

Handler = Callable[[argparse.Namespace], int]


def _version() -> str:
    try:
        return metadata.version("fraudcep")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command; each subcommand sets its ``handler``."""
    parser = argparse.ArgumentParser(
        prog="fraudcep",
        description="Complex event processing for real-time payment-fraud detection.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo_parser = commands.add_parser(
        "demo",
        help="run the default rules over a synthetic payment stream",
        description=demo.DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(handler=demo.run)
    rules_parser = commands.add_parser(
        "rules", help="validate rule files and test rules on events", description=rules.DESCRIPTION
    )
    rules.add_arguments(rules_parser)
    generate_parser = commands.add_parser(
        "generate",
        help="send synthetic payments with labelled fraud scenarios to Kafka or a file",
        description=generate.DESCRIPTION,
        formatter_class=generate.HelpFormatter,
    )
    generate.add_arguments(generate_parser)
    generate_parser.set_defaults(handler=generate.run)
    run_parser = commands.add_parser(
        "run",
        help="run the exactly-once Kafka fraud detector (consumer group, transactions)",
        description=run.DESCRIPTION,
    )
    run.add_arguments(run_parser)
    run_parser.set_defaults(handler=run.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
