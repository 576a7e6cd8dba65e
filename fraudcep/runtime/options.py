"""One table of options for every runtime, and the typed engine options it makes.

An option has one name: ``--name-with-dashes`` as a flag, ``FRAUDCEP_NAME_IN_CAPITALS`` in
the environment (the Kafka runner and the Lambda handlers read the same names, with the same
syntax), ``name_with_underscores`` in a config file. Durations accept ``250ms``, ``10s``,
``5m``, ``1h`` (a bare number is milliseconds).

:data:`ENGINE_OPTIONS` are the options every runtime shares: how events are read (timestamp
and event-id fields), how much disorder and state the engine allows, how records are bounded,
when a failing record is given up, and the secret that authenticates state. A runtime adds its
own options to these; :class:`EngineOptions` holds the shared ones, typed, and turns them
into the engine's keyword arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from fraudcep.errors import ConfigurationError
from fraudcep.payments.payment import DEFAULT_MAX_BYTES
from fraudcep.rules import parse_duration

__all__ = [
    "ENGINE_OPTIONS",
    "ENV_PREFIX",
    "EngineOptions",
    "Option",
    "boolean",
    "choice",
    "duration",
    "integer",
    "key_values",
    "non_negative",
    "optional_text",
    "options_from_env",
    "options_table",
    "path_list",
    "positive",
]

ENV_PREFIX: Final = "FRAUDCEP_"
_ZERO = re.compile(r"^0+\s*(ms|s|m|h|d)$")


def duration(value: Any) -> int:
    """Milliseconds, from ``250ms``/``10s``/``5m``/``1h``/``2d`` or a bare number of ms."""
    if isinstance(value, bool | float):
        raise ValueError(f"expected a duration such as 250ms, 10s or 5m, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        return int(text)
    if _ZERO.match(text):
        return 0  # options that must be positive say so themselves
    return parse_duration(text)


def integer(value: Any) -> int:
    if isinstance(value, bool | float):
        raise ValueError(f"expected an integer, got {value!r}")
    text = str(value).strip()
    if isinstance(value, str) and not (text.isascii() and text.lstrip("-").isdigit()):
        raise ValueError(f"expected an integer, got {value!r}")
    if len(text) > 19:
        raise ValueError(f"expected an integer of at most 19 digits, got {text[:40]!r}")
    return int(text)


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def optional_text(value: Any) -> str | None:
    """Text, or None for ``""``, ``none``, ``off`` (and ``false`` in a config file)."""
    if value is False:
        return None
    if isinstance(value, bool | int | float):
        raise ValueError(f"expected text, got {value!r}")
    text = str(value).strip()
    return None if text.lower() in {"", "none", "off"} else text


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return text

    return convert


def positive(convert: Callable[[Any], int]) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = convert(value)
        if number <= 0:
            raise ValueError(f"must be > 0, got {value!r}")
        return number

    return check


def non_negative(convert: Callable[[Any], int]) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = convert(value)
        if number < 0:
            raise ValueError(f"must be >= 0, got {value!r}")
        return number

    return check


@attrs.frozen
class Option:
    """One configuration option: its name, converter, default and help text."""

    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None
    repeatable: bool = False
    """A flag that may be given several times (its values add up)."""
    secret: bool = False
    """Never shown in logs or errors (a state key): its converter's messages say what is
    wrong without the value, and one that holds it anyway is not shown."""
    aliases: tuple[str, ...] = ()
    """Older environment names still read (with the same syntax unless noted in ``help``)."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def lookup(self, environ: Mapping[str, str], *, source: str = "environment") -> str | None:
        """The variable of ``environ`` that sets this option (its name or an alias), None if
        none does; :class:`ConfigurationError` when two of them are set."""
        given = [name for name in (self.env, *self.aliases) if name in environ]
        if len(given) > 1:
            raise ConfigurationError(f"{source}: {' and '.join(given)} both set; keep one")
        return given[0] if given else None

    def parse(self, value: Any, source: str) -> Any:
        """``value`` converted; :class:`ConfigurationError` naming ``source`` and the option
        (without the value, for a secret) when it does not convert."""
        try:
            return self.convert(value)
        except (ValueError, TypeError, ConfigurationError) as exc:
            message = str(exc)
            given = str(value).strip()
            hidden = self.secret and (not given or given in message or message in given)
            shown = "" if hidden else f": {message}"
            raise ConfigurationError(f"{source}: bad value for {self.name}{shown}") from None


def path_list(value: Any) -> tuple[str, ...]:
    """Paths: a list (config file, repeated flag) or ``path,path`` (environment)."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    paths = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected a path, got {item!r}")
        if item.strip():
            paths.append(item.strip())
    return tuple(paths)


def key_values(value: Any) -> dict[str, str]:
    """Properties: ``key=value,key=value`` (flag, environment) or a table (config file)."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in str(value).split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        out[key.strip()] = val.strip()
    return out


