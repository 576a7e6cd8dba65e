"""scripts/build-lambda.sh: the zip holds both handlers and the packaged data files, leaves
boto3 to the runtime, imports on a bare Python with only the runtime's boto3 beside it, and
is the same bytes when built twice.

Builds download attrs and PyYAML wheels from PyPI (pip's cache makes later builds fast).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.paths import REPO

REPO = REPO
SCRIPT = REPO / "scripts" / "build-lambda.sh"
HANDLERS = ("fraudcep_aws/lambda_detector.py", "fraudcep_aws/lambda_notifier.py")
DATA_FILES = (
    "fraudcep/payments/default_rules.yaml",
    "fraudcep/rules/rule_schema.json",
    "fraudcep/payments/payment_schema.json",
    "fraudcep/py.typed",
)
# What the Lambda Python runtime provides: boto3 and what it imports.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
HOST_ARCH = {"x86_64": "x86_64", "AMD64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine(), "x86_64"
)
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def build(out: Path, *args: str) -> Path:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(out), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FRAUDCEP_PYTHON": sys.executable},
        check=False,
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr}"
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.parent == out and path.is_file()
    return path


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zip for this machine's architecture and Python, so its binaries can be loaded."""
    return build(tmp_path_factory.mktemp("lambda"), "--arch", HOST_ARCH, "--python", PYTHON)


def names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def test_contents(package: Path) -> None:
    entries = names(package)
    assert entries == sorted(entries)
    for name in (*HANDLERS, *DATA_FILES, "fraudcep_aws/clients.py", "yaml/__init__.py"):
        assert name in entries, name
    tops = {name.split("/")[0] for name in entries}
    assert not {"boto3", "botocore", "s3transfer", "pyarrow", "bin"} & tops
    assert not [t for t in tops if t.startswith("fraudcep_") and t != "fraudcep_aws"]
    assert not [n for n in entries if "__pycache__" in n or n.endswith((".pyc", "direct_url.json"))]
    expected_so = f"cpython-{PYTHON.replace('.', '')}-{platform.machine()}-linux-gnu.so"
    assert [n for n in entries if n.startswith("yaml/") and n.endswith(expected_so)]
    with zipfile.ZipFile(package) as archive:
        infos = archive.infolist()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_handlers_import_from_the_zip_alone(package: Path, tmp_path: Path) -> None:
    """A bare interpreter (``-I -S``: no site-packages, no environment, no repository) with
    the unzipped package and, beside it, only the packages the Lambda runtime provides."""
    task = tmp_path / "task"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(task)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    site = Path(__import__("boto3").__file__).resolve().parent.parent
    for name in RUNTIME_PACKAGES:
        source = site / name if (site / name).exists() else site / f"{name}.py"
        assert source.exists(), f"{name} is not installed beside boto3"
        (runtime / source.name).symlink_to(source)
    probe = r"""
import json, sys
task, runtime = sys.argv[1], sys.argv[2]
sys.path[:0] = [task, runtime]
import fraudcep_aws.lambda_detector
import fraudcep_aws.lambda_notifier as notifier
import yaml
from fraudcep.payments.payment import payment_schema
from fraudcep.payments.default_rules import DEFAULT_RULES_FILE
from fraudcep.rules import load_rule_file
rules = load_rule_file(DEFAULT_RULES_FILE)
answer = notifier.handler({"Records": []}, None)
import sysconfig
stdlib = tuple({sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")})
outside = sorted(
    f"{name}: {module.__file__}"
    for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not module.__file__.startswith((task, runtime))
    and not module.__file__.startswith(stdlib)
)
print(json.dumps({
    "answer": answer,
    "rules": len(rules),
    "schema": payment_schema()["title"],
    "libyaml": yaml.__with_libyaml__,
    "files": {m: sys.modules[m].__file__ for m in ("fraudcep", "fraudcep_aws", "yaml", "attrs")},
    "outside": outside,
}))
"""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(task), str(runtime)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["answer"] == {"batchItemFailures": []}
    assert report["rules"] > 0 and report["schema"]
    assert report["libyaml"] is True  # the C extension built for this Python loaded
    assert all(path.startswith(str(task)) for path in report["files"].values()), report["files"]
    assert report["outside"] == []


def test_building_twice_gives_the_same_bytes(package: Path, tmp_path: Path) -> None:
    again = build(tmp_path, "--arch", HOST_ARCH, "--python", PYTHON)
    assert again.read_bytes() == package.read_bytes()


def test_arm64_package_carries_arm64_binaries(tmp_path: Path) -> None:
    path = build(tmp_path, "--arch", "arm64", "--python", "3.12")
    assert path.name == "fraudcep-lambda-arm64.zip"
    entries = names(path)
    assert [n for n in entries if n.endswith("cpython-312-aarch64-linux-gnu.so")]
    assert not [n for n in entries if n.endswith("x86_64-linux-gnu.so")]
    assert all(h in entries for h in HANDLERS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "sparc"], "--arch must be x86_64 or arm64"),
        (["--python", "3.9"], "--python must be 3.11 or 3.12"),
        (["--frobnicate"], "unknown argument"),
    ],
)
def test_bad_options_are_refused(args: list[str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and message in proc.stderr
    assert not list(tmp_path.iterdir())
