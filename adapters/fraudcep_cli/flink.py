"""``fraudcep flink run``: the fraud rules as a PyFlink job (see docs/flink.md).

PyFlink lives in its own virtualenv (``scripts/flink-setup.sh``: apache-flink pins
pyarrow, numpy and Apache Beam versions the main environment must not be held to), so this
command runs the job with that environment's interpreter: ``FRAUDCEP_FLINK_PYTHON``, else
``.venv-flink`` beside the work tree; when PyFlink is importable here, here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

DESCRIPTION = (
    "Run the rules as a PyFlink job on a local mini-cluster (the default) or, submitted "
    "with `flink run -py`, on a cluster: Kafka payments in, alerts and dead letters out "
    "exactly once, live rules and named lists from the rules and lists topics, shadow rules' "
    "alerts to their own topic. Options after `run` are the job's "
    "(`fraudcep flink run --help` lists them)."
)


TREE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-flink" / "bin" / "python"
"""The Flink virtualenv's interpreter that ``scripts/flink-setup.sh`` makes in the work tree."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="flink_command", metavar="COMMAND", required=True)
    # `fraudcep flink run ...` goes to run_job before this parser (main.py): the job's own
    # parser (in the Flink virtualenv) takes its options; this entry is for `--help` lists
    sub.add_parser("run", help="run the job (options: fraudcep flink run --help)")


def flink_python() -> str | None:
    """The interpreter that has PyFlink: this one, ``FRAUDCEP_FLINK_PYTHON``, or the work
    tree's ``.venv-flink``; None when there is none."""
    if importlib.util.find_spec("pyflink") is not None:
        return sys.executable
    given = os.environ.get("FRAUDCEP_FLINK_PYTHON")
    if given:
        return given if Path(given).is_file() else None
    return str(TREE_PYTHON) if TREE_PYTHON.is_file() else None


def run_job(job_args: list[str]) -> int:
    """``fraudcep flink run JOB_ARGS``: the job, in the interpreter that has PyFlink."""
    python = flink_python()
    if python is None:
        print(
            "fraudcep flink run: PyFlink is not installed here and there is no Flink "
            "virtualenv (FRAUDCEP_FLINK_PYTHON, else .venv-flink beside the work tree); "
            "run scripts/flink-setup.sh",
            file=sys.stderr,
        )
        return 2
    if python == sys.executable:
        from fraudcep_flink.job import main

        return main(job_args)
    return subprocess.call([python, "-m", "fraudcep_flink", "run", *job_args])
