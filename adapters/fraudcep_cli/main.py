"""Entry point of the ``fraudcep`` command: argument parsing and dispatch.

Only the standard library is imported before :func:`main` runs: ``fraudcep run`` installs
its SIGTERM/SIGINT handlers first thing in :func:`main` (see :mod:`fraudcep_cli.run`), and
the subcommands with their heavy imports (the engine, Kafka and AWS clients) are loaded
after that.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fraudcep")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command; each subcommand sets its ``handler``."""
    from fraudcep_cli import backtest, demo, flink, generate, lists, rules, run, shadow

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
    lists_parser = commands.add_parser(
        "lists", help="publish named lists to running runners", description=lists.DESCRIPTION
    )
    lists.add_arguments(lists_parser)
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
    backtest_parser = commands.add_parser(
        "backtest",
        help="run rules over historical payments; report alerts, precision/recall, a baseline",
        description=backtest.DESCRIPTION,
    )
    backtest.add_arguments(backtest_parser)
    backtest_parser.set_defaults(handler=backtest.run)
    shadow_parser = commands.add_parser(
        "shadow",
        help="report what shadow rules flagged against the live rules (from the alert topics)",
        description=shadow.DESCRIPTION,
    )
    shadow.add_arguments(shadow_parser)
    flink_parser = commands.add_parser(
        "flink",
        help="run the rules as a PyFlink job (docs/flink.md)",
        description=flink.DESCRIPTION,
    )
    flink.add_arguments(flink_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = _command(words)
    if command == "flink":
        rest = words[words.index("flink") + 1 :]
        if rest[:1] == ["run"]:  # the job's options are the job's parser's (docs/flink.md)
            from fraudcep_cli.flink import run_job

            return run_job(rest[1:])
    if command == "run":
        from fraudcep_cli.run import catch_stop_signals  # standard library only

        catch_stop_signals()  # before the heavy imports: a stop is honoured from here on
    args = build_parser().parse_args(words)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _command(words: Sequence[str]) -> str | None:
    """The subcommand of a command line (the options before it take no values)."""
    return next((w for w in words if not w.startswith("-")), None)


if __name__ == "__main__":
    raise SystemExit(main())
