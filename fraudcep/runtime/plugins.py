"""Factories that installed packages register under entry-point groups, looked up by name.

This is how a URL such as ``s3://bucket/prefix`` reaches the package that handles it while
the core and the runtimes import no storage service themselves.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from fraudcep.errors import FraudcepError


class PluginError(FraudcepError):
    """No installed package handles a name, or its factory failed to import."""


def available(group: str) -> list[str]:
    """The names registered in ``group``, sorted."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load_plugin(group: str, name: str, *, what: str) -> Any:
    """The object registered as ``name`` in ``group``; ``what`` names the request in errors."""
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        known = ", ".join(f"{n}://" for n in available(group)) or "none installed"
        raise PluginError(
            f"{what}: no installed package handles {name}:// (known: {known}); "
            "the AWS ones come with `pip install fraudcep[aws]`"
        )
    try:
        return found[0].load()
    except ImportError as exc:
        raise PluginError(f"{what}: the {name}:// handler could not be imported: {exc}") from None
