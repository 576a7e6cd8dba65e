"""Alert identity: the canonical text of events and keys, and the alert id built from it.

An alert id must be the same for the same match in every run, restore, process and machine,
so it is a hash of a canonical text of the rule id, the key and the matched events: JSON with
sorted keys and no spaces, with Python values JSON lacks written in a fixed way (tuples as
arrays, dicts with non-string keys under type-tagged keys, objects as their fields, anything
else as its repr without memory addresses).

Event data comes from outside and may be nested arbitrarily deep, so the text is built by a
loop over an explicit stack, never by recursion: a payment nested 10,000 levels deep gets an
id like any other (the payment decoder refuses such payments anyway; this is the library's own
guarantee). Flat mappings of scalars, the common case, go through the C JSON encoder.

The id's text is assembled from parts: the canonical text of a list is ``[``, its items' texts
joined by ``,``, and ``]``, each item's text the same as on its own (the containers around it
are new lists, so nothing in an item can lead back to them). So an event's part of the text
(``event_text``) can be computed once and used in every id of a match it is in
(``alert_id_of``), with exactly the text ``alert_id`` writes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Final

import attrs

__all__ = [
    "alert_id",
    "alert_id_of",
    "canonical_event",
    "canonical_json",
    "canonical_key",
    "event_text",
    "key_text",
    "matched_text",
]

_SEPARATORS: Final = (",", ":")
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_ADDRESS: Final = re.compile(r" at 0x[0-9a-fA-F]+")
_FLOATS: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


class _Raw(str):
    """Text already in canonical form (punctuation), as opposed to a string value."""

    __slots__ = ()


@attrs.frozen
class _Close:
    """The end of a container: its closing bracket, and the container to take off the open
    path (held here so that its id cannot be reused by another object meanwhile)."""

    text: str
    container: Any


_CYCLE: Final = _quote("<cycle>")
# what json.dumps(value, sort_keys=True, separators=_SEPARATORS) uses, made once (dumps makes a
# new encoder for every call with options)
_ENCODE: Final = json.JSONEncoder(sort_keys=True, separators=_SEPARATORS).encode


def _flat_encoder() -> Callable[[dict[str, Any]], str]:
    """``_ENCODE`` for a flat mapping of JSON scalars, without the wrapper ``encode`` runs
    each call (it makes a new C encoder every time, more than the encoding itself costs):
    the C encoder made once, with no cycle check (a flat mapping has no cycles). The text
    is the same: same separators, key order, string escaping and float text."""
    make = getattr(json.encoder, "c_make_encoder", None)  # not in the typed stubs
    if make is None:  # a Python built without the C accelerator
        return _ENCODE

    def refuse(value: Any) -> Any:
        raise TypeError(f"not a JSON scalar: {type(value).__name__}")

    encode = make(None, refuse, _quote, None, ":", ",", True, False, True)
    join = "".join

    def encode_flat(value: dict[str, Any]) -> str:
        return join(encode(value, 0))

    return encode_flat


_ENCODE_FLAT: Final = _flat_encoder()


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON text (see the module docstring); never recurses."""
    cls = value.__class__
    if cls is dict:
        for k, v in value.items():
            if k.__class__ is not str or v.__class__ not in _SCALARS:
                break
        else:  # a flat mapping of JSON scalars: the C encoder gives the same text
            return _ENCODE_FLAT(value)
    elif cls is str:  # what the loop below writes for them
        return _quote(value)
    elif cls is int:
        return _int(value)
    out: list[str] = []
    stack: list[Any] = [value]
    open_path: set[int] = set()  # containers being written: met again, they are a cycle
    push, pop, emit = stack.append, stack.pop, out.append
    while stack:
        item = pop()
        cls = item.__class__
        if cls is _Raw:
            emit(item)
        elif cls is _Close:
            emit(item.text)
            open_path.discard(id(item.container))
        elif id(item) in open_path:
            emit(_CYCLE)
        elif cls is str:
            emit(_quote(item))
        elif item is None:
            emit("null")
        elif item is True:
            emit("true")
        elif item is False:
            emit("false")
        elif isinstance(item, int):
            emit(_int(item))
        elif isinstance(item, float):
            text = float.__repr__(item)
            emit(_FLOATS.get(text, text))
        elif isinstance(item, str):
            emit(_quote(item))
        elif isinstance(item, dict):
            entries = sorted(_string_keyed(item).items())
            if not entries:
                emit("{}")
                continue
            open_path.add(id(item))
            push(_Close("}", item))
            for index in range(len(entries) - 1, -1, -1):
                name, member = entries[index]
                push(member)
                push(_Raw(("{" if index == 0 else ",") + _quote(name) + ":"))
        elif isinstance(item, list | tuple):
            if not item:
                emit("[]")
                continue
            open_path.add(id(item))
            push(_Close("]", item))
            for index in range(len(item) - 1, -1, -1):
                push(item[index])
                push(_Raw("[" if index == 0 else ","))
        else:  # an object: written as its fields (which may lead back to it)
            open_path.add(id(item))
            push(_Close("", item))
            push(_fields(item))
    return "".join(out)


