"""``fraudcep rules``: check rule files, and try rules on a file of events.

``fraudcep rules validate FILE...`` prints every problem as ``FILE:LINE:COLUMN: rule 'id'
field: message`` and exits 1 when there is any. ``fraudcep rules test FILE --events
EVENTS.jsonl`` runs the enabled rules over JSON Lines events with :class:`fraudcep.Engine` and
prints each alert and a count per rule (``--json`` for one JSON object per line). Both take
``--lists FILE_OR_DIR`` (repeatable): the named lists the rules' expressions may read
(``x in lists.NAME``; docs/rules.md, "Named lists").
``fraudcep rules publish FILE --bootstrap ...`` puts checked rules on the rules topic that
running ``fraudcep run`` processes follow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import IO, Any

from fraudcep import Alert, Engine, FraudcepError, LateEvent
from fraudcep.alert import event_label
from fraudcep.rules import RuleDefinition, RuleSpecError, load_rule_file, parse_duration
from fraudcep.rules.lists import ListError, Lists
from fraudcep.runtime.list_sources import load_lists

DESCRIPTION = "Validate rule files (YAML or JSON) and test rules on events."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    validate = sub.add_parser(
        "validate",
        help="check rule files; print every problem with its position",
        description="Check rule files. Exit code 1 if any problem, 0 otherwise.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="rule files (.yaml/.json)")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    _add_lists_argument(validate)
    validate.set_defaults(handler=run_validate)

    test = sub.add_parser(
        "test",
        help="run the rules of a file over JSON Lines events and print the alerts",
        description="Run the enabled rules of FILE over EVENTS (JSON Lines) and print alerts.",
    )
    test.add_argument("file", metavar="FILE", help="rule file (.yaml/.json)")
    test.add_argument("--events", required=True, metavar="EVENTS", help="JSON Lines events")
    test.add_argument("--timestamp", default="ts", help="event-time field (int ms)")
    test.add_argument("--event-id", default="id", help="field shown for matched events")
    test.add_argument(
        "--out-of-orderness", default="0", help="allowed disorder: a duration like 5s, or ms"
    )
    test.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_lists_argument(test)
    test.set_defaults(handler=run_test)

    publish = sub.add_parser(
        "publish",
        help="check a rule file and publish its rules to the rules topic of running runners",
        description=(
            "Check FILE, then write each of its rules to the compacted rules topic (key: rule "
            "id, value: the rule as JSON). Every `fraudcep run` reading that topic applies the "
            "change live. --delete ID publishes a tombstone: the runners go back to their "
            "rule file's definition of ID (or drop the rule if the file has none)."
        ),
    )
    publish.add_argument("file", nargs="?", metavar="FILE", help="rule file (.yaml/.json)")
    publish.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    publish.add_argument("--topic", default="fraud.rules", help="the rules topic")
    publish.add_argument(
        "--delete", action="append", default=[], metavar="RULE_ID", help="publish a tombstone"
    )
    _add_lists_argument(publish)
    publish.set_defaults(handler=run_publish)


def _add_lists_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lists",
        action="append",
        default=[],
        metavar="FILE_OR_DIR",
        help="named lists the rules may read: a list file (.txt/.csv/.json/.jsonl, named after "
        "its stem) or a directory of them; repeatable",
    )


def _registry(args: argparse.Namespace) -> tuple[Lists | None, list[dict[str, Any]]]:
    """The lists of ``--lists`` (None when none is given), or the problem reading them."""
    paths: list[str] = getattr(args, "lists", None) or []
    if not paths:
        return None, []
    try:
        return load_lists(*paths), []
    except (ListError, OSError) as exc:
        return None, [_problem(", ".join(paths), f"cannot read the lists: {exc}")]


# -- validate -------------------------------------------------------------------------------


def _problem(path: str, message: str, line: int = 1, column: int = 1) -> dict[str, Any]:
    return {
        "file": path,
        "line": line,
        "column": column,
        "rule": None,
        "field": "",
        "message": message,
        "text": f"{path}:{line}:{column}: {message}",
    }


def _load(path: str, lists: Lists | None = None) -> list[RuleDefinition] | list[dict[str, Any]]:
    """Rule definitions, or the problems as dicts. Never raises: whatever goes wrong is a
    problem of the file (the loader's limits keep every file to a bounded cost)."""
    try:
        return load_rule_file(path, lists=lists)
    except OSError as exc:
        return [_problem(path, f"cannot read: {exc.strerror or exc}")]
    except RuleSpecError as exc:
        return [
            {
                "file": p.source,
                "line": p.line,
                "column": p.column,
                "rule": p.rule_id,
                "field": p.field,
                "message": p.message,
                "text": str(p),
            }
            for p in exc.problems
        ]
    except Exception as exc:  # a bug of the loader: still an answer, not a traceback
        return [_problem(path, f"cannot check the file ({type(exc).__name__}: {exc!s:.200})")]


def run_validate(args: argparse.Namespace) -> int:
    out = sys.stdout
    lists, problems = _registry(args)
    rules = 0
    for path in args.files if not problems else ():
        loaded = _load(path, lists)
        if loaded and isinstance(loaded[0], RuleDefinition):
            rules += len(loaded)
        else:
            problems.extend(p for p in loaded if isinstance(p, dict))
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not problems,
                    "rules": rules,
                    "problems": [{k: v for k, v in p.items() if k != "text"} for p in problems],
                }
            ),
            file=out,
        )
    else:
        for p in problems:
            print(p.get("text") or f"{p['file']}: {p['message']}", file=out)
        if problems:
            print(f"{len(problems)} problem(s) in {len(args.files)} file(s)", file=out)
        else:
            print(f"ok: {rules} rule(s) in {len(args.files)} file(s)", file=out)
    return 1 if problems else 0


