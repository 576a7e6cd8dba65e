"""The core's layers, as docs/design.md draws them: each subpackage imports only the ones below
it, and the core imports nothing of the adapters or of Kafka, AWS or Flink."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import REPO

CORE = REPO / "fraudcep"

#: Lowest first; a module may import from its own layer and the ones before it.
LAYERS = (
    "errors",
    "timeutil",
    "pattern",
    "nfa",
    "alert",
    "engine",
    "rules",
    "payments",
    "runtime",
    "testing",
)
#: What the core may import from outside the standard library.
THIRD_PARTY = {"attrs", "msgspec", "yaml", "hypothesis"}
#: Optional dependencies (the ``arrow`` extra), imported only by these modules, which the core
#: imports on demand (``Engine.process_batch``): ``import fraudcep`` works without them.
ON_DEMAND = {
    "pyarrow": {"fraudcep.engine.columnar", "fraudcep.engine.vectorised"},
    "numpy": {"fraudcep.engine.columnar"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "fraudcep"
    return parts[1] if len(parts) > 1 else ""


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, with its line, wherever the import statement is."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


CORE_FILES = sorted(p for p in CORE.rglob("*.py"))


def test_every_core_module_is_in_a_layer() -> None:
    for path in CORE_FILES:
        name = module_name(path)
        if name != "fraudcep":
            assert layer_of(name) in LAYERS, name


def wrong_imports(path: Path, own: str) -> list[str]:
    """The imports of ``path`` (module ``own``) that point up a layer or out of the core."""
    wrong = []
    for line, imported in imports_of(path):
        top = imported.split(".")[0]
        if top == "fraudcep":
            target = layer_of(imported)
            if own == "fraudcep" or target not in LAYERS:
                continue  # the package's public names gather every layer; "from fraudcep import X"
            if LAYERS.index(target) > LAYERS.index(layer_of(own)):
                wrong.append(f"line {line}: {imported} (layer {target} is above {layer_of(own)})")
        elif own in ON_DEMAND.get(top, ()):
            continue
        elif top not in sys.stdlib_module_names and top not in THIRD_PARTY:
            wrong.append(f"line {line}: {imported} (not a dependency of the core)")
    return wrong


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_core_imports_point_down(path: Path) -> None:
    own = module_name(path)
    wrong = wrong_imports(path, own)
    assert not wrong, f"{own}:\n" + "\n".join(wrong)


def test_an_upward_or_outside_import_is_found(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from fraudcep.alert import Alert\n"
        "def f():\n    from fraudcep.rules import load_rules\n"
        "import confluent_kafka\n"
    )
    wrong = wrong_imports(module, "fraudcep.engine.m")
    assert sorted(w.split(":")[0] for w in wrong) == ["line 3", "line 4"]


def test_the_core_runs_without_the_optional_dependencies() -> None:
    code = (
        "import sys\n"
        "from fraudcep import Engine, Pattern, Rule\n"
        "from fraudcep.payments.default_rules import default_rules\n"
        "engine = Engine(default_rules(), timestamp='ts')\n"
        "engine.process_many([{'user_id': 1, 'card_id': 'c', 'amount': 1.0, 'ts': 1}])\n"
        "assert not {'pyarrow', 'numpy'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
