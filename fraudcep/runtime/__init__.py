"""The runtime kit: what every runtime (the Kafka runner, the Lambda detector, the PyFlink
functions) needs around an engine, written once: one table of options and the typed engine
options it makes, one side-output collector, rule reconciliation that never stops a
runtime, and one back-off policy for every retry. Nothing here does I/O."""

from fraudcep.runtime.backoff import Backoff, Retries
from fraudcep.runtime.options import (
    ENGINE_OPTIONS,
    EngineOptions,
    Option,
    options_from_env,
)
from fraudcep.runtime.reconcile import Reconciliation, reconcile, refusal
from fraudcep.runtime.side_outputs import SideOutputs

__all__ = [
    "ENGINE_OPTIONS",
    "Backoff",
    "EngineOptions",
    "Option",
    "Reconciliation",
    "Retries",
    "SideOutputs",
    "options_from_env",
    "reconcile",
    "refusal",
]