# -- publish --------------------------------------------------------------------------------


def run_publish(args: argparse.Namespace) -> int:
    if args.file is None and not args.delete:
        print("fraudcep rules publish: give a rule FILE and/or --delete RULE_ID", file=sys.stderr)
        return 2
    definitions: list[RuleDefinition] = []
    if args.file is not None:
        lists, unreadable = _registry(args)  # rules naming lists are checked against them
        loaded = unreadable or _load(args.file, lists)
        problems = [p for p in loaded if isinstance(p, dict)]
        if problems:
            for p in problems:
                print(p.get("text") or f"{p['file']}: {p['message']}", file=sys.stderr)
            print("nothing published", file=sys.stderr)
            return 1
        definitions = [d for d in loaded if isinstance(d, RuleDefinition)]
    from fraudcep_kafka.rules_topic import publish_rules

    try:
        count = publish_rules(args.bootstrap, args.topic, definitions, delete=args.delete)
    except (RuntimeError, OSError) as exc:
        print(f"fraudcep rules publish: {exc}", file=sys.stderr)
        return 1
    print(f"published {count} record(s) to {args.topic}")
    return 0


# -- test -----------------------------------------------------------------------------------


def _events(path: str, err: IO[str], bad: list[int]) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(number)
                print(f"{path}:{number}: bad JSON: {exc.msg} (line skipped)", file=err)
                continue
            if not isinstance(event, dict):
                bad.append(number)
                print(f"{path}:{number}: not a JSON object (line skipped)", file=err)
                continue
            yield number, event


def _alert_record(alert: Alert, id_field: str, ts_field: str) -> dict[str, Any]:
    return {
        "rule_id": alert.rule_id,
        "key": alert.key,
        "first_ts": alert.first_ts,
        "last_ts": alert.last_ts,
        "events": {
            name: [event_label(e, id_field, ts_field) for e in evs]
            for name, evs in alert.events.items()
        },
        **({"lists": dict(alert.lists)} if alert.lists else {}),
        **({"mode": alert.mode} if alert.shadow else {}),
    }


def run_test(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    lists, problems = _registry(args)
    loaded = problems or _load(args.file, lists)
    if not loaded or not isinstance(loaded[0], RuleDefinition):
        for p in loaded:
            if isinstance(p, dict):
                print(p.get("text") or f"{p['file']}: {p['message']}", file=err)
        return 1
    definitions = [d for d in loaded if isinstance(d, RuleDefinition)]
    enabled = [d for d in definitions if d.enabled]
    try:
        disorder = parse_duration(args.out_of_orderness) if args.out_of_orderness != "0" else 0
    except ValueError as exc:
        print(f"--out-of-orderness: {exc}", file=err)
        return 2
    late: list[LateEvent] = []
    engine = Engine(
        [d.rule for d in enabled],
        timestamp=args.timestamp,
        max_out_of_orderness=disorder,
        on_late=late.append,
    )
    counts: Counter[str] = Counter({d.id: 0 for d in enabled})
    bad: list[int] = []
    seen = 0

    def emit(alert: Alert) -> None:
        counts[alert.rule_id] += 1
        record = _alert_record(alert, args.event_id, args.timestamp)
        if args.json:
            print(json.dumps({"alert": record}, default=str), file=out)
        else:
            matched = " ".join(
                f"{name}={json.dumps(ids, default=str)}" for name, ids in record["events"].items()
            )
            versions = "".join(
                f" lists.{name}@{version}" for name, version in sorted(alert.lists.items())
            )
            shadow = " (shadow)" if alert.shadow else ""
            print(
                f"{alert.rule_id}{shadow} key={alert.key!r} ts={alert.first_ts}..{alert.last_ts} "
                f"{matched}{versions}",
                file=out,
            )

    try:
        for number, event in _events(args.events, err, bad):
            try:
                alerts = engine.process(event)
            except FraudcepError as exc:
                bad.append(number)
                print(f"{args.events}:{number}: {exc} (event skipped)", file=err)
                continue
            seen += 1
            for alert in alerts:
                emit(alert)
        for alert in engine.flush():
            emit(alert)
    except OSError as exc:
        print(f"{args.events}: cannot read: {exc.strerror or exc}", file=err)
        return 1
    skipped = [d.id for d in definitions if not d.enabled]
    summary = {
        "events": seen,
        "bad_lines": len(bad),
        "late_events": len(late),
        "alerts": dict(counts),
        "disabled_rules": skipped,
    }
    if args.json:
        print(json.dumps({"summary": summary}), file=out)
    else:
        print(f"-- {seen} event(s), {len(bad)} bad line(s), {len(late)} late", file=out)
        for rule_id, count in counts.items():
            print(f"{rule_id}: {count} alert(s)", file=out)
        for rule_id in skipped:
            print(f"{rule_id}: disabled", file=out)
    return 0


def main(argv: Sequence[str]) -> int:  # pragma: no cover - convenience for python -m
    parser = argparse.ArgumentParser(prog="fraudcep rules", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