def _state_key(value: Any) -> str | None:
    """A secret: its errors never show the value."""
    if value is False:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    text = value.strip()
    if text.lower() in {"", "none", "off"}:
        return None
    if len(text) < 16:
        raise ValueError("a state key must be at least 16 characters")
    return text


ENGINE_OPTIONS: Final[tuple[Option, ...]] = (
    Option("timestamp_field", str, "ts", "field holding the event time (epoch ms)"),
    Option(
        "event_id_field",
        optional_text,
        "payment_id",
        "field that identifies an event in alert ids ('off': the whole event)",
    ),
    Option(
        "max_out_of_orderness",
        non_negative(duration),
        0,
        "bounded disorder of event time within a partition (watermark = max ts - this - 1ms)",
        "DURATION",
        aliases=("FRAUDCEP_MAX_OUT_OF_ORDERNESS_MS",),
    ),
    Option(
        "max_partial_matches_per_key",
        positive(integer),
        10_000,
        "per rule and key; more are dropped and counted",
        "N",
    ),
    Option(
        "max_buffered_events",
        positive(integer),
        1_000_000,
        "per engine, events held for the watermark; beyond it the watermark is forced on",
        "N",
    ),
    Option(
        "max_record_bytes",
        positive(integer),
        DEFAULT_MAX_BYTES,
        "larger records are dead-lettered unread",
        "BYTES",
    ),
    Option(
        "max_record_failures",
        positive(integer),
        3,
        "a record whose processing fails this many times in a row the same way is "
        "dead-lettered with reason processing_failed and its key goes on",
        "N",
    ),
    Option(
        "state_key",
        _state_key,
        None,
        "a secret (at least 16 characters) that authenticates snapshots, checkpoints and key "
        "records (a keyed BLAKE2b MAC): state written without it is refused",
        "SECRET",
        secret=True,
    ),
)
"""The options every runtime shares (see :class:`EngineOptions`)."""

_ENGINE_BY_NAME: Final = {o.name: o for o in ENGINE_OPTIONS}


def _default(name: str) -> Any:
    return _ENGINE_BY_NAME[name].default


@attrs.frozen
class EngineOptions:
    """The shared options, typed; :meth:`engine_kwargs` gives an engine's keyword arguments."""

    timestamp_field: str = _default("timestamp_field")
    event_id_field: str | None = _default("event_id_field")
    max_out_of_orderness: int = _default("max_out_of_orderness")
    max_partial_matches_per_key: int = _default("max_partial_matches_per_key")
    max_buffered_events: int = _default("max_buffered_events")
    max_record_bytes: int = _default("max_record_bytes")
    max_record_failures: int = _default("max_record_failures")
    state_key: str | None = attrs.field(default=_default("state_key"), repr=False)

    @classmethod
    def of(cls, config: object) -> EngineOptions:
        """The engine options among ``config``'s attributes (a runtime's configuration that
        has a field per shared option it knows, named as in :data:`ENGINE_OPTIONS`)."""
        return cls(**{n: getattr(config, n) for n in _ENGINE_BY_NAME if hasattr(config, n)})

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> EngineOptions:
        """The engine options among ``values`` (a runtime's whole configuration, say)."""
        return cls(**{k: v for k, v in values.items() if k in _ENGINE_BY_NAME})

    def engine_kwargs(self, **callbacks: Any) -> dict[str, Any]:
        """Keyword arguments for :class:`fraudcep.Engine` (plus ``callbacks``, e.g. a
        :class:`~fraudcep.runtime.SideOutputs`' :meth:`callbacks`)."""
        return {
            "timestamp": self.timestamp_field,
            "event_id": self.event_id_field,
            "max_out_of_orderness": self.max_out_of_orderness,
            "max_partial_matches_per_key": self.max_partial_matches_per_key,
            "max_buffered_events": self.max_buffered_events,
            "state_key": self.state_key,
            **callbacks,
        }


def options_from_env(
    options: Iterable[Option], environ: Mapping[str, str], *, source: str = "environment"
) -> dict[str, Any]:
    """The values of ``options`` set in ``environ`` (by name or an alias), converted; options
    not set are left out. Giving an option under two names is an error."""
    out: dict[str, Any] = {}
    for option in options:
        name = option.lookup(environ, source=source)
        if name is not None:
            out[option.name] = option.parse(environ[name], f"{source} {name}")
    return out


def options_table(options: Iterable[Option]) -> str:
    """``options`` as a Markdown table (name, environment variable, value, default, meaning),
    as the documentation lists them (a test checks that it does)."""
    rows = [
        "| option | environment | value | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for o in options:
        env = f"`{o.env}`" + "".join(f" (older name, still read: `{a}`)" for a in o.aliases)
        value = o.metavar or "TEXT"
        meaning = " ".join(o.help.split())
        rows.append(f"| `{o.name}` | {env} | {value} | {_shown_default(o)} | {meaning} |")
    return "\n".join(rows) + "\n"


def _shown_default(option: Option) -> str:
    if option.default is None or option.default == ():
        return "none"
    if option.metavar == "DURATION":
        return f"`{option.default}ms`" if option.default else "`0`"
    return f"`{option.default}`"
