"""The Flink job's options (``fraudcep_flink.config``, importable without PyFlink) and the
``fraudcep flink run`` command: flags over the environment over defaults, the runner's names
for what the two share, clear errors for bad values and for a machine without PyFlink."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import REPO
from support.pyflink import flink_env, flink_python

from fraudcep.errors import ConfigurationError
from fraudcep_cli import flink
from fraudcep_cli.main import main
from fraudcep_flink.config import OPTIONS, JobConfig, parse_args
from fraudcep_kafka.config import OPTIONS as RUNNER_OPTIONS


def test_defaults_flags_and_environment() -> None:
    assert parse_args([], {}) == JobConfig()
    config = parse_args(
        ["--parallelism", "4", "--max-out-of-orderness", "5s"],
        {"FRAUDCEP_PARALLELISM": "2", "FRAUDCEP_INPUT_TOPIC": "pay", "FRAUDCEP_RULES_TOPIC": "off"},
    )
    assert config.parallelism == 4  # the flag wins
    assert config.input_topic == "pay"
    assert config.rules_topic is None
    assert config.max_out_of_orderness == 5000
    assert config.engine_options.max_out_of_orderness == 5000
    kv = parse_args(["--kafka-config", "security.protocol=SSL, linger.ms=5"], {})
    assert kv.kafka_config == {"security.protocol": "SSL", "linger.ms": "5"}
    assert parse_args(["--lists", "a.txt", "--lists", "dir"], {}).lists == ("a.txt", "dir")
    assert parse_args([], {"FRAUDCEP_LISTS": "a.txt, dir"}).lists == ("a.txt", "dir")
    assert parse_args(["--lists-topic", "off"], {}).lists_topic is None


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--parallelism", "0"], {}, "--parallelism"),
        (["--checkpoint-interval", "soon"], {}, "--checkpoint-interval"),
        ([], {"FRAUDCEP_EXECUTION_MODE": "fast"}, "FRAUDCEP_EXECUTION_MODE"),
        (["--kafka-config", "novalue"], {}, "key=value"),
        (["--state-key", "short"], {}, "16 characters"),
    ],
)
def test_bad_values_name_their_source(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_args(argv, env)


def test_shared_options_have_the_runners_names_and_meanings() -> None:
    runner = {o.name: o for o in RUNNER_OPTIONS}
    shared = [o for o in OPTIONS if o.name in runner]
    assert {o.name for o in shared} >= {
        "bootstrap", "input_topic", "alerts_topic", "dead_letter_topic", "rules_topic",
        "rules", "lists", "lists_topic", "idle_timeout", "max_out_of_orderness",
        "timestamp_field", "state_key",
    }  # fmt: skip
    for option in shared:
        if option.name in {"group_id", "transaction_timeout"}:
            continue  # the same name, the job's own default
        assert option.env == runner[option.name].env


def test_the_command_says_what_to_do_without_pyflink(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("pyflink") is not None:
        pytest.fail("the main environment must not hold PyFlink (it has its own virtualenv)")
    monkeypatch.setenv("FRAUDCEP_FLINK_PYTHON", str(tmp_path / "missing" / "python"))
    monkeypatch.setattr(flink, "TREE_PYTHON", tmp_path / "also-missing" / "python")
    assert main(["flink", "run", "--parallelism", "1"]) == 2
    err = capsys.readouterr().err
    assert "PyFlink is not installed" in err and "scripts/flink-setup.sh" in err


@pytest.mark.pyflink
def test_the_command_runs_the_job_in_the_flink_virtualenv(tmp_path: Path) -> None:
    """``fraudcep flink run`` (main environment) hands over to the Flink virtualenv's
    interpreter: its options and its errors are the job's."""
    env = {**os.environ, "FRAUDCEP_FLINK_PYTHON": flink_python(), **flink_env()}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "adapters")])
    command = [sys.executable, "-m", "fraudcep_cli", "flink", "run"]
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, check=False, timeout=300)  # fmt: skip
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "--max-out-of-orderness" in helped.stdout and "FRAUDCEP_PARALLELISM" in helped.stdout
    bad = subprocess.run([*command, "--parallelism", "0"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, check=False, timeout=300)  # fmt: skip
    assert bad.returncode == 2
    assert "fraudcep flink run: --parallelism" in bad.stderr