def canonical_event(event: Any) -> str:
    """A stable, content-based identity of an event (used in alert ids)."""
    return canonical_json(event)


def canonical_key(key: Any) -> str:
    """A key as text that is the same in every process (DynamoDB items, Parquet rows)."""
    return canonical_json(key)


def alert_id(
    rule_id: str,
    key: Hashable,
    matched: Iterable[tuple[str, int, Any]],
    event_id: Callable[[Any], Any] | None = None,
) -> str:
    """The id of a match: 32 hex digits of SHA-256 over the rule id, the key's canonical text
    and, for each matched event in order, its stage name, timestamp and identity (``event_id``
    of the event, or its canonical text).

    That is SHA-256 of ``canonical_json([rule_id, canonical_key(key), [[name, ts, identity],
    ...]])``; it is written here from its parts (``alert_id_of``), which gives the same text."""
    return alert_id_of(
        rule_id,
        key_text(key),
        [matched_text(name, ts, event_text(event, event_id)) for name, ts, event in matched],
    )


def key_text(key: Any) -> str:
    """A key's part of an alert id's text: its canonical text, as a JSON string."""
    return _quote(canonical_key(key))


def event_text(event: Any, event_id: Callable[[Any], Any] | None = None) -> str:
    """An event's part of an alert id's text: the canonical text of its identity
    (``event_id`` of the event, or its canonical text as a JSON string)."""
    identity = canonical_event(event) if event_id is None else event_id(event)
    if identity.__class__ is str:
        return _quote(identity)
    return canonical_json(identity)


def matched_text(name: str, ts: int, event_part: str) -> str:
    """One matched event's part of an alert id's text: ``[name,ts,identity]``, with the
    identity's text from ``event_text``."""
    name_part = _quote(name) if name.__class__ is str else canonical_json(name)
    ts_part = _int(ts) if ts.__class__ is int else canonical_json(ts)
    return "[" + name_part + "," + ts_part + "," + event_part + "]"


def alert_id_of(rule_id: str, key_part: str, matched_parts: Sequence[str]) -> str:
    """An alert id from its parts: the key's text (``key_text``) and each matched event's
    (``matched_text``), first matched first."""
    blob = _rule_part(rule_id) + key_part + ",[" + ",".join(matched_parts) + "]]"
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=1024)
def _rule_part(rule_id: str) -> str:
    """The text an alert id's text starts with, the same for every alert of a rule."""
    return "[" + canonical_json(rule_id) + ","


def _int(value: int) -> str:
    try:
        return int.__repr__(value)
    except ValueError:  # more digits than int -> str converts: hex has no such limit
        return _quote(f"int:{value:#x}")


def _string_keyed(mapping: dict[Any, Any]) -> dict[str, Any]:
    if all(isinstance(k, str) for k in mapping):
        return mapping
    # keys of mixed types cannot be sorted: tag each with its type
    return {f"{type(k).__name__}:{_key_text(k)}": v for k, v in mapping.items()}


def _key_text(key: Any) -> str:
    try:
        return repr(key)
    except RecursionError:  # a key nested too deep for repr (tuples of tuples ...)
        return canonical_json(key)


def _fields(value: Any) -> Any:
    """An object as one level of plain data: its fields as a dict, else its repr."""
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if hasattr(value, "_asdict"):
        return value._asdict()
    if hasattr(value, "__dict__"):
        return vars(value)
    slots = [s for cls in type(value).__mro__ for s in getattr(cls, "__slots__", ())]
    if slots:
        return {s: getattr(value, s) for s in slots if hasattr(value, s)}
    # a repr naming a memory address would differ between runs: leave the address out
    return _ADDRESS.sub("", repr(value))
