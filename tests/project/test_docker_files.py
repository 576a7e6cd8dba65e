"""The container files (Dockerfile, docker-compose.yml), checked without Docker.

Nothing here builds or runs a container. The checks are the ones that break silently when
the code moves on: a runner variable that no longer names an option, generator flags the
CLI no longer accepts, a Kafka image that drifts from the version the tests' broker uses,
a port published on every interface, an extra that pyproject.toml dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import tomllib
import xml.etree.ElementTree as ET
from typing import Any

import pytest
import yaml
from support.paths import REPO

from fraudcep.runtime.options import ENV_PREFIX
from fraudcep_cli.main import build_parser
from fraudcep_kafka.config import OPTIONS, from_sources

ROOT = REPO
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
KAFKA_POM = ROOT / "scripts" / "kafka" / "pom.xml"

OPTION_BY_ENV = {option.env: option for option in OPTIONS}


# -- helpers ----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    spec = services[name]
    assert isinstance(spec, dict)
    return spec


def environment(spec: dict[str, Any]) -> dict[str, Any]:
    """A service's ``environment:``, as a mapping (it may be written as a list)."""
    env = spec.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value if sep else None for key, sep, value in pairs}
    assert isinstance(env, dict)
    return env


def argv(spec: dict[str, Any], what: str = "command") -> list[str]:
    """``command:`` (or ``entrypoint:``) as a list of arguments."""
    value = spec.get(what)
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    assert all(isinstance(a, str) for a in value), f"{what}: non-string items in {value!r}"
    return list(value)


