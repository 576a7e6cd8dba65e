"""``fraudcep lists publish NAME FILE --bootstrap ...``: put a named list on the lists topic
that running ``fraudcep run`` processes follow (docs/kafka.md, "Named lists").

FILE is read like a ``--lists`` file (by extension: ``.json``, ``.jsonl``, ``.csv``, else one
entry per line), checked as a runner checks a lists-topic record (name, entry count and
length, size), and written as a JSON array keyed by NAME. ``--delete`` publishes a tombstone
instead: the runners go back to their ``--lists`` file's entries (or an empty list).
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = "Publish named lists to the lists topic of running `fraudcep run` processes."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lists_command", metavar="ACTION", required=True)
    publish = sub.add_parser(
        "publish",
        help="check a list file and publish it to the lists topic of running runners",
        description=(
            "Read FILE as list NAME (by extension: .json array, .jsonl, .csv first column, "
            "else one entry per line), check it as the runners check a lists-topic record, "
            "and write it to the compacted lists topic (key: NAME, value: a JSON array). "
            "Every `fraudcep run` reading that topic judges the next payments against the new "
            "entries. --delete publishes a tombstone: the runners go back to their --lists "
            "file's entries of NAME (or an empty list)."
        ),
    )
    publish.add_argument("name", metavar="NAME", help="the list's name (lists.NAME in rules)")
    publish.add_argument("file", nargs="?", metavar="FILE", help="the list file")
    publish.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    publish.add_argument("--topic", default="fraud.lists", help="the lists topic")
    publish.add_argument("--delete", action="store_true", help="publish a tombstone for NAME")
    publish.set_defaults(handler=run_publish)


def run_publish(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fraudcep.rules.lists import ListError, read_entries
    from fraudcep_kafka.lists_topic import ListRecordError, publish_list

    if (args.file is None) == (not args.delete):
        print("fraudcep lists publish: give NAME and either a FILE or --delete", file=sys.stderr)
        return 2
    entries: list[str] | None = None
    if args.file is not None:
        path = Path(args.file)
        try:
            text = path.read_text(encoding="utf-8-sig")
            entries = [str(e) for e in read_entries(text, path.suffix.lower(), str(path))]
        except UnicodeDecodeError as exc:
            print(f"{path}: not UTF-8 text ({exc.reason}); nothing published", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except ListError as exc:
            print(f"{exc}; nothing published", file=sys.stderr)
            return 1
    try:
        publish_list(args.bootstrap, args.topic, args.name, entries)
    except ListRecordError as exc:
        print(f"{exc}; nothing published", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as exc:
        print(f"fraudcep lists publish: {exc}", file=sys.stderr)
        return 1
    count = len(set(entries or ()))
    what = "a tombstone" if entries is None else f"{count} entr{'y' if count == 1 else 'ies'}"
    print(f"published list {args.name} ({what}) to {args.topic}")
    return 0
