"""Where named lists come from: list files and directories, or a store named by a URL
(``s3://bucket/prefix``) whose package registered a reader under the ``fraudcep.list_sources``
entry-point group — so that a runtime and the CLI take ``--lists s3://...`` while the core
imports no storage service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fraudcep.rules.lists import ListError, Lists
from fraudcep.runtime.plugins import PluginError, load_plugin

__all__ = ["LIST_SOURCES_GROUP", "is_url", "load_lists"]

LIST_SOURCES_GROUP = "fraudcep.list_sources"
"""Entry-point group: URL scheme -> ``reader(url) -> Lists`` (raising ``ListError``)."""


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names a store (``scheme://...``) rather than a local path."""
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme.isidentifier()


def load_lists(*locations: str | Path) -> Lists:
    """One registry of the lists of ``locations``, in order: list files, directories of them,
    and store URLs. A name given twice is an error (which one would a rule mean?); so is a
    URL whose scheme no installed package reads."""
    registries: list[tuple[str | Path, Lists]] = []
    for location in locations:
        if is_url(location):
            scheme = str(location).partition("://")[0]
            try:
                reader: Callable[[str], Lists] = load_plugin(
                    LIST_SOURCES_GROUP, scheme, what=f"lists {location}"
                )
            except PluginError as exc:
                raise ListError(str(exc)) from None
            found = reader(str(location))
        else:
            found = Lists.from_path(location)
        registries.append((location, found))
    if len(registries) == 1:
        return registries[0][1]  # as read: no copy of a large list
    lists = Lists()
    for location, found in registries:
        for named in found:
            if named.name in lists:
                raise ListError(f"{location}: list {named.name!r} is given twice")
            lists.replace(named.name, named.entries)
    return lists