def parse_cli(args: list[str]) -> argparse.Namespace:
    """``fraudcep ARGS`` through the real parser; a rejected command line fails the test."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"fraudcep rejects {shlex.join(args)!r}: {stderr.getvalue().strip()}")


def published_ports(spec: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """``(host_ip, host_port_or_range, container_port)`` of each ``ports:`` entry."""
    out: list[tuple[str | None, str, str]] = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, dict):  # long syntax
            out.append(
                (entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"]))
            )
            continue
        assert isinstance(entry, str), f"write ports as strings (YAML base 60!): {entry!r}"
        parts = entry.split("/", 1)[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append((None, parts[0], parts[1]))
        else:  # container port only: a random host port on every interface
            out.append((None, "", parts[0]))
    return out


def kafka_version_of_pom() -> str:
    root = ET.parse(KAFKA_POM).getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = root.findtext("m:properties/m:kafka.version", namespaces=ns)
    assert version, "scripts/kafka/pom.xml has no <kafka.version>"
    return version.strip()


def created_topics() -> dict[str, list[str]]:
    """The topics the ``topics`` service creates: name -> the arguments of its command."""
    script = " ".join(argv(service("topics"), "entrypoint") + argv(service("topics")))
    topics: dict[str, list[str]] = {}
    for line in script.splitlines():
        if "--create" not in line:
            continue
        words = shlex.split(line)
        topics[words[words.index("--topic") + 1]] = words
    return topics


def flag_value(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words else None


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    out = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    return out


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


# -- docker-compose.yml -----------------------------------------------------------------------


def test_compose_has_the_documented_services() -> None:
    assert set(compose()["services"]) >= {"kafka", "topics", "aws", "runner", "generator"}


def test_every_published_port_is_bound_to_localhost() -> None:
    for name, spec in compose()["services"].items():
        for host_ip, host_port, container_port in published_ports(spec):
            assert host_ip == "127.0.0.1", (
                f"service {name}: port {host_port or '(random)'}->{container_port} is "
                "published on every interface; bind it to 127.0.0.1"
            )


def test_environment_values_are_strings() -> None:
    # YAML turns `true`, `on`, `1` into booleans and numbers; Compose rejects booleans and
    # the program reads text, so every value is written as a quoted string.
    for name, spec in compose()["services"].items():
        for key, value in environment(spec).items():
            assert isinstance(value, str), f"service {name}: {key} is {value!r}, not a string"


def test_kafka_image_is_the_version_the_test_broker_uses() -> None:
    version = kafka_version_of_pom()
    for name in ("kafka", "topics"):
        assert service(name)["image"] == f"apache/kafka:{version}", (
            f"service {name}: scripts/kafka/pom.xml pins Kafka {version}"
        )


def test_kafka_can_run_transactions_on_one_broker() -> None:
    env = environment(service("kafka"))
    # Exactly-once needs the transaction state log and the offsets topic; on one broker
    # they can only be created with one replica and a min ISR of 1.
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env.get("CLUSTER_ID"), "the image's KRaft start needs CLUSTER_ID"


def test_kafka_listeners_fit_the_clients() -> None:
    kafka = service("kafka")
    env = environment(kafka)
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(
        item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    addresses = set(advertised.values())
    # the containers' bootstrap address is advertised
    bootstrap = environment(service("runner"))["FRAUDCEP_BOOTSTRAP"]
    assert bootstrap in addresses
    # and so is the host's, on a port published to the host under the same number
    published = {host for _ip, host, _container in published_ports(kafka)}
    host_side = [a for a in addresses if a.split(":")[0] in {"localhost", "127.0.0.1"}]
    assert host_side, "no listener is advertised for clients on the host"
    assert {a.split(":")[1] for a in host_side} <= published


def test_topics_service_creates_every_topic_the_job_uses() -> None:
    topics = created_topics()
    runner = environment(service("runner"))
    for option in ("INPUT_TOPIC", "ALERTS_TOPIC", "DEAD_LETTER_TOPIC", "RULES_TOPIC"):
        name = runner.get(ENV_PREFIX + option) or OPTION_BY_ENV[ENV_PREFIX + option].default
        assert name in topics, f"the topics service does not create {name} ({option})"
    rules = topics[runner.get("FRAUDCEP_RULES_TOPIC", "fraud.rules")]
    assert "cleanup.policy=compact" in rules, "the rules topic must be compacted"
    assert flag_value(topics[runner["FRAUDCEP_INPUT_TOPIC"]], "--partitions") == "4"
    assert all("--if-not-exists" in words for words in topics.values())


def test_dependency_order() -> None:
    assert service("topics")["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in service("kafka")
    for name in ("runner", "generator"):
        condition = service(name)["depends_on"]["topics"]["condition"]
        assert condition == "service_completed_successfully", name


def test_runner_variables_name_real_options_with_valid_values() -> None:
    env = environment(service("runner"))
    fraudcep_vars = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert fraudcep_vars
    unknown = sorted(set(fraudcep_vars) - set(OPTION_BY_ENV))
    assert not unknown, f"runner variables that name no option of fraudcep run: {unknown}"
    # and each value converts (from_sources raises ConfigurationError naming the variable)
    config = from_sources({}, environ=fraudcep_vars)
    assert config.bootstrap == "kafka:9092"


def test_runner_command_is_a_fraudcep_subcommand() -> None:
    runner = service("runner")
    assert "entrypoint" not in runner, "the image's ENTRYPOINT is fraudcep"
    command = argv(runner)
    assert command[:1] == ["run"]
    assert parse_cli(command).command == "run"


def test_runner_metrics_are_reachable_through_the_published_port() -> None:
    runner = service("runner")
    address = environment(runner)["FRAUDCEP_METRICS_ADDRESS"]
    host, _, port = address.rpartition(":")
    assert host == "0.0.0.0", "inside a container the endpoint must listen on all interfaces"
    assert port in {container for _ip, _host, container in published_ports(runner)}


def test_runner_can_be_scaled() -> None:
    runner = service("runner")
    env = environment(runner)
    # One instance id for all replicas would make them fence each other's transactions.
    assert "FRAUDCEP_INSTANCE_ID" not in env, "replicas need distinct ids (the host name)"
    assert "container_name" not in runner
    assert "hostname" not in runner
    # Each replica needs a host port of its own: a range.
    for _ip, host_port, _container in published_ports(runner):
        low, _, high = host_port.partition("-")
        assert high and int(high) > int(low), f"publish a port range, not {host_port}"
    # The checkpoints are shared: a partition's new owner restores its old owner's state.
    checkpoints = env["FRAUDCEP_CHECKPOINTS"]
    mounts = [v.split(":") for v in runner["volumes"] if isinstance(v, str)]
    named = compose()["volumes"]
    assert any(target == checkpoints and source in named for source, target, *_ in mounts)


def test_runner_stops_gracefully() -> None:
    runner = service("runner")
    assert runner["restart"] == "unless-stopped"
    grace = re.fullmatch(r"(\d+)s", runner["stop_grace_period"])
    assert grace and int(grace.group(1)) >= 30


def test_generator_flags_are_accepted_by_the_cli() -> None:
    generator = service("generator")
    command = argv(generator)
    args = parse_cli(command)
    assert args.command == "generate"
    runner = environment(service("runner"))
    assert args.bootstrap == runner["FRAUDCEP_BOOTSTRAP"]
    assert args.topic == runner["FRAUDCEP_INPUT_TOPIC"]
    assert args.rate == 200
    assert args.pace is True
    # without a handler for SIGTERM a PID 1 ignores it: generate stops on SIGINT
    assert generator["stop_signal"] == "SIGINT"


def test_services_built_here_use_this_dockerfile() -> None:
    for name in ("runner", "generator"):
        build = service(name)["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context / "Dockerfile").resolve() == DOCKERFILE


# -- Dockerfile, .dockerignore -----------------------------------------------------------------


def test_dockerfile_installs_extras_that_exist() -> None:
    extras = set(pyproject()["project"]["optional-dependencies"])
    installs = [
        args
        for instruction, args in dockerfile_instructions()
        if instruction == "RUN" and "pip install" in args
    ]
    assert installs, "the Dockerfile installs nothing with pip"
    wanted: set[str] = set()
    for args in installs:
        for match in re.finditer(r"""["']?\.\[([^\]]+)\]["']?""", args):
            wanted.update(e.strip() for e in match.group(1).split(","))
    assert wanted >= {"kafka", "aws"}
    assert wanted <= extras, f"extras missing from pyproject.toml: {sorted(wanted - extras)}"


def test_dockerfile_runs_fraudcep_as_non_root() -> None:
    instructions = dockerfile_instructions()
    scripts = pyproject()["project"]["scripts"]
    final_stage = instructions[
        max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM") :
    ]
    by_name = {instruction: args for instruction, args in final_stage}
    entrypoint = json.loads(by_name["ENTRYPOINT"])
    assert entrypoint == ["fraudcep"] and "fraudcep" in scripts
    assert json.loads(by_name["CMD"]) == ["run"]
    user = by_name.get("USER", "root").split(":")[0]
    assert user not in {"root", "0"}, "the image must not run as root"


def test_dockerfile_base_image_fits_requires_python() -> None:
    instructions = dockerfile_instructions()
    args = dict(
        a.split("=", 1) for instruction, a in instructions if instruction == "ARG" and "=" in a
    )
    bases = {
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0])
        for instruction, a in instructions
        if instruction == "FROM"
    }
    assert bases == {"python:3.11-slim"}
    assert pyproject()["project"]["requires-python"] == ">=3.11"


def test_dockerfile_copies_what_exists() -> None:
    for instruction, args in dockerfile_instructions():
        if instruction != "COPY" or args.startswith("--from"):
            continue
        *sources, _target = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path"


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert patterns >= {".git", ".venv", "out", "checkpoints"}
    assert "tests/differential/flink-harness/target" in patterns
