"""The runtime kit: what every runtime (the Kafka runner, the Lambda detector, the PyFlink
functions) needs around an engine, written once: one table of options and the typed engine
options it makes, one side-output collector, and rule reconciliation that never stops a
runtime. Nothing here does I/O."""

from fraudcep.runtime.options import (
    ENGINE_OPTIONS,
    EngineOptions,
    Option,
    options_from_env,
)
from fraudcep.runtime.reconcile import Reconciliation, reconcile
from fraudcep.runtime.side_outputs import SideOutputs

__all__ = [
    "ENGINE_OPTIONS",
    "EngineOptions",
    "Option",
    "Reconciliation",
    "SideOutputs",
    "options_from_env",
    "reconcile",
]
